"""API tokens and browser sessions, in the central SQLite file (tables ``tokens``, ``sessions``).

A token is ``titik_`` + 43 URL-safe characters (``secrets.token_urlsafe(32)``: 256 random
bits). Only its SHA-256 is stored. A slow password hash (argon2, scrypt) exists to make
guessing a *low-entropy* secret from its hash expensive; a 256-bit random token has no
dictionary to guess from, so one SHA-256 is as strong and lets a request be checked in
microseconds (docs/security.md, "API authentication"). A token is found by its hash and the
stored hash then compared with :func:`hmac.compare_digest`, so no comparison of the secret
takes time that depends on where it first differs.

A session (the dashboard's cookie) is another 256-bit random value, stored hashed the same
way, bound to the token that logged in: revoking the token ends its sessions.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from central.store.tables import SqliteTables

#: Ordered: each role may do what the roles before it may.
ROLES: Final = ("viewer", "operator", "admin")
TOKEN_PREFIX: Final = "titik_"  # noqa: S105 - a prefix, not a secret
#: A token's name is what the audit log calls its holder.
NAME_MAX: Final = 64

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE,
    created REAL NOT NULL, expires REAL, revoked REAL, last_used REAL
);
CREATE TABLE IF NOT EXISTS sessions (
    hash TEXT PRIMARY KEY, token_id TEXT NOT NULL REFERENCES tokens (id), csrf TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_token ON sessions (token_id);
"""

#: ``last_used`` is written at most this often per token (not on every request).
LAST_USED_EVERY_S = 60.0


class TokenError(ValueError):
    """A token cannot be created or revoked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Token:
    """A token as listed (never the secret)."""

    id: str
    name: str
    role: str
    created: float
    expires: float | None
    revoked: float | None
    last_used: float | None

    def active(self, now: float) -> bool:
        return self.revoked is None and (self.expires is None or self.expires > now)


@dataclass(frozen=True, slots=True)
class Session:
    token: Token
    csrf: str
    expires: float


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _token(row: sqlite3.Row) -> Token:
    return Token(
        row["id"],
        row["name"],
        row["role"],
        row["created"],
        row["expires"],
        row["revoked"],
        row["last_used"],
    )


class TokenStore(SqliteTables):
    """Tokens and sessions in the SQLite file at ``path`` (the store's file: one database)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA, clock=clock)
        self._last_used: dict[str, float] = {}

    # --- tokens -----------------------------------------------------------------------

    def create(
        self, name: str, role: str, *, expires_in_s: float | None = None
    ) -> tuple[Token, str]:
        """A new token: (its record, the secret). The secret is shown once, never stored."""
        if role not in ROLES:
            raise TokenError(f"role: must be one of {', '.join(ROLES)}, not {role!r}")
        if not name or len(name) > NAME_MAX or not name.isprintable() or name != name.strip():
            raise TokenError(
                f"name: 1-{NAME_MAX} printable characters without leading or trailing spaces"
            )
        if expires_in_s is not None and expires_in_s <= 0:
            raise TokenError("expires: must be in the future")
        now = self.clock()
        secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            for t in self._rows(conn):
                if t.name == name and t.active(now):
                    raise TokenError(
                        f"name: {name!r} is held by active token {t.id}; revoke it first "
                        "(titik-central token revoke) or choose another name"
                    )
            token_id = secrets.token_hex(4)
            expires = None if expires_in_s is None else now + expires_in_s
            conn.execute(
                "INSERT INTO tokens (id, name, role, hash, created, expires) VALUES (?,?,?,?,?,?)",
                (token_id, name, role, digest(secret), now, expires),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Token(token_id, name, role, now, expires, None, None), secret

    @staticmethod
    def _rows(conn: sqlite3.Connection) -> list[Token]:
        return [_token(r) for r in conn.execute("SELECT * FROM tokens ORDER BY created, id")]

    def tokens(self) -> list[Token]:
        return self._rows(self._conn())

    def revoke(self, which: str) -> Token:
        """Revoke the active token whose id (or, if unambiguous, name) is ``which``; its
        sessions end with it."""
        now = self.clock()
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = [t for t in self._rows(conn) if t.active(now)]
            found = [t for t in rows if t.id == which] or [t for t in rows if t.name == which]
            if not found:
                raise TokenError(
                    f"no active token with id or name {which!r} (see titik-central token list)"
                )
            if len(found) > 1:
                raise TokenError(f"{which!r} names {len(found)} tokens; give the id")
            t = found[0]
            conn.execute("UPDATE tokens SET revoked = ? WHERE id = ?", (now, t.id))
            conn.execute("DELETE FROM sessions WHERE token_id = ?", (t.id,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Token(t.id, t.name, t.role, t.created, t.expires, now, t.last_used)

    def check(self, secret: str) -> Token | None:
        """The active token ``secret`` is, or None."""
        if not secret.startswith(TOKEN_PREFIX) or len(secret) > 128:
            return None
        h = digest(secret)
        row = self._conn().execute("SELECT * FROM tokens WHERE hash = ?", (h,)).fetchone()
        if row is None or not hmac.compare_digest(row["hash"], h):
            return None
        token = _token(row)
        now = self.clock()
        if not token.active(now):
            return None
        self._touch(token.id, now)
        return token

    def _touch(self, token_id: str, now: float) -> None:
        if now - self._last_used.get(token_id, float("-inf")) < LAST_USED_EVERY_S:
            return
        self._last_used[token_id] = now
        # Busy: a later request writes it; a request is never refused for this.
        with contextlib.suppress(sqlite3.OperationalError):
            self._conn().execute("UPDATE tokens SET last_used = ? WHERE id = ?", (now, token_id))

    # --- sessions ----------------------------------------------------------------------

    def open_session(self, token: Token, lifetime_s: float) -> tuple[str, str, float]:
        """A new session for ``token``: (the cookie's value, the CSRF value, expiry)."""
        now = self.clock()
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + lifetime_s
        if token.expires is not None:
            expires = min(expires, token.expires)
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("DELETE FROM sessions WHERE expires <= ?", (now,))
            conn.execute(
                "INSERT INTO sessions VALUES (?,?,?,?,?)",
                (digest(sid), token.id, csrf, now, expires),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return sid, csrf, expires

    def session(self, sid: str) -> Session | None:
        """The live session of cookie value ``sid`` (its token still active), or None."""
        if len(sid) > 128:
            return None
        h = digest(sid)
        row = (
            self._conn()
            .execute(
                "SELECT s.hash AS s_hash, s.csrf, s.expires AS s_expires, t.* FROM sessions s "
                "JOIN tokens t ON t.id = s.token_id WHERE s.hash = ?",
                (h,),
            )
            .fetchone()
        )
        if row is None or not hmac.compare_digest(row["s_hash"], h):
            return None
        now = self.clock()
        token = _token(row)
        if row["s_expires"] <= now or not token.active(now):
            return None
        return Session(token, row["csrf"], row["s_expires"])

    def close_session(self, sid: str) -> None:
        self._conn().execute("DELETE FROM sessions WHERE hash = ?", (digest(sid),))
