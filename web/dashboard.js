// Faena's operations dashboard: live charts and the workers from the
// master's `/ops` Socket.IO feed (one snapshot a second), jobs found and
// acted on through the REST API. Everything from the cluster is put on the
// page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
};
const token = () => faenaAccess.token();

// ---- the feed ----------------------------------------------------------

const socket = io("/ops", { transports: ["websocket", "polling"], auth: (cb) => cb({ token: token() }) });
faenaAccess.watch(socket, "live", () => loadJobs());

const chart = (name, series, opts) => new LiveChart(document.querySelector(`[data-chart="${name}"]`), series, opts);
const charts = {
  jobs: chart("jobs", ["succeeded", "failed", "cancelled"]),
  queue: chart("queue", ["high", "normal", "low"]),
  wait: chart("wait", ["p50", "p95", "p99"]),
  run: chart("run", ["p50", "p95", "p99"]),
  workers: chart("workers", ["online", "draining", "offline", "quarantined"]),
  hashrate: chart("hashrate", ["total"], { dynamic: true }),
  shares: chart("shares", ["verified", "invalid"]),
  ai: chart("ai", ["tokens/s", "errors/s"]),
  redeliveries: chart("redeliveries", ["redeliveries/s"]),
};
let last = null;
const sum = (o) => Object.values(o || {}).reduce((a, b) => a + b, 0);
const ms = (p, k) => (p ? p[k] * 1000 : null);

socket.on("snapshot", (s) => {
  const t = s.at / 1000;
  const dt = last ? t - last.at / 1000 : 0;
  const before = last ? last.totals : {};
  const r = (now, then) => rate(now, then, dt);
  const jobs = s.totals.jobs;
  charts.jobs.push(t, Object.fromEntries(["succeeded", "failed", "cancelled"].map((k) => [k, r(jobs[k], before.jobs?.[k])])));
  charts.queue.push(t, { high: s.load.depth[0], normal: s.load.depth[1], low: s.load.depth[2] });
  charts.wait.push(t, { p50: ms(s.wait, "p50"), p95: ms(s.wait, "p95"), p99: ms(s.wait, "p99") });
  charts.run.push(t, { p50: ms(s.run, "p50"), p95: ms(s.run, "p95"), p99: ms(s.run, "p99") });
  const byState = { online: 0, draining: 0, offline: 0, quarantined: 0 };
  s.workers.forEach((w) => { byState[w.state] = (byState[w.state] || 0) + 1; });
  charts.workers.push(t, byState);
  const rates = { total: s.workers.reduce((a, w) => a + w.hashrate, 0) };
  s.workers.filter((w) => w.kinds.includes("randomx.mine")).forEach((w) => { rates[w.id] = w.hashrate; });
  charts.hashrate.push(t, rates);
  charts.shares.push(t, {
    verified: r(s.totals.shares.valid, before.shares?.valid),
    invalid: r(s.totals.shares.invalid, before.shares?.invalid),
  });
  charts.ai.push(t, {
    "tokens/s": r(sum(s.totals.ai_tokens), last && sum(before.ai_tokens)),
    "errors/s": r(sum(s.totals.ai_errors), last && sum(before.ai_errors)),
  });
  charts.redeliveries.push(t, { "redeliveries/s": r(s.totals.redeliveries, before.redeliveries) });
  tiles(s, byState);
  workersTable(s.workers);
  groupsTable(s.groups || []);
  schedulesTable(s.schedules || []);
  autoscale(s.autoscale);
  $("updated").textContent = `updated ${new Date(s.at).toLocaleTimeString()}`;
  const changed = !last || JSON.stringify(jobs) !== JSON.stringify(before.jobs);
  last = s;
  if (changed) somethingHappened();
});

