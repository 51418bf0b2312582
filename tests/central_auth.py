"""Credentials for tests that call central's API: a token of a role, as the header dict.

    headers = auth_headers(store, "operator")          # store: a SqliteStore, or its path
    client.get("/api/summary", headers=headers)

The token is created in the store's own database (its SQLite file, or PostgreSQL for a
PgStore), where ``create_app`` looks by default (``tokens`` table, central/store/tokens.py),
exactly as ``titik-central token create`` does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from central.store.pg.tables import PgTokenStore
from central.store.tokens import TokenStore


def create_token(where: Any, role: str, name: str | None = None) -> str:
    """A new token of ``role`` in ``where`` (a store with ``.path`` or ``.url``, or the
    database path)."""
    url = getattr(where, "url", None)
    tokens = PgTokenStore(url) if url else TokenStore(Path(getattr(where, "path", where)))
    try:
        _, secret = tokens.create(name or f"test-{role}-{len(tokens.tokens())}", role)
    finally:
        tokens.close()
    return secret


def auth_headers(where: Any, role: str = "viewer", name: str | None = None) -> dict[str, str]:
    """``{"Authorization": "Bearer <token>"}`` for a new token of ``role`` in ``where``."""
    return {"Authorization": f"Bearer {create_token(where, role, name)}"}
