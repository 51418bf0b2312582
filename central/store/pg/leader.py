"""One evaluator among several central instances: a PostgreSQL session-level advisory lock.

Every instance ingests its share of the messages (MQTT 5 shared subscription) and serves the
API; the work that must run once per fleet (the rollout runner, the alert engine, the fleet's
staleness and offline rules, roll-ups and retention) runs only on the instance that holds
the advisory lock :data:`LOCK_LEADER`, taken with ``pg_try_advisory_lock`` on a connection of
its own (not the store's pool: a session-level lock lives exactly as long as its session).

- A standby tries to take the lock every ``retry_s`` (never waits on it).
- The leader runs ``SELECT 1`` on that connection before each round of evaluation
  (:meth:`Leadership.check`); if the connection is gone, it stops evaluating at once and
  becomes a standby. PostgreSQL releases a session's advisory locks when the session ends,
  so when a leader dies (SIGKILL, a crash, its machine) the kernel closes its socket, the
  server ends the session, and a standby's next try takes the lock: within ``retry_s``.
- A leader cut off from the database without its socket closing (a network partition): the
  TCP keepalives and ``tcp_user_timeout`` set here make its own ``SELECT 1`` fail within
  about :data:`DEAD_AFTER_S`; the server ends its session after the server's own
  ``tcp_keepalives_*`` settings (docs/central.md, "Several instances").

The key is fixed, so every central on one database competes for the same lock; the other
locks central takes (central/store/pg/schema.py) are transaction-level, never this one.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import conninfo

from central.store.pg.store import describe

log = logging.getLogger("titik.central.leader")

#: pg_try_advisory_lock key of the evaluator (beside schema.LOCK_MIGRATE/LOCK_PARTITIONS).
LOCK_LEADER = 0x7469_7469_6B00_0003
RETRY_S = 3.0
CONNECT_TIMEOUT_S = 5
#: A leader whose database went silent notices within about this long (libpq settings below).
DEAD_AFTER_S = 10
_KEEPALIVE: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": DEAD_AFTER_S * 1000,
    "connect_timeout": CONNECT_TIMEOUT_S,
    "application_name": "titik-central leader",
}

LEADER_MSG = "leader: this instance evaluates alerts and rollouts"
STANDBY_MSG = (
    "standby: another instance evaluates alerts and rollouts; this one ingests and serves the API"
)


class Leadership:
    """Whether this instance is the fleet's evaluator.

    ``url=None`` (SQLite: one instance per database file) is always the leader. With a
    PostgreSQL url: call :meth:`check` from one thread (central's writer) before each round
    of evaluation; :attr:`leader` is safe to read from any thread (the API's gauge).
    ``on_change(leader)`` is called on each change, in the checking thread.
    """

    def __init__(
        self,
        url: str | None,
        *,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        self.url = url
        self.retry_s = retry_s
        self.clock = clock
        self.on_change = on_change
        self.leader = url is None
        self._conn: psycopg.Connection[Any] | None = None
        self._next_try = 0.0
        self._said: bool | None = None
        if url is None:
            self._tell(True)

    def check(self) -> bool:
        """True if this instance holds the lock now: the leader's connection answers, or a
        standby whose turn to try came took the lock."""
        if self.url is None:
            return True
        if self.leader:
            try:
                if self._conn is None:
                    raise psycopg.InterfaceError("no connection")
                self._conn.execute("SELECT 1")
            except Exception as exc:
                log.error("leader: lost the database connection holding the lock (%s)", exc)
                self._drop()
                self._set(False)
            return self.leader
        now = self.clock()
        if now < self._next_try:
            return False
        self._next_try = now + self.retry_s
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    conninfo.make_conninfo(self.url, **_KEEPALIVE), autocommit=True
                )
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_LEADER,)).fetchone()
            got = bool(row and row[0])
        except Exception as exc:
            log.warning(
                "standby: cannot reach PostgreSQL at %s to take the lock (%s); trying again "
                "in %g s", describe(self.url), exc, self.retry_s,
            )  # fmt: skip
            self._drop()
            got = False
        self._set(got)
        return got

    def instances(self) -> int:
        """How many centrals share this database (each keeps its lock connection open, by
        its ``application_name``); 1 alone or on SQLite, or when that cannot be asked."""
        if self.url is None or self._conn is None:
            return 1
        try:
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = %s",
                (_KEEPALIVE["application_name"],),
            ).fetchone()
        except Exception:
            return 1
        return max(1, int(row[0])) if row else 1

    def close(self) -> None:
        """Give up the lock (a clean stop: a standby takes over at its next try)."""
        self._drop()
        if self.url is not None:
            self.leader = False

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken connection: nothing to do
                conn.close()

    def _set(self, leader: bool) -> None:
        changed = leader != self.leader
        self.leader = leader
        self._tell(leader)
        if changed and self.on_change is not None:
            self.on_change(leader)

    def _tell(self, leader: bool) -> None:
        if self._said is not leader:
            self._said = leader
            log.info(LEADER_MSG if leader else STANDBY_MSG)
