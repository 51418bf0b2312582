// Titik dashboard: summary tiles, regions, map, device table, detail, alerts, live refresh.
// Plain ES modules, no build step, no network beyond the page's own origin.
import { api } from "./api.js";
import { lineChart } from "./charts.js";
import { FleetMap } from "./map.js";
import { mountNav } from "./nav.js";
import { DASH, ago, dateTime, el, fixed1, hms, int, num1, text, yesNo } from "./format.js";
import { loadScores, renderWorst, scoreCell, serviceText, withScores } from "./service.js";

const params = new URLSearchParams(location.search);
// Poll interval in seconds: 10 by default; ?refresh=1 (tests) or any other positive number.
const REFRESH_S = Math.max(0.2, Number(params.get("refresh")) || 10);
const MAP_EVERY_MS = 60_000; // the map fetches the whole fleet (limit=10000): at most once a minute
const PAGE = 100;

const COLUMNS = [
  { key: "id", label: "Device", sort: "id" },
  { key: "site", label: "Site", sort: "site" },
  { key: "region", label: "Region", sort: "region" },
  { key: "online", label: "Status", sort: "online" },
  { key: "last_seen", label: "Last seen", sort: "last_seen" },
  { key: "clients", label: "Clients", sort: "clients", num: true },
  { key: "cpu_pct", label: "CPU %", sort: "cpu_pct", num: true },
  { key: "mem_used_pct", label: "Mem %", sort: "mem_used_pct", num: true },
  { key: "temp_c", label: "Temp °C", sort: "temp_c", num: true },
  { key: "version", label: "Version" },
  { key: "compliant", label: "Config" },
  { key: "score", label: "Service", num: true }, // issue 20: from /api/service/scores
];

const state = {
  q: "", region: "", group: "", status: "",
  sort: "id", offset: 0, total: 0,
  paused: false, timer: null, lastMap: 0, detailId: null, map: null,
  devicesSeq: 0, devicesAbort: null,
  scores: { byId: new Map(), below: 60 },
};

const $ = (id) => document.getElementById(id);

// ---- errors --------------------------------------------------------------------------------
function showError(msg) {
  const e = $("error");
  e.textContent = msg;
  e.hidden = !msg;
}

// ---- summary -------------------------------------------------------------------------------
function setTile(name, value) {
  document.querySelector(`[data-testid="tile-${name}"]`).textContent = int(value);
}

function renderSummary(s) {
  setTile("total", s.total);
  setTile("online", s.online);
  setTile("offline", s.offline);
  setTile("clients", s.clients_total);
  setTile("alerts", s.alerts_open);
  $("hint-online").textContent = s.total ? `${num1((100 * (s.online || 0)) / s.total)}% of fleet` : "";
  const rows = [...(s.by_region || [])].sort((a, b) => String(a.region).localeCompare(String(b.region)));
  const max = Math.max(1, ...rows.map((r) => r.total || 0));
  $("regions-body").replaceChildren(...rows.map((r) => {
    const total = r.total || 0;
    const onPct = total ? (100 * (r.online || 0)) / total : 0;
    // Widths through the CSSOM (not style attributes), so a strict CSP can't break them.
    const on = el("span", { class: "bar-on" });
    const off = el("span", { class: "bar-off" });
    const bar = el("div", { class: "bar", title: `${num1(onPct)}% online` }, on, off);
    bar.style.width = `${(100 * total) / max}%`;
    on.style.width = `${onPct}%`;
    off.style.width = `${100 - onPct}%`;
    return el("tr", { "data-testid": "region-row", dataset: { region: r.region } },
      el("th", { scope: "row" }, text(r.region)),
      el("td", { class: "num" }, int(r.total)),
      el("td", { class: "num" }, int(r.online)),
      el("td", { class: "num" }, int(r.offline)),
      el("td", { class: "num" }, int(r.clients)),
      el("td", { class: "bar-cell" }, el("div", { class: "bar-row" },
        bar, el("span", { class: "muted pct" }, total ? `${Math.round(onPct)}% online` : DASH))));
  }));
  fillSelect($("f-region"), rows.map((r) => r.region).filter(Boolean));
}

function fillSelect(select, values) {
  const current = select.value;
  const want = [...new Set(values)].sort();
  const have = [...select.options].slice(1).map((o) => o.value);
  if (want.join("\u0000") === have.join("\u0000")) return;
  select.replaceChildren(el("option", { value: "" }, "All"), ...want.map((v) => el("option", { value: v }, v)));
  select.value = want.includes(current) ? current : "";
}

