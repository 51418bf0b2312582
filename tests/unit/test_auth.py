"""Tokens, the dashboard's session and its CSRF header, and ``titik-central token``.

The roles of every endpoint are tests/unit/test_api_roles.py's; here: how a credential is
stored, checked, turned into a session and ended.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from central.api.app import create_app
from central.api.auth import COOKIE, CSRF_HEADER, safe_next
from central.cli import main
from central.store.audit import AuditLog
from central.store.pg import PgStore
from central.store.pg.tables import PgAuditLog, PgTokenStore
from central.store.sqlite import SqliteStore
from central.store.tokens import TokenError, TokenStore, digest

AnyStore = SqliteStore | PgStore


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnyStore]:
    """Central's store in SQLite, and in PostgreSQL (tests/postgres.py)."""
    st: AnyStore
    if request.param == "sqlite":
        st = SqliteStore(tmp_path / "auth.db")
    else:
        st = PgStore(request.getfixturevalue("pg_url"))
    yield st
    st.close()


def token_store(store: AnyStore | TokenStore, **kw: Any) -> TokenStore:
    """A TokenStore on the database of ``store`` (SQLite file or PostgreSQL)."""
    if isinstance(store, PgStore | PgTokenStore):
        return PgTokenStore(store.url, **kw)
    return TokenStore(store.path, **kw)


def app(store: AnyStore, **kw: Any) -> FastAPI:
    """create_app; a PostgreSQL store has no file, so its tokens and audit log are passed."""
    if isinstance(store, PgStore):
        kw.setdefault("tokens", PgTokenStore(store.url))
        kw.setdefault("audit_log", PgAuditLog(store.url))
    return create_app(store, **kw)


@pytest.fixture
def tokens(store: AnyStore) -> Iterator[TokenStore]:
    t = token_store(store)
    yield t
    t.close()


def stored_text(store: AnyStore) -> str:
    """Everything the database holds about tokens and sessions, as text."""
    if isinstance(store, PgStore):
        with psycopg.connect(store.url) as conn:
            rows = conn.execute("SELECT * FROM tokens").fetchall()
            rows += conn.execute("SELECT * FROM sessions").fetchall()
        return "\n".join(map(str, rows))
    with sqlite3.connect(store.path) as conn:
        return "\n".join(conn.iterdump())


def test_only_the_hash_is_stored_and_a_token_is_shown_once(
    tokens: TokenStore, store: AnyStore
) -> None:
    token, secret = tokens.create("alice", "operator")
    assert secret.startswith("titik_") and len(secret) == len("titik_") + 43
    dump = stored_text(store)
    assert secret not in dump and secret[6:] not in dump
    assert digest(secret) in dump
    checked = tokens.check(secret)
    assert checked is not None and (checked.id, checked.name) == (token.id, "alice")
    assert tokens.tokens()[0].last_used is not None
    assert tokens.check(secret + "x") is None
    assert tokens.check(secret[:-1]) is None
    assert tokens.check("") is None


def test_names_roles_revoking_and_expiry(tokens: TokenStore) -> None:
    with pytest.raises(TokenError, match="role: must be one of viewer, operator, admin"):
        tokens.create("bob", "root")
    with pytest.raises(TokenError, match="name"):
        tokens.create(" bob", "viewer")
    t, secret = tokens.create("bob", "viewer")
    with pytest.raises(TokenError, match="held by active token"):
        tokens.create("bob", "admin")
    assert tokens.revoke("bob").revoked is not None
    assert tokens.check(secret) is None
    with pytest.raises(TokenError, match="no active token"):
        tokens.revoke(t.id)
    tokens.create("bob", "admin")  # the name is free again
    now = [1000.0]
    timed = token_store(tokens, clock=lambda: now[0])
    _, short = timed.create("temp", "viewer", expires_in_s=60)
    assert timed.check(short) is not None
    now[0] += 61
    assert timed.check(short) is None
    timed.close()


def login(client: TestClient, secret: str) -> str:
    r = client.post("/api/login", json={"token": secret})
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE}=" in cookie
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain http here; https (or X-Forwarded-Proto) sets it
    body = r.json()
    assert set(body) == {"name", "role", "csrf"}
    return str(body["csrf"])


def test_login_session_csrf_and_logout(store: AnyStore, tokens: TokenStore) -> None:
    _, secret = tokens.create("alice", "operator")
    client = TestClient(app(store))
    assert client.get("/api/me").status_code == 401
    csrf = login(client, secret)
    me = client.get("/api/me").json()
    assert me == {"name": "alice", "role": "operator", "csrf": csrf}
    assert client.get("/api/quarantine").status_code == 200
    # A state-changing request by cookie needs the CSRF header, and the right one.
    assert client.post("/api/logout").status_code == 403
    assert client.post("/api/logout", headers={CSRF_HEADER: csrf + "x"}).status_code == 403
    assert client.post("/api/logout", headers={CSRF_HEADER: csrf}).status_code == 200
    assert client.get("/api/me").status_code == 401  # the cookie is gone
    # The old cookie value, replayed, is dead too.
    assert client.get("/api/me").status_code == 401


