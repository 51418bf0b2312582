// Config push and commands from the web, signed end to end:
// prepare (central validates and returns the exact bytes) -> the operator reads them ->
// the page signs them with the key in its memory -> submit (central verifies and publishes).
import { api } from "./api.js";
import { dateTime, el } from "./format.js";
import { atLeast, mountNav } from "./nav.js";
import { canon, fromB64, loadKey, showKey, signingAvailable } from "./sign.js";

const $ = (id) => document.getElementById(id);
const state = { key: null, prepared: null, trusted: [] };

const TEMPLATES = {
  command: {
    "collect_now": { name: "collect_now", args: {} },
    "diagnostics": { name: "diagnostics", args: {} },
    "restart_wifi": { name: "restart_wifi", args: {} },
    "reboot (in 30 s)": { name: "reboot", args: { delay_s: 30 } },
    "get_config": { name: "get_config", args: {} },
  },
  config: {
    "telemetry interval": { config: { telemetry: { interval_s: 60 } } },
    "public SSID": { config: { wifi: { ssids: { public: { ssid: "City Free WiFi", max_clients: 60 } } } } },
  },
};

function showError(msg) { $("error").textContent = msg; $("error").hidden = !msg; }
function result(msg, good) {
  const r = $("result");
  r.textContent = msg;
  r.className = `notice ${good ? "good" : "bad"}`;
  r.hidden = !msg;
}

function fillTemplates() {
  const kind = $("kind").value;
  const names = Object.keys(TEMPLATES[kind]);
  $("template").replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  $("body").value = JSON.stringify(TEMPLATES[kind][names[0]], null, 2);
}

const keyState = () => showKey(state);

// The bytes must be "titik-sig-v1\n<topic>\n<the payload's JSON>" (agent/protocol/signing.py):
// check that they say what the page shows before the operator signs them.
function checkBytes(p, text) {
  const head = `titik-sig-v1\n${p.topic}\n`;
  if (!text.startsWith(head)) return "they do not start with titik-sig-v1 and the topic";
  let body;
  try { body = JSON.parse(text.slice(head.length)); } catch { return "their JSON does not parse"; }
  return canon(body) === canon(p.payload) ? null : "their JSON is not the payload shown";
}

function review(p) {
  state.prepared = p;
  const bytes = fromB64(p.signed_bytes_b64);
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  $("review-summary").textContent = p.summary;
  $("review-topic").textContent = p.topic;
  $("review-payload").textContent = JSON.stringify(p.payload, null, 2);
  $("review-bytes").textContent = text;
  const bad = checkBytes(p, text);
  $("review-check").textContent = bad ? `· do not sign: ${bad}` : "· they match the payload and topic above";
  $("review-check").className = bad ? "error-text" : "ok-text";
  $("expires").textContent = p.expires_at ? `sign before ${dateTime(p.expires_at)}` : "";
  $("review").hidden = false;
  if (bad) state.prepared = null;
  keyState();
}

function discard() {
  state.prepared = null;
  $("review").hidden = true;
  keyState();
}

async function prepare(ev) {
  ev.preventDefault();
  result("", true);
  let body;
  try { body = JSON.parse($("body").value); } catch (e) { result(`The body is not JSON: ${e.message}`, false); return; }
  const target = { [$("target-kind").value]: $("target").value.trim() };
  try {
    review(await api.prepare($("kind").value, target, body));
  } catch (e) {
    discard();
    result(`Refused before signing: ${e.message}`, false);
  }
}

async function signAndSend() {
  const p = state.prepared;
  if (!p || !state.key) return;
  $("sign").disabled = true;
  try {
    const value = await state.key.sign(fromB64(p.signed_bytes_b64));
    const out = await api.submit(p.action_id, { alg: "ed25519", kid: state.key.kid, value });
    discard();
    result(`Sent: ${p.summary} (${out.status} on ${out.topic}).`, true);
  } catch (e) {
    result(`Not sent: ${e.message}`, false);
    keyState();
  }
}

async function main() {
  const me = await mountNav();
  if (!atLeast(me.role, "operator")) {
    result(`Sending configs and commands needs the operator role; you are signed in as a ${me.role}.`, false);
    document.querySelectorAll("main section").forEach((s) => { s.hidden = true; });
    return;
  }
  if (!signingAvailable()) {
    showError("Signing needs a secure page: this browser offers no WebCrypto here. Open the console over HTTPS (or on localhost).");
  }
  api.signing().then((s) => {
    state.trusted = s.key_ids || [];
    $("trusted").textContent = state.trusted.length
      ? `Central accepts signatures by the key ids ${state.trusted.join(", ")}.`
      : "Central trusts no signing key yet ([console] signing_keys): nothing can be sent.";
    keyState();
  }, (e) => { $("trusted").textContent = `Cannot read the trusted keys: ${e.message}`; });
  $("key-file").addEventListener("change", async () => {
    const file = $("key-file").files[0];
    $("key-file").value = "";
    if (!file) return;
    try {
      state.key = await loadKey(await file.text());
      result("", true);
    } catch (e) {
      state.key = null;
      result(`Cannot use that key: ${e.message}`, false);
    }
    keyState();
  });
  $("key-forget").addEventListener("click", () => { state.key = null; keyState(); });
  $("kind").addEventListener("change", () => { fillTemplates(); discard(); });
  $("template").addEventListener("change", () => {
    $("body").value = JSON.stringify(TEMPLATES[$("kind").value][$("template").value], null, 2);
  });
  $("target-kind").addEventListener("change", () => { $("target").placeholder = $("target-kind").value === "device" ? "device id" : "group name"; });
  $("prep").addEventListener("submit", prepare);
  $("sign").addEventListener("click", signAndSend);
  $("discard").addEventListener("click", discard);
  const params = new URLSearchParams(location.search);
  if (params.get("device")) $("target").value = params.get("device");
  fillTemplates();
  keyState();
  document.body.dataset.ready = "1";
}

main().catch((e) => showError(String(e.message || e)));
