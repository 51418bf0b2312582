"""What central stored, as the simulator counts it: its ``samples`` table, in SQLite or in
PostgreSQL, behind one small interface (:class:`StoredSamples`).

The scenarios ask three things of central's store: how many rows it holds (progress lines,
ingest rates; the probe that says central is subscribed), which of the fleet's devices it
holds rows of, and, per ``(device, sid)``, how many rows it holds with a seq in the range
the gateway drew. Records lost are worked out from that last answer in one place
(:func:`central.sim.stack.missing_per_device`), whichever the store.

Nothing here writes: SQLite is opened read-only, PostgreSQL is only queried.
"""

from __future__ import annotations

import contextlib
import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path

import psycopg

#: (device, sid) -> [first seq, last seq, count drawn]
Expected = dict[tuple[str, str], list[int]]


class StoredSamples(ABC):
    """Central's ``samples`` table, read-only."""

    #: Where, for logs and errors (a path, or PostgreSQL's user@host:port/db).
    where: str

    @abstractmethod
    def rows(self, device: str | None = None) -> int:
        """Rows stored (of one ``device``); 0 while the table does not exist yet. Without
        ``device`` the largest row id, which only grows: cheap at millions of rows."""

    @abstractmethod
    def devices(self) -> set[str]:
        """Every device with a stored row."""

    @abstractmethod
    def stored_in(self, expected: Expected) -> dict[tuple[str, str], int]:
        """Per ``(device, sid)`` of ``expected``: how many rows hold a seq within its
        ``[first, last]``."""


class SqliteSamples(StoredSamples):
    """Central's SQLite file (``[store] path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def _open(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)

    def rows(self, device: str | None = None) -> int:
        if not self.path.exists():
            return 0
        try:
            with contextlib.closing(self._open()) as conn:
                if device is None:
                    row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
                else:
                    row = conn.execute(
                        "SELECT COUNT(*) FROM samples WHERE device=?", (device,)
                    ).fetchone()
                return int(row[0])
        except sqlite3.OperationalError:  # not created yet
            return 0

    def devices(self) -> set[str]:
        with contextlib.closing(self._open()) as conn:
            return {d for (d,) in conn.execute("SELECT DISTINCT device FROM samples")}

    def stored_in(self, expected: Expected) -> dict[tuple[str, str], int]:
        # One indexed count per key (the UNIQUE (device, sid, seq) index): about 10 µs each
        # in process, no round trip to pay.
        out: dict[tuple[str, str], int] = {}
        with contextlib.closing(self._open()) as conn:
            for (device, sid), (first, last, _count) in expected.items():
                row = conn.execute(
                    "SELECT COUNT(*) FROM samples WHERE device=? AND sid=? AND seq BETWEEN ? AND ?",
                    (device, sid, first, last),
                ).fetchone()
                out[device, sid] = int(row[0])
        return out


#: Every expected range at once, joined to ``samples`` in one statement: 50,000 gateways'
#: counts in one round trip instead of 50,000 (the (device, sid, seq, ts) UNIQUE index of
#: each partition serves the join).
_STORED_IN = b"""
SELECT e.device, e.sid, count(s.seq)
FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::bigint[]) AS e(device, sid, first, last)
LEFT JOIN samples s ON s.device = e.device AND s.sid = e.sid AND s.seq BETWEEN e.first AND e.last
GROUP BY e.device, e.sid
"""


class PgSamples(StoredSamples):
    """Central's PostgreSQL database (``[store] url``)."""

    def __init__(self, url: str) -> None:
        from central.store.pg.store import describe

        self.url = url
        self.where = f"PostgreSQL {describe(url)}"

    def _open(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def rows(self, device: str | None = None) -> int:
        try:
            with self._open() as conn:
                if device is None:
                    row = conn.execute(b"SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
                else:
                    row = conn.execute(
                        b"SELECT COUNT(*) FROM samples WHERE device = %s", (device,)
                    ).fetchone()
                return int(row[0]) if row else 0  # type: ignore[call-overload]
        except psycopg.errors.UndefinedTable:  # central has not created it yet
            return 0

    def devices(self) -> set[str]:
        with self._open() as conn:
            return {str(r[0]) for r in conn.execute(b"SELECT DISTINCT device FROM samples")}

    def stored_in(self, expected: Expected) -> dict[tuple[str, str], int]:
        keys = list(expected)
        params = (
            [k[0] for k in keys],
            [k[1] for k in keys],
            [expected[k][0] for k in keys],
            [expected[k][1] for k in keys],
        )
        with self._open() as conn:
            return {
                (str(d), str(s)): int(n)  # type: ignore[call-overload]
                for d, s, n in conn.execute(_STORED_IN, params)
            }
