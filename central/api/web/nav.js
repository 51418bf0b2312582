// The console's top bar: the pages, who is signed in (name and role), and sign out.
// mountNav() resolves with the principal ({name, role}); without a session it goes to /login.
import { api, session, toLogin } from "./api.js";
import { el } from "./format.js";

export const ROLES = ["viewer", "operator", "admin"];
export const atLeast = (role, want) => ROLES.indexOf(role) >= ROLES.indexOf(want);

const LINKS = [
  ["/", "Overview"], ["/map", "Map"], ["/alerts", "Alerts"], ["/actions", "Actions", "operator"],
  ["/rollouts", "Rollouts"],
  ["/audit", "Audit"], ["/city", "Citizens"], ["/docs", "API"],
];

export async function mountNav() {
  const host = document.getElementById("nav");
  let me;
  try {
    me = await api.me();
  } catch (e) {
    if (e.status === 401) { toLogin(); return new Promise(() => {}); }
    throw e;
  }
  // /api/me gives the session's CSRF value too: a tab opened after login can act.
  if (me.csrf) session.set(me.csrf);
  const here = location.pathname;
  const links = LINKS.filter(([, , role]) => !role || atLeast(me.role, role)).map(([href, label]) =>
    el("a", { href, class: href === here ? "active" : null, "aria-current": href === here ? "page" : null }, label));
  const out = el("button", { type: "button", class: "signout", "data-testid": "logout" }, "Sign out");
  out.addEventListener("click", async () => {
    try { await api.logout(); } finally { session.clear(); location.assign("/login"); }
  });
  host.replaceChildren(
    el("div", { class: "nav-links" }, ...links),
    el("div", { class: "whoami" },
      el("span", { "data-testid": "me" }, me.name),
      el("span", { class: `role role-${me.role}`, "data-testid": "role" }, me.role), out));
  return me;
}