def test_bearer_requests_need_no_csrf_and_get_none(store: AnyStore, tokens: TokenStore) -> None:
    _, secret = tokens.create("script", "viewer")
    client = TestClient(app(store), headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/api/me").json() == {"name": "script", "role": "viewer", "csrf": None}
    assert client.post("/api/logout").status_code == 200


def test_revoking_the_token_ends_its_sessions(store: AnyStore, tokens: TokenStore) -> None:
    _, secret = tokens.create("alice", "viewer")
    client = TestClient(app(store))
    login(client, secret)
    assert client.get("/api/summary").status_code == 200
    tokens.revoke("alice")
    r = client.get("/api/summary")
    assert r.status_code == 401 and "session has ended" in r.json()["detail"]


def test_sessions_expire(store: AnyStore, tokens: TokenStore) -> None:
    _, secret = tokens.create("alice", "viewer")
    now = [5000.0]
    clocked = token_store(store, clock=lambda: now[0])
    client = TestClient(app(store, tokens=clocked, session_s=3600))
    login(client, secret)
    assert client.get("/api/summary").status_code == 200
    now[0] += 3601
    assert client.get("/api/summary").status_code == 401
    clocked.close()


def test_failed_logins_are_counted_and_never_log_the_token(
    store: AnyStore, tokens: TokenStore, caplog: pytest.LogCaptureFixture
) -> None:
    _, admin = tokens.create("admin", "admin")
    client = TestClient(app(store))
    wrong = "titik_" + "A" * 43
    with caplog.at_level(logging.DEBUG):
        for bad in (wrong, "nonsense"):
            assert client.post("/api/login", json={"token": bad}).status_code == 401
        assert (
            client.get("/api/summary", headers={"Authorization": f"Bearer {wrong}"}).status_code
            == 401
        )
    assert wrong not in caplog.text and "nonsense" not in caplog.text
    assert "refused POST /api/login" in caplog.text
    text = client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).text
    got = {
        (s.name, s.labels.get("reason")): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }
    assert got[("titik_central_auth_failures_total", "login")] == 2
    assert got[("titik_central_auth_failures_total", "bad_token")] == 1


def test_pages_send_a_browser_to_login_and_back(store: AnyStore, tokens: TokenStore) -> None:
    client = TestClient(app(store))
    r = client.get("/docs?x=1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/docs%3Fx%3D1"
    assert "<form" in client.get("/login").text
    _, secret = tokens.create("alice", "viewer")
    login(client, secret)
    assert client.get("/", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(
    ("value", "want"),
    [("/docs", "/docs"), ("//evil.example/x", "/"), ("https://evil.example", "/"),
     ("/\\evil", "/"), (None, "/"), ("", "/")],
)  # fmt: skip
def test_login_only_returns_to_a_path_of_this_site(value: str | None, want: str) -> None:
    assert safe_next(value) == want


def test_cli_token_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "c.db"
    conf = tmp_path / "central.toml"
    conf.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{db}"\n')
    assert (
        main(["token", "create", "--name", "ops", "--role", "operator", "--config", str(conf)]) == 0
    )
    out, err = capsys.readouterr()
    secret = out.strip()
    assert secret.startswith("titik_") and "shown only this once" in err
    assert (
        main(["token", "create", "--name", "ops", "--role", "viewer", "--config", str(conf)]) == 2
    )
    assert "held by active token" in capsys.readouterr().err
    assert main(["token", "list", "--config", str(conf)]) == 0
    listing = capsys.readouterr().out
    assert "ops" in listing and "operator" in listing and secret not in listing
    store = SqliteStore(db)
    client = TestClient(create_app(store), headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/api/quarantine").status_code == 200
    assert main(["token", "revoke", "ops", "--config", str(conf)]) == 0
    assert client.get("/api/quarantine").status_code == 401
    assert main(["token", "list", "--all", "--config", str(conf)]) == 0
    assert "revoked" in capsys.readouterr().out
    # Both are in the audit log, by the Unix user who ran them.
    audit = AuditLog(db)
    actions = [(e.action, e.via, e.result) for e in reversed(audit.page().items)]
    assert actions == [("token.create", "cli", "created"), ("token.revoke", "cli", "revoked")]
    assert audit.verify() == []
    audit.close()
    store.close()


def test_cli_token_on_postgresql(
    tmp_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``[store] url`` the tokens and their audit entries are in PostgreSQL: a central
    started on that database accepts the token; no SQLite file is made."""
    conf = tmp_path / "central.toml"
    db = tmp_path / "unused.db"
    conf.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[store]\nurl = "{pg_url}"\npath = "{db}"\n')
    args = ["--config", str(conf)]
    assert main(["token", "create", "--name", "ops", "--role", "operator", *args]) == 0
    secret = capsys.readouterr().out.strip()
    assert main(["token", "create", "--name", "ops", "--role", "viewer", *args]) == 2
    assert "held by active token" in capsys.readouterr().err
    store = PgStore(pg_url)
    client = TestClient(app(store), headers={"Authorization": f"Bearer {secret}"})
    assert client.get("/api/quarantine").status_code == 200
    assert main(["token", "revoke", "ops", *args]) == 0
    assert client.get("/api/quarantine").status_code == 401
    audit = PgAuditLog(pg_url)
    actions = [(e.action, e.via, e.result) for e in reversed(audit.page().items)]
    assert actions == [("token.create", "cli", "created"), ("token.revoke", "cli", "revoked")]
    assert audit.verify() == [] and not db.exists()
    assert main(["audit", "verify", *args]) == 0
    assert "the audit log is whole: 2 entries" in capsys.readouterr().out
    audit.close()
    store.close()


def test_cli_token_help_explains_roles_and_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["token", "--help"])
    out = capsys.readouterr().out
    for words in ("viewer", "operator", "admin", "printed once", "SHA-256", "token create --name"):
        assert words in out
