// Service health (issue 20) in the console: score bands, the worst-APs list, and the history
// page's radio and client-quality charts. Scores come from the API (computed at ingest with
// the agent's own function, agent/protocol/score.py): the page never computes one.
import { api } from "./api.js";
import { DASH, ago, dateTime, el, int, text } from "./format.js";

// A score's band: "good" (80 or more), "fair" (from the threshold, alerts.service_score_below,
// to 79) or "poor" (under the threshold). Colours in style.css (.sc-*).
export function band(score, below) {
  if (typeof score !== "number") return null;
  if (score < below) return "poor";
  return score >= 80 ? "good" : "fair";
}

// Every AP's latest score: {byId: Map(id -> {score, fresh}), below}. Empty if the API has no
// service endpoints (a store without them) or no report came yet.
export async function loadScores() {
  try {
    const r = await api.serviceScores();
    return { byId: new Map((r.items || []).map((s) => [s.device, s])), below: r.below };
  } catch {
    return { byId: new Map(), below: 60 };
  }
}

// Put the latest fresh score on each device (d.score, d.score_band) for the map and the table.
export function withScores(items, scores) {
  for (const d of items) {
    const s = scores.byId.get(d.id);
    d.score = s && s.fresh ? s.score : null;
    d.score_band = band(d.score, scores.below);
  }
  return items;
}

// The device table's score cell.
export function scoreCell(d) {
  if (typeof d.score !== "number") return el("td", { class: "num muted" }, DASH);
  return el("td", { class: "num" }, el("span", { class: `score sc-${d.score_band}`, "data-testid": "score" }, String(d.score)));
}

// One AP's latest (GET /api/devices/{id}/service) in words, for the detail panel.
export function serviceText(s, below) {
  const why = s.deductions.length ? s.deductions.map((d) => `${d.name} −${d.points} (${d.detail})`).join("; ") : "no deduction";
  const stale = s.fresh ? "" : " · report older than 3 intervals";
  return el("span", {}, el("span", { class: `score sc-${band(s.score, below)}` }, String(s.score)), ` ${why}${stale}`);
}

// The worst-APs list: {items: [{device, region, site, score, deductions: [{name, points,
// detail}], failed, received}]}, lowest score first.
export function renderWorst(tbody, data, below, onPick) {
  const items = data.items || [];
  if (!items.length) {
    tbody.replaceChildren(el("tr", {}, el("td", { colspan: 4, class: "muted empty" }, "No service reports yet.")));
    return;
  }
  tbody.replaceChildren(...items.map((w) => {
    const dev = el("button", { type: "button", class: "link mono" }, text(w.device));
    dev.addEventListener("click", () => onPick(w.device));
    const reasons = w.deductions.length
      ? w.deductions.map((d) => el("span", { class: "reason", title: d.detail, "data-reason": d.name }, `${d.name} −${d.points}`))
      : [el("span", { class: "muted" }, "no deduction")];
    return el("tr", { "data-testid": "worst-row", dataset: { id: w.device, score: String(w.score) } },
      el("td", {}, dev, el("div", { class: "muted small" }, [w.site, w.region].filter(Boolean).join(" · ") || DASH)),
      el("td", { class: "num" }, el("span", { class: `score sc-${band(w.score, below)}` }, String(w.score))),
      el("td", { class: "reasons", "data-testid": "worst-reasons" }, ...reasons),
      el("td", { title: dateTime(w.received) }, ago(w.received)));
  }));
}

// The history page's charts from /api/devices/{id}/service/history: the score, then per radio
// channel busy and noise, then per SSID stations, weak stations and tx retries. Each spec is
// what history.js's chart() takes; its points are flattened ({ts, "<series key>": value}).
export function serviceCharts(points) {
  const radios = [...new Set(points.flatMap((p) => Object.keys(p.radios || {})))].sort();
  const ssids = [...new Set(points.flatMap((p) => Object.keys(p.ssids || {})))].sort();
  const COLORS = ["#2563eb", "#c2410c", "#0f766e", "#7c3aed", "#b91c1c", "#15803d"];
  const flat = points.map((p) => {
    const o = { ts: p.ts, score: p.score };
    for (const r of radios) {
      const v = p.radios?.[r] || [];
      o[`busy:${r}`] = v[1]; o[`noise:${r}`] = v[2];
    }
    for (const s of ssids) {
      const v = p.ssids?.[s] || [];
      o[`sta:${s}`] = v[0]; o[`weak:${s}`] = v[1]; o[`retry:${s}`] = v[4];
    }
    return o;
  });
  const per = (names, prefix) => names.map((n, i) => [`${prefix}:${n}`, n, COLORS[i % COLORS.length]]);
  const pct = (v) => (typeof v === "number" ? `${Math.round(v * 10) / 10} %` : "–");
  const specs = [
    { key: "svc-score", title: "Service score", series: [["score", "score", "#1f9d55"]], range: [0, 100], fmt: (v) => int(v) },
    { key: "svc-busy", title: "Channel busy % (per radio)", series: per(radios, "busy"), range: [0, 100], fmt: pct },
    { key: "svc-noise", title: "Noise floor dBm (per radio)", series: per(radios, "noise"), fmt: (v) => (typeof v === "number" ? `${v} dBm` : "–") },
    { key: "svc-sta", title: "Stations (per SSID)", series: per(ssids, "sta"), fmt: (v) => int(v) },
    { key: "svc-weak", title: "Stations below −70 dBm % (per SSID)", series: per(ssids, "weak"), range: [0, 100], fmt: pct },
    { key: "svc-retry", title: "TX retries % (per SSID)", series: per(ssids, "retry"), range: [0, 100], fmt: pct },
  ].filter((c) => c.series.length);
  return { specs, points: flat };
}
