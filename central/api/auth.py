"""Who may call what: Bearer tokens and the dashboard's session cookie, three ordered roles.

Every endpoint declares its role with a dependency, ``Depends(require("viewer"))`` (or
``"operator"``, ``"admin"``), or says it is public with ``Depends(public)``;
``tests/unit/test_api_roles.py`` walks ``app.routes`` and fails on an endpoint that does
neither. A credential is either ``Authorization: Bearer <token>`` (scripts, Prometheus,
titik-ctl) or the ``titik_session`` cookie ``POST /api/login`` sets (the dashboard). A
request authenticated by the cookie that changes state (any method but GET, HEAD, OPTIONS)
must also carry ``X-Titik-CSRF`` with the value login returned: another site can make the
browser send the cookie (SameSite=Strict already stops that in current browsers), but never
read or set that header. Bearer requests need no CSRF header: no browser adds them by itself.

Answers: 401 (with ``WWW-Authenticate: Bearer``) without a valid credential, 403 when the role
is too low or the CSRF header is missing or wrong. Pages (``/``, ``/docs``) send a browser
without a credential to ``/login?next=<page>`` instead. Failures are counted (``/metrics``:
``titik_central_auth_failures_total{reason}``) and logged with the client's address, never
with the token.

How other code reaches this from a request: ``request.app.state.auth`` (:class:`Auth`) and
``request.app.state.audit`` (:class:`central.store.audit.AuditLog`).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from fastapi import HTTPException, Request
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from central.store.tokens import ROLES, Session, Token, TokenStore

log = logging.getLogger("titik.central.auth")

COOKIE: Final = "titik_session"
CSRF_HEADER: Final = "X-Titik-CSRF"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
#: Why a request was refused (the label of the failure counter).
FAILURES: Final = ("login", "missing", "bad_token", "bad_session", "role", "csrf")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the token's name (what the audit log records), role and id."""

    name: str
    role: str
    token_id: str


def rank(role: str) -> int:
    return ROLES.index(role)


class Auth:
    """The credentials check of one app (``app.state.auth``)."""

    def __init__(self, tokens: TokenStore, *, session_s: float = 12 * 3600.0) -> None:
        self.tokens = tokens
        self.session_s = session_s
        self.failures = dict.fromkeys(FAILURES, 0)
        self.logins = 0
        self._lock = threading.Lock()

    def logged_in(self) -> None:
        with self._lock:
            self.logins += 1

    def count(self, reason: str, request: Request) -> None:
        with self._lock:
            self.failures[reason] += 1
        client = request.client.host if request.client else "?"
        log.warning("refused %s %s from %s: %s", request.method, request.url.path, client, reason)

    def authenticate(self, request: Request) -> tuple[Token, Session | None] | None:
        """The caller's token (and session, when by cookie), or None without a credential.
        A credential that is given but not valid is a 401, never "no credential"."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            token = self.tokens.check(secret.strip()) if scheme.lower() == "bearer" else None
            if token is None:
                self.count("bad_token", request)
                raise unauthorized("the Bearer token is not valid (unknown, revoked or expired)")
            return token, None
        sid = request.cookies.get(COOKIE)
        if sid:
            session = self.tokens.session(sid)
            if session is None:
                self.count("bad_session", request)
                raise unauthorized("the session has ended (logged out, expired or revoked)")
            return session.token, session
        return None

    def principal(self, request: Request, role: str) -> Principal:
        found = self.authenticate(request)
        if found is None:
            self.count("missing", request)
            raise unauthorized("log in (POST /api/login) or send Authorization: Bearer <token>")
        token, session = found
        if rank(token.role) < rank(role):
            self.count("role", request)
            raise HTTPException(
                403, f"this needs the {role} role; {token.name} has the {token.role} role"
            )
        if session is not None and request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
                self.count("csrf", request)
                raise HTTPException(
                    403, f"the {CSRF_HEADER} header is missing or wrong (the value login returned)"
                )
        return Principal(token.name, token.role, token.id)


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


def auth_of(request: Request) -> Auth:
    auth: Auth = request.app.state.auth
    return auth


class Require:
    """The dependency ``require(role)`` returns; ``role`` is read by the role matrix test."""

    def __init__(self, role: str, *, page: bool = False) -> None:
        if role not in ROLES:
            raise ValueError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        self.role = role
        self.page = page

    def __call__(self, request: Request) -> Principal:
        try:
            return auth_of(request).principal(request, self.role)
        except HTTPException as exc:
            if not self.page or exc.status_code != 401:
                raise
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise HTTPException(
                303, "log in first", headers={"Location": login_url(target)}
            ) from None

    def __repr__(self) -> str:
        return f"require({self.role!r})"


def require(role: str) -> Require:
    """A FastAPI dependency: the caller as a :class:`Principal`; 401 without a credential,
    403 with a role below ``role`` (or a cookie request that changes state without CSRF)."""
    return Require(role)


def require_page(role: str) -> Require:
    """Like :func:`require` for an HTML page: a browser without a credential is sent to the
    login page (303), which comes back here after logging in."""
    return Require(role, page=True)


def public() -> None:
    """The dependency of an endpoint anyone may call (the role matrix test looks for it)."""


def login_url(next_path: str) -> str:
    return "/login?next=" + quote(next_path, safe="/")


def safe_next(value: str | None) -> str:
    """Where to go after logging in: a path on this site only (never ``//host`` or a URL)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


class AuthCollector(Collector):
    """``titik_central_logins_total`` and ``titik_central_auth_failures_total{reason}``."""

    def __init__(self, auth: Auth) -> None:
        self.auth = auth

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "titik_central_logins", "Dashboard logins (POST /api/login) accepted", self.auth.logins
        )
        failures = CounterMetricFamily(
            "titik_central_auth_failures",
            "Requests refused: login (bad token at /api/login), missing, bad_token, "
            "bad_session, role (too low), csrf",
            labels=["reason"],
        )
        for reason, n in self.auth.failures.items():
            failures.add_metric([reason], n)
        yield failures
