// The page with no AI key anywhere, in a real browser (Debian's chromium,
// headless, driven by playwright-core). Run by testkit/tests/web.rs:
//   node web/tests/local.mjs http://127.0.0.1:<port> <screenshot dir>
// The cluster starts with one worker that runs no AI: a question says why
// it waits. The script then prints NEED-WORKER, the test starts a worker
// with the local model, and the same question is answered by it, the page
// saying it came from `local`. The RandomX panel's inputs have visible
// labels. Exits non-zero with the reason when a check fails.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await launch();
const page = await (await browser.newContext()).newPage();
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await page.screenshot({ path: `${shots}/local-failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const check = async (ok, why) => ok || (await fail(why));
// Generous: the local worker loads its model and registers within it.
const T = { timeout: 60000 };
page.on("pageerror", (e) => console.error(`page error: ${e.message}`));

await page.goto(url);
await page.locator("#conn[data-state=connected]").waitFor(T);
await page.locator("#workers li[data-worker=plain]").waitFor(T);

// Every input of the RandomX panel has a label a person can see.
for (const id of ["hash-key", "hash-input", "mine-key", "mine-blob", "mine-difficulty", "mine-start", "mine-count"]) {
  const label = page.locator(`label[for="${id}"], label:has(#${id})`);
  await check((await label.count()) === 1 && (await label.first().isVisible()), `a visible label for #${id}`);
  await check((await label.first().innerText()).trim().length > 0, `the label of #${id} says something`);
}

// No AI worker online: the question says why it waits, and what to do.
await page.fill("#prompt", "What is the capital of France?");
await page.click("#send");
const waiting = page.locator(".waiting", { hasText: "no AI worker is online" });
await waiting.waitFor(T);
await check((await waiting.textContent()).includes("local model"), "the reason says how to start one");
await page.screenshot({ path: `${shots}/local-waiting.png`, fullPage: true });

// A worker with the local model joins (no key): the same question is answered.
console.log("NEED-WORKER");
await page.locator("#workers li[data-worker=local]", { hasText: "AI: local" }).waitFor(T);
const answer = page.locator(".bubble.answer").first();
await page.locator(".meta").first().filter({ hasText: "local" }).waitFor(T);
const text = (await answer.textContent()).trim();
await check(text.length > 0, "an answer");
const meta = await page.locator(".meta").first().textContent();
await check(/^local/.test(meta) && /worker local/.test(meta), `the page says the local model answered: ${meta}`);
await page.screenshot({ path: `${shots}/local-answer.png`, fullPage: true });

await browser.close();
console.log("OK");
