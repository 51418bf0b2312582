"""The tables beside the samples (API tokens and sessions, the audit log, rollouts, the alert
lifecycle, the service reports' reads) on PostgreSQL: the SQLite classes' own code
(central/store/tokens.py, audit.py, rollouts.py, alerting.py, service.py), run on a
connection that speaks their SQL to PostgreSQL.

Their SQL is plain (``?`` placeholders, ``BEGIN IMMEDIATE`` ... ``COMMIT``); what differs
is handled here, once, instead of a second copy of every method:

- ``?`` becomes psycopg's ``%s`` and ``%`` is escaped (none of their statements holds a
  literal ``?``);
- ``BEGIN IMMEDIATE`` takes a pooled connection for the transaction, and a transaction-level
  advisory lock per class: SQLite's write lock serialised these transactions, this does the
  same (two ``token create`` with one name, two audit appends extending one chain: exactly
  one goes first, in every central instance and ``titik-central`` command alike);
- a statement outside a transaction borrows a pooled connection for itself (autocommit);
- rows are read by name or by position, as ``sqlite3.Row`` is.

The few methods with SQLite-only SQL (the audit's ``json_extract``) are overridden in
:class:`PgAuditLog`; the alerting and service classes name their few SQLite-only functions
in class attributes, given here in PostgreSQL's spelling. The tables themselves come with
schema versions 3 and 4 (central/store/pg/schema.py).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from central.store import audit as sqlite_audit
from central.store.alerting import AlertingStore
from central.store.audit import AuditEntry, AuditLog
from central.store.base import StoreUnavailable
from central.store.pg import schema
from central.store.pg.qmark import to_pg
from central.store.pg.store import describe
from central.store.rollouts import RolloutStore
from central.store.service import ServiceStore
from central.store.tokens import TokenStore

POOL_MAX = 4
CONNECT_TIMEOUT_S = 10.0
#: pg_advisory_xact_lock keys of the three classes' write transactions.
LOCK_TOKENS = 0x7469_7469_6B00_0010
LOCK_AUDIT = 0x7469_7469_6B00_0011
LOCK_ROLLOUTS = 0x7469_7469_6B00_0012
LOCK_ALERTING = 0x7469_7469_6B00_0013


class Row(dict[str, Any]):
    """A row by column name (``r["seq"]``, ``dict(r)``) or by position (``r[0]``)."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _row_factory(cursor: psycopg.Cursor[Any]) -> RowMaker[Row]:
    names = [c.name for c in cursor.description or ()]

    def make(values: Any) -> Row:
        return Row(zip(names, values, strict=True))

    return make


class Result:
    """A statement's rows, fetched at once (the connection may go back to the pool)."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._at = 0
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        if self._at >= len(self._rows):
            return None
        self._at += 1
        return self._rows[self._at - 1]

    def fetchall(self) -> list[Row]:
        rows, self._at = self._rows[self._at :], len(self._rows)
        return rows

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class PgConn:
    """One thread's view of the pool, with the sqlite3.Connection methods the tables use."""

    def __init__(self, pool: ConnectionPool[Any], lock_key: int) -> None:
        self._pool = pool
        self._lock_key = lock_key
        self._held: psycopg.Connection[Any] | None = None

    @property
    def in_transaction(self) -> bool:
        return self._held is not None

    def execute(self, sql: str, params: Any = ()) -> Result:
        word = sql.strip().split(None, 1)[0].upper() if sql.strip() else ""
        if word == "BEGIN":
            conn = self._pool.getconn()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._lock_key,))
            except BaseException:
                self._pool.putconn(conn)
                raise
            self._held = conn
            return Result([], -1)
        if word in ("COMMIT", "ROLLBACK") and self._held is not None:
            conn, self._held = self._held, None
            try:
                if word == "COMMIT":
                    conn.execute("COMMIT")
                else:
                    # Called while an error propagates: a broken connection must not replace
                    # that error with its own (the pool discards the connection).
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("ROLLBACK")
            finally:
                self._pool.putconn(conn)
            return Result([], -1)
        query = to_pg(sql)
        if self._held is not None:
            return self._run(self._held, query, params)
        with self._pool.connection() as conn:
            return self._run(conn, query, params)

    def executemany(self, sql: str, seq: Any) -> Result:
        """One statement over many rows in one batch (psycopg pipelines them: one round trip,
        not one per row)."""
        rows = [tuple(p) for p in seq]
        if not rows:
            return Result([], 0)
        query = to_pg(sql)
        if self._held is not None:
            return self._many(self._held, query, rows)
        with self._pool.connection() as conn:
            return self._many(conn, query, rows)

    @staticmethod
    def _many(conn: psycopg.Connection[Any], query: bytes, rows: list[tuple[Any, ...]]) -> Result:
        with conn.cursor() as cur:
            cur.executemany(query, rows)
            return Result([], max(0, cur.rowcount))

    @staticmethod
    def _run(conn: psycopg.Connection[Any], query: bytes, params: Any) -> Result:
        with conn.cursor(row_factory=_row_factory) as cur:
            cur.execute(query, tuple(params) if params else None)
            rows = cur.fetchall() if cur.description else []
            return Result(rows, cur.rowcount)


