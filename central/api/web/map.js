// The access-point map: an inline SVG with one dot per device that has coordinates.
// No tiles: lat/lon are projected (equirectangular, scaled by cos(lat)) into the
// bounding box of the data, so it works offline.
import { isNum } from "./format.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 600;
const HEIGHT = 420;

export function drawMap(svgEl, items, onPick) {
  const pts = items.filter((d) => isNum(d.lat) && isNum(d.lon));
  svgEl.replaceChildren();
  if (!pts.length) {
    svgEl.setAttribute("viewBox", `0 0 ${WIDTH} ${HEIGHT}`);
    const t = document.createElementNS(SVG, "text");
    Object.entries({ x: WIDTH / 2, y: HEIGHT / 2, "text-anchor": "middle", class: "axis" })
      .forEach(([k, v]) => t.setAttribute(k, String(v)));
    t.textContent = "no coordinates";
    svgEl.append(t);
    return 0;
  }
  let [latMin, latMax, lonMin, lonMax] = [Infinity, -Infinity, Infinity, -Infinity];
  for (const d of pts) {
    latMin = Math.min(latMin, d.lat); latMax = Math.max(latMax, d.lat);
    lonMin = Math.min(lonMin, d.lon); lonMax = Math.max(lonMax, d.lon);
  }
  // At least ~1 km of span, so one device or a tight cluster still draws sensibly.
  const minSpan = 0.01;
  if (latMax - latMin < minSpan) { const c = (latMax + latMin) / 2; latMin = c - minSpan / 2; latMax = c + minSpan / 2; }
  if (lonMax - lonMin < minSpan) { const c = (lonMax + lonMin) / 2; lonMin = c - minSpan / 2; lonMax = c + minSpan / 2; }
  const k = Math.cos(((latMin + latMax) / 2) * Math.PI / 180);
  const spanX = (lonMax - lonMin) * k;
  const spanY = latMax - latMin;
  const height = HEIGHT;
  const pad = 18;
  const scale = Math.min((WIDTH - 2 * pad) / spanX, (height - 2 * pad) / spanY);
  const offX = (WIDTH - spanX * scale) / 2;
  const offY = (height - spanY * scale) / 2;
  const px = (lon) => offX + (lon - lonMin) * k * scale;
  const py = (lat) => offY + (latMax - lat) * scale;
  svgEl.setAttribute("viewBox", `0 0 ${WIDTH} ${height}`);

  const add = (tag, attrs, textContent = null) => {
    const n = document.createElementNS(SVG, tag);
    for (const [a, v] of Object.entries(attrs)) n.setAttribute(a, String(v));
    if (textContent !== null) n.textContent = textContent;
    svgEl.append(n);
    return n;
  };
  add("rect", { x: 0, y: 0, width: WIDTH, height, class: "map-bg" });
  // A graticule instead of tiles: lines every 0.05° (~5.5 km), labelled at the edges.
  const step = 0.05;
  const lonLo = (WIDTH * 0 - offX) / (k * scale) + lonMin;
  const lonHi = (WIDTH - offX) / (k * scale) + lonMin;
  const latHi = latMax + offY / scale;
  const latLo = latMax - (height - offY) / scale;
  for (let g = Math.ceil(lonLo / step) * step; g <= lonHi; g += step) {
    const x = px(g).toFixed(1);
    add("line", { x1: x, x2: x, y1: 0, y2: height, class: "graticule" });
    add("text", { x: Number(x) + 2, y: height - 4, class: "grat-label" }, `${g.toFixed(2)}°E`);
  }
  for (let g = Math.ceil(latLo / step) * step; g <= latHi; g += step) {
    const y = py(g).toFixed(1);
    add("line", { x1: 0, x2: WIDTH, y1: y, y2: y, class: "graticule" });
    add("text", { x: 3, y: Number(y) - 3, class: "grat-label" }, `${Math.abs(g).toFixed(2)}°${g < 0 ? "S" : "N"}`);
  }

  const r = pts.length > 3000 ? 1.6 : pts.length > 500 ? 2.5 : 4.5;
  const frag = document.createDocumentFragment();
  // Online first, so offline dots (the ones that need attention) are drawn on top.
  const ordered = [...pts].sort((a, b) => Number(b.online === true) - Number(a.online === true));
  for (const d of ordered) {
    const c = document.createElementNS(SVG, "circle");
    c.setAttribute("cx", px(d.lon).toFixed(1));
    c.setAttribute("cy", py(d.lat).toFixed(1));
    c.setAttribute("r", String(r));
    c.setAttribute("class", d.online ? "dot-on" : "dot-off");
    c.setAttribute("data-testid", "map-dot");
    c.dataset.id = d.id;
    c.dataset.online = String(Boolean(d.online));
    frag.append(c);
  }
  svgEl.append(frag);

  if (!svgEl.dataset.wired) {
    svgEl.dataset.wired = "1";
    const tip = document.getElementById("map-tip");
    const wrap = svgEl.parentElement;
    const show = (ev) => {
      const c = ev.target.closest?.("circle[data-id]");
      if (!c) { tip.hidden = true; return; }
      const box = wrap.getBoundingClientRect();
      tip.textContent = `${c.dataset.id} · ${c.dataset.online === "true" ? "online" : "offline"}`;
      tip.style.left = `${ev.clientX - box.left + 10}px`;
      tip.style.top = `${ev.clientY - box.top + 10}px`;
      tip.hidden = false;
    };
    svgEl.addEventListener("mousemove", show);
    svgEl.addEventListener("mouseleave", () => { tip.hidden = true; });
    svgEl.addEventListener("click", (ev) => {
      const c = ev.target.closest?.("circle[data-id]");
      if (c) { show(ev); svgEl.__onPick?.(c.dataset.id); }
    });
  }
  svgEl.__onPick = onPick;
  return pts.length;
}
