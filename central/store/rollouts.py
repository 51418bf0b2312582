"""Rollouts in the central SQLite file (tables ``rollouts``, ``rollout_intents``).

A rollout's whole state is one JSON document (``central.rollout.engine.to_dict``) written by
the process that runs rollouts after each step, with its id, group, status and times as
columns to list and filter by. Operators' pause, resume and abort requests are rows of
``rollout_intents``, taken by that process at its next step: one writer of a rollout's state,
so a request never races a step (and several central instances can share the file's
PostgreSQL successor the same way, issue 21).

``upgrade_steps`` keeps, for an upgrade rollout (central/rollout/upgrade.py), each gateway's
latest upgrade step: an upgrade command is answered by several reports on ``cmd/result``
(docs/upgrades.md, "The reports"), and the wave's gate needs the last of them, across the
rollout's commands. The broker audit writes it (central/ingest/audit.py) as answers come;
the runner reads it. One row per rollout and gateway, and only for rollouts that exist.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
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
CREATE TABLE IF NOT EXISTS upgrade_steps (
    rollout TEXT NOT NULL REFERENCES rollouts (id), device TEXT NOT NULL, cmd TEXT NOT NULL,
    step TEXT NOT NULL, ok INTEGER NOT NULL, error TEXT, ts REAL, failures INTEGER NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (rollout, device)
);
"""

ACTIVE = ("running", "paused")
#: Upgrade rollout ids are shorter than config ones: the command ids carry them.
UPGRADE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
#: Steps that end an upgrade well, and badly (docs/upgrades.md, "The reports").
DONE_STEPS = ("confirmed",)
FAILED_STEPS = ("rolled_back", "failed")
#: A refusal that means the gateway already runs the release (or a newer one): done.
ALREADY = ("is running already", "downgrades are refused")
#: A refusal that means another command of this rollout is at work on the gateway: no news.
BUSY = ("still in its health gate", "being downloaded already")


def command_id(rid: str, wave: int, k: int) -> str:
    """``up:<rollout>:<wave>.<step>`` (1-based): the broker audit finds the rollout in it."""
    return f"up:{rid}:{wave + 1}.{k + 1}"


def rollout_of(cid: str) -> str | None:
    """The rollout id in a command id made by :func:`command_id`, else None."""
    parts = cid.split(":")
    if len(parts) == 3 and parts[0] == "up" and UPGRADE_ID.match(parts[1]):
        return parts[1]
    return None


# -- an upgrade's latest step of each gateway (central/rollout/upgrade.py) -----------


@dataclass(frozen=True, slots=True)
class StepRow:
    """A gateway's latest word on a rollout's upgrade: its step (``refused`` for an error
    without one), whether it was ok, the error, and how many failures it reported so far."""

    device: str
    cmd: str
    step: str
    ok: bool
    error: str | None
    ts: float | None
    failures: int = 0


def answer_step(body: Mapping[str, Any]) -> tuple[str, bool, str | None]:
    """(step, ok, error) of one answer on ``cmd/result``: its ``step`` member, the result's
    ``step``, or ``refused`` for an error result without one."""
    ok = body.get("ok") is True
    result = body.get("result")
    step = body.get("step")
    if not isinstance(step, str) and isinstance(result, Mapping):
        step = result.get("step")
    err = body.get("error")
    error = str(err)[:300] if err is not None and not ok else None
    if not isinstance(step, str) or not step.isidentifier() or len(step) > 32:
        step = "refused" if not ok else "ok"
    return step, ok, error


def merge(old: StepRow | None, new: StepRow) -> StepRow | None:
    """What to keep of ``new`` given ``old`` (None: keep ``old`` unchanged).

    ``skipped`` says nothing once the gateway has acted; a refusal because another command
    of the rollout is at work says nothing either; a failure is counted, so a gateway that
    failed stays failed unless it later confirms (a retry that worked)."""
    if new.step == "skipped" and old is not None:
        return None
    if new.step == "refused" and any(b in (new.error or "") for b in BUSY):
        return None
    failures = (old.failures if old is not None else 0) + (1 if outcome(new) == "failed" else 0)
    return StepRow(new.device, new.cmd, new.step, new.ok, new.error, new.ts, failures)


def outcome(row: StepRow | None) -> str:
    """``done``, ``failed``, ``pending`` or ``none`` (no word yet, or outside the cohort)."""
    if row is None or row.step == "skipped":
        return "none"
    if row.step in DONE_STEPS:
        return "done"
    if row.step == "refused" and any(a in (row.error or "") for a in ALREADY):
        return "done"
    if row.step in FAILED_STEPS or not row.ok:
        return "failed"
    return "failed" if row.failures else "pending"


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

    # -- an upgrade's steps ---------------------------------------------------------------

    def record_steps(self, answers: Sequence[tuple[str, StepRow]]) -> int:
        """Keep each (rollout, row) as the gateway's latest step of that rollout, as
        :func:`merge` says, in one transaction; answers about an unknown rollout are dropped
        (a gateway cannot grow the table). How many rows changed."""
        if not answers:
            return 0
        conn, changed = self._conn(), 0
        known: dict[str, bool] = {}
        conn.execute("BEGIN IMMEDIATE")
        try:
            for rollout, row in answers:
                if rollout not in known:
                    got = conn.execute("SELECT 1 FROM rollouts WHERE id = ?", (rollout,))
                    known[rollout] = got.fetchone() is not None
                if not known[rollout]:
                    continue
                r = conn.execute(
                    "SELECT * FROM upgrade_steps WHERE rollout = ? AND device = ?",
                    (rollout, row.device),
                ).fetchone()
                kept = merge(_step(r) if r else None, row)
                if kept is None:
                    continue
                conn.execute(
                    "INSERT INTO upgrade_steps VALUES (?,?,?,?,?,?,?,?,?) "
                    "ON CONFLICT (rollout, device) DO UPDATE SET cmd = excluded.cmd, "
                    "step = excluded.step, ok = excluded.ok, error = excluded.error, "
                    "ts = excluded.ts, failures = excluded.failures, at = excluded.at",
                    (
                        rollout, kept.device, kept.cmd, kept.step, int(kept.ok), kept.error,
                        kept.ts, kept.failures, self.clock(),
                    ),
                )  # fmt: skip
                changed += 1
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return changed

    def steps(self, rollout: str) -> dict[str, StepRow]:
        """Every gateway's latest step of ``rollout``."""
        rows = self._conn().execute("SELECT * FROM upgrade_steps WHERE rollout = ?", (rollout,))
        return {r["device"]: _step(r) for r in rows}


def _step(r: Any) -> StepRow:
    return StepRow(
        r["device"], r["cmd"], r["step"], bool(r["ok"]), r["error"], r["ts"], r["failures"]
    )
