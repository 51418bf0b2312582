// The full map page: every access point (the API's limit of 10,000), clustered, filtered by
// status and region; "Find" zooms to one device. A dot opens that device's history.
import { api } from "./api.js";
import { el, int } from "./format.js";
import { FleetMap } from "./map.js";
import { mountNav } from "./nav.js";
import { loadScores, withScores } from "./service.js";

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 60_000;
let all = [];
let fmap = null;

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }

function render() {
  const status = $("m-status").value;
  const region = $("m-region").value;
  const shown = all.filter((d) => (!status || (status === "online") === Boolean(d.online)) && (!region || d.region === region));
  const n = fmap.setDevices(shown);
  const off = shown.filter((d) => !d.online).length;
  $("map-count").textContent = `· ${int(n)} on the map, ${int(off)} offline${shown.length - n ? `, ${int(shown.length - n)} without coordinates` : ""}`;
  $("map-count").dataset.markers = String(n);
}

async function load() {
  const [data, scores] = await Promise.all([api.devices({ limit: 10000, offset: 0 }), loadScores()]);
  all = withScores(data.items || [], scores);
  const regions = [...new Set(all.map((d) => d.region).filter(Boolean))].sort();
  const sel = $("m-region");
  const keep = sel.value;
  sel.replaceChildren(el("option", { value: "" }, "All"), ...regions.map((r) => el("option", { value: r }, r)));
  sel.value = regions.includes(keep) ? keep : "";
  $("m-ids").replaceChildren(...all.map((d) => el("option", { value: d.id })));
  render();
  showError("");
}

function find() {
  const id = $("m-find").value.trim();
  const d = all.find((x) => x.id === id);
  if (!d) { $("m-found").textContent = id ? "no such device" : ""; return; }
  if (d.lat == null || d.lon == null) { $("m-found").textContent = "it has no coordinates"; return; }
  $("m-found").textContent = fmap.show(id) ? "" : "not shown with these filters";
}

async function main() {
  await mountNav();
  const settings = await api.settings();
  fmap = new FleetMap($("map"), settings.map, (id) => location.assign(`/history?device=${encodeURIComponent(id)}`));
  $("map-filters").addEventListener("submit", (ev) => { ev.preventDefault(); find(); });
  $("m-find").addEventListener("change", find);
  $("m-status").addEventListener("change", render);
  $("m-region").addEventListener("change", render);
  await load();
  setInterval(() => load().catch((e) => showError(`Update failed: ${e.message}. Showing the last data.`)), REFRESH_MS);
}

main().catch((e) => showError(String(e.message || e)));
