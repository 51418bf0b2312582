// Alerts with their state and history, incidents, maintenance windows. Operators acknowledge,
// snooze or reopen alerts (POST /api/alerts/{id}/ack | /snooze | /reopen) and add or end
// maintenance windows (POST/DELETE /api/maintenance); central audits each.
import { api } from "./api.js";
import { DASH, ago, dateTime, el, int, text } from "./format.js";
import { atLeast, mountNav } from "./nav.js";

const $ = (id) => document.getElementById(id);
const SNOOZE = [[15, "15 min"], [60, "1 h"], [240, "4 h"], [1440, "1 day"], [10080, "1 week"]];
const EVENT = { raised: "raised", acked: "acknowledged", snoozed: "snoozed", unsnoozed: "back from snooze", reopened: "reopened", resolved: "resolved" };
let me = null;
const opened = new Set(); // alerts whose history is shown

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }
function result(msg, good = true, where = "a-result") {
  const r = $(where);
  r.textContent = msg;
  r.className = msg ? `notice ${good ? "good" : "bad"}` : "";
}

function stateText(a) {
  const parts = [];
  if (a.until) parts.push(`closed ${ago(a.until)}`);
  if (a.acked_by && a.state === "acknowledged") parts.push(`acknowledged by ${a.acked_by} ${ago(a.acked_at)}`);
  if (a.state === "snoozed" && a.snoozed_until && a.snoozed_until * 1000 > Date.now()) parts.push(`snoozed until ${dateTime(a.snoozed_until)} by ${text(a.snoozed_by)}`);
  if (a.note) parts.push(`“${a.note}”`);
  return parts.join(" · ");
}

function stateCell(a) {
  const state = a.state || (a.until ? "resolved" : "open");
  const cell = el("td", { class: "wrap", "data-testid": "alert-state", dataset: { state } },
    el("span", { class: `badge state-${state}`, "data-testid": "alert-state-badge" }, state));
  const more = stateText(a);
  if (more) cell.append(" ", more);
  if (a.maintenance) cell.append(" ", el("span", { class: "badge maint", "data-testid": "alert-maintenance" }, `in maintenance (window ${a.maintenance})`));
  if (a.incident) cell.append(" ", el("span", { class: "badge", "data-testid": "alert-incident" }, `incident #${a.incident}`));
  return cell;
}

function actions(a) {
  const history = el("button", { type: "button", class: "btn", "data-testid": "alert-history-toggle", "aria-expanded": String(opened.has(a.id)) }, "History");
  history.addEventListener("click", () => { if (opened.has(a.id)) opened.delete(a.id); else opened.add(a.id); load().catch((e) => showError(e.message)); });
  if (a.until || !atLeast(me.role, "operator")) return el("td", { class: "act" }, history);
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
  const cell = el("td", { class: "act" }, note, " ", ack, " ", minutes, " ", snooze, " ", history);
  if (a.state === "acknowledged" || a.state === "snoozed") {
    const reopen = el("button", { type: "button", class: "btn", "data-testid": "alert-reopen" }, "Reopen");
    reopen.addEventListener("click", () => run(reopen, () => api.reopen(a.id), `Reopened ${a.kind} on ${a.device}.`));
    cell.append(" ", reopen);
  }
  return cell;
}

function eventText(e) {
  const parts = [`${EVENT[e.event] || e.event} by ${e.who}`, dateTime(e.at)];
  if (e.until) parts.push(`until ${dateTime(e.until)}`);
  if (e.note) parts.push(`“${e.note}”`);
  return parts.join(" · ");
}

async function historyRow(a) {
  const h = await api.alertHistory(a.id);
  return el("tr", { class: "history", "data-testid": "alert-history", dataset: { id: a.id } },
    el("td", { colspan: 6 }, el("ol", { class: "events" },
      ...h.events.map((e) => el("li", { "data-testid": "alert-event", dataset: { event: e.event } }, eventText(e))))));
}

