// Ed25519 signing in the page with WebCrypto (Chromium 137+, Firefox 129+, Safari 17+), so no
// signing library is vendored. WebCrypto exists only in a secure context (HTTPS, or http on
// localhost): docs/central.md says to serve the console over TLS.
// The private key is imported non-extractable and lives only in this page's memory.

const b64 = (bytes) => btoa(String.fromCharCode(...new Uint8Array(bytes)));
export const fromB64 = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
const fromB64url = (s) => fromB64(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (s.length % 4)) % 4));

// Canonical form for comparing two JSON values (sorted keys): what central prepared against
// what the page shows, before anything is signed.
export function canon(v) {
  if (Array.isArray(v)) return `[${v.map(canon).join(",")}]`;
  if (v && typeof v === "object") return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canon(v[k])}`).join(",")}}`;
  return JSON.stringify(v);
}

// A signing form's key line (#key-state, #key-forget, #sign) from the page's state: the key
// loaded, the key ids central trusts, whether something is prepared to sign.
export function showKey(state) {
  const k = state.key;
  const s = document.getElementById("key-state");
  if (!k) { s.textContent = "no key loaded"; s.className = "muted"; }
  else if (state.trusted.length && !state.trusted.includes(k.kid)) {
    s.textContent = `key ${k.kid} loaded, but central does not trust it: signatures will be refused`;
    s.className = "warn-text";
  } else { s.textContent = `key ${k.kid} loaded (in this page's memory only)`; s.className = "ok-text"; }
  document.getElementById("key-forget").disabled = !k;
  document.getElementById("sign").disabled = !(k && state.prepared);
}

export function signingAvailable() {
  return Boolean(window.isSecureContext && window.crypto?.subtle);
}

// PEM "PRIVATE KEY" (PKCS#8, unencrypted, as titik-ctl keygen writes it) -> DER bytes.
function pemToDer(text) {
  const m = /-----BEGIN PRIVATE KEY-----([A-Za-z0-9+/=\s]+)-----END PRIVATE KEY-----/.exec(text);
  if (!m) {
    if (/ENCRYPTED PRIVATE KEY/.test(text)) throw new Error("this key is encrypted with a passphrase; titik-ctl keygen writes an unencrypted PEM");
    if (/PUBLIC KEY/.test(text)) throw new Error("this is a public key; load the private key file (the one titik-ctl keygen wrote with --out)");
    throw new Error("not a PEM private key (-----BEGIN PRIVATE KEY----- ...)");
  }
  return fromB64(m[1].replace(/\s+/g, ""));
}

// The key id central and the gateways use: the first 16 hex digits of SHA-256 of the raw
// 32-byte public key (agent/protocol/signing.py, key_id).
async function keyId(rawPublic) {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", rawPublic));
  return [...h.slice(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// -> {kid, sign(bytes) -> base64}.
export async function loadKey(pemText) {
  if (!signingAvailable()) throw new Error("signing needs a secure page: open the console over HTTPS (or on localhost)");
  const der = pemToDer(pemText);
  let probe;
  try {
    // Once extractable, only to read the public half (JWK "x") for the key id; then dropped.
    probe = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, true, ["sign"]);
  } catch (e) {
    throw new Error(`not an Ed25519 private key (${e.name})`);
  }
  const jwk = await crypto.subtle.exportKey("jwk", probe);
  const kid = await keyId(fromB64url(jwk.x));
  jwk.d = "";
  const key = await crypto.subtle.importKey("pkcs8", der, { name: "Ed25519" }, false, ["sign"]);
  der.fill(0);
  return {
    kid,
    async sign(bytes) { return b64(await crypto.subtle.sign({ name: "Ed25519" }, key, bytes)); },
  };
}
