"""Tables beside the samples in central's SQLite file (tokens, the audit log, rollouts, alerts,
service reports): one connection per thread, each in WAL mode with a busy timeout, as the
main store opens its own readers (:class:`ThreadConnections`)."""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path


class _Held:
    """One thread's connection, held by that thread's slot of a ``threading.local``."""

    __slots__ = ("__weakref__", "conn")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn


class ThreadConnections:
    """A connection per thread, made by ``connect`` at the thread's first use.

    Each is held only by its thread's slot of a ``threading.local`` and listed weakly, so
    :meth:`close` reaches every thread's, and a thread that ends frees its connection (a
    strong list kept the connections of threads long gone until :meth:`close`; SQLite itself
    may keep such a connection's file open until the file's last connection in the process
    closes, because closing it would drop the others' POSIX locks).
    """

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._local = threading.local()
        self._held: weakref.WeakSet[_Held] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self) -> sqlite3.Connection:
        held: _Held | None = getattr(self._local, "held", None)
        if held is None:
            held = self._local.held = _Held(self._connect())
            with self._lock:
                self._held.add(held)
        return held.conn

    def close(self) -> None:
        with self._lock:
            for held in list(self._held):
                held.conn.close()
            self._held.clear()
        self._local = threading.local()


class SqliteTables:
    """Per-thread connections to the SQLite file at ``path``; ``schema`` run once on open."""

    def __init__(self, path: Path, schema: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # per-thread state of subclasses (the audit's batch)
        self._conns = ThreadConnections(self._open)
        self._conn().executescript(schema)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _conn(self) -> sqlite3.Connection:
        return self._conns.get()

    def close(self) -> None:
        self._conns.close()
        self._local = threading.local()
