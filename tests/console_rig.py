"""A console app for tests: the actions router over a real SQLite store, with stand-ins for
the two things the auth helper's branch provides (issue 18: central.api.auth.require and the
audit log). They behave as the contract says (docs/helpers' console contract, section 1-2):

- ``require(role)``: 401 without a credential, 403 when the role is too low, else a frozen
  Principal(name, role, token_id). The credential here is ``X-Test-Principal: name:role``.
- ``RecordingAudit.append(...)``: the contract's signature; it records the entries.

These are stand-ins until the auth branch is merged; the tests assert on what the actions
router does (refuse, publish, audit), which does not depend on how a principal is found.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.testclient import TestClient

from agent.protocol.signing import key_id, public_key_text
from central.actions.core import Console, Publisher
from central.api.app import create_app
from central.api.routes.actions import build_router
from central.store.sqlite import SqliteStore

ROLES = ("viewer", "operator", "admin")
PREFIX = "titik"


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    token_id: str


def require(role: str) -> Callable[..., Principal]:
    def dep(x_test_principal: str | None = Header(default=None)) -> Principal:
        if not x_test_principal:
            raise HTTPException(401, "a credential is needed")
        name, _, have = x_test_principal.partition(":")
        if have not in ROLES:
            raise HTTPException(401, "unknown credential")
        if ROLES.index(have) < ROLES.index(role):
            raise HTTPException(403, f"needs the role {role}")
        return Principal(name, have, f"tok-{name}")

    return dep


@dataclass
class RecordingAudit:
    entries: list[dict[str, Any]] = field(default_factory=list)

    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        key_id: str | None,
        result: str,
        detail: Mapping[str, Any] | None = None,
        via: str,
    ) -> dict[str, Any]:
        entry = {
            "actor": actor,
            "action": action,
            "target": target,
            "key_id": key_id,
            "result": result,
            "detail": dict(detail or {}),
            "via": via,
        }
        self.entries.append(entry)
        return entry


def as_role(name: str, role: str) -> dict[str, str]:
    return {"X-Test-Principal": f"{name}:{role}"}


@dataclass
class Rig:
    app: FastAPI
    client: TestClient
    store: SqliteStore
    console: Console
    audit: RecordingAudit
    key: Ed25519PrivateKey
    clock: list[float]

    @property
    def kid(self) -> str:
        from cryptography.hazmat.primitives import serialization

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
    audit = RecordingAudit()

    def audit_of(request: Request) -> RecordingAudit:
        return audit

    router = build_router(
        console=console, store=store, require=require, audit_of=audit_of, clock=lambda: now[0]
    )
    app = create_app(store, routers=[router], web_dir=tmp / "no-web")
    return Rig(app, TestClient(app), store, console, audit, key, now)


def sign_prepared(key: Ed25519PrivateKey, prepared: Mapping[str, Any], kid: str) -> dict[str, str]:
    """What the page does: sign the bytes central gave (signed_bytes_b64), nothing else."""
    data = base64.b64decode(prepared["signed_bytes_b64"])
    return {"alg": "ed25519", "kid": kid, "value": base64.b64encode(key.sign(data)).decode()}
