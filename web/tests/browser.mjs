// The page in a real browser (Debian's chromium, headless, driven by
// playwright-core) against a real master, workers and the fake AI server.
// Run by testkit/tests/web.rs:
//   node web/tests/browser.mjs http://127.0.0.1:<port> <screenshot dir> http://<fake AI> \
//     http://<monerod RPC> <wallet address> <Stratum host:port>
// Exits non-zero with the reason when a check fails; saves screenshots.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";
import { connect } from "node:net";
import { createInterface } from "node:readline";

const [url, shots, fakeAi, nodeUrl, wallet, stratum] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await launch();
let current = null;
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  if (current) await current.screenshot({ path: `${shots}/failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const check = async (ok, why) => ok || (await fail(why));
const T = { timeout: 30000 };

async function open(context) {
  const page = await context.newPage();
  current = page;
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await page.locator("#conn[data-state=connected]").waitFor(T);
  await page.locator("#session").filter({ hasNotText: "—" }).waitFor(T);
  return page;
}

async function ask(page, prompt) {
  await page.fill("#prompt", prompt);
  await page.click("#send");
}

const answers = (page) => page.locator(".bubble.answer");

// 1. Loads, connected, a session id; the workers panel fills.
const alice = await browser.newContext();
let page = await open(alice);
const session = (await page.textContent("#session")).trim();
await check(/^[0-9a-f]{32}$/.test(session), `a session id: ${session}`);
await page.locator("#workers li[data-worker]").first().waitFor(T);
await page.screenshot({ path: `${shots}/connected.png`, fullPage: true });

// 2. A streamed answer with metadata.
await ask(page, '[[fake {"chunks": ["Hello ", "from ", "the ", "fake ", "model"], "gap_ms": 150}]] greet me');
const first = answers(page).first();
await first.filter({ hasText: "Hello from" }).waitFor(T);
const partial = await first.textContent();
await first.filter({ hasText: "Hello from the fake model" }).waitFor(T);
await check(partial.length < "Hello from the fake model".length || partial === "Hello from the fake model", "text arrived");
await page.locator(".meta").first().filter({ hasText: "worker" }).waitFor(T);
const meta = await page.locator(".meta").first().textContent();
await check(/worker ai/.test(meta) && /gemini/.test(meta) && /attempt 1/.test(meta) && /not cached/.test(meta), `metadata: ${meta}`);
await page.screenshot({ path: `${shots}/answer.png`, fullPage: true });

// 3. Markup in a prompt (and in the answer, which echoes it) stays text.
await ask(page, "<img src=x onerror=\"window.__pwned=1\"> look");
await answers(page).nth(1).filter({ hasText: "You said: <img src=x" }).waitFor(T);
await check((await page.locator("#messages img").count()) === 0, "no <img> element was made from the text");
await check((await page.evaluate(() => window.__pwned)) === undefined, "no script ran");
await check((await page.locator(".bubble.question").nth(1).textContent()).includes("<img src=x"), "the question shows as typed");

// 4. Queue positions count down while questions wait for the one AI slot.
// The fake AI holds the first two answers until told, so each position is
// seen for as long as it lasts, however slow the machine. The questions are
// typed one after the other without waiting for the master's ack.
const release = async (name) => {
  const r = await fetch(`${fakeAi}/fake/release/${name}`, { method: "POST" });
  await check(r.ok, `the fake AI released ${name}: ${r.status}`);
};
const holds = ['{"hold": "slow-0"}', '{"hold": "slow-1"}', "{}", "{}"];
for (const [i, script] of holds.entries()) await ask(page, `[[fake ${script}]] slow ${i}`);
const waitingOf = (text) => page.locator("#messages li", { hasText: text }).locator(".waiting");
await waitingOf("slow 3").filter({ hasText: "2 jobs ahead of yours" }).waitFor(T);
await page.screenshot({ path: `${shots}/queued.png`, fullPage: true });
await release("slow-0");
await answers(page).filter({ hasText: "You said: slow 0" }).waitFor(T);
await waitingOf("slow 3").filter({ hasText: "1 job ahead of yours" }).waitFor(T);
await release("slow-1");
await answers(page).filter({ hasText: "You said: slow 3" }).waitFor(T);
await check((await answers(page).count()) === 6, "one answer for each question");

// 4b. A provider that is retrying says so under the question: the fake
// answers 429 with a 2 s retry delay once, the worker waits and asks again.
await ask(page, '[[fake {"fail": [429], "retry_delay_s": 2}]] after a rate limit');
await waitingOf("after a rate limit").filter({ hasText: /^gemini: .*429.* — trying again in 2 s \(try 2 of \d+\)$/ }).waitFor(T);
await page.screenshot({ path: `${shots}/retrying.png`, fullPage: true });
await answers(page).filter({ hasText: "You said: after a rate limit" }).waitFor(T);

// A question the master refuses stays in the box, with the reason: 20000
// "é" pass the box's maxlength (characters) but not the master's limit (bytes).
const tooLong = "é".repeat(20000);
await ask(page, tooLong);
await page.locator("#notice", { hasText: "the limit is 32768" }).waitFor(T);
await check((await page.inputValue("#prompt")) === tooLong, "the refused question is back in the box");
await page.fill("#prompt", "");

// 5. A second browser (another person) sees nothing of the first's chat.
const bob = await browser.newContext();
const bobPage = await open(bob);
await check((await bobPage.textContent("#session")).trim() !== session, "bob has his own session");
await ask(bobPage, "bob only");
await answers(bobPage).first().filter({ hasText: "You said: bob only" }).waitFor(T);
await check((await answers(bobPage).count()) === 1, "bob sees only his answer");
await check(!(await page.textContent("#messages")).includes("bob only"), "alice never sees bob's");
await bobPage.screenshot({ path: `${shots}/bob.png`, fullPage: true });

// 6. A reload restores the history.
await page.reload();
page = await open(alice);
await check((await page.textContent("#session")).trim() === session, "the same session after a reload");
await answers(page).nth(5).waitFor(T);
await check((await answers(page).first().textContent()) === "Hello from the fake model", "history is back");
await check((await page.locator(".meta").first().textContent()).includes("worker ai"), "with its metadata");

// 7. Mining: live hashrate, verified shares, then cancel.
await page.fill("#mine-difficulty", "20");
await page.fill("#mine-count", "1000000");
await page.click("#mine button[type=submit]");
await page.locator("#mine-state", { hasText: "H/s" }).waitFor({ timeout: 60000 });
await page.locator("#shares li").first().waitFor({ timeout: 60000 });
await page.locator("#mine-workers li").first().waitFor(T);
await page.screenshot({ path: `${shots}/mining.png`, fullPage: true });
await page.click("#mine-cancel");
await page.locator("#mine-state", { hasText: "cancelled" }).waitFor(T);

// 7b. The mining panel shows a source added through the REST API, live,
// with its state and the reason it cannot connect.
const added = await fetch(`${url}/api/mining/sources`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ kind: "pool", url: "stratum+tcp://127.0.0.1:9", user: "page-test" }),
});
await check(added.status === 201, `a source is added: ${added.status}`);
const source = await added.json();
await page.locator(`#sources li[data-source="${source.id}"]`, { hasText: "stratum+tcp://127.0.0.1:9" }).waitFor(T);
await page.locator(`#sources li[data-source="${source.id}"] .state-error`).waitFor(T);
await page.locator("#verifier", { hasText: "Verifier: light mode" }).waitFor(T);

// A daemon source with work, and a Stratum miner on it (spoken as XMRig
// does) whose forged share the master re-hashes and refuses: the miner
// shows up among the participants, its invalid share counted.
const daemon = await fetch(`${url}/api/mining/sources`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ kind: "daemon", url: nodeUrl, wallet }),
});
await check(daemon.status === 201, `a daemon source is added: ${daemon.status}`);
const solo = await daemon.json();
await page.locator(`#sources li[data-source="${solo.id}"] .state-mining`).waitFor(T);
const [host, port] = stratum.split(":");
const sock = connect({ host, port: Number(port) });
const lines = createInterface({ input: sock })[Symbol.asyncIterator]();
const call = async (id, method, params) => {
  sock.write(`${JSON.stringify({ id, jsonrpc: "2.0", method, params })}\n`);
  for (;;) {
    const { value, done } = await lines.next();
    if (done) return fail(`the Stratum server closed during ${method}`);
    const msg = JSON.parse(value);
    if (msg.id === id) return msg;
  }
};
const login = await call(1, "login", { login: "page-miner", pass: "x", agent: "XMRig/6.26.0", algo: ["rx/0"] });
await check(!login.error && login.result.job, `the miner logs in: ${JSON.stringify(login)}`);
const { id: miner, job: work } = login.result;
const top = work.blob.slice(84, 86);
const forged = await call(2, "submit", { id: miner, job_id: work.job_id, nonce: `000000${top}`, result: "00".repeat(32) });
await check(forged.error && forged.error.message.startsWith("Invalid share"), `refused: ${JSON.stringify(forged)}`);
sock.destroy();
// The forged share counts against the source, and on no one's record: a
// participant appears on its first valid share, so a stranger cannot put
// junk on a miner's name.
await page.locator(`#sources li[data-source="${solo.id}"]`, { hasText: "/ 1 invalid /" }).waitFor(T);
await check((await page.locator('#participants tr[data-participant="page-miner"]').count()) === 0,
  "a miner with no valid share is no participant");
await page.screenshot({ path: `${shots}/mining-sources.png`, fullPage: true });
// The worker goes back to the page's own jobs.
const removed = await fetch(`${url}/api/mining/sources/${solo.id}`, { method: "DELETE" });
await check(removed.status === 204, `the daemon source is removed: ${removed.status}`);

// 8. The key field: used, never shown back, cleared.
await page.fill("#key-input", "browser-own-key");
await page.click("#key button[type=submit]");
await page.locator("#key-state", { hasText: "Your key is set" }).waitFor(T);
await check((await page.inputValue("#key-input")) === "", "the field is emptied");
await check(!(await page.content()).includes("browser-own-key"), "the key is not on the page");
await page.click("#key-clear");
await page.locator("#key-state", { hasText: "No key of your own" }).waitFor(T);

await browser.close();
console.log("OK");
