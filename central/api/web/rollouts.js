// Rollouts in waves: the list with a progress bar per rollout (a mark per wave), pause, resume
// and abort by role, and a start form that prepares the plan in central, signs every document
// in this page with the operator's key (sign.js) and submits the signatures.
// Central runs the rollout; this page only asks and shows (docs/rollouts.md).
import { api } from "./api.js";
import { dateTime, el } from "./format.js";
import { atLeast, mountNav } from "./nav.js";
import { canon, fromB64, loadKey, showKey, signingAvailable } from "./sign.js";

const $ = (id) => document.getElementById(id);
const ACTIVE = new Set(["running", "paused"]);
const POLL_MS = 2000;
const state = { me: null, key: null, prepared: null, plan: null, timer: null, trusted: [] };

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }
function result(msg, good) {
  const r = $("result");
  r.textContent = msg;
  r.className = `notice ${good ? "good" : "bad"}`;
  r.hidden = !msg;
}

// -- the list ---------------------------------------------------------------------------------

function bar(r) {
  const pct = Math.round(r.progress * 100);
  const marks = r.waves.map((p, i) => el("span", {
    class: "ro-mark", style: `left: calc(${p}% - 1px)`, title: `wave ${i + 1}: ${p}%`,
  }));
  return el("div", {
    class: "ro-bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100,
    "aria-valuenow": pct, "aria-label": `${r.id}: ${pct}% of the group`,
    "data-testid": "ro-progress", "data-status": r.status,
  }, el("span", { class: "ro-fill", style: `width: ${pct}%` }), ...marks);
}

function waveText(r) {
  // An agent upgrade (docs/upgrades.md, "Waves"): its release, commands sent, what it waits for.
  const up = r.kind === "upgrade"
    ? ` · agent ${r.release} · ${r.commands_sent}/${r.commands} commands` +
      (r.note && r.status === "running" ? ` · ${r.note}` : "")
    : "";
  if (r.wave < 0) return "waiting for wave 1" + up;
  return `wave ${r.wave + 1} of ${r.waves.length} (${r.waves[r.wave]}%)` + up;
}

function gate(r) {
  const g = r.gate;
  if (!g) return el("span", { class: "muted" }, "–");
  const lines = [...g.failed, ...g.health];
  // A gate that passed while the rollout goes on was the previous wave's (the runner
  // publishes the next wave in the same step).
  const wave = g.wave ?? r.wave + (g.verdict === "passed" && r.status !== "completed" ? 0 : 1);
  const text = r.kind === "upgrade"
    ? `wave ${wave}: ${g.applied}/${g.size} upgraded, ${g.failures} failed` +
      (g.failure_pct != null ? ` (${g.failure_pct}% of ${g.answered} that answered)` : "")
    : `wave ${wave}: ${g.applied}/${g.size} applied, ${g.failures} failed`;
  return el("div", { class: "ro-gate", "data-testid": "ro-gate" },
    `${text} · ${g.verdict}`,
    lines.length ? el("ul", {}, ...lines.slice(0, 5).map((t) => el("li", {}, t))) : null);
}

function buttons(r) {
  if (!atLeast(state.me.role, "operator") || !ACTIVE.has(r.status)) return [];
  const ask = (action, label, cls) => {
    const b = el("button", { type: "button", class: `btn ${cls}`, "data-testid": `ro-${action}` }, label);
    b.addEventListener("click", () => request(r.id, action, b));
    return b;
  };
  return [
    r.status === "running" ? ask("pause", "Pause", "") : ask("resume", "Resume", ""),
    ask("abort", "Abort", "danger"),
  ];
}

function row(r) {
  const reason = r.reason ? el("div", { class: "ro-reason", "data-testid": "ro-reason" }, r.reason) : null;
  return el("tr", { "data-testid": `rollout-${r.id}`, "data-status": r.status },
    el("td", {}, el("strong", {}, r.id)),
    el("td", {}, r.group),
    el("td", {}, el("span", { class: `badge ro-${r.status}`, "data-testid": "ro-status" }, r.status)),
    el("td", {}, bar(r), el("div", { class: "muted", "data-testid": "ro-wave" },
      `${Math.round(r.progress * 100)}% · ${waveText(r)}`), reason),
    el("td", {}, gate(r)),
    el("td", {}, dateTime(r.created), el("div", { class: "muted" }, `by ${r.created_by}`)),
    el("td", { class: "ro-actions" }, ...buttons(r)));
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const { items } = await api.rollouts();
    $("rollouts-body").replaceChildren(...(items.length ? items.map(row)
      : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "No rollouts yet."))]));
    const active = items.filter((r) => ACTIVE.has(r.status)).length;
    $("list-note").textContent = active ? `· ${active} under way, refreshing every ${POLL_MS / 1000} s` : "";
    showError("");
    state.timer = setTimeout(refresh, active ? POLL_MS : POLL_MS * 8);
  } catch (e) {
    showError(`Cannot list the rollouts: ${e.message}`);
    state.timer = setTimeout(refresh, POLL_MS * 5);
  }
}

