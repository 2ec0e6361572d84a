// BullMQ (open source, 6.x) on faena-bench's batch phase: `jobs` no-op jobs
// added with `addBulk` in calls of 1,000, one after the other, while two
// worker processes at concurrency 128 each (the bench's two Faena workers
// × 128 slots; FAENA_BENCH_SLOTS sets both) take them; jobs/s from the
// first add to the last completion. Completed jobs are kept
// (`removeOnComplete: false`), as Faena keeps each job's record. A
// warm-up of 2,000 jobs goes first, as in faena-bench.
//   node bench/bullmq/bulk.mjs <redis port> [jobs=20000] [rounds=1]
//   node bench/bullmq/bulk.mjs <redis port> --worker        (what it forks)
// The workers' processes inherit BULLMQ with the rest of the environment.
import { fork } from "node:child_process";

// BULLMQ=bullmq runs the 5.34 the fairness bench pins instead.
const { Queue, Worker } = await import(process.env.BULLMQ ?? "bullmq6");

const port = Number(process.argv[2]);
const connection = { host: "127.0.0.1", port };
const NAME = "bulk";
// Each worker's concurrency: the slots of each of faena-bench's workers.
const concurrency = Number(process.env.FAENA_BENCH_SLOTS ?? 128);

if (process.argv[3] === "--worker") {
  const worker = new Worker(NAME, async (job) => job.data.i, { connection, concurrency });
  await worker.waitUntilReady();
  process.send("ready");
  process.on("message", async () => {
    await worker.close();
    process.exit(0);
  });
} else {
  const jobs = Number(process.argv[3] ?? 20000);
  const rounds = Number(process.argv[4] ?? 1);
  const queue = new Queue(NAME, { connection });
  await queue.obliterate({ force: true }).catch(() => {});
  // BULLMQ_IN_PROCESS=1: the two workers in this process, beside the adds.
  const inProcess = process.env.BULLMQ_IN_PROCESS === "1";
  const workers = inProcess
    ? [0, 1].map(() => new Worker(NAME, async (job) => job.data.i, { connection, concurrency }))
    : [0, 1].map(() => fork(new URL(import.meta.url).pathname, [String(port), "--worker"]));
  await Promise.all(
    workers.map((w) => (inProcess ? w.waitUntilReady() : new Promise((r) => w.once("message", r)))),
  );
  const add = async (n) => {
    for (let i = 0; i < n; i += 1000) {
      const bulk = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({
        name: "noop",
        data: { i: i + k },
        opts: { removeOnComplete: false },
      }));
      await queue.addBulk(bulk);
    }
  };
  const until = async (target) => {
    while ((await queue.getCompletedCount()) < target) await new Promise((r) => setTimeout(r, 5));
  };
  await add(2000);
  await until(2000);
  let done = 2000;
  for (let round = 0; round < rounds; round += 1) {
    const start = process.hrtime.bigint();
    await add(jobs);
    done += jobs;
    await until(done);
    const secs = Number(process.hrtime.bigint() - start) / 1e9;
    console.log(`bullmq batch  ${String(jobs).padStart(6)} jobs  ${(jobs / secs).toFixed(0).padStart(7)} jobs/s  ${secs.toFixed(2)} s`);
  }
  if (inProcess) {
    await Promise.all(workers.map((w) => w.close()));
  } else {
    workers.forEach((w) => w.send("stop"));
    await Promise.all(workers.map((w) => new Promise((r) => w.once("exit", r))));
  }
  await queue.close();
}
