// Drives the master's Socket.IO side with the real socket.io client (the
// one the page loads): sessions, streamed answers, history on reconnect,
// isolation between sessions, keys, limits. Run by testkit/tests/web.rs:
//   node web/tests/sockets.mjs http://127.0.0.1:<port>
// Exits non-zero with the reason when a check fails.
import { io } from "socket.io-client";

const url = process.argv[2];
const fail = (why) => {
  console.error(`FAIL: ${why}`);
  process.exit(1);
};
const check = (ok, why) => ok || fail(why);
// Every event a socket hears is recorded from the start: a packet that
// arrives with the CONNECT (the workers list often does) is not missed.
const connect = () =>
  new Promise((resolve, reject) => {
    const s = io(url, { transports: ["websocket"], reconnection: false, timeout: 10000 });
    s.seen = record(s);
    s.on("connect", () => resolve(s));
    s.on("connect_error", reject);
  });
// An event the master does not answer within 20 s fails the test (rather than hanging it).
const call = (s, ev, data) =>
  s.timeout(20000).emitWithAck(ev, data).catch(() => fail(`no answer to ${ev} within 20 s`));
const record = (s) => {
  const seen = [];
  for (const ev of ["job", "chunk", "progress", "done", "workers"]) s.on(ev, (d) => seen.push([ev, d]));
  return seen;
};
const until = (seen, pred, what) =>
  new Promise((resolve) => {
    const t0 = Date.now();
    const poll = () => {
      const hit = seen.find(pred);
      if (hit) return resolve(hit);
      if (Date.now() - t0 > 30000) fail(`timed out waiting for ${what}`);
      setTimeout(poll, 10);
    };
    poll();
  });

const a = await connect();
const aSeen = a.seen;
const welcome = await call(a, "hello", {});
check(typeof welcome.session === "string" && welcome.session.length >= 32, `a session id: ${JSON.stringify(welcome)}`);
check(welcome.history.length === 0 && welcome.has_key === false, "a new session is empty");
await until(aSeen, ([ev, d]) => ev === "workers" && d.length > 0, "the workers list");

const b = await connect();
const bSeen = b.seen;
const other = await call(b, "hello", {});
check(other.session !== welcome.session, "each session its own id");

// A streamed answer, in order, then metadata.
const first = await call(a, "ask", { prompt: "[[fake {\"chunks\": [\"Hel\", \"lo\", \"!\"], \"gap_ms\": 20}]] first" });
check(first.job, `ask answers with a job: ${JSON.stringify(first)}`);
const [, done] = await until(aSeen, ([ev, d]) => ev === "done" && d.job === first.job, "the first answer");
check(done.state === "succeeded" && done.result.text === "Hello!", `the answer: ${JSON.stringify(done)}`);
check(done.worker && done.result.model && done.result.timings && done.attempt === 1, "metadata: worker, model, timings, attempt");
const chunks = aSeen.filter(([ev, d]) => ev === "chunk" && d.job === first.job).map(([, d]) => d.text);
check(chunks.join("|") === "Hel|lo|!", `chunks in order: ${chunks}`);
check(aSeen.some(([ev, d]) => ev === "job" && d.job === first.job && d.state === "running"), "a running update");

// The second question carries the first exchange as context.
const second = await call(a, "ask", { prompt: "second" });
await until(aSeen, ([ev, d]) => ev === "done" && d.job === second.job, "the second answer");

// Nothing of session a reached session b.
check(!bSeen.some(([ev, d]) => ev !== "workers" && (d.job === first.job || d.job === second.job)), "b saw none of a's jobs");
const stolen = await call(b, "cancel", { job: second.job });
check(stolen.error === "no such job in this session", `b cannot cancel a's job: ${JSON.stringify(stolen)}`);
const smuggled = await call(b, "ask", { prompt: "x", session: welcome.session });
check(smuggled.error && smuggled.error.includes("unknown field"), "no session smuggled into a request");

// A reload: same session, history back.
a.close();
const a2 = await connect();
const back = await call(a2, "hello", { session: welcome.session });
check(back.session === welcome.session, "the session resumes");
check(back.history.length === 2 && back.history[0].answer === "Hello!" && back.history[0].meta.worker, `history: ${JSON.stringify(back.history)}`);
const guessed = await call(b, "hello", { session: "not-a-real-session" });
check(guessed.session !== "not-a-real-session" && guessed.history.length === 0, "an unknown id starts a new session");

