// The login page: POST /api/login {token}; the session cookie is HttpOnly, the CSRF value is
// kept in sessionStorage for the pages that change state (header X-Titik-CSRF).
const form = document.getElementById("login");
const error = document.getElementById("login-error");

function nextPage() {
  const next = new URLSearchParams(location.search).get("next") || "/";
  // Only a path on this site (never //host or a URL).
  return next.startsWith("/") && !next.startsWith("//") && !next.includes("\\") ? next : "/";
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const token = document.getElementById("token").value.trim();
  let resp;
  try {
    resp = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ token }),
    });
  } catch {
    error.textContent = "Cannot reach central.";
    error.hidden = false;
    return;
  }
  if (!resp.ok) {
    error.textContent = resp.status === 401 ? "That token is not valid (unknown, revoked or expired)." : `Login failed: HTTP ${resp.status}`;
    error.hidden = false;
    return;
  }
  const me = await resp.json();
  sessionStorage.setItem("titik.csrf", me.csrf);
  location.assign(nextPage());
});
