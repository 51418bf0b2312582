// A device's history up to the retention limits (store.raw_days at full detail, then
// 5-minute rollups to store.rollup_days), drawn with uPlot: clients, CPU, memory,
// temperature, WAN traffic (download/upload) and WAN state.
import uPlot from "/static/vendor/uplot/uPlot.esm.js";
import { api } from "./api.js";
import { el, int, isNum, num1 } from "./format.js";
import { mountNav } from "./nav.js";
import { serviceCharts } from "./service.js";

const $ = (id) => document.getElementById(id);
const H = 3600;
const D = 86400;
const RANGES = [["6h", "6 h", 6 * H], ["24h", "24 h", D], ["7d", "7 days", 7 * D], ["30d", "30 days", 30 * D], ["90d", "90 days", 90 * D]];

const state = { device: "", range: "24h", retention: { raw_days: 7, rollup_days: 90 }, plots: [] };

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }

const bits = (bps) => {
  if (!isNum(bps)) return "–";
  const b = bps * 8;
  for (const [k, u] of [[1e9, "Gb/s"], [1e6, "Mb/s"], [1e3, "kb/s"]]) if (Math.abs(b) >= k) return `${num1(b / k)} ${u}`;
  return `${Math.round(b)} b/s`;
};

// Each chart: its series (key in the history or net points), their labels and colours.
const CHARTS = [
  { key: "clients", title: "Clients", src: "hist", series: [["clients", "average", "#2563eb"], ["clients_max", "peak", "#93b4f5"]], fmt: (v) => num1(v) },
  { key: "cpu_pct", title: "CPU %", src: "hist", series: [["cpu_pct", "CPU", "#7c3aed"]], range: [0, 100], fmt: (v) => num1(v, " %") },
  { key: "mem_used_pct", title: "Memory %", src: "hist", series: [["mem_used_pct", "memory", "#0f766e"]], range: [0, 100], fmt: (v) => num1(v, " %") },
  { key: "temp_c", title: "Temperature °C", src: "hist", series: [["temp_c", "hottest sensor", "#c2410c"]], fmt: (v) => num1(v, " °C") },
  { key: "traffic", title: "WAN traffic", src: "net", series: [["rx_bps", "download", "#2563eb"], ["tx_bps", "upload", "#16a34a"]], fmt: bits },
  { key: "wan", title: "WAN up", src: "net", series: [["wan_up", "share of samples up", "#1f9d55"]], range: [0, 1], step: true,
    fmt: (v) => (isNum(v) ? `${Math.round(v * 100)} % up` : "–") },
];

function rangeSeconds() { return RANGES.find(([k]) => k === state.range)[2]; }

function renderRanges() {
  const keep = state.retention.rollup_days * D;
  $("ranges").replaceChildren(...RANGES.map(([k, label, secs]) => {
    const b = el("button", { type: "button", class: "btn", "data-testid": `range-${k}`, "aria-pressed": String(k === state.range),
      title: secs > keep ? `older than the ${state.retention.rollup_days} days kept` : null }, label);
    b.disabled = secs > keep + D;
    b.addEventListener("click", () => { state.range = k; renderRanges(); load(); });
    return b;
  }));
  $("hist-keep").textContent = `kept: raw samples ${num1(state.retention.raw_days)} days, 5-minute rollups ${num1(state.retention.rollup_days)} days`;
}

function chart(c, points, width) {
  const xs = points.map((p) => p.ts);
  const cols = c.series.map(([k]) => points.map((p) => (isNum(p[k]) ? p[k] : null)));
  const present = cols[0].filter((v) => v !== null).length;
  const last = [...cols[0]].reverse().find((v) => v !== null);
  const fig = el("figure", { class: "hist-chart", "data-testid": `hist-${c.key}`, "data-points": String(present) },
    el("figcaption", {}, el("span", {}, c.title), el("span", { class: "muted" }, last === undefined ? "no data" : `latest ${c.fmt(last)}`)));
  const opts = {
    width, height: 170,
    cursor: { drag: { x: true, y: false } },
    legend: { show: true, live: true },
    scales: { x: { time: true }, y: c.range ? { range: c.range } : { range: (u, lo, hi) => [Math.min(0, lo ?? 0), Math.max(1, hi ?? 1) * 1.05] } },
    axes: [{}, { size: 64, values: (u, vals) => vals.map((v) => (c.key === "wan" ? (v === 1 ? "up" : v === 0 ? "down" : "") : c.fmt(v))) }],
    series: [{}, ...c.series.map(([k, label, color]) => ({
      label, stroke: color, width: 1.5, value: (u, v) => c.fmt(v), spanGaps: false,
      fill: c.step ? "rgba(31,157,85,.15)" : undefined,
      paths: c.step ? uPlot.paths.stepped({ align: 1 }) : undefined,
    }))],
  };
  const plot = new uPlot(opts, [xs, ...cols], fig);
  state.plots.push(plot);
  return fig;
}

async function load() {
  if (!state.device) return;
  const until = Math.floor(Date.now() / 1000);
  const since = until - rangeSeconds();
  $("hist-device").textContent = state.device;
  document.title = `Titik · History of ${state.device}`;
  try {
    const [h, n, s] = await Promise.all([api.history(state.device, since, until), api.net(state.device, since, until),
      api.serviceHistory(state.device, since, until).catch(() => ({ points: [] }))]);
    state.plots.forEach((p) => p.destroy());
    state.plots = [];
    const width = Math.max(280, ($("charts").clientWidth - 12) / (window.innerWidth > 1100 ? 2 : 1) - 24);
    const src = { hist: h.points || [], net: n.points || [] };
    const svc = serviceCharts(s.points || []); // issue 20: radio and client quality, when reported
    $("charts").replaceChildren(...CHARTS.map((c) => chart(c, src[c.src], width)),
      ...svc.specs.map((c) => chart(c, svc.points, width)));
    $("hist-res").textContent = `· ${h.resolution === "raw" ? "raw samples" : "5-minute averages"} · ${int((h.points || []).length)} points`;
    $("hist-res").dataset.resolution = h.resolution;
    showError("");
  } catch (e) {
    showError(String(e.message || e));
  }
}

async function main() {
  await mountNav();
  const s = await api.settings();
  state.retention = s.retention;
  const params = new URLSearchParams(location.search);
  state.device = params.get("device") || "";
  if (RANGES.some(([k]) => k === params.get("range"))) state.range = params.get("range");
  $("h-device").value = state.device;
  renderRanges();
  $("hist-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.device = $("h-device").value.trim();
    history.replaceState(null, "", `/history?device=${encodeURIComponent(state.device)}`);
    load();
  });
  let t = null;
  window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(load, 300); });
  await load();
}

main().catch((e) => showError(String(e.message || e)));
