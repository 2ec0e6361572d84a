// Faena's page: a chat with the cluster's AI workers, a RandomX panel, and
// the workers' live state, over Socket.IO. Event names and payloads are the
// contract in proto/src/sio.rs. Everything a person or a model wrote is put
// on the page as text (textContent), never as HTML.
"use strict";

const EV = {
  hello: "hello", ask: "ask", setKey: "set_key", clearKey: "clear_key", hash: "hash", mine: "mine", cancel: "cancel",
  job: "job", chunk: "chunk", progress: "progress", done: "done", workers: "workers",
};

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

// The token (web/access.js) goes with the handshake.
const socket = io({ transports: ["websocket", "polling"], auth: (cb) => cb({ token: faenaAccess.token() }) });
/** Chat entries by job id: { answer, meta, waiting }. */
const chat = new Map();
let session = localStorage.getItem("faena.session") || null;
let miningJob = null;


function notice(text) {
  $("notice").textContent = text || "";
}

function scrollDown() {
  const m = $("messages");
  m.scrollTop = m.scrollHeight;
}

function entry(job, question) {
  if (chat.has(job)) return chat.get(job);
  const li = el("li");
  li.style.display = "contents";
  const q = el("div", "bubble question", question);
  const waiting = el("div", "waiting dots", "queued");
  const answer = el("div", "bubble answer");
  answer.hidden = true;
  const meta = el("div", "meta");
  li.append(q, waiting, answer, meta);
  li.dataset.job = job;
  $("messages").append(li);
  const e = { answer, meta, waiting, text: "" };
  chat.set(job, e);
  scrollDown();
  return e;
}

/** Whether a registered worker runs ai.query (null until the master says). */
let aiOnline = null;

/** Why a question waits: no AI worker at all, else its place in the queue. */
function waitText(e) {
  if (aiOnline === false) return "no AI worker is online — start one with GEMINI_API_KEY=… or the local model (FAENA_LOCAL_MODEL)";
  return e.position ? `${e.position} job${e.position === 1 ? "" : "s"} ahead of yours` : "queued";
}

/** Why an answer has not started: a provider is retrying, or handing over. */
function providerText(s) {
  return s.status === "retrying"
    ? `${s.provider}: ${s.error} — trying again in ${Math.ceil(s.retry_in_ms / 1000)} s (try ${s.attempt} of ${s.tries})`
    : `${s.provider}: ${s.error} — asking ${s.next}`;
}

function setQueued(e, position) {
  e.queued = true;
  e.position = position || 0;
  e.waiting.textContent = waitText(e);
}

function describe(meta) {
  if (!meta) return "";
  if (meta.error) return "";
  const parts = [];
  if (meta.provider) {
    const tried = (meta.tried || []).map((t) => t.provider);
    parts.push(tried.length ? `${meta.provider} (after ${tried.join(", ")} failed)` : meta.provider);
  }
  if (meta.worker) parts.push(`worker ${meta.worker}`);
  if (meta.model) parts.push(meta.model);
  if (meta.timings) parts.push(`${(meta.timings.total_ms / 1000).toFixed(2)} s`);
  if (meta.attempt) parts.push(`attempt ${meta.attempt}`);
  parts.push(meta.cached ? "cached" : "not cached");
  if (meta.flagged) parts.push(`flagged: ${meta.flagged}`);
  return parts.join(" · ");
}

function finish(e, state, text, meta, error) {
  e.waiting.hidden = true;
  e.answer.hidden = false;
  if (state === "succeeded") {
    e.answer.textContent = text;
    e.meta.textContent = describe(meta);
  } else {
    e.answer.classList.add("failed");
    e.answer.textContent = state === "cancelled" ? "cancelled" : `failed: ${error || ""}`;
  }
  scrollDown();
}

function hello() {
  socket.emit(EV.hello, { session }, (ack) => {
    if (!ack || ack.error) return notice(ack ? ack.error : "no answer from the master");
    session = ack.session;
    localStorage.setItem("faena.session", session);
    $("session").textContent = session;
    $("key-state").textContent = ack.has_key ? "Your key is set for this session." : "No key of your own: the workers' keys are used.";
    $("messages").replaceChildren();
    chat.clear();
    for (const x of ack.history) {
      const e = entry(x.job, x.question);
      if (["succeeded", "failed", "cancelled"].includes(x.state)) {
        finish(e, x.state, x.answer, x.meta, x.meta && x.meta.error);
      } else if (x.answer) {
        e.text = x.answer;
        e.waiting.textContent = "writing";
        e.answer.hidden = false;
        e.answer.textContent = x.answer;
      }
    }
  });
}

faenaAccess.watch(socket, "connected");
socket.on("connect", hello);