async function loadAlerts() {
  const open = $("a-open").value;
  const state = $("a-state").value;
  const data = await api.alerts(open === "" || state ? null : open === "true", state || null);
  const items = [...(data.items || [])].sort((x, y) => y.since - x.since);
  $("alerts-count").textContent = `· ${int(items.length)}`;
  if (!items.length) {
    $("alerts-body").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted empty" }, "No alerts.")));
    return;
  }
  const rows = [];
  for (const a of items) {
    rows.push(el("tr", { "data-testid": "alert-row", dataset: { id: a.id } },
      el("td", {}, el("span", { class: "badge kind" }, text(a.kind))),
      el("td", {}, el("a", { class: "mono", href: `/history?device=${encodeURIComponent(a.device)}` }, text(a.device))),
      el("td", { title: dateTime(a.since) }, ago(a.since)),
      el("td", { class: "wrap" }, text(a.detail)),
      stateCell(a),
      actions(a)));
    if (opened.has(a.id)) rows.push(await historyRow(a));
  }
  $("alerts-body").replaceChildren(...rows);
}

async function loadIncidents() {
  const items = (await api.incidents(true)).items || [];
  $("inc-count").textContent = `· ${int(items.length)} open`;
  if (!items.length) {
    $("inc-body").replaceChildren(el("tr", {}, el("td", { colspan: 5, class: "muted empty" }, "No open incidents.")));
    return;
  }
  $("inc-body").replaceChildren(...items.map((i) => el("tr", { "data-testid": "incident-row", dataset: { id: i.id } },
    el("td", {}, `#${i.id}`),
    el("td", {}, `${i.scope} ${i.key}`),
    el("td", { title: dateTime(i.first_down) }, ago(i.first_down)),
    el("td", { class: "wrap" }, el("details", {},
      el("summary", { "data-testid": "incident-count" }, `${int(i.count)} gateways, ${int(i.down)} still down`),
      el("span", { class: "mono" }, i.devices.join(", ")))),
    el("td", {}, el("span", { class: `badge state-${i.state}` }, i.state)))));
}

function windowState(w) {
  if (w.deleted) return `ended by ${w.deleted_by}`;
  return w.active ? "on now" : "planned";
}

async function loadWindows() {
  const items = (await api.windows()).items || [];
  if (!items.length) {
    $("mw-body").replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "muted empty" }, "No maintenance windows now or to come.")));
    return;
  }
  $("mw-body").replaceChildren(...items.map((w) => {
    const cell = el("td", { class: "act" }, el("span", { class: "badge" }, windowState(w)));
    if (atLeast(me.role, "operator")) {
      const end = el("button", { type: "button", class: "btn", "data-testid": "window-delete" }, "End now");
      end.addEventListener("click", async () => {
        end.disabled = true;
        try {
          await api.deleteWindow(w.id);
          result(`Window ${w.id} ended.`, true, "mw-result");
          await refresh();
        } catch (e) {
          result(e.message, false, "mw-result");
          end.disabled = false;
        }
      });
      cell.append(" ", end);
    }
    return el("tr", { "data-testid": "window-row", dataset: { id: w.id } },
      el("td", {}, `#${w.id}`), el("td", { class: "mono" }, w.target),
      el("td", {}, dateTime(w.start)), el("td", {}, dateTime(w.end)),
      el("td", { class: "wrap" }, `${w.reason} (${w.who})`), cell);
  }));
}

async function addWindow(ev) {
  ev.preventDefault();
  const kind = $("mw-kind").value;
  const start = $("mw-start").value.trim() || "now";
  const end = $("mw-end").value.trim();
  const body = { [kind]: $("mw-target").value.trim(), start: /^\d+(\.\d+)?$/.test(start) ? Number(start) : start,
    end: /^\d+(\.\d+)?$/.test(end) ? Number(end) : end, reason: $("mw-reason").value.trim() };
  try {
    const w = await api.addWindow(body);
    result(`Window ${w.id} for ${w.target} until ${dateTime(w.end)}.`, true, "mw-result");
    await refresh();
  } catch (e) {
    result(e.message, false, "mw-result");
  }
}

async function refresh() {
  await Promise.all([loadAlerts(), loadIncidents(), loadWindows()]);
}
const load = loadAlerts;

async function main() {
  me = await mountNav();
  if (!atLeast(me.role, "operator")) $("a-role").textContent = `As a ${me.role} you can look; acknowledging, snoozing and maintenance windows need the operator role.`;
  else $("mw-form").hidden = false;
  $("mw-form").addEventListener("submit", addWindow);
  for (const id of ["a-open", "a-state"]) $(id).addEventListener("change", () => load().catch((e) => showError(e.message)));
  await refresh();
  setInterval(() => refresh().then(() => showError(""), (e) => showError(`Update failed: ${e.message}`)), 30_000);
}

main().catch((e) => showError(String(e.message || e)));
