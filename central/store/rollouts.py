"""Rollouts in the central SQLite file (tables ``rollouts``, ``rollout_intents``).

A rollout's whole state is one JSON document (``central.rollout.engine.to_dict``) written by
the process that runs rollouts after each step, with its id, group, status and times as
columns to list and filter by. Operators' pause, resume and abort requests are rows of
``rollout_intents``, taken by that process at its next step: one writer of a rollout's state,
so a request never races a step (and several central instances can share the file's
PostgreSQL successor the same way, issue 21).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.store.tables import SqliteTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY, grp TEXT NOT NULL, status TEXT NOT NULL, created REAL NOT NULL,
    created_by TEXT NOT NULL, updated REAL NOT NULL, state TEXT NOT NULL, gate TEXT
);
CREATE INDEX IF NOT EXISTS rollouts_status ON rollouts (status);
CREATE TABLE IF NOT EXISTS rollout_intents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, rollout TEXT NOT NULL REFERENCES rollouts (id),
    action TEXT NOT NULL, who TEXT NOT NULL, at REAL NOT NULL, taken REAL
);
"""

ACTIVE = ("running", "paused")
INTENTS = ("pause", "resume", "abort")


class RolloutStoreError(ValueError):
    """A request the store refuses; the message says why."""


@dataclass(frozen=True, slots=True)
class StoredRollout:
    id: str
    group: str
    status: str
    created: float
    created_by: str
    updated: float
    state: dict[str, Any]
    gate: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Intent:
    seq: int
    rollout: str
    action: str
    who: str
    at: float


def _row(r: sqlite3.Row) -> StoredRollout:
    return StoredRollout(
        r["id"],
        r["grp"],
        r["status"],
        r["created"],
        r["created_by"],
        r["updated"],
        json.loads(r["state"]),
        json.loads(r["gate"]) if r["gate"] else None,
    )


class RolloutStore(SqliteTables):
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA, clock=clock)

    def create(self, rid: str, group: str, who: str, state: Mapping[str, Any]) -> None:
        """A new rollout; refused while the group has one running or paused, or the id exists."""
        conn, now = self._conn(), self.clock()
        conn.execute("BEGIN IMMEDIATE")
        try:
            busy = conn.execute(
                "SELECT id FROM rollouts WHERE grp = ? AND status IN (?, ?)", (group, *ACTIVE)
            ).fetchone()
            if busy is not None:
                raise RolloutStoreError(
                    f"group {group!r} has rollout {busy['id']!r} under way; abort it or wait "
                    "for it to end"
                )
            if conn.execute("SELECT 1 FROM rollouts WHERE id = ?", (rid,)).fetchone():
                raise RolloutStoreError(f"rollout id {rid!r} exists already; choose another")
            conn.execute(
                "INSERT INTO rollouts VALUES (?,?,?,?,?,?,?,NULL)",
                (rid, group, state["status"], now, who, now, json.dumps(state)),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def save(self, rid: str, state: Mapping[str, Any], gate: Mapping[str, Any] | None) -> None:
        """The new state; ``gate`` None (a step that judged nothing: a pause, an abort) keeps
        the last gate's figures, which the API shows until the next judgement."""
        self._conn().execute(
            "UPDATE rollouts SET status = ?, updated = ?, state = ?, gate = COALESCE(?, gate) "
            "WHERE id = ?",
            (
                state["status"],
                self.clock(),
                json.dumps(state),
                json.dumps(gate) if gate is not None else None,
                rid,
            ),
        )

    def get(self, rid: str) -> StoredRollout | None:
        r = self._conn().execute("SELECT * FROM rollouts WHERE id = ?", (rid,)).fetchone()
        return _row(r) if r else None

    def listing(self, *, active_only: bool = False, limit: int = 100) -> list[StoredRollout]:
        where = f"WHERE status IN {ACTIVE!r}" if active_only else ""
        rows = self._conn().execute(
            f"SELECT * FROM rollouts {where} ORDER BY created DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [_row(r) for r in rows]

    def request(self, rid: str, action: str, who: str) -> None:
        if action not in INTENTS:
            raise RolloutStoreError(f"action: one of {', '.join(INTENTS)}")
        if self.get(rid) is None:
            raise RolloutStoreError(f"no rollout {rid!r}")
        self._conn().execute(
            "INSERT INTO rollout_intents (rollout, action, who, at) VALUES (?,?,?,?)",
            (rid, action, who, self.clock()),
        )

    def take_intents(self, rid: str) -> list[Intent]:
        """The requests not yet taken, oldest first; marked taken."""
        conn = self._conn()
        rows = conn.execute(
            "SELECT * FROM rollout_intents WHERE rollout = ? AND taken IS NULL ORDER BY seq",
            (rid,),
        ).fetchall()
        if rows:
            conn.execute(
                "UPDATE rollout_intents SET taken = ? WHERE seq <= ? AND rollout = ? "
                "AND taken IS NULL",
                (self.clock(), rows[-1]["seq"], rid),
            )
        return [Intent(r["seq"], r["rollout"], r["action"], r["who"], r["at"]) for r in rows]
