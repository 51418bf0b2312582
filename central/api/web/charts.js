// History charts as inline SVG polylines (no library). Null samples break the line.
import { el, isNum, num1, hms, toDate, DASH } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 320;
const H = 90;
const PAD = { l: 34, r: 6, t: 8, b: 16 };

function svg(tag, attrs = {}) {
  const n = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  return n;
}

export function lineChart({ key, title, unit, points, fixedMax = null }) {
  const xs = points.map((p) => toDate(p.ts)?.getTime() ?? null);
  const vals = points.map((p) => (isNum(p[key]) ? p[key] : null));
  const present = vals.filter((v) => v !== null);
  const last = present.length ? present[present.length - 1] : null;

  const fig = el("figure", { class: "chart", "data-testid": `chart-${key}` });
  const cap = el("figcaption", {}, el("span", {}, title),
    el("span", { class: "muted" }, last === null ? DASH : `now ${num1(last, unit)}`));
  fig.append(cap);

  const root = svg("svg", {
    viewBox: `0 0 ${W} ${H}`, role: "img", class: "chart-svg",
    "aria-label": `${title}: ${present.length} samples, latest ${last === null ? "none" : num1(last, unit)}`,
  });
  const iw = W - PAD.l - PAD.r;
  const ih = H - PAD.t - PAD.b;
  let lo = present.length ? Math.min(0, ...present) : 0;
  let hi = fixedMax ?? (present.length ? Math.max(...present) : 1);
  if (hi <= lo) hi = lo + 1;
  const tx = xs.filter((x) => x !== null);
  const x0 = tx.length ? Math.min(...tx) : 0;
  const x1 = tx.length ? Math.max(...tx) : 1;
  const sx = (x) => PAD.l + (x1 > x0 ? ((x - x0) / (x1 - x0)) * iw : iw / 2);
  const sy = (v) => PAD.t + ih - ((v - lo) / (hi - lo)) * ih;

  // Axes and gridlines.
  for (const v of [lo, (lo + hi) / 2, hi]) {
    const y = sy(v).toFixed(1);
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y, y2: y, class: "grid" }));
    const t = svg("text", { x: PAD.l - 4, y: Number(y) + 3, class: "axis", "text-anchor": "end" });
    t.textContent = num1(v);
    root.append(t);
  }
  if (tx.length) {
    for (const [x, anchor] of [[x0, "start"], [x1, "end"]]) {
      const t = svg("text", { x: sx(x), y: H - 3, class: "axis", "text-anchor": anchor });
      t.textContent = hms(new Date(x)).slice(0, 5);
      root.append(t);
    }
  }

  // One polyline per run of non-null samples.
  let run = [];
  const flush = () => {
    if (run.length === 1) {
      const [cx, cy] = run[0].split(",");
      root.append(svg("circle", { cx, cy, r: 1.8, class: "pt" }));
    } else if (run.length > 1) {
      root.append(svg("polyline", { points: run.join(" "), class: "line" }));
    }
    run = [];
  };
  vals.forEach((v, i) => {
    if (v === null || xs[i] === null) return flush();
    run.push(`${sx(xs[i]).toFixed(1)},${sy(v).toFixed(1)}`);
  });
  flush();
  if (!present.length) {
    const t = svg("text", { x: W / 2, y: H / 2, class: "axis", "text-anchor": "middle" });
    t.textContent = "no data";
    root.append(t);
  }
  fig.append(root);
  return fig;
}
