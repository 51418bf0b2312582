"""SQLite's ``?`` statements on psycopg, so the SQL the two stores share is written once:
``?`` becomes psycopg's ``%s`` and a literal ``%`` is escaped (no shared statement holds a
literal ``?``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import psycopg


def to_pg(sql: str) -> bytes:
    """``sql`` with ``?`` placeholders, as psycopg's query text."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


class QmarkCursor:
    """A psycopg cursor taking ``?`` statements: what central.store.service.write needs."""

    def __init__(self, cur: psycopg.Cursor[Any]) -> None:
        self._cur = cur

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> None:
        rows = list(seq)
        if rows:
            self._cur.executemany(to_pg(sql), rows)
