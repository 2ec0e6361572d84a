// N dashboards' worth of /ops connections (the real socket.io client the
// page uses), for faena-bench's dashboard-cost runs:
//   node web/tests/ops-clients.mjs http://127.0.0.1:<port> <N> [token]
// Prints READY once every connection has had its first snapshot; on SIGTERM
// (or stdin closing) prints how many snapshots all of them received, and
// exits. Exits non-zero if they do not all connect within 60 s.
import { io } from "socket.io-client";

const [url, n, token] = process.argv.slice(2);
const count = Number(n);
let snapshots = 0;
let ready = 0;
const sockets = [];
const timer = setTimeout(() => {
  console.error(`only ${ready} of ${count} dashboards got a snapshot in 60 s`);
  process.exit(1);
}, 60000);
for (let i = 0; i < count; i++) {
  const s = io(`${url}/ops`, { transports: ["websocket"], forceNew: true, auth: { token: token || "" } });
  let first = true;
  s.on("snapshot", () => {
    snapshots += 1;
    if (first) {
      first = false;
      ready += 1;
      if (ready === count) {
        clearTimeout(timer);
        console.log("READY");
      }
    }
  });
  sockets.push(s);
}
const done = () => {
  console.log(`snapshots ${snapshots}`);
  sockets.forEach((s) => s.close());
  process.exit(0);
};
process.on("SIGTERM", done);
process.stdin.on("end", done);
process.stdin.resume();
