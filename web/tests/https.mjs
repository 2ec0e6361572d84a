// The page and its Socket.IO over HTTPS/WSS, in chromium (headless), against
// a master serving its web port with a certificate from the cluster CA
// (FAENA_WEB_TLS). Run by testkit/tests/tls.rs:
//   node web/tests/https.mjs https://127.0.0.1:<port> <token> <spki sha256, base64> <screenshot dir>
// Chromium trusts the master's certificate only through its key's pin
// (--ignore-certificate-errors-spki-list); without it the page is refused.
import { launch } from "./chromium.mjs";
import { mkdirSync } from "node:fs";

const [url, token, spki, shots] = process.argv.slice(2);
mkdirSync(shots, { recursive: true });
const T = { timeout: 30000 };

// 1. A browser that does not trust the certificate gets no page.
const stranger = await launch();
const refused = await (await stranger.newPage()).goto(`${url}/dashboard`).then(() => null, (e) => e.message);
await stranger.close();
if (!refused || !/ERR_CERT/.test(refused)) {
  console.error(`FAIL: an untrusted certificate was accepted: ${refused}`);
  process.exit(1);
}

// 2. One that trusts it: the dashboard over https, its socket over wss.
const browser = await launch([`--ignore-certificate-errors-spki-list=${spki}`]);
const page = await browser.newPage();
const fail = async (why) => {
  console.error(`FAIL: ${why}`);
  await page.screenshot({ path: `${shots}/https-failure.png`, fullPage: true }).catch(() => {});
  await browser.close();
  process.exit(1);
};
const sockets = [];
page.on("console", (m) => console.error(`console: ${m.text()}`));
page.on("requestfailed", (r) => console.error(`failed: ${r.url()} ${r.failure() && r.failure().errorText}`));
page.on("websocket", (ws) => sockets.push(ws.url()));
const resp = await page.goto(`${url}/dashboard`);
if (!resp || resp.status() !== 200 || !resp.url().startsWith("https://")) await fail(`the page: ${resp && resp.status()}`);
await page.locator("#conn[data-state=locked]").waitFor(T);
await page.fill("#access-input", token);
await page.click("#access button");
await page.locator("#conn[data-state=connected]").waitFor(T);
const end = Date.now() + 30000;
while (!sockets.some((u) => u.startsWith("wss://")) && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
if (!sockets.some((u) => u.startsWith("wss://"))) await fail(`no wss:// socket: ${sockets}`);
if (sockets.some((u) => u.startsWith("ws://"))) await fail(`a plain ws:// socket: ${sockets}`);
// The REST API from the page, over the same TLS.
const status = await page.evaluate(
  (t) => fetch("/api/workers", { headers: { Authorization: `Bearer ${t}` } }).then((r) => r.status),
  token,
);
if (status !== 200) await fail(`GET /api/workers from the page: ${status}`);
await page.screenshot({ path: `${shots}/https-dashboard.png` });
await browser.close();
console.log("OK");
