// Many concurrent Socket.IO sessions, each asking one question and
// receiving only its own answer. Run by faena-web-bench:
//   node web/tests/sessions-bench.mjs <url> <sessions>
// Prints one JSON line of measurements.
import { io } from "socket.io-client";

const [url, n] = [process.argv[2], Number(process.argv[3] || 1000)];
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.round((s.length - 1) * p))];
};
const now = () => performance.timeOrigin + performance.now();

const connectMs = [];
const sockets = await Promise.all(
  Array.from({ length: n }, () =>
    new Promise((resolve, reject) => {
      const t0 = now();
      const s = io(url, { transports: ["websocket"], reconnection: false, timeout: 60000, forceNew: true });
      s.on("connect", () => {
        connectMs.push(now() - t0);
        resolve(s);
      });
      s.on("connect_error", reject);
    })),
);
await Promise.all(sockets.map((s) => new Promise((r) => s.emit("hello", {}, r))));

let foreign = 0;
const chunkMs = [];
const doneMs = [];
const t0 = now();
await Promise.all(
  sockets.map((s, i) =>
    new Promise((resolve) => {
      const asked = now();
      let mine = null;
      const early = [];
      const take = (ev, d) => {
        if (mine === null) return early.push([ev, d]);
        if (d.job !== mine) return (foreign += 1);
        if (ev === "chunk") {
          const stamp = Number((d.text.split("<t:")[1] || "").replace(">", ""));
          if (stamp) chunkMs.push(now() - stamp / 1000);
        }
        if (ev === "done") {
          doneMs.push(now() - asked);
          resolve();
        }
      };
      for (const ev of ["job", "chunk", "done"]) s.on(ev, (d) => take(ev, d));
      s.emit("ask", { prompt: `[[fake {"chunks": ["a", "b", "c"], "stamp": true}]] session ${i}` }, (ack) => {
        if (ack.error) throw new Error(ack.error);
        mine = ack.job;
        for (const [ev, d] of early.splice(0)) take(ev, d);
      });
    })),
);
const total = now() - t0;
for (const s of sockets) s.close();
console.log(JSON.stringify({
  sessions: n,
  connect_ms: { p50: pct(connectMs, 0.5), p99: pct(connectMs, 0.99), max: pct(connectMs, 1) },
  chunk_ms: { p50: pct(chunkMs, 0.5), p99: pct(chunkMs, 0.99), max: pct(chunkMs, 1) },
  answer_ms: { p50: pct(doneMs, 0.5), p99: pct(doneMs, 0.99), max: pct(doneMs, 1) },
  all_answered_s: total / 1000,
  foreign_events: foreign,
}));
process.exit(0);