function tiles(s, byState) {
  const items = [
    [s.load.queued, "queued"], [s.load.running, "running"], [s.load.scheduled ?? 0, "scheduled"],
    [s.load.waiting ?? 0, "waiting"], [byState.online, "workers online"],
    [s.totals.jobs.succeeded, "succeeded"], [s.totals.jobs.failed, "failed"],
    [s.wait ? `${(s.wait.p95 * 1000).toFixed(1)} ms` : "—", "queue wait p95"],
    [`${Math.round(s.workers.reduce((a, w) => a + w.hashrate, 0))} H/s`, "hashrate"],
    [s.totals.shares.invalid, "invalid shares"],
  ];
  $("tiles").replaceChildren(...items.map(([v, label]) => {
    const d = el("div", "tile");
    d.append(el("b", null, v), el("span", null, label));
    return d;
  }));
}

// The live configuration version a worker runs, and what it refused (why, on hover).
function configCell(config) {
  if (!config) return el("td", null, "—");
  const refused = config.refused ?? [];
  const td = el("td", refused.length ? "mono refused" : "mono",
    `v${config.version}${refused.length ? ` · ${refused.length} refused` : ""}`);
  td.title = refused.map((r) => `${r.key}: ${r.reason}`).join("\n");
  return td;
}

function workersTable(workers) {
  const rows = workers.map((w) => {
    const tr = el("tr");
    tr.dataset.worker = w.id;
    const machine = `${w.cores} cores · ${(w.memory_bytes / 2 ** 30).toFixed(1)} GiB${w.aes_ni ? " · AES-NI" : ""}` +
      `${w.huge_pages ? " · huge pages" : ""}${w.randomx_modes.length ? ` · ${w.randomx_modes.join("/")}` : ""}`;
    const ai = w.ai_providers.length ? `${w.ai_providers.join(", ")} (${w.ai_slots} slots)` : "—";
    tr.append(el("td", "mono", w.id), el("td", `state-${w.state}`, w.state), el("td", null, `${w.running} / ${w.slots}`),
      el("td", null, w.kinds.join(", ")), el("td", null, w.hashrate ? `${Math.round(w.hashrate)} H/s` : "—"),
      el("td", null, ai), el("td", null, machine), el("td", "mono", w.version), configCell(w.config),
      el("td", null, `${(w.last_seen_ms / 1000).toFixed(1)} s ago`));
    return tr;
  });
  $("workers-table").tBodies[0].replaceChildren(...rows);
  offerKinds(workers.flatMap((w) => w.kinds));
}

function groupsTable(groups) {
  const limits = (g) => [g.max_running && `≤ ${g.max_running} running`, g.rate && `${g.rate}`,
    g.weight && g.weight !== 1 && `weight ${g.weight}`].filter(Boolean).join(" · ") || "—";
  $("groups-table").tBodies[0].replaceChildren(...groups.map((g) => {
    const tr = el("tr");
    tr.dataset.group = g.name;
    tr.append(el("td", "mono", g.name), el("td", null, g.jobs), el("td", null, g.queued), el("td", null, g.running),
      el("td", null, limits(g)), el("td", g.held ? "state-draining" : null, g.held ? "held" : "—"));
    return tr;
  }));
  $("groups-note").hidden = groups.length > 0;
}

function schedulesTable(schedules) {
  const when = (t) => (t ? new Date(t).toLocaleString() : "—");
  $("schedules-table").tBodies[0].replaceChildren(...schedules.map((s) => {
    const tr = el("tr");
    tr.dataset.schedule = s.name;
    tr.append(el("td", "mono", s.name), el("td", "mono", s.cron), el("td", null, s.timezone || "UTC"),
      el("td", null, s.job.kind), el("td", "next", when(s.next_run_at)), el("td", null, when(s.last_fired_at)),
      el("td", null, s.overlap));
    return tr;
  }));
  $("schedules-note").hidden = schedules.length > 0;
}

// Custom kinds (x.<name>) join the jobs filter as workers offer them.
function offerKinds(kinds) {
  const select = $("filters").elements.kind;
  const known = new Set([...select.options].map((o) => o.value));
  [...new Set(kinds)].filter((k) => !known.has(k)).sort().forEach((k) => select.append(new Option(k, k)));
}

