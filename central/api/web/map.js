// The access-point map: Leaflet with leaflet.markercluster (vendored, global L), one marker
// per device with coordinates. Clusters show their count and are coloured by the share of
// offline access points in them; single access points are green (online) or red (offline).
// Tiles only when the config names a tile URL ([map] tile_url); without one the map draws a
// plain background with a light grid and a scale, and asks no other host for anything.
import { isNum } from "./format.js";

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function clusterIcon(cluster) {
  const children = cluster.getAllChildMarkers();
  const n = children.length;
  const off = children.reduce((k, m) => k + (m.options.online ? 0 : 1), 0);
  const share = off / n;
  const level = off === 0 ? "ok" : share < 0.1 ? "some" : "bad";
  const size = n < 100 ? 36 : n < 1000 ? 44 : 52;
  const label = n >= 10000 ? `${Math.round(n / 1000)}k` : String(n);
  // The lowest service score inside (issue 20), so a poor AP is not hidden by its cluster.
  const scores = children.map((m) => m.options.score).filter((s) => typeof s === "number");
  const low = scores.length ? Math.min(...scores) : null;
  const lowBand = low === null ? null : children.find((m) => m.options.score === low).options.band;
  return L.divIcon({
    html: `<div data-testid="map-cluster" data-count="${n}" data-offline="${off}"${low === null ? "" : ` data-min-score="${low}"`}
             title="${n} access points, ${off} offline${low === null ? "" : `, lowest service score ${low}`}"><span>${label}</span>${
               off ? `<b class="cl-off">${off} off</b>` : ""}${
               low !== null && lowBand !== "good" ? `<b class="ap-score cl-score sc-${esc(lowBand)}">${low}</b>` : ""}</div>`,
    className: `ap-cluster cl-${level}`,
    iconSize: L.point(size, size),
  });
}

// A dot; with a service score (d.score, d.score_band: service.js), the score beside it in its
// band's colour (issue 20).
function dotIcon(d) {
  const scored = typeof d.score === "number";
  const score = scored
    ? `<b class="ap-score sc-${esc(d.score_band)}" data-testid="map-score">${d.score}</b>`
    : "";
  return L.divIcon({
    html: `<span data-testid="map-dot" data-id="${esc(d.id)}" data-online="${Boolean(d.online)}"${
      scored ? ` data-score="${d.score}"` : ""}></span>${score}`,
    className: `ap-dot ${d.online ? "on" : "off"}${scored ? ` sc-${esc(d.score_band)}` : ""}`,
    iconSize: L.point(14, 14),
  });
}

// A light graticule over the view (redrawn on every move), for bearings when there are no
// tiles: about 6 lines across, at a round step (0.001° is ~110 m).
const STEPS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20];
function drawGrid(map, layer) {
  const b = map.getBounds();
  const step = STEPS.find((s) => (b.getEast() - b.getWest()) / s <= 8) || 30;
  const lines = [];
  const opts = { className: "grid-minor", interactive: false };
  for (let x = Math.floor(b.getWest() / step) * step; x <= b.getEast(); x += step) {
    lines.push(L.polyline([[b.getSouth(), x], [b.getNorth(), x]], opts));
  }
  for (let y = Math.floor(b.getSouth() / step) * step; y <= b.getNorth(); y += step) {
    lines.push(L.polyline([[y, b.getWest()], [y, b.getEast()]], opts));
  }
  layer.clearLayers();
  lines.forEach((l) => layer.addLayer(l));
}

export class FleetMap {
  // settings: /api/console/settings' "map" ({tile_url, attribution, max_zoom}).
  constructor(elem, settings, onPick) {
    this.elem = elem;
    this.onPick = onPick;
    const maxZoom = settings?.max_zoom || 19;
    this.map = L.map(elem, { zoomControl: true, minZoom: 3, maxZoom, worldCopyJump: false });
    this.map.attributionControl.setPrefix("Leaflet");
    if (settings?.tile_url) {
      L.tileLayer(settings.tile_url, { attribution: esc(settings.attribution || ""), maxZoom }).addTo(this.map);
      elem.dataset.tiles = "yes";
    } else {
      elem.classList.add("no-tiles");
      elem.dataset.tiles = "no";
      this.map.attributionControl.addAttribution("no map tiles configured");
      this.grid = L.layerGroup().addTo(this.map);
      this.map.on("moveend zoomend resize", () => drawGrid(this.map, this.grid));
    }
    L.control.scale({ imperial: false }).addTo(this.map);
    this.cluster = L.markerClusterGroup({
      chunkedLoading: true, showCoverageOnHover: false, spiderfyOnMaxZoom: true,
      maxClusterRadius: 80, iconCreateFunction: clusterIcon,
    });
    this.map.addLayer(this.cluster);
    this.fitted = false;
    this.map.setView([0, 0], 3);
  }

  // Replace the markers with these devices; the first call fits the view to them.
  setDevices(items) {
    const pts = items.filter((d) => isNum(d.lat) && isNum(d.lon) && Math.abs(d.lat) <= 90 && Math.abs(d.lon) <= 180);
    this.byId = new Map();
    const markers = pts.map((d) => {
      const m = L.marker([d.lat, d.lon], { icon: dotIcon(d), online: Boolean(d.online), title: d.id, keyboard: true, riseOnHover: true,
        score: d.score, band: d.score_band });
      const clients = isNum(d.clients) ? `${d.clients} clients` : "";
      const score = typeof d.score === "number" ? ` · service score ${d.score}` : "";
      m.bindTooltip(`<b>${esc(d.id)}</b>${d.site ? ` · ${esc(d.site)}` : ""}<br>${d.online ? "online" : "offline"}${clients && d.online ? ` · ${clients}` : ""}${score}`,
        { direction: "top", offset: [0, -6] });
      m.on("click", () => this.onPick?.(d.id));
      this.byId.set(d.id, m);
      return m;
    });
    this.cluster.clearLayers();
    this.cluster.addLayers(markers);
    this.elem.dataset.markers = String(markers.length);
    if (markers.length && !this.fitted) {
      const bounds = L.latLngBounds(pts.map((d) => [d.lat, d.lon]));
      this.map.fitBounds(bounds, { padding: [20, 20], maxZoom: 16, animate: false });
      this.fitted = true;
    }
    return markers.length;
  }

  // Zoom until this device is a dot of its own (spread out if it shares its spot) and open its
  // label; false if it is not on the map.
  show(id) {
    const m = this.byId?.get(id);
    if (!m) return false;
    this.cluster.zoomToShowLayer(m, () => m.openTooltip());
    return true;
  }

  invalidate() { this.map.invalidateSize(); }
}