socket.on(EV.job, (u) => {
  const e = chat.get(u.job);
  if (e) {
    if (u.state === "queued") {
      setQueued(e, u.position);
      // Back in the queue: the answer starts again, unless it goes on
      // from where it stopped (its worker was lost mid-answer).
      if (u.reason && !u.continues) {
        e.text = "";
        e.answer.textContent = "";
        e.answer.hidden = true;
      }
    } else if (u.state === "running") {
      e.queued = false;
      e.waiting.textContent = `running on ${u.worker}`;
    }
  } else if (u.job === miningJob) {
    $("mine-state").textContent = u.state === "queued" ? `queued (${u.position || 0} ahead)` : `running on ${u.worker || "workers"}`;
  }
});

socket.on(EV.chunk, (c) => {
  const e = chat.get(c.job);
  if (!e) return;
  e.text += c.text;
  e.answer.hidden = false;
  e.answer.textContent = e.text;
  e.waiting.textContent = "writing";
  scrollDown();
});

socket.on(EV.progress, (p) => {
  const e = chat.get(p.job);
  if (e) {
    if (p.data && p.data.status && !e.text) e.waiting.textContent = providerText(p.data);
    return;
  }
  if (p.job !== miningJob || !p.data) return;
  const d = p.data;
  $("mine-state").textContent = `${Math.round(d.hashrate || 0)} H/s · ${d.hashes} hashes · ${d.shares} shares · ${d.remaining} nonces left`;
  const list = $("mine-workers");
  list.replaceChildren(...(d.workers || []).map((w) => {
    const li = el("li");
    li.append(el("span", "", w.worker), el("span", "", `${Math.round(w.hashrate)} H/s · ${w.shares} shares`));
    return li;
  }));
  for (const s of d.new_shares || []) {
    $("shares").append(el("li", "", `nonce ${s.nonce} by ${s.worker}: ${s.hash}`));
  }
});

socket.on(EV.done, (d) => {
  const e = chat.get(d.job);
  if (e) {
    const meta = d.result ? Object.assign({}, d.result, { worker: d.worker, attempt: d.attempt }) : null;
    finish(e, d.state, d.result ? d.result.text : "", meta, d.error);
  } else if (d.job === miningJob) {
    miningJob = null;
    $("mine-cancel").disabled = true;
    $("mine-state").textContent = d.state === "succeeded"
      ? `done: ${d.result.hashes} hashes, ${d.result.shares.length} verified shares, ${Math.round(d.result.hashrate)} H/s`
      : d.state === "cancelled" ? "cancelled" : `failed: ${d.error}`;
  } else if (d.result && d.result.hash) {
    $("hash-out").textContent = d.result.hash;
  } else if (d.error) {
    $("hash-out").textContent = `failed: ${d.error}`;
  }
});

socket.on(EV.workers, (workers) => {
  aiOnline = workers.some((w) => w.state !== "offline" && (w.kinds || []).includes("ai.query"));
  for (const e of chat.values()) if (e.queued) e.waiting.textContent = waitText(e);
  const list = $("workers");
  if (!workers.length) return list.replaceChildren(el("li", "hint", "none registered"));
  list.replaceChildren(...workers.map((w) => {
    const li = el("li");
    li.dataset.worker = w.id;
    const what = [w.state, `${w.running}/${w.slots} busy`];
    if (w.hashrate) what.push(`${w.hashrate} H/s`);
    if ((w.ai_providers || []).length) what.push(`AI: ${w.ai_providers.join(", ")}`);
    li.append(el("span", "", w.id), el("span", "", what.join(" · ")));
    return li;
  }));
});

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  notice("");
  // Emptied now, not on the ack: the next question may be typed meanwhile.
  $("prompt").value = "";
  socket.emit(EV.ask, { prompt }, (ack) => {
    if (!ack || ack.error) {
      if (!$("prompt").value) $("prompt").value = prompt;
      return notice(ack ? ack.error : "no answer from the master");
    }
    const e = entry(ack.job, prompt);
    setQueued(e, ack.position);
  });
});
$("prompt").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("ask").requestSubmit();
  }
});

$("key").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("key-input").value;
  $("key-input").value = "";
  socket.emit(EV.setKey, { key }, (ack) => {
    $("key-state").textContent = ack && ack.ok ? "Your key is set for this session." : `Not set: ${ack ? ack.error : "no answer"}`;
  });
});
$("key-clear").addEventListener("click", () => {
  $("key-input").value = "";
  socket.emit(EV.clearKey, {}, () => {
    $("key-state").textContent = "No key of your own: the workers' keys are used.";
  });
});

$("hash").addEventListener("submit", (ev) => {
  ev.preventDefault();
  $("hash-out").textContent = "hashing…";
  socket.emit(EV.hash, { key: $("hash-key").value, input: $("hash-input").value }, (ack) => {
    if (!ack || ack.error) $("hash-out").textContent = ack ? ack.error : "no answer";
  });
});