class PgTables:
    """What central.store.tables.SqliteTables gives its subclasses, on PostgreSQL."""

    LOCK_KEY = LOCK_TOKENS

    def _setup(self, url: str, clock: Callable[[], float]) -> None:
        self.url = url
        self.clock = clock
        self._local = threading.local()
        self._pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=POOL_MAX,
            kwargs={"autocommit": True},
            check=ConnectionPool.check_connection,
            timeout=CONNECT_TIMEOUT_S,
            name=f"titik-{type(self).__name__}",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {describe(url)} within "
                f"{CONNECT_TIMEOUT_S:g} s: check [store] url, that the server runs and "
                "accepts this user (pg_hba.conf)"
            ) from exc
        try:
            with self._pool.connection() as conn:
                schema.migrate(conn)
        except BaseException:
            self._pool.close()
            raise

    def _conn(self) -> Any:
        conn: PgConn | None = getattr(self._local, "pgconn", None)
        if conn is None:
            conn = self._local.pgconn = PgConn(self._pool, self.LOCK_KEY)
        return conn

    def close(self) -> None:
        self._pool.close()
        self._local = threading.local()


class PgTokenStore(PgTables, TokenStore):
    """API tokens and dashboard sessions (central/store/tokens.py) in PostgreSQL."""

    LOCK_KEY = LOCK_TOKENS

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._setup(url, clock)
        self._last_used: dict[str, float] = {}

    def _touch(self, token_id: str, now: float) -> None:
        # As TokenStore's: last_used is best effort, a request is never refused for it.
        with contextlib.suppress(psycopg.Error):
            super()._touch(token_id, now)


class PgRolloutStore(PgTables, RolloutStore):
    """Rollouts and operators' intents (central/store/rollouts.py) in PostgreSQL."""

    LOCK_KEY = LOCK_ROLLOUTS

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._setup(url, clock)


class PgAuditLog(PgTables, AuditLog):
    """The hash-chained audit log (central/store/audit.py) in PostgreSQL. Appends are
    serialised by the class's advisory lock (see the module's docstring); triggers refuse
    UPDATE and DELETE, as in SQLite."""

    LOCK_KEY = LOCK_AUDIT

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._setup(url, clock)

    def find(self, action: str, target: str | None = None, **detail: Any) -> AuditEntry | None:
        where, args = ["action = ?"], [action]
        if target is not None:
            where.append("target = ?")
            args.append(target)
        for k, v in detail.items():
            # The member's JSON value, compared as JSON (an id string, a seq number).
            where.append("(detail::jsonb -> ?::text) = ?::jsonb")
            args += [k, json.dumps(v)]
        row = (
            self._conn()
            .execute(
                f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT 1",  # noqa: S608 - fixed clauses
                args,
            )
            .fetchone()
        )
        return sqlite_audit._entry(row) if row else None

    def answers(self, seqs: list[int]) -> dict[int, list[AuditEntry]]:
        if not seqs:
            return {}
        rows = self._conn().execute(
            "SELECT * FROM audit WHERE (detail::jsonb -> 'of') = ANY(?::jsonb[]) ORDER BY seq",
            ([json.dumps(s) for s in seqs],),
        )
        out: dict[int, list[AuditEntry]] = {}
        for r in rows:
            e = sqlite_audit._entry(r)
            out.setdefault(e.details["of"], []).append(e)
        return out


class PgAlertingStore(PgTables, AlertingStore):
    """The alert lifecycle (central/store/alerting.py) in PostgreSQL. An engine tick's
    transaction holds the class's advisory lock, as SQLite's write lock serialised it."""

    LOCK_KEY = LOCK_ALERTING
    GROUPS_JSON = "coalesce(array_to_json(d.groups)::text, '[]')"
    IN_GROUP = "? = ANY(d.groups)"

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._setup(url, clock)


class PgServiceStore(PgTables, ServiceStore):
    """The service reports' reads (central/store/service.py) in PostgreSQL; PgStore writes
    them in the ingest batch's transaction."""

    GREATEST = "greatest"
    COUNT_TRUE = "coalesce(sum(({})::int), 0)"
    JSON_LEN = "json_array_length(({})::json)"

    def __init__(self, url: str, *, clock: Callable[[], float] = time.time) -> None:
        self._setup(url, clock)