// ---- device table --------------------------------------------------------------------------
function renderHead() {
  const sortKey = state.sort.replace(/^-/, "");
  const desc = state.sort.startsWith("-");
  $("devices-head").replaceChildren(...COLUMNS.map((c) => {
    const th = el("th", { scope: "col", class: c.num ? "num" : null, "data-col": c.key });
    if (!c.sort) { th.append(c.label); return th; }
    const active = sortKey === c.sort;
    th.setAttribute("aria-sort", active ? (desc ? "descending" : "ascending") : "none");
    const btn = el("button", { type: "button", class: "sort", "data-testid": `sort-${c.sort}` },
      c.label, el("span", { class: "arrow", "aria-hidden": "true" }, active ? (desc ? "▼" : "▲") : ""));
    btn.addEventListener("click", () => {
      // First click: ascending for text, descending for numbers (most clients first); then toggle.
      if (active) state.sort = desc ? c.sort : `-${c.sort}`;
      else state.sort = c.num || c.sort === "last_seen" ? `-${c.sort}` : c.sort;
      state.offset = 0;
      renderHead();
      loadDevices();
    });
    th.append(btn);
    return th;
  }));
}

function cell(d, c) {
  const v = d[c.key];
  switch (c.key) {
    case "online":
      return el("td", {}, el("span", { class: `badge ${v ? "on" : "off"}` }, v === null || v === undefined ? DASH : v ? "online" : "offline"));
    case "last_seen":
      return el("td", { title: dateTime(v) }, ago(v));
    case "clients":
      return el("td", { class: "num" }, int(v));
    case "cpu_pct": case "mem_used_pct": case "temp_c":
      return el("td", { class: "num" }, fixed1(v));
    case "compliant":
      return el("td", {}, v === true ? "in sync" : v === false ? el("span", { class: "warn-text" }, "drift") : DASH);
    case "id":
      return el("td", { class: "mono" }, text(v));
    case "score":
      return scoreCell(d);
    default:
      return el("td", {}, text(v));
  }
}

function renderDevices(data) {
  state.total = data.total ?? 0;
  const items = data.items || [];
  const body = $("devices-body");
  if (!items.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: COLUMNS.length, class: "muted empty" }, "No access points match.")));
  } else {
    body.replaceChildren(...items.map((d) => {
      const tr = el("tr", { tabindex: 0, "data-testid": "device-row", dataset: { id: d.id },
        class: d.id === state.detailId ? "selected" : null, "aria-label": `Open details of ${d.id}` },
      ...COLUMNS.map((c) => cell(d, c)));
      return tr;
    }));
  }
  const from = items.length ? state.offset + 1 : 0;
  $("device-count").textContent = `${int(from)}–${int(state.offset + items.length)} of ${int(state.total)}`;
  $("prev").disabled = state.offset === 0;
  $("next").disabled = state.offset + items.length >= state.total;
}

async function loadDevices() {
  state.devicesAbort?.abort();
  const ctrl = new AbortController();
  state.devicesAbort = ctrl;
  const seq = ++state.devicesSeq;
  const data = await api.devices({
    region: state.region, group: state.group, status: state.status, q: state.q.trim(),
    sort: state.sort, limit: PAGE, offset: state.offset,
  }, ctrl.signal).catch((e) => { if (e.name !== "AbortError") throw e; return null; });
  if (data && seq === state.devicesSeq) renderDevices({ ...data, items: withScores(data.items || [], state.scores) });
}

// ---- map -----------------------------------------------------------------------------------
async function loadMap() {
  if (!state.map) {
    const settings = await api.settings();
    state.map = state.map || new FleetMap($("map"), settings.map, openDetail);
  }
  const [data, scores] = await Promise.all([api.devices({ limit: 10000, offset: 0 }), loadScores()]);
  state.lastMap = Date.now();
  const first = !state.scores.byId.size;
  state.scores = scores;
  if (first && scores.byId.size) loadDevices().catch(onError); // the table's score column, without waiting a refresh
  const items = withScores(data.items || [], scores);
  const n = state.map.setDevices(items);
  const missing = items.length - n;
  $("map-count").textContent = `· ${int(n)} located${missing ? `, ${int(missing)} without coordinates` : ""}`;
  $("map-count").dataset.dots = String(n);
  fillSelect($("f-group"), items.flatMap((d) => d.groups || []));
}

