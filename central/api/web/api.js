// The central API client. Fetches are relative to the page's origin (/api/...).
export class ApiError extends Error {}

async function getJSON(path, params = {}, signal = undefined) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") qs.set(k, String(v));
  }
  const url = qs.toString() ? `${path}?${qs}` : path;
  let resp;
  try {
    resp = await fetch(url, { headers: { Accept: "application/json" }, signal });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(`cannot reach the API (${path})`);
  }
  if (resp.status === 401) {
    // No session (never logged in, logged out, expired or revoked): log in, then come back.
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    throw new ApiError("not logged in");
  }
  if (!resp.ok) throw new ApiError(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

export const api = {
  summary: () => getJSON("/api/summary"),
  devices: (params, signal) => getJSON("/api/devices", params, signal),
  device: (id) => getJSON(`/api/devices/${encodeURIComponent(id)}`),
  history: (id, since, until) =>
    getJSON(`/api/devices/${encodeURIComponent(id)}/history`, { since, until }),
  alerts: () => getJSON("/api/alerts", { open: "true" }),
};
