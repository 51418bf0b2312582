// The citizens' page: public, no login; only the counts of /api/public/summary.
import { api } from "./api.js";
import { el, hms, int, text } from "./format.js";

const $ = (id) => document.getElementById(id);
const q = (t) => document.querySelector(`[data-testid="${t}"]`);

async function load() {
  try {
    const s = await api.publicSummary();
    q("city-aps").textContent = int(s.active_aps);
    q("city-users").textContent = int(s.connected_users);
    const rows = [...(s.by_region || [])].sort((a, b) => String(a.region).localeCompare(String(b.region)));
    $("city-body").replaceChildren(...rows.map((r) => el("tr", { "data-testid": "city-region" },
      el("th", { scope: "row" }, r.region ? text(r.region) : "other"),
      el("td", { class: "num" }, int(r.active_aps)), el("td", { class: "num" }, int(r.connected_users)))));
    $("city-ts").textContent = hms(new Date((s.ts || Date.now() / 1000) * 1000));
    $("error").hidden = true;
  } catch (e) {
    $("error").textContent = "The numbers cannot be updated right now; they will be retried in a minute.";
    $("error").hidden = false;
  }
}

load();
setInterval(load, 60_000);