function autoscale(a) {
  $("autoscale").hidden = !a;
  if (!a) return;
  $("autoscale-state").textContent =
    `${a.service}: ${a.replicas} replicas (min ${a.min}, max ${a.max}) · ${a.scaled_up} up, ${a.scaled_down} down` +
    (a.error ? ` · ${a.error}` : "") +
    (a.quiet ? ` · no report for ${Math.round(a.reported_ms_ago / 1000)} s: is faena-autoscaler running?` : "");
  $("autoscale-decisions").replaceChildren(...a.decisions.slice().reverse().map((d) =>
    el("li", null, `${new Date(d.at).toLocaleTimeString()} ${d.from} → ${d.to}: ${d.reason}`)));
}

// ---- REST --------------------------------------------------------------

async function api(method, path, body) {
  const headers = { Authorization: token() ? `Bearer ${token()}` : undefined };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  Object.keys(headers).forEach((k) => headers[k] === undefined && delete headers[k]);
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(data.error ? `${data.error.code}: ${data.error.message}` : `HTTP ${resp.status}`);
  return data;
}
const when = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

// The jobs table: the filters are the query, "More" follows next_cursor.
let cursor = null;
let paged = false; // "More" was followed: the table is not refreshed under the reader
let lastJobsLoad = 0;
function query() {
  const f = new FormData($("filters"));
  const q = new URLSearchParams();
  for (const [k, v] of f.entries()) {
    if (!v) continue;
    q.set(k, k === "since" ? String(new Date(v).getTime()) : v);
  }
  return q;
}
async function loadJobs(more = false) {
  const q = query();
  if (more && cursor) q.set("cursor", cursor);
  paged = more;
  lastJobsLoad = Date.now();
  try {
    const page = await api("GET", `/api/jobs?${q}`);
    const rows = page.jobs.map((j) => {
      const tr = el("tr");
      tr.dataset.job = j.id;
      const link = el("a", "job-id", shortId(j.id));
      link.href = `#job=${j.id}`;
      link.title = j.id;
      const id = el("td", "mono");
      id.append(link);
      tr.append(id, el("td", null, j.kind), el("td", `state-${j.state}`, j.state), el("td", null, j.priority),
        el("td", "mono", j.worker || "—"), el("td", null, j.attempts), el("td", null, when(j.created_at)),
        el("td", null, when(j.finished_at)));
      return tr;
    });
    const body = $("jobs-table").tBodies[0];
    if (more) body.append(...rows); else body.replaceChildren(...rows);
    cursor = page.next_cursor;
    $("jobs-more").hidden = !cursor;
    $("jobs-note").textContent = body.rows.length ? "" : "no job matches";
  } catch (e) {
    $("jobs-note").textContent = e.message;
  }
}
// UUIDv7 ids made in the same few minutes share their head (the time): the
// table shows the random tail, the whole id on hover, and copying a shown id
// copies the whole one, as the CLI prints it.
function shortId(id) {
  return `…${id.slice(-8)}`;
}
$("jobs-table").addEventListener("copy", (ev) => {
  const sel = document.getSelection();
  const link = (node) => node && (node.nodeType === Node.ELEMENT_NODE ? node : node.parentElement)?.closest("a.job-id");
  const a = link(sel?.anchorNode);
  if (!a || a !== link(sel.focusNode)) return;
  ev.clipboardData.setData("text/plain", a.title);
  ev.preventDefault();
});
$("filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadJobs(); });
$("filters").addEventListener("change", () => loadJobs());
$("jobs-more").addEventListener("click", () => loadJobs(true));

// ---- one job -----------------------------------------------------------

let shown = null;
// The job and priority last put in the priority select: a choice made
// there and not applied yet survives the job being read again (it is,
// whenever anything moves).
let priorityShown = null;
function route() {
  const m = location.hash.match(/^#job=([0-9a-f-]{36})$/);
  shown = m ? m[1] : null;
  $("job").hidden = !shown;
  if (shown) {
    $("job-said").textContent = "";
    loadJob().then(() => $("job").scrollIntoView());
  }
}
window.addEventListener("hashchange", route);

async function loadJob() {
  const id = shown;
  if (!id) return;
  let job, history;
  try {
    [job, history] = await Promise.all([api("GET", `/api/jobs/${id}`), api("GET", `/api/jobs/${id}/history`)]);
  } catch (e) {
    $("job-said").textContent = e.message;
    return;
  }
  if (id !== shown) return;
  $("job-id").textContent = id;
  const facts = [["kind", job.kind], ["state", job.state], ["priority", job.priority], ["worker", job.worker],
    ["attempts", job.attempts], ["queue position", job.position], ["waiting", job.waiting], ["error", job.error],
    ["submitted", when(job.created_at)], ["finished", job.finished_at && when(job.finished_at)]];
  const dl = $("job-facts");
  dl.replaceChildren();
  facts.filter(([, v]) => v !== undefined && v !== null).forEach(([k, v]) => {
    dl.append(el("dt", null, k), el("dd", k === "state" ? `state-${v}` : null, v));
  });
  for (const [k, target] of [["retry of", job.retry_of], ["retried as", job.retried_as], ["mining job", job.parent]]) {
    if (!target) continue;
    const a = el("a", "mono", target);
    a.href = `#job=${target}`;
    const dd = el("dd");
    dd.append(a);
    dl.append(el("dt", null, k), dd);
  }
  const active = job.state === "queued" || job.state === "running";
  $("job-cancel").disabled = !active;
  $("job-retry").disabled = !(job.state === "failed" || job.state === "cancelled") || !!job.retried_as || !!job.parent;
  $("job-reprioritise").disabled = !active;
  const chosen = priorityShown && priorityShown.id === id && $("job-priority").value !== priorityShown.priority;
  if (!chosen) $("job-priority").value = job.priority;
  priorityShown = { id, priority: job.priority };
  timeline(history.transitions, job);
  $("job-result").hidden = job.result === undefined;
  $("job-result").textContent = job.result === undefined ? "" : JSON.stringify(job.result, null, 2);
}

function timeline(transitions, job) {
  const t0 = transitions.length ? transitions[0].at_ms : 0;
  $("job-timeline").replaceChildren(...transitions.map((tr) => {
    const li = el("li", `state-${tr.state}`);
    li.append(el("time", null, `+${((tr.at_ms - t0) / 1000).toFixed(3)} s`), el("b", null, tr.state));
    const more = [tr.attempt ? `attempt ${tr.attempt}` : "", tr.worker ? `on ${tr.worker}` : "", tr.detail || ""]
      .filter(Boolean).join(" · ");
    if (more) li.append(document.createTextNode(` — ${more}`));
    return li;
  }));
  // The bar: time spent queued and running, to the end (or to now).
  const end = job.finished_at ? new Date(job.finished_at).getTime() : Date.now();
  const total = Math.max(1, end - t0);
  const spans = transitions.map((tr, i) => {
    const until = i + 1 < transitions.length ? transitions[i + 1].at_ms : end;
    const s = el("span", tr.state === "running" ? "running" : tr.state === "queued" ? "queued" : "");
    s.style.width = `${(100 * Math.max(0, until - tr.at_ms)) / total}%`;
    s.title = `${tr.state} ${((until - tr.at_ms) / 1000).toFixed(3)} s`;
    return s;
  });
  $("job-bar").replaceChildren(...spans);
}

async function act(what, method, path, body) {
  try {
    const out = await api(method, path, body);
    $("job-said").textContent = what;
    if (out.id && out.id !== shown && out.retry_of) location.hash = `#job=${out.id}`;
    else await loadJob();
    loadJobs();
  } catch (e) {
    $("job-said").textContent = e.message;
  }
}
$("job-cancel").addEventListener("click", () => act("cancelled", "DELETE", `/api/jobs/${shown}`));
$("job-retry").addEventListener("click", () => act("retried", "POST", `/api/jobs/${shown}/retry`, {}));
$("job-reprioritise").addEventListener("click", () =>
  act(`priority set to ${$("job-priority").value}`, "PATCH", `/api/jobs/${shown}`, { priority: $("job-priority").value }));

// Jobs moved: the table's first page and the job shown are read again (at
// most every two seconds; the snapshot says when anything moved).
function somethingHappened() {
  if (Date.now() - lastJobsLoad > 2000 && !paged) loadJobs();
  if (shown) loadJob();
}

loadJobs();
route();
