"""Issue 18, point 1: every endpoint, every role, allowed or refused as declared.

The routes come from the app itself (``app.routes``: the OpenAPI ones and the others, pages,
/openapi.json, /docs, the /static mount), so a new endpoint is tested the moment it exists;
one that declares no role (neither ``Depends(require(ROLE))`` nor ``Depends(public)``,
central/api/auth.py) fails :func:`test_every_route_declares_a_role`. For each route: no
credential is a 401 (a page sends the browser to /login), a role below the declared one a
403, the declared role and those above it pass (whatever the endpoint then answers: 200,
404, 422 ...). ``PINNED`` holds the roles the docs promise, so changing one is a conscious
edit here and in docs/security.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from starlette.routing import Mount

from central.api.app import create_app
from central.api.auth import Require, public
from central.api.routes.actions import console_router
from central.api.routes.alerting import alerting_router
from central.api.routes.rollouts import rollouts_router
from central.config import CentralConfig
from central.store.sqlite import SqliteStore
from central.store.tokens import ROLES
from tests.central_auth import auth_headers

#: What docs/security.md ("Roles") promises. Routes not listed are still tested, with the
#: role their code declares.
PINNED: dict[tuple[str, str], str] = {
    ("GET", "/api/summary"): "viewer",
    ("GET", "/api/devices"): "viewer",
    ("GET", "/api/devices/{device}"): "viewer",
    ("GET", "/api/devices/{device}/history"): "viewer",
    ("GET", "/api/alerts"): "viewer",
    ("GET", "/api/compliance"): "viewer",
    ("GET", "/api/quarantine"): "operator",
    ("GET", "/api/audit"): "viewer",
    ("GET", "/api/audit/verify"): "viewer",
    ("GET", "/api/me"): "viewer",
    ("POST", "/api/logout"): "viewer",
    ("GET", "/api/tokens"): "admin",
    ("GET", "/metrics"): "viewer",
    ("GET", "/openapi.json"): "viewer",
    ("GET", "/docs"): "viewer",
    ("GET", "/"): "viewer",
    # The console's actions (central/api/routes/actions.py).
    ("GET", "/api/actions/signing"): "viewer",
    ("POST", "/api/actions/prepare"): "operator",
    ("POST", "/api/actions/submit"): "operator",
    ("POST", "/api/alerts/{alert:path}/ack"): "operator",
    ("POST", "/api/alerts/{alert:path}/snooze"): "operator",
    # The alert lifecycle (central/api/routes/alerting.py, issue 19).
    ("GET", "/api/alerts/{alert:path}/history"): "viewer",
    ("POST", "/api/alerts/{alert:path}/reopen"): "operator",
    ("GET", "/api/maintenance"): "viewer",
    ("POST", "/api/maintenance"): "operator",
    ("DELETE", "/api/maintenance/{wid}"): "operator",
    ("GET", "/api/incidents"): "viewer",
    ("GET", "/api/incidents/{iid}"): "viewer",
    ("GET", "/api/notifications"): "viewer",
    # Service health (issue 20, central/api/routes/service.py).
    ("GET", "/api/service/worst"): "viewer",
    ("GET", "/api/service/scores"): "viewer",
    ("GET", "/api/service/rollups"): "viewer",
    ("GET", "/api/devices/{device}/service"): "viewer",
    ("GET", "/api/devices/{device}/service/history"): "viewer",
    # Rollouts (central/api/routes/rollouts.py).
    ("POST", "/api/rollouts/prepare"): "operator",
    ("POST", "/api/rollouts/submit"): "operator",
    ("GET", "/api/rollouts"): "viewer",
    ("GET", "/api/rollouts/{rid}"): "viewer",
    ("POST", "/api/rollouts/{rid}/pause"): "operator",
    ("POST", "/api/rollouts/{rid}/resume"): "operator",
    ("POST", "/api/rollouts/{rid}/abort"): "operator",
    ("GET", "/rollouts"): "viewer",
}
#: Anyone: the city app's numbers (and the citizens' page showing them), liveness, and what it
#: takes to log in.
PUBLIC = {
    ("GET", "/api/public/summary"),
    ("GET", "/city"),
    ("GET", "/healthz"),
    ("GET", "/login"),
    ("POST", "/api/login"),
}
#: Browser pages: without a credential they answer 303 to the login page.
PAGES = {"/", "/docs", "/map", "/history", "/alerts", "/actions", "/audit", "/rollouts"}
PUBLIC_MOUNTS = {"/static"}


def flat_routes(app: FastAPI) -> list[Any]:
    """Every route of the app with the dependencies of the routers it was included from.
    FastAPI >= 0.16x keeps included routers nested in ``app.routes`` and flattens them with
    ``routing.iter_route_contexts``; older versions list the routes themselves."""
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    return list(flatten(app.routes)) if flatten else list(app.routes)


def declared(route: Any) -> str | None:
    """The role the route's dependencies declare: ``public``, a role, or None."""
    found: list[str] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, Require):
            found.append(dep.call.role)
        elif dep.call is public:
            found.append("public")
        stack.extend(dep.dependencies)
    assert len(set(found)) <= 1, f"{route.path}: declares {found}"
    return found[0] if found else None


