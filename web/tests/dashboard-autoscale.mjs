// The dashboard's autoscaler panel in chromium (headless), against a master
// (started with an API token) whose autoscaler — its own process — has
// scaled up and down. Run by testkit/tests/autoscale.rs:
//   node web/tests/dashboard-autoscale.mjs http://127.0.0.1:<port> <token> <screenshot dir>
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, token, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await launch();
const page = await browser.newPage();
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await page.screenshot({ path: `${shots}/dashboard-autoscale-failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const T = { timeout: 30000 };
await page.goto(`${url}/dashboard`);
await page.locator("#conn[data-state=locked]").waitFor(T);
await page.fill("#access-input", token);
await page.click("#access button");
await page.locator("#conn[data-state=connected]").waitFor(T);
await page.locator("#autoscale:not([hidden])").waitFor(T);
await page.locator("#autoscale-decisions li", { hasText: "3 → 1" }).waitFor(T);
const state = await page.textContent("#autoscale-state");
if (!/faena_worker: 1 replicas \(min 1, max 3\) · 1 up, 1 down/.test(state)) await fail(`autoscaler state: ${state}`);
const decisions = await page.$$eval("#autoscale-decisions li", (lis) => lis.map((l) => l.textContent));
if (decisions.length !== 2 || !/1 → 3: .*waiting, the longest/.test(decisions[1])) await fail(`decisions: ${decisions}`);
await page.locator("#autoscale").screenshot({ path: `${shots}/dashboard-autoscale.png` });
await browser.close();
console.log("OK");
