// BullMQ (open source) on faena-plans-bench's fairness scenario: "group" A
// adds `a` jobs, then "group" B adds `b`; B's wait (processedOn minus
// the moment the workers start: A's and B's jobs are all queued first, as in
// Faena's run). Open-source BullMQ has no groups (they
// are a BullMQ Pro feature): one queue is one FIFO (per priority), so B's
// jobs wait behind A's backlog. The workers do nothing, like Faena's noop,
// with the same concurrency as the bench's two Faena workers (2 × 128).
//   node bench/bullmq/fairness.mjs <redis port> [a=200000] [b=100]
import { Queue, Worker } from "bullmq";

const [port, a = 200000, b = 100] = process.argv.slice(2).map(Number);
const connection = { host: "127.0.0.1", port };
const queue = new Queue("fairness", { connection });
await queue.obliterate({ force: true }).catch(() => {});
const waits = [];
let done = 0;
const workers = [0, 1].map(() =>
  new Worker("fairness", async (job) => job.data.g, { connection, concurrency: 128, autorun: false }));
let began = 0;
for (const w of workers) {
  w.on("completed", (job) => {
    done += 1;
    if (job.data.g === "b") waits.push(job.processedOn - began);
  });
}
const add = async (g, n) => {
  for (let i = 0; i < n; i += 1000) {
    const jobs = Array.from({ length: Math.min(1000, n - i) }, (_, k) => ({ name: g, data: { g, i: i + k } }));
    await queue.addBulk(jobs.map((j) => ({ ...j, opts: { removeOnComplete: false } })));
  }
};
await add("a", a);
const waiting = await queue.getWaitingCount();
await add("b", b);
began = Date.now();
workers.forEach((w) => w.run());
while (done < a + b) await new Promise((r) => setTimeout(r, 50));
waits.sort((x, y) => x - y);
const q = (p) => waits[Math.round((waits.length - 1) * p)];
console.log(`bullmq (no groups: one FIFO; ${waiting} of A's waiting)   B waited after the workers started: p50 ${q(0.5).toFixed(1).padStart(9)} ms  p99 ${q(0.99).toFixed(1).padStart(9)} ms  max ${waits[waits.length - 1].toFixed(1).padStart(9)} ms   (${((a + b) / ((Date.now() - began) / 1000)).toFixed(0)} jobs/s once started)`);
await Promise.all(workers.map((w) => w.close()));
await queue.close();