// ---- alerts --------------------------------------------------------------------------------
function renderAlerts(data) {
  const items = [...(data.items || [])].sort((a, b) => (toNum(b.since) - toNum(a.since)));
  $("alerts-count").textContent = `· ${int(items.length)}`;
  if (!items.length) {
    $("alerts-body").replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted empty" }, "No open alerts.")));
    return;
  }
  $("alerts-body").replaceChildren(...items.map((a) => {
    const dev = el("button", { type: "button", class: "link mono" }, text(a.device));
    dev.addEventListener("click", () => openDetail(a.device));
    return el("tr", { "data-testid": "alert-row", dataset: { id: a.id } },
      el("td", {}, el("span", { class: `badge kind` }, text(a.kind))),
      el("td", {}, dev),
      el("td", { title: dateTime(a.since) }, ago(a.since)),
      el("td", {}, text(typeof a.detail === "object" && a.detail !== null ? JSON.stringify(a.detail) : a.detail)));
  }));
}

function toNum(ts) {
  const n = typeof ts === "number" ? ts : Date.parse(ts);
  return Number.isFinite(n) ? n : 0;
}

// ---- detail --------------------------------------------------------------------------------
const CHARTS = [
  { key: "clients", title: "Clients", unit: "" },
  { key: "cpu_pct", title: "CPU", unit: "%", fixedMax: 100 },
  { key: "mem_used_pct", title: "Memory", unit: "%", fixedMax: 100 },
  { key: "temp_c", title: "Temperature", unit: " °C" },
];

function field(label, value, testid = null) {
  return [el("dt", {}, label), el("dd", { "data-testid": testid }, value)];
}

async function openDetail(id) {
  state.detailId = id;
  const panel = $("detail");
  panel.hidden = false;
  $("detail-h").textContent = id;
  $("detail-history").href = `/history?device=${encodeURIComponent(id)}`;
  $("detail-fields").replaceChildren(el("dd", { class: "muted" }, "loading…"));
  $("detail-charts").replaceChildren();
  for (const tr of document.querySelectorAll('[data-testid="device-row"]')) {
    tr.classList.toggle("selected", tr.dataset.id === id);
  }
  const until = Math.floor(Date.now() / 1000);
  try {
    const [d, h] = await Promise.all([api.device(id), api.history(id, until - 86400, until)]);
    if (state.detailId !== id) return;
    const cfg = d.config || {};
    $("detail-fields").replaceChildren(
      ...field("Status", el("span", { class: `badge ${d.online ? "on" : "off"}` }, d.online ? "online" : "offline"), "detail-status"),
      ...field("Site", text(d.site)), ...field("Region", text(d.region)),
      ...field("Groups", d.groups?.length ? d.groups.join(", ") : DASH),
      ...field("Last seen", `${ago(d.last_seen)} (${dateTime(d.last_seen)})`),
      ...field("Clients", int(d.clients), "detail-clients"),
      ...field("CPU", num1(d.cpu_pct, " %")), ...field("Memory", num1(d.mem_used_pct, " %")),
      ...field("Temperature", num1(d.temp_c, " °C"), "detail-temp"), ...field("Disk", num1(d.disk_used_pct, " %")),
      ...field("Platform", text(d.platform)), ...field("Version", text(d.version)),
      ...field("Boot", text(d.boot)), ...field("Location", d.lat == null || d.lon == null ? DASH : `${d.lat.toFixed(4)}, ${d.lon.toFixed(4)}`),
      ...field("Config", configText(d.compliant, cfg), "detail-config"),
      ...(d.online ? [] : field("Offline since", `${dateTime(d.offline_since)}${d.offline_reason ? ` (${d.offline_reason})` : ""}`)),
    );
    if (state.scores.byId.has(id)) {
      // Only for an AP with a report (the others would answer 404): its score and reasons.
      const s = await api.serviceLatest(id);
      if (state.detailId !== id) return;
      $("detail-fields").append(...field("Service", serviceText(s, state.scores.below), "detail-service"));
    }
    $("detail-res").textContent = h.resolution ? `· ${h.resolution === "raw" ? "raw samples" : `${h.resolution} buckets`}` : "";
    const points = h.points || [];
    $("detail-charts").replaceChildren(...CHARTS.map((c) => lineChart({ ...c, points })));
  } catch (e) {
    if (state.detailId !== id) return;
    $("detail-fields").replaceChildren(el("dd", { class: "error-text" }, String(e.message || e)));
  }
}