$("mine").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const req = {
    key: $("mine-key").value.trim(),
    blob: $("mine-blob").value.trim() || "07".repeat(76),
    difficulty: Number($("mine-difficulty").value),
    nonce_start: Number($("mine-start").value),
    nonce_count: Number($("mine-count").value),
  };
  $("shares").replaceChildren();
  $("mine-workers").replaceChildren();
  socket.emit(EV.mine, req, (ack) => {
    if (!ack || ack.error) return ($("mine-state").textContent = ack ? ack.error : "no answer");
    miningJob = ack.job;
    $("mine-cancel").disabled = false;
    $("mine-state").textContent = "queued";
  });
});
$("mine-cancel").addEventListener("click", () => {
  if (miningJob) socket.emit(EV.cancel, { job: miningJob }, () => {});
});

// The mining panel: sources, participants and the verifier, from the REST
// API every two seconds (with the access token, when the master wants one).
const rate = (h) => (h >= 1e6 ? `${(h / 1e6).toFixed(2)}M` : h >= 1e3 ? `${(h / 1e3).toFixed(2)}k` : h.toFixed(1));

async function getJson(path) {
  const token = sessionStorage.getItem("faena.token");
  const resp = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

function showSources(list) {
  const ul = $("sources");
  ul.replaceChildren();
  if (!list.length) ul.append(el("li", "hint", "no source"));
  for (const s of list) {
    const li = el("li");
    li.dataset.source = s.id;
    const head = el("div");
    head.append(el("strong", null, `${s.kind} `), el("span", `state-${s.state}`, s.state));
    if (s.reason) head.append(el("span", "hint", ` — ${s.reason}`));
    const facts = [s.url];
    if (s.height !== undefined) facts.push(`height ${s.height}`);
    if (s.difficulty !== undefined) facts.push(`difficulty ${s.difficulty}`);
    facts.push(`${s.miners} Stratum miners`);
    const sh = s.shares;
    facts.push(`shares ${sh.valid} valid / ${sh.invalid} invalid / ${sh.stale} stale`);
    if (s.kind === "pool") facts.push(`upstream ${sh.upstream_accepted} accepted / ${sh.upstream_rejected} rejected`);
    li.append(head, el("div", "hint", facts.join(" · ")));
    const blocks = s.blocks.slice(-5).reverse();
    if (blocks.length) {
      const b = el("div", "blocks");
      b.textContent = blocks
        .map((x) => `#${x.height} ${x.accepted ? "✓" : "✗"} ${x.participant} ${x.hash.slice(0, 12)}…${x.reason ? ` (${x.reason})` : ""}`)
        .join("\n");
      b.style.whiteSpace = "pre-line";
      li.append(b);
    }
    ul.append(li);
  }
}

function showParticipants(list) {
  const table = $("participants");
  const body = table.querySelector("tbody");
  body.replaceChildren();
  table.hidden = !list.length;
  for (const p of list) {
    const tr = el("tr");
    tr.dataset.participant = p.name;
    const who = `${p.name} (${p.kind})`;
    const shares = `${p.shares.valid}/${p.shares.invalid}/${p.shares.stale}`;
    for (const text of [who, rate(p.hashrate["1m"]), rate(p.hashrate["10m"]), shares, String(p.blocks)]) {
      tr.append(el("td", null, text));
    }
    body.append(tr);
  }
}

async function refreshMining() {
  try {
    const [sources, participants, verifier] = await Promise.all([
      getJson("/api/mining/sources"), getJson("/api/mining/participants"), getJson("/api/mining/verifier"),
    ]);
    showSources(sources.sources);
    showParticipants(participants.participants);
    const cap = verifier.capacity ? `${verifier.capacity.toFixed(0)} shares/s measured` : "not measured yet";
    const keys = (verifier.keys || []).map((k) => {
      if (k.hashing === "fast" || k.dataset === "off") return `${k.key}…: ${k.hashing}`;
      const why = k.dataset === "building" ? `dataset building (${Math.round(k.building_secs || 0)} s)`
        : k.dataset === "failed" ? `dataset failed, retrying: ${k.error}` : "";
      return `${k.key}…: verifying in ${k.hashing === "none" ? "no mode yet" : "light mode"}, ${why}`;
    });
    const state = keys.length ? ` Keys: ${keys.join("; ")}.` : "";
    $("verifier").textContent = `Verifier: ${verifier.mode} mode, ${verifier.threads} threads, ${cap}; budget ${verifier.budget.toFixed(0)}/s for ${verifier.miners} miners, share every ${verifier.share_interval_secs.toFixed(0)} s.${state}`;
  } catch (e) {
    $("verifier").textContent = `Mining data unavailable: ${e.message}`;
  }
}
refreshMining();
setInterval(refreshMining, 2000);
