// Graphile Worker's side of testkit's faena-pg-bench: on the PostgreSQL
// database given, `jobs` no-op jobs added in batches of 1,000 (addJobs, one
// statement per batch) and run by one worker process with `concurrency`,
// timed from the first add to the moment the queue is empty (every job
// completed and deleted, as Graphile Worker marks completion); then
// `samples` jobs one at a time, each timed from addJob to its task starting.
// Default settings otherwise (completions not batched, LISTEN/NOTIFY wakes
// the worker). Prints one JSON line.
//
//   node run.mjs URL [jobs=20000] [samples=2000] [concurrency=24]
import { Logger, run, makeWorkerUtils } from "graphile-worker";

const [url, jobsArg, samplesArg, concurrencyArg] = process.argv.slice(2);
if (!url) {
  console.error("usage: node run.mjs URL [jobs] [samples] [concurrency]");
  process.exit(2);
}
const jobs = Number(jobsArg ?? 20000);
const samples = Number(samplesArg ?? 2000);
const concurrency = Number(concurrencyArg ?? 24);
const BATCH = 1000;

const logger = new Logger(() => (level, message) => {
  if (level === "error") console.error(message);
});
// Each sample's start, resolved by its task.
const waiting = new Map();
let ran = 0;
const taskList = {
  noop: async (payload) => {
    ran += 1;
    const resolve = waiting.get(payload.sample);
    if (resolve) {
      waiting.delete(payload.sample);
      resolve(performance.now());
    }
  },
};

const utils = await makeWorkerUtils({ connectionString: url, logger });
await utils.migrate();
const runner = await run({ connectionString: url, concurrency, noHandleSignals: true, pollInterval: 2000, taskList, logger });

const pending = async () => {
  const { rows } = await utils.withPgClient((c) => c.query("SELECT count(*)::int AS n FROM graphile_worker.jobs"));
  return rows[0].n;
};
const settle = async () => {
  while ((await pending()) > 0) await new Promise((r) => setTimeout(r, 5));
};

// Warm-up: connections, prepared statements, the JIT.
const add = async (n, offset) => {
  for (let i = 0; i < n; i += BATCH) {
    const specs = [];
    for (let j = i; j < Math.min(n, i + BATCH); j++) specs.push({ identifier: "noop", payload: { i: offset + j } });
    await utils.addJobs(specs);
  }
};
await add(2000, 0);
await settle();

const t0 = performance.now();
await add(jobs, 1_000_000);
await settle();
const elapsed = (performance.now() - t0) / 1000;

const latencies = [];
for (let s = 0; s < samples; s++) {
  const started = new Promise((resolve) => waiting.set(s, resolve));
  const t = performance.now();
  await utils.addJob("noop", { sample: s });
  latencies.push((await started) - t);
}
await settle();
latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.round((latencies.length - 1) * p)];

await runner.stop();
await utils.release();
console.log(
  JSON.stringify({
    jobs,
    seconds: elapsed,
    jobs_per_s: jobs / elapsed,
    concurrency,
    add_to_start_ms: { p50: pct(0.5), p99: pct(0.99), max: latencies[latencies.length - 1] },
    ran,
  }),
);