// The session's own key: set, reported (never echoed), used, cleared.
const keyed = await call(a2, "set_key", { key: "session-own-key" });
check(keyed.ok === true, "the key is taken");
check(!JSON.stringify(keyed).includes("session-own-key"), "the key is not echoed");
const again = await call(a2, "hello", { session: welcome.session });
check(again.has_key === true && !JSON.stringify(again).includes("session-own-key"), "has_key, not the key");
const a2Seen = a2.seen;
const withKey = await call(a2, "ask", { prompt: "keyed question" });
await until(a2Seen, ([ev, d]) => ev === "done" && d.job === withKey.job, "the keyed answer");
check((await call(a2, "clear_key", {})).ok === true, "the key is cleared");

// Limits, with reasons.
const big = await call(b, "ask", { prompt: "x".repeat(40 * 1024) });
check(big.error && big.error.includes("the limit is 32768"), `oversized prompt: ${JSON.stringify(big)}`);
const c = await connect();
const cWelcome = await call(c, "hello", {});
let refused = null;
for (let i = 0; i < 11; i++) {
  const r = await call(c, "ask", { prompt: `[[fake {\"delay_ms\": 1}]] flood ${i}` });
  if (r.error) refused = r.error;
}
check(refused && refused.startsWith("slow down"), `the 11th question in a minute is refused: ${refused}`);
const early = await connect();
const noHello = await call(early, "ask", { prompt: "hi" });
check(noHello.error === "say hello first", "no session, no questions");

// Sockets that say hello the moment they are connected, as the page does,
// are all answered: the master's handlers are in place before it tells a
// client it is connected.
const eager = await Promise.all(
  Array.from(
    { length: 30 },
    () =>
      new Promise((resolve, reject) => {
        const s = io(url, { transports: ["websocket"], reconnection: false, timeout: 10000 });
        s.on("connect", () => call(s, "hello", {}).then((w) => resolve([s, w])));
        s.on("connect_error", reject);
      }),
  ),
);
check(new Set(eager.map(([, w]) => w.session)).size === 30, "thirty eager sockets, thirty sessions");

// What one address may do, across its sessions (testkit/tests/web.rs sets
// 40 sessions, 3 hashing or mining jobs a minute, a 1 s idle time).
const d = await connect();
await call(d, "hello", {});
const oneMore = await call(d, "ask", { prompt: "[[fake {}]] one more" });
check(oneMore.error && oneMore.error.startsWith("slow down"), `a new session is not a new allowance: ${JSON.stringify(oneMore)}`);
let jobsRefused = null;
for (let i = 0; i < 4; i++) {
  const r = await call(d, "hash", { key: "test key 000", input: `input ${i}` });
  if (r.error) jobsRefused = r.error;
}
check(jobsRefused && jobsRefused.includes("hashing or mining jobs a minute"), `hash jobs are limited: ${jobsRefused}`);
const burst = await Promise.all(Array.from({ length: 40 }, () => call(d, "clear_key", {})));
check(burst.some((r) => r.error && r.error.includes("events a second")), "every event has a rate");
const more = [];
let capped = null;
for (let i = 0; i < 50 && !capped; i++) {
  const s = await connect();
  more.push(s);
  const w = await call(s, "hello", {});
  if (w.error) capped = w.error;
}
check(capped && capped.startsWith("too many sessions"), `sessions per address are capped: ${capped}`);
const gauge = async () => Number(/^faena_web_sessions (\d+)/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1]);
check((await gauge()) === 40, `faena_web_sessions counts them: ${await gauge()}`);
// Sessions nobody uses any more are forgotten: c's comes back as a new one.
for (const s of [c, ...more, ...eager.map(([s]) => s)]) s.close();
const t0 = Date.now();
while ((await gauge()) > 4) {
  if (Date.now() - t0 > 30000) fail(`idle sessions were not forgotten within 30 s: ${await gauge()} left`);
  await new Promise((r) => setTimeout(r, 100));
}
const back2 = await connect();
const renewed = await call(back2, "hello", { session: cWelcome.session });
check(renewed.session && renewed.session !== cWelcome.session, `a forgotten session starts afresh: ${JSON.stringify(renewed)}`);
back2.close();

for (const s of [a2, b, d, early]) s.close();
console.log("OK");
process.exit(0);