def endpoints(app: FastAPI) -> Iterator[tuple[str, str, Any]]:
    for route in flat_routes(app):
        if isinstance(getattr(route, "original_route", route), APIRoute):
            for method in sorted(route.methods - {"HEAD"}):
                yield method, route.path, route


def concrete(path: str) -> str:
    """A path template with a value for each parameter."""
    return re.sub(r"\{[^}]+\}", lambda m: "gw-1" if m.group() == "{device}" else "x1", path)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("roles")
    store = SqliteStore(tmp / "roles.db")
    # The real web directory (/, /login and /static exist) and the console's actions, as
    # titik-central run serves them (no broker: a submit would answer 503).
    config = CentralConfig.model_validate({"mqtt": {"host": "localhost"}})
    app = create_app(
        store,
        routers=[
            console_router(config, store, None),
            alerting_router(config, store, None),
            rollouts_router(config, store),
        ],
    )
    headers = {role: auth_headers(store, role) for role in ROLES}
    with TestClient(app) as client:
        yield {"app": app, "client": client, "headers": headers}
    store.close()


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    kwargs: dict[str, Any] = {"headers": headers, "follow_redirects": False}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return client.request(method, concrete(path), **kwargs)


def test_every_route_declares_a_role(world: dict[str, Any]) -> None:
    undeclared = [f"{m} {p}" for m, p, r in endpoints(world["app"]) if declared(r) is None]
    assert not undeclared, (
        "these endpoints declare no role: add dependencies=[Depends(require(ROLE))] "
        f"or [Depends(public)] (central/api/auth.py): {undeclared}"
    )
    public_routes = {(m, p) for m, p, r in endpoints(world["app"]) if declared(r) == "public"}
    assert public_routes == PUBLIC
    mounts = {
        r.path
        for r in flat_routes(world["app"])
        if isinstance(getattr(r, "original_route", r), Mount)
    }
    assert mounts <= PUBLIC_MOUNTS, f"a mount is not behind a role: {mounts - PUBLIC_MOUNTS}"


def test_pinned_roles_are_the_declared_ones(world: dict[str, Any]) -> None:
    got = {(m, p): declared(r) for m, p, r in endpoints(world["app"])}
    assert {k: got.get(k) for k in PINNED} == PINNED


def test_each_role_is_allowed_or_refused_on_every_endpoint(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    checked = 0
    for method, path, route in endpoints(world["app"]):
        role = declared(route)
        assert role is not None
        anonymous = call(client, method, path, {})
        if role == "public":
            assert anonymous.status_code not in (401, 403), f"{method} {path}"
            continue
        if path in PAGES:
            assert anonymous.status_code == 303, f"{method} {path}"
            assert anonymous.headers["location"].startswith("/login?next=")
        else:
            assert anonymous.status_code == 401, f"{method} {path}: {anonymous.status_code}"
            assert anonymous.headers["www-authenticate"] == "Bearer"
        for who in ROLES:
            r = call(client, method, path, world["headers"][who])
            if ROLES.index(who) >= ROLES.index(role):
                assert r.status_code not in (401, 403), f"{who} on {method} {path}: {r.text}"
            else:
                assert r.status_code == 403, f"{who} on {method} {path}: {r.status_code}"
                assert f"needs the {role} role" in r.json()["detail"]
            checked += 1
    assert checked >= 3 * len(PINNED)


def test_a_bad_or_revoked_token_is_401_not_anonymous(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    for header in ("Bearer titik_not-a-token", "Basic dXNlcjpwYXNz", "Bearer"):
        r = client.get("/api/summary", headers={"Authorization": header})
        assert r.status_code == 401, header
    # A bad credential on a public endpoint does not matter.
    r = client.get("/api/public/summary", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 200


def test_static_files_are_public_and_hold_no_data(world: dict[str, Any]) -> None:
    client: TestClient = world["client"]
    assert client.get("/static/login.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    assert client.get("/login").status_code == 200


def test_metrics_can_be_made_public_by_config(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "m.db")
    client = TestClient(create_app(store, metrics_public=True))
    assert client.get("/metrics").status_code == 200
    assert client.get("/api/summary").status_code == 401
    closed = TestClient(create_app(store))
    assert closed.get("/metrics").status_code == 401
    store.close()
