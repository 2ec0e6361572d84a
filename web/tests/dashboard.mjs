// The operations dashboard in a real browser (Debian's chromium, headless)
// against a real master (started with an API token) and one real worker.
// Run by testkit/tests/dashboard.rs:
//   node web/tests/dashboard.mjs http://127.0.0.1:<port> <token> <screenshot dir>
// It locks without the token and opens with it; its charts draw and move
// while jobs run; the jobs table filters; a job's page shows its timeline;
// retry, re-prioritise and cancel work from the page. Exits non-zero with
// the reason when a check fails; saves screenshots for a person to look at.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, token, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const browser = await launch();
let page = null;
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  if (page) await page.screenshot({ path: `${shots}/dashboard-failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const check = async (ok, why) => ok || (await fail(why));
const T = { timeout: 30000 };
const shot = (name) => page.screenshot({ path: `${shots}/dashboard-${name}.png`, fullPage: true });

async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(`${url}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const data = await resp.json();
  if (!resp.ok) await fail(`${method} ${path}: ${resp.status} ${JSON.stringify(data)}`);
  return data;
}
const submit = (kind, params, priority) => api("POST", "/api/jobs", { kind, params, priority }).then((r) => r.id);
async function until(what, f) {
  const end = Date.now() + T.timeout;
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() > end) await fail(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// 1. Locked without the token; live once it is typed.
page = await (await browser.newContext()).newPage();
page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
await page.goto(`${url}/dashboard`);
await page.locator("#conn[data-state=locked]").filter({ hasText: "access token needed" }).waitFor(T);
await check(!(await page.locator("#access").isHidden()), "the token form shows");
await shot("locked");
await page.fill("#access-input", token);
await page.click("#access button");
await page.locator("#conn[data-state=connected]").waitFor(T);

// 2. Charts draw and move while jobs run: a burst of short jobs on the
// worker's one slot queues, runs and succeeds.
await page.locator('[data-chart="jobs"] canvas').waitFor(T);
const burst = [];
for (let i = 0; i < 12; i++) burst.push(await submit("noop", { delay_ms: 250, payload: i }));
const series = (chart, name) =>
  page.evaluate(([c, n]) => charts[c].columns[charts[c].names.indexOf(n) + 1].filter((v) => v !== null), [chart, name]);
await until("the queue chart shows jobs waiting", async () => (await series("queue", "normal")).some((v) => v > 0));
await until("the jobs chart shows jobs succeeding", async () => (await series("jobs", "succeeded")).some((v) => v > 0));
await until("the queue wait chart has a p95", async () => (await series("wait", "p95")).length > 0);
await until("the run time chart has a p50", async () => (await series("run", "p50")).some((v) => v >= 200));
await until("the workers chart counts the worker online", async () => (await series("workers", "online")).some((v) => v === 1));
const before = Number(await page.getAttribute('[data-chart="jobs"]', "data-points"));
await until("the charts keep moving", async () => Number(await page.getAttribute('[data-chart="jobs"]', "data-points")) > before + 1);
await page.locator('#workers-table tr[data-worker="w1"]').filter({ hasText: "noop" }).waitFor(T);
// A live configuration change shows in the worker's row: its version, and the new slots.
const { version } = await api("PUT", "/api/config", { settings: { "worker.slots": 2 }, worker: "w1" });
await page.locator('#workers-table tr[data-worker="w1"]').filter({ hasText: `v${version}` }).filter({ hasText: "/ 2" }).waitFor(T);
await api("PUT", "/api/config", { settings: { "worker.slots": null }, worker: "w1" });
await page.locator("#tiles").filter({ hasText: "workers online" }).waitFor(T);
await check(await page.locator("#autoscale").isHidden(), "no autoscaler panel when autoscaling is off");
await shot("overview");

// 3. The jobs table filters: one failed job among the succeeded ones.
const failed = await submit("ai.query", { prompt: "nobody here answers this" });
await until("the ai.query fails", async () => (await api("GET", `/api/jobs/${failed}`)).state === "failed");
await page.selectOption('#filters select[name="state"]', "failed");
await page.locator(`#jobs-table tr[data-job="${failed}"]`).waitFor(T);
await until("only failed jobs are listed", async () => {
  const states = await page.$$eval("#jobs-table tbody tr td:nth-child(3)", (tds) => tds.map((t) => t.textContent));
  return states.length === 1 && states[0] === "failed";
});
await shot("jobs-failed");
await page.selectOption('#filters select[name="state"]', "succeeded");
await until("the burst is listed as succeeded", async () =>
  (await page.locator("#jobs-table tbody tr").count()) === burst.length);
// Ids made in the same second share their head: the table shows what differs,
// the whole id on hover, and copies the whole id.
const shownIds = await page.$$eval("#jobs-table a.job-id", (as) => as.map((a) => [a.textContent, a.title]));
await check(new Set(shownIds.map(([text]) => text)).size === burst.length, `each job shown by its own id: ${shownIds}`);
await check(shownIds.every(([text, title]) => burst.includes(title) && title.endsWith(text.replace("…", ""))),
  `the whole id on hover: ${shownIds}`);
const copied = await page.evaluate(() => {
  const a = document.querySelector("#jobs-table a.job-id");
  document.getSelection().selectAllChildren(a);
  const ev = new ClipboardEvent("copy", { clipboardData: new DataTransfer(), bubbles: true, cancelable: true });
  a.dispatchEvent(ev);
  return [a.title, ev.clipboardData.getData("text/plain")];
});
await check(copied[0] === copied[1], `copying a shown id copies the whole id: ${copied}`);

// 4. A job's page: its timeline, and a retry that links the new job.
await page.selectOption('#filters select[name="state"]', "failed");
await page.click(`#jobs-table tr[data-job="${failed}"] a`);
await page.locator("#job-timeline li.state-failed").waitFor(T);
await check((await page.locator("#job-timeline li").count()) >= 2, "queued, then failed");
await check((await page.textContent("#job-timeline")).includes("no worker that runs ai.query"), "the reason is on the timeline");
await shot("job-failed");
await page.click("#job-retry");
await page.locator("#job-facts dt", { hasText: "retry of" }).waitFor(T);
const retried = await api("GET", `/api/jobs/${failed}`);
await check(retried.retried_as && page.url().endsWith(retried.retried_as), `the page shows the new job: ${page.url()}`);

// 5. Re-prioritise a waiting job, then cancel a running one, from its page.
const long = await submit("noop", { delay_ms: 600000 });
await until("the long job runs", async () => (await api("GET", `/api/jobs/${long}`)).state === "running");
const waiting = await submit("noop", {}, "low");
await page.goto(`${url}/dashboard#job=${waiting}`);
await page.locator("#conn[data-state=connected]").waitFor(T);
await page.locator("#job-facts dd", { hasText: "low" }).waitFor(T);
await page.selectOption("#job-priority", "high");
// Something moves before the click (another job): the page reads the job
// again, and a choice not applied yet must survive that.
const reread = page.waitForResponse((r) => r.url().endsWith(`/api/jobs/${waiting}/history`));
await submit("noop", {}, "low");
await reread;
await check((await page.inputValue("#job-priority")) === "high", "the chosen priority survives the job being read again");
await page.click("#job-reprioritise");
await page.locator("#job-said", { hasText: "priority set to high" }).waitFor(T);
await check((await api("GET", `/api/jobs/${waiting}`)).priority === "high", "the job is high now");
await page.locator("#job-timeline", { hasText: "priority high (was low)" }).waitFor(T);
await page.goto(`${url}/dashboard#job=${long}`);
await page.locator("#job-facts dd.state-running").waitFor(T);
await page.click("#job-cancel");
await page.locator("#job-facts dd.state-cancelled").waitFor(T);
await page.locator("#job-timeline li.state-cancelled").waitFor(T);
await shot("job-cancelled");
await until("the waiting job ran once the slot was free", async () =>
  (await api("GET", `/api/jobs/${waiting}`)).state === "succeeded");

// 6. Scheduled and waiting jobs, a group's limits, a schedule's next firing.
await api("PUT", "/api/groups/tenant-a", { max_running: 3, rate: "5/s" });
const later = (await api("POST", "/api/jobs", { kind: "noop", params: {}, run_after_ms: 3600000, group: "tenant-a" })).id;
await api("POST", "/api/jobs", { kind: "noop", params: {}, after: [later] });
await api("POST", "/api/schedules", { name: "nightly", cron: "0 3 * * *", timezone: "Europe/Madrid", job: { kind: "noop" } });
await page.goto(`${url}/dashboard`);
await page.locator("#conn[data-state=connected]").waitFor(T);
await until("the tiles count the scheduled and the waiting job", async () => {
  const tiles = await page.textContent("#tiles");
  return /1\s*scheduled/.test(tiles) && /1\s*waiting/.test(tiles);
});
await page.locator('#groups-table tr[data-group="tenant-a"]').filter({ hasText: "≤ 3 running" }).filter({ hasText: "5/s" }).waitFor(T);
const row = page.locator('#schedules-table tr[data-schedule="nightly"]');
await row.filter({ hasText: "0 3 * * *" }).filter({ hasText: "Europe/Madrid" }).waitFor(T);
await check((await row.locator("td.next").textContent()) !== "—", "the schedule shows its next firing");
await check(await page.locator("#schedules-note").isHidden(), "no 'no schedules' note under a schedule");
await shot("plans");

await browser.close();
console.log("OK");
