// A master started with FAENA_API_TOKEN: the real socket.io client is
// refused without the token or with a wrong one and let in with it; in a
// real browser (Debian's chromium, headless) the page says it needs the
// token, asks for it, and connects once it is typed. Run by
// testkit/tests/web.rs:
//   node web/tests/access.mjs http://127.0.0.1:<port> <token> <screenshot dir>
// Exits non-zero with the reason when a check fails.
import { io } from "socket.io-client";
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, token, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const fail = (why) => {
  console.error(`FAIL: ${why}`);
  process.exit(1);
};
const check = (ok, why) => ok || fail(why);

// Resolves with "connected" or the connect_error message; a socket that
// hears neither within 20 s fails the test with what it did hear.
const attempt = (auth) =>
  new Promise((resolve) => {
    const s = io(url, { transports: ["websocket"], reconnection: false, forceNew: true, timeout: 10000, auth });
    const heard = [];
    const timer = setTimeout(() => fail(`no connect or connect_error in 20 s (heard: ${heard.join(", ") || "nothing"})`), 20000);
    const settle = (v) => {
      clearTimeout(timer);
      resolve(v);
    };
    s.onAny((ev) => heard.push(ev));
    s.on("disconnect", (why) => heard.push(`disconnect: ${why}`));
    s.io.on("error", (e) => heard.push(`manager error: ${e.message}`));
    s.io.on("close", (why) => heard.push(`manager close: ${why}`));
    s.on("connect", () => settle(["connected", s]));
    s.on("connect_error", (e) => {
      s.close();
      settle([e.message, null]);
    });
  });

let [outcome] = await attempt(undefined);
check(outcome === "unauthorized", `no token: ${outcome}`);
[outcome] = await attempt({ token: "not-the-token" });
check(outcome === "unauthorized", `wrong token: ${outcome}`);
const [ok, s] = await attempt({ token });
check(ok === "connected", `the token: ${ok}`);
const welcome = await s.timeout(20000).emitWithAck("hello", {}).catch((e) => fail(`no answer to hello: ${e.message}`));
check(/^[0-9a-f]{32}$/.test(welcome.session || ""), `a session with the token: ${JSON.stringify(welcome)}`);
s.close();

const browser = await launch();
const page = await browser.newPage();
const T = { timeout: 30000 };
try {
  page.on("pageerror", (e) => console.error(`page error: ${e.message}`));
  await page.goto(url);
  await page.locator("#conn[data-state=locked]").filter({ hasText: "access token needed" }).waitFor(T);
  await page.locator("#access-input").waitFor({ state: "visible", ...T });
  await page.screenshot({ path: `${shots}/access-needed.png`, fullPage: true });
  // A wrong token is refused and said so; the right one connects and starts a session.
  await page.fill("#access-input", "not-the-token");
  await page.click("#access-send");
  await page.locator("#conn[data-state=locked]").filter({ hasText: "wrong access token" }).waitFor(T);
  await page.fill("#access-input", token);
  await page.click("#access-send");
  await page.locator("#conn[data-state=connected]").waitFor(T);
  await page.locator("#session").filter({ hasNotText: "—" }).waitFor(T);
  check(await page.locator("#access").isHidden(), "the token field is hidden once connected");
  await page.screenshot({ path: `${shots}/access-granted.png`, fullPage: true });
} catch (e) {
  await page.screenshot({ path: `${shots}/access-failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  fail(e.message);
}
await browser.close();
console.log("OK");
