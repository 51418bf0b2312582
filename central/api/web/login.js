// The sign-in page: a token -> POST /api/login -> the session cookie (HttpOnly, set by
// central) and the CSRF value (kept in this tab's sessionStorage) -> back where we came from.
import { api, session } from "./api.js";

const form = document.getElementById("login");
const err = document.getElementById("login-error");

// Only a path on this server (not "//host", not a URL): no open redirect.
function nextPath() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  return next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") ? next : "/";
}

form.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  err.hidden = true;
  const token = form.token.value.trim();
  const button = form.querySelector("button");
  button.disabled = true;
  try {
    const me = await api.login(token);
    session.set(me.csrf);
    location.assign(nextPath());
  } catch (e) {
    err.textContent = e.status === 401 || e.status === 403
      ? "That token is not valid (unknown, revoked or expired): check it, or ask an administrator for a new one."
      : `Cannot sign in: ${e.message}`;
    err.hidden = false;
    form.token.select();
  } finally {
    button.disabled = false;
  }
});
form.token.focus();