// config: {desired: {target: {version, ...}}, reported: {versions, state, error} | null, missing: [target]}
function configText(compliant, cfg) {
  const state = compliant === true ? "in sync" : compliant === false ? "drift" : DASH;
  const desired = cfg.desired && typeof cfg.desired === "object"
    ? Object.entries(cfg.desired).map(([t, v]) => `${t} v${text(v?.version)}`).join(", ")
    : text(cfg.desired);
  const rep = cfg.reported;
  const reported = rep && typeof rep === "object"
    ? `${text(rep.state)}${rep.error ? `: ${rep.error}` : ""}`
    : text(rep);
  const missing = cfg.missing?.length ? ` · missing ${cfg.missing.join(", ")}` : "";
  return `${state} · desired ${desired || DASH} · reported ${reported}${missing}`;
}

function closeDetail() {
  const id = state.detailId;
  state.detailId = null;
  $("detail").hidden = true;
  document.querySelectorAll('[data-testid="device-row"].selected').forEach((tr) => tr.classList.remove("selected"));
  const row = id && document.querySelector(`[data-testid="device-row"][data-id="${CSS.escape(id)}"]`);
  row?.focus();
}

// ---- live refresh --------------------------------------------------------------------------
async function refresh() {
  const jobs = [api.summary().then(renderSummary), loadDevices(), api.alerts().then(renderAlerts),
    api.serviceWorst(10).then((w) => renderWorst($("worst-body"), w, state.scores.below, openDetail))];
  if (Date.now() - state.lastMap >= MAP_EVERY_MS) jobs.push(loadMap());
  const results = await Promise.allSettled(jobs);
  const failed = results.filter((r) => r.status === "rejected");
  if (failed.length) {
    showError(`Update failed: ${failed[0].reason?.message || failed[0].reason}. Showing the last data.`);
  } else {
    showError("");
    $("updated").textContent = hms(new Date());
    $("updated").setAttribute("datetime", new Date().toISOString());
  }
}

function schedule() {
  clearTimeout(state.timer);
  if (!state.paused) state.timer = setTimeout(tick, REFRESH_S * 1000);
}

async function tick() {
  await refresh();
  schedule();
}

function setPaused(p) {
  state.paused = p;
  const b = $("pause");
  b.setAttribute("aria-pressed", String(p));
  b.textContent = p ? "Resume" : "Pause";
  document.body.classList.toggle("paused", p);
  if (p) clearTimeout(state.timer);
  else tick();
}

// ---- wiring --------------------------------------------------------------------------------
function wire() {
  $("filters").addEventListener("submit", (ev) => ev.preventDefault());
  let debounce = null;
  $("f-q").addEventListener("input", () => {
    clearTimeout(debounce);
    debounce = setTimeout(() => { state.q = $("f-q").value; state.offset = 0; loadDevices().catch(onError); }, 250);
  });
  for (const [id, key] of [["f-region", "region"], ["f-group", "group"], ["f-status", "status"]]) {
    $(id).addEventListener("change", () => { state[key] = $(id).value; state.offset = 0; loadDevices().catch(onError); });
  }
  $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE); loadDevices().catch(onError); });
  $("next").addEventListener("click", () => { state.offset += PAGE; loadDevices().catch(onError); });
  const body = $("devices-body");
  body.addEventListener("click", (ev) => {
    const tr = ev.target.closest('tr[data-testid="device-row"]');
    if (tr) openDetail(tr.dataset.id);
  });
  body.addEventListener("keydown", (ev) => {
    const tr = ev.target.closest('tr[data-testid="device-row"]');
    if (!tr) return;
    if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); openDetail(tr.dataset.id); }
    else if (ev.key === "ArrowDown") { ev.preventDefault(); tr.nextElementSibling?.focus(); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); tr.previousElementSibling?.focus(); }
  });
  $("detail-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape" && state.detailId) closeDetail(); });
  $("pause").addEventListener("click", () => setPaused(!state.paused));
}

function onError(e) {
  showError(String(e.message || e));
}

wire();
renderHead();
mountNav().then(tick, onError);