async function request(id, action, button) {
  button.disabled = true;
  if (action === "abort" && !window.confirm(`Abort rollout ${id}? Central puts the old config back on every gateway.`)) {
    button.disabled = false;
    return;
  }
  try {
    await api.rolloutAsk(id, action);
    $("list-note").textContent = `· ${action} of ${id} requested`;
  } catch (e) {
    showError(`${action} refused: ${e.message}`);
  }
  refresh();
}

// -- the start form ---------------------------------------------------------------------------

const keyState = () => showKey(state);

// Every document's bytes must be "titik-sig-v1\n<topic>\n<its JSON>", and every wave must carry
// the config typed here: check before anything is signed (central cannot slip in another).
function checkDocs(p, config) {
  const head = `titik-sig-v1\n${p.topic}\n`;
  for (const [i, d] of p.documents.entries()) {
    const text = new TextDecoder().decode(fromB64(d.signed_bytes_b64));
    if (!text.startsWith(head)) return `${d.name}: the bytes are not for ${p.topic}`;
    let body;
    try { body = JSON.parse(text.slice(head.length)); } catch { return `${d.name}: the bytes do not parse`; }
    if (canon(body) !== canon(d.payload)) return `${d.name}: the bytes are not the document shown`;
    if (i < p.documents.length - 1 && canon(d.payload.config) !== canon(config)) return `${d.name}: not the config typed here`;
  }
  return null;
}

function review(p, config) {
  const bad = checkDocs(p, config);
  state.prepared = bad ? null : p;
  $("review-summary").textContent = bad ? `Do not sign: ${bad}` : p.summary;
  $("review-summary").className = bad ? "notice bad" : "notice";
  const sizes = [...p.waves.map((w) => w.size), null];
  $("review-docs").replaceChildren(...p.documents.map((d, i) => el("tr", {},
    el("td", {}, d.name), el("td", { class: "num" }, d.payload.version),
    el("td", { class: "num" }, sizes[i] ?? "all, on a halt or abort"),
    el("td", {}, el("details", {}, el("summary", {}, "show"),
      el("code", {}, new TextDecoder().decode(fromB64(d.signed_bytes_b64))))))));
  $("expires").textContent = `sign before ${dateTime(p.expires_at)}`;
  $("review").hidden = false;
  keyState();
}

function discard() {
  state.prepared = null;
  $("review").hidden = true;
  keyState();
}

function planFrom() {
  const config = JSON.parse($("config").value);
  const group = $("group").value.trim();
  const stamp = new Date().toISOString().replace(/[-:]/g, "").slice(0, 15);
  const maxText = $("maxfail").value.trim() || "0";
  return {
    id: $("rid").value.trim() || `${group}-${stamp}`,
    group,
    config,
    waves: $("waves").value.split(",").map((w) => Number(w.trim().replace(/%$/, ""))),
    soak_s: Number($("soak").value),
    max_failures: maxText.endsWith("%") ? maxText : Number(maxText),
  };
}

async function prepare(ev) {
  ev.preventDefault();
  result("", true);
  let plan;
  try { plan = planFrom(); } catch (e) { result(`The config is not JSON: ${e.message}`, false); return; }
  try {
    const p = await api.rolloutPrepare(plan);
    state.plan = plan;
    review(p, plan.config);
  } catch (e) {
    discard();
    result(`Refused before signing: ${e.message}`, false);
  }
}

async function signAndStart() {
  const p = state.prepared;
  if (!p || !state.key) return;
  $("sign").disabled = true;
  try {
    const sigs = [];
    for (const d of p.documents) {
      sigs.push({ alg: "ed25519", kid: state.key.kid, value: await state.key.sign(fromB64(d.signed_bytes_b64)) });
    }
    const r = await api.rolloutSubmit(p.prepare_id, sigs);
    discard();
    result(`Started: rollout ${r.id} on group ${r.group}; central publishes its first wave within seconds.`, true);
    refresh();
  } catch (e) {
    result(`Not started: ${e.message}`, false);
    keyState();
  }
}

async function main() {
  state.me = await mountNav();
  await refresh();
  if (atLeast(state.me.role, "operator")) {
    $("start-card").hidden = false;
    if (!signingAvailable()) showError("Signing needs a secure page: open the console over HTTPS (or on localhost).");
    api.signing().then((s) => { state.trusted = s.key_ids || []; keyState(); }, () => {});
    $("key-file").addEventListener("change", async () => {
      const file = $("key-file").files[0];
      $("key-file").value = "";
      if (!file) return;
      try { state.key = await loadKey(await file.text()); result("", true); }
      catch (e) { state.key = null; result(`Cannot use that key: ${e.message}`, false); }
      keyState();
    });
    $("key-forget").addEventListener("click", () => { state.key = null; keyState(); });
    $("plan").addEventListener("submit", prepare);
    $("sign").addEventListener("click", signAndStart);
    $("discard").addEventListener("click", discard);
    keyState();
  }
  document.body.dataset.ready = "1";
}

main().catch((e) => showError(String(e.message || e)));
