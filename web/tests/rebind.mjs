// DNS rebinding, in a real browser (Debian's chromium, headless): the
// names rebind.example and faena.test resolve to the master's loopback
// address, as an attacker's name does once it has rebound. Run by
// testkit/tests/web.rs:
//   node web/tests/rebind.mjs http://127.0.0.1:<port>
// A page at rebind.example is same-origin with itself, so the browser sends
// its script's POST; the master refuses it for the host name. faena.test is
// in FAENA_ALLOWED_HOSTS and works, as does the page by its address.
// Exits non-zero with the reason when a check fails.
import { launch } from "./chromium.mjs";

const [url] = process.argv.slice(2);
const port = new URL(url).port;
const browser = await launch(["--host-resolver-rules=MAP rebind.example 127.0.0.1, MAP faena.test 127.0.0.1"]);
const page = await (await browser.newContext()).newPage();
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await browser.close();
  process.exit(1);
};
const check = async (ok, why) => ok || (await fail(why));
const post = () =>
  page.evaluate(async () => {
    const r = await fetch("/api/jobs", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ kind: "noop", params: { payload: "rebound" } }),
    });
    return { status: r.status, body: await r.text() };
  });

const rebound = await page.goto(`http://rebind.example:${port}/`);
await check(rebound.status() === 403, `the page under a rebound name is refused (got ${rebound.status()})`);
const attack = await post();
await check(attack.status === 403 && attack.body.includes("forbidden_host"), `the rebound page's POST: ${JSON.stringify(attack)}`);

const listed = await page.goto(`http://faena.test:${port}/`);
await check(listed.status() === 200, `a name in FAENA_ALLOWED_HOSTS is served (got ${listed.status()})`);
const own = await post();
await check(own.status === 202, `the listed name's own page may submit: ${JSON.stringify(own)}`);

const direct = await page.goto(url);
await check(direct.status() === 200, `the page by its address (got ${direct.status()})`);
await browser.close();
console.log("OK");
