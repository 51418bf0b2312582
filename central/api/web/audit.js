// The audit log: who did what to which target, when, with which key, and the result.
import { api } from "./api.js";
import { DASH, dateTime, el, int, text } from "./format.js";
import { mountNav } from "./nav.js";

const $ = (id) => document.getElementById(id);
const PAGE = 100;
const state = { offset: 0, total: 0 };

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }

function detailText(e) {
  const parts = [];
  if (e.detail && Object.keys(e.detail).length) parts.push(JSON.stringify(e.detail));
  for (const a of e.answers || []) parts.push(`${a.target}: ${a.result}`);
  return parts.join(" · ") || DASH;
}

async function load() {
  const data = await api.audit({
    actor: $("f-actor").value.trim(), action: $("f-action").value.trim(), target: $("f-target").value.trim(),
    via: $("f-via").value, limit: PAGE, offset: state.offset,
  });
  state.total = data.total || 0;
  const items = data.items || [];
  $("audit-count").textContent = `· ${int(state.total)} entries`;
  $("a-prev").disabled = state.offset === 0;
  $("a-next").disabled = state.offset + items.length >= state.total;
  if (!items.length) {
    $("audit-body").replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "muted empty" }, "No entries.")));
    return;
  }
  $("audit-body").replaceChildren(...items.map((e) => {
    const refused = /^refused/.test(e.result || "");
    return el("tr", { "data-testid": "audit-row", dataset: { seq: e.seq, action: e.action } },
      el("td", { class: "num" }, int(e.seq)),
      el("td", {}, dateTime(e.at)),
      el("td", {}, text(e.actor)),
      el("td", { class: "mono" }, text(e.action)),
      el("td", { class: "mono" }, text(e.target)),
      el("td", { class: "mono" }, text(e.key_id)),
      el("td", {}, text(e.via)),
      el("td", { class: refused ? "error-text wrap" : "wrap" }, text(e.result)),
      el("td", { class: "wrap muted" }, detailText(e)));
  }));
}

async function verify() {
  const out = $("verify-result");
  out.textContent = "checking…";
  out.className = "";
  try {
    const v = await api.auditVerify();
    out.textContent = v.ok ? `whole: ${int(v.entries)} entries, head ${String(v.head || "").slice(0, 16)}…`
      : `BROKEN: ${v.problems[0]}`;
    out.className = `notice ${v.ok ? "good" : "bad"}`;
  } catch (e) {
    out.textContent = e.message;
    out.className = "notice bad";
  }
}

async function main() {
  await mountNav();
  $("audit-filters").addEventListener("submit", (ev) => { ev.preventDefault(); state.offset = 0; load().catch((e) => showError(e.message)); });
  $("a-prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); load().catch((e) => showError(e.message)); });
  $("a-next").addEventListener("click", () => { state.offset += PAGE; load().catch((e) => showError(e.message)); });
  $("verify").addEventListener("click", verify);
  await load();
}

main().catch((e) => showError(String(e.message || e)));
