// Alerts with their operator state; operators acknowledge or snooze them
// (POST /api/alerts/{id}/ack | /snooze, audited by central).
import { api } from "./api.js";
import { DASH, ago, dateTime, el, int, text } from "./format.js";
import { atLeast, mountNav } from "./nav.js";

const $ = (id) => document.getElementById(id);
const SNOOZE = [[15, "15 min"], [60, "1 h"], [240, "4 h"], [1440, "1 day"], [10080, "1 week"]];
let me = null;

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }
function result(msg, good = true) {
  const r = $("a-result");
  r.textContent = msg;
  r.className = msg ? `notice ${good ? "good" : "bad"}` : "";
}

function stateText(a) {
  const parts = [];
  if (a.until) parts.push(`closed ${ago(a.until)}`);
  if (a.acked_by) parts.push(`acknowledged by ${a.acked_by} ${ago(a.acked_at)}`);
  if (a.snoozed_until && a.snoozed_until * 1000 > Date.now()) parts.push(`snoozed until ${dateTime(a.snoozed_until)} by ${text(a.snoozed_by)}`);
  if (a.note) parts.push(`“${a.note}”`);
  return parts.length ? parts.join(" · ") : "new";
}

function actions(a) {
  if (a.until || !atLeast(me.role, "operator")) return el("td", { class: "muted" }, DASH);
  const note = el("input", { type: "text", placeholder: "note (optional)", maxlength: 500, "aria-label": `Note on ${a.id}`, "data-testid": "alert-note", size: 14 });
  const minutes = el("select", { "aria-label": `Snooze ${a.id} for`, "data-testid": "alert-snooze-minutes" },
    ...SNOOZE.map(([m, label]) => el("option", { value: m }, label)));
  minutes.value = "60";
  const ack = el("button", { type: "button", class: "btn", "data-testid": "alert-ack" }, "Acknowledge");
  const snooze = el("button", { type: "button", class: "btn", "data-testid": "alert-snooze" }, "Snooze");
  const run = async (button, call, done) => {
    button.disabled = true;
    try {
      await call();
      result(done);
      await load();
    } catch (e) {
      result(e.message, false);
    } finally {
      button.disabled = false;
    }
  };
  ack.addEventListener("click", () => run(ack, () => api.ack(a.id, note.value.trim()), `Acknowledged ${a.kind} on ${a.device}.`));
  snooze.addEventListener("click", () => run(snooze, () => api.snooze(a.id, Number(minutes.value), note.value.trim()),
    `Snoozed ${a.kind} on ${a.device} for ${minutes.selectedOptions[0].textContent}.`));
  return el("td", { class: "act" }, note, " ", ack, " ", minutes, " ", snooze);
}

async function load() {
  const open = $("a-open").value;
  const data = await api.alerts(open === "" ? null : open === "true");
  const items = [...(data.items || [])].sort((x, y) => y.since - x.since);
  $("alerts-count").textContent = `· ${int(items.length)}`;
  if (!items.length) {
    $("alerts-body").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted empty" }, "No alerts.")));
    return;
  }
  $("alerts-body").replaceChildren(...items.map((a) => el("tr", { "data-testid": "alert-row", dataset: { id: a.id } },
    el("td", {}, el("span", { class: "badge kind" }, text(a.kind))),
    el("td", {}, el("a", { class: "mono", href: `/history?device=${encodeURIComponent(a.device)}` }, text(a.device))),
    el("td", { title: dateTime(a.since) }, ago(a.since)),
    el("td", { class: "wrap" }, text(a.detail)),
    el("td", { class: "wrap", "data-testid": "alert-state" }, stateText(a)),
    actions(a))));
}

async function main() {
  me = await mountNav();
  if (!atLeast(me.role, "operator")) $("a-role").textContent = `As a ${me.role} you can look; acknowledging and snoozing need the operator role.`;
  $("a-open").addEventListener("change", () => load().catch((e) => showError(e.message)));
  await load();
  setInterval(() => load().then(() => showError(""), (e) => showError(`Update failed: ${e.message}`)), 30_000);
}

main().catch((e) => showError(String(e.message || e)));
