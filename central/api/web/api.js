// The central API client. Fetches are relative to the page's origin (/api/...).
// A 401 sends the visitor to /login (and back here after). A request that changes state
// carries the CSRF header that login returned (kept in sessionStorage, per tab).
export class ApiError extends Error {
  constructor(message, status = 0) { super(message); this.status = status; }
}

const CSRF_KEY = "titik.csrf";
export const session = {
  csrf: () => sessionStorage.getItem(CSRF_KEY),
  set(csrf) { if (csrf) sessionStorage.setItem(CSRF_KEY, csrf); },
  clear() { sessionStorage.removeItem(CSRF_KEY); },
};

export function toLogin() {
  const next = location.pathname + location.search;
  location.assign(`/login?next=${encodeURIComponent(next)}`);
}

// FastAPI's errors: {"detail": "text"} or {"detail": [{"loc": [...], "msg": "..."}]}.
function detailText(body) {
  const d = body?.detail;
  if (typeof d === "string") return d;
  if (Array.isArray(d)) return d.map((e) => `${(e.loc || []).filter((x) => x !== "body").join(".")}: ${e.msg}`).join("; ");
  return "";
}

async function request(method, path, { params = {}, body, signal, on401 = "login" } = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") qs.set(k, String(v));
  }
  const url = qs.toString() ? `${path}?${qs}` : path;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf()) headers["X-Titik-CSRF"] = session.csrf();
  let resp;
  try {
    resp = await fetch(url, {
      method, headers, signal, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`cannot reach the API (${path})`);
  }
  if (resp.status === 401 && on401 === "login") {
    toLogin();
    throw new ApiError("not signed in", 401);
  }
  if (!resp.ok) {
    const text = detailText(await resp.json().catch(() => null));
    throw new ApiError(`${path}: HTTP ${resp.status}${text ? `: ${text}` : ""}`, resp.status);
  }
  return resp.status === 204 ? null : resp.json();
}

const get = (path, params, signal) => request("GET", path, { params, signal });
const post = (path, body, opts = {}) => request("POST", path, { body, ...opts });
// An alert id is <kind>/<device>/<since>: each part encoded, the slashes kept.
const alertPath = (id) => id.split("/").map(encodeURIComponent).join("/");

export const api = {
  summary: () => get("/api/summary"),
  devices: (params, signal) => get("/api/devices", params, signal),
  device: (id) => get(`/api/devices/${encodeURIComponent(id)}`),
  history: (id, since, until) => get(`/api/devices/${encodeURIComponent(id)}/history`, { since, until }),
  net: (id, since, until) => get(`/api/devices/${encodeURIComponent(id)}/net`, { since, until }),
  alerts: (open = true, state = null) => get("/api/alerts", { ...(open === null ? {} : { open: String(open) }), ...(state ? { state } : {}) }),
  alertHistory: (id) => get(`/api/alerts/${alertPath(id)}/history`),
  reopen: (id) => post(`/api/alerts/${alertPath(id)}/reopen`),
  windows: (all = false) => get("/api/maintenance", all ? { all: "true" } : {}),
  addWindow: (body) => post("/api/maintenance", body),
  deleteWindow: (id) => request("DELETE", `/api/maintenance/${encodeURIComponent(id)}`),
  incidents: (open = true) => get("/api/incidents", open ? { open: "true" } : {}),
  settings: () => get("/api/console/settings"),
  me: () => request("GET", "/api/me", { on401: "throw" }),
  login: (token) => post("/api/login", { token }, { on401: "throw" }),
  logout: () => post("/api/logout", undefined, { on401: "throw" }),
  ack: (id, note) => post(`/api/alerts/${alertPath(id)}/ack`, note ? { note } : {}),
  snooze: (id, minutes, note) => post(`/api/alerts/${alertPath(id)}/snooze`, note ? { minutes, note } : { minutes }),
  signing: () => get("/api/actions/signing"),
  prepare: (kind, target, body) => post("/api/actions/prepare", { kind, target, body }),
  submit: (actionId, sig) => post("/api/actions/submit", { action_id: actionId, sig }),
  rollouts: () => get("/api/rollouts"),
  rollout: (id) => get(`/api/rollouts/${encodeURIComponent(id)}`),
  rolloutPrepare: (plan) => post("/api/rollouts/prepare", plan),
  rolloutSubmit: (prepareId, sigs) => post("/api/rollouts/submit", { prepare_id: prepareId, sigs }),
  rolloutAsk: (id, action) => post(`/api/rollouts/${encodeURIComponent(id)}/${action}`),
  audit: (params) => get("/api/audit", params),
  auditVerify: () => get("/api/audit/verify"),
  publicSummary: () => request("GET", "/api/public/summary", { on401: "throw" }),
  // Service health (issue 20).
  serviceScores: () => get("/api/service/scores"),
  serviceWorst: (limit = 10) => get("/api/service/worst", { limit }),
  serviceLatest: (id) => get(`/api/devices/${encodeURIComponent(id)}/service`),
  serviceHistory: (id, since, until) => get(`/api/devices/${encodeURIComponent(id)}/service/history`, { since, until }),
};
