"""A console app for tests: the actions router over a real SQLite store, with the real
credentials check (central.api.auth, tokens made as ``titik-central token create`` makes them:
tests/central_auth.py) and the real hash-chained audit log (central.store.audit)."""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient

from agent.protocol.signing import key_id, public_key_text
from central.actions.core import Console, Publisher
from central.api.app import create_app
from central.api.auth import require
from central.api.routes.actions import audit_of_app, build_router
from central.store.audit import AuditLog
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers

PREFIX = "titik"


@dataclass
class Rig:
    app: FastAPI
    client: TestClient
    store: SqliteStore
    console: Console
    key: Ed25519PrivateKey
    clock: list[float]
    _tokens: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def as_(self, name: str, role: str) -> dict[str, str]:
        """The headers of a token named ``name`` with ``role`` (made once, then reused)."""
        if (name, role) not in self._tokens:
            self._tokens[name, role] = auth_headers(self.store, role, name)
        return self._tokens[name, role]

    @property
    def ops(self) -> dict[str, str]:
        return self.as_("ana", "operator")

    @property
    def audit(self) -> AuditLog:
        log: AuditLog = self.app.state.audit
        return log

    def entries(self) -> list[dict[str, Any]]:
        """The audit log, oldest first, as dicts."""
        items = reversed(self.audit.page(limit=10_000).items)
        keys = ("actor", "action", "target", "key_id", "result", "via")
        return [{**{k: getattr(e, k) for k in keys}, "detail": e.details} for e in items]

    @property
    def kid(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return key_id(raw)


def make_rig(
    tmp: Path, publisher: Publisher | None, *, ttl_s: float = 600.0, keys: list[str] | None = None
) -> Rig:
    key = Ed25519PrivateKey.generate()
    now = [time.time()]
    store = SqliteStore(tmp / "central.db")
    console = Console(
        prefix=PREFIX,
        signing_keys=keys if keys is not None else [public_key_text(key.public_key())],
        publisher=publisher,
        docs=store,
        members=lambda g: store.devices(group=g, limit=0).total,
        ttl_s=ttl_s,
        clock=lambda: now[0],
    )
    router = build_router(
        console=console, store=store, require=require, audit_of=audit_of_app, clock=lambda: now[0]
    )
    app = create_app(store, routers=[router], web_dir=tmp / "no-web")
    return Rig(app, TestClient(app), store, console, key, now)


def sign_prepared(key: Ed25519PrivateKey, prepared: Mapping[str, Any], kid: str) -> dict[str, str]:
    """What the page does: sign the bytes central gave (signed_bytes_b64), nothing else."""
    data = base64.b64decode(prepared["signed_bytes_b64"])
    return {"alg": "ed25519", "kid": kid, "value": base64.b64encode(key.sign(data)).decode()}
