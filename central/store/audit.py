"""The audit log: append-only and hash-chained, in the central SQLite file (table ``audit``).

Every entry's ``hash`` is SHA-256 over its canonical fields (:func:`canonical`: sorted-key
compact JSON of ``seq, at, actor, action, target, key_id, via, result, detail, ref, prev``),
where ``prev`` is the hash of the entry before it (64 zeros for the first). Changing any field
of an entry breaks its own hash; deleting one leaves a gap in ``seq`` and a ``prev`` that
points at nothing; inserting one breaks the next entry's ``prev``. :meth:`AuditLog.verify`
names the first entry where any of that happens. Triggers refuse ``UPDATE`` and ``DELETE`` on
the table, so no code path of central changes the log by mistake; they do not stop someone who
can write the file (they can drop the triggers): that is what the chain is for. What the
chain does *not* prove (a rewritten tail, a whole log rewritten by someone who knows the
scheme) is in docs/security.md, "Audit log"; each entry's hash is also logged at INFO, so a
copy of the journal anchors the chain outside the database.

Appends are serialised by SQLite (``BEGIN IMMEDIATE``), so the API's threads, the broker
audit and a ``titik-central token`` run in another process all extend one chain.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from central.store.tables import SqliteTables

log = logging.getLogger("titik.central.audit")

VIA: Final = ("web", "ctl", "broker", "cli")
Via = Literal["web", "ctl", "broker", "cli"]
GENESIS: Final = "0" * 64
#: Largest ``detail`` (its canonical JSON), so one entry cannot fill the disk.
MAX_DETAIL: Final = 16 * 1024
MAX_TEXT: Final = 512

SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, key_id TEXT, via TEXT NOT NULL, result TEXT NOT NULL,
    detail TEXT NOT NULL, ref TEXT, prev TEXT NOT NULL, hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_ref ON audit (ref);
CREATE INDEX IF NOT EXISTS audit_actor ON audit (actor);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target);
CREATE INDEX IF NOT EXISTS audit_of ON audit (json_extract(detail, '$.of'));
-- A command's answers find it by its id (a group command: one lookup per gateway).
CREATE INDEX IF NOT EXISTS audit_cmd_id ON audit (json_extract(detail, '$.id'));
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
"""

#: The MQTT 5 user property titik-ctl sets on what it publishes (``titik-via: ctl``): a label
#: for the reader, not proof (the signature's kid is the proof of who).
VIA_PROPERTY: Final = "titik-via"


def message_ref(topic: str, payload: bytes) -> str:
    """The ``ref`` of a message that crossed the broker: ``msg:`` + SHA-256 of topic and bytes.

    Code that publishes a signed message itself (the web actions) appends its entry with this
    ``ref`` *before* publishing; the broker audit then sees the ref in the log and does not
    record the same message a second time."""
    return "msg:" + hashlib.sha256(topic.encode() + b"\n" + payload).hexdigest()


FIELDS: Final = (
    "seq", "at", "actor", "action", "target", "key_id", "via", "result", "detail", "ref", "prev",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    seq: int
    at: float
    actor: str
    action: str
    target: str
    key_id: str | None
    via: str
    result: str
    #: Canonical JSON text (what the hash covers); :attr:`details` is it parsed.
    detail: str
    ref: str | None
    prev: str
    hash: str

    @property
    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.detail)
        return out


@dataclass(frozen=True, slots=True)
class AuditPage:
    total: int
    items: list[AuditEntry]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes an entry's hash covers: its fields (without ``hash``) as sorted compact JSON."""
    return canonical_json({k: fields[k] for k in FIELDS}).encode()


def entry_hash(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical(fields)).hexdigest()


def _log(entry: AuditEntry) -> None:
    log.info(
        "audit #%d %s %s %s via %s: %s (hash %s)",
        entry.seq, entry.actor, entry.action, entry.target, entry.via, entry.result, entry.hash,
    )  # fmt: skip


def _entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(**{k: row[k] for k in (*FIELDS, "hash")})


def _text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise ValueError(f"{what}: must be 1-{MAX_TEXT} characters")
    return value


class AuditLog(SqliteTables):
    """The log in the SQLite file at ``path`` (the store's file)."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA, clock=clock)

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Appends on this thread inside the block share one transaction (one commit, one sync
        of the file): the broker audit records a wave's 9,000 answers this way, where one
        transaction each held the file's write lock ~100 times a second against the ingest
        writer. All or nothing: an exception rolls every append of the block back. The log
        lines of its entries are written after the commit."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        self._local.pending = []
        try:
            yield
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        else:
            for entry in self._local.pending:
                _log(entry)
        finally:
            self._local.pending = None

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
        ref: str | None = None,
    ) -> AuditEntry:
        """Append one entry and return it. ``ref`` names what the entry is about (a message's
        digest, ``answer:<seq>:<device>``): with a ``ref``, an entry whose ``ref`` is already
        in the log is not added again and the existing one is returned (a retained message
        delivered again, a gateway's answer repeated)."""
        if via not in VIA:
            raise ValueError(f"via: must be one of {', '.join(VIA)}, not {via!r}")
        detail_text = canonical_json(dict(detail or {}))
        if len(detail_text.encode()) > MAX_DETAIL:
            raise ValueError(f"detail: more than {MAX_DETAIL} bytes of JSON")
        fields: dict[str, Any] = {
            "actor": _text(actor, "actor"),
            "action": _text(action, "action"),
            "target": _text(target, "target"),
            "key_id": key_id,
            "via": via,
            "result": _text(result, "result")[:MAX_TEXT],
            "detail": detail_text,
            "ref": ref,
        }
        conn = self._conn()
        pending: list[AuditEntry] | None = getattr(self._local, "pending", None)
        own = pending is None  # else inside batch(): its transaction
        if own:
            conn.execute("BEGIN IMMEDIATE")
        try:
            if ref is not None:
                row = conn.execute("SELECT * FROM audit WHERE ref = ? LIMIT 1", (ref,)).fetchone()
                if row is not None:
                    if own:
                        conn.execute("ROLLBACK")
                    return _entry(row)
            last = conn.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
            fields["seq"] = last["seq"] + 1 if last else 1
            fields["prev"] = last["hash"] if last else GENESIS
            fields["at"] = float(self.clock())
            fields["hash"] = entry_hash(fields)
            conn.execute(
                f"INSERT INTO audit ({', '.join(fields)}) VALUES ({', '.join('?' * len(fields))})",  # noqa: S608 - fixed names
                tuple(fields.values()),
            )
            if own:
                conn.execute("COMMIT")
        except BaseException:
            if own and conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        entry = AuditEntry(**fields)
        if pending is None:
            _log(entry)
        else:
            pending.append(entry)
        return entry

    def verify(self) -> list[str]:
        """What is wrong with the chain, first break first; empty when it is whole."""
        problems: list[str] = []
        expect_seq, prev = 1, GENESIS
        for row in self._conn().execute("SELECT * FROM audit ORDER BY seq"):
            e = _entry(row)
            if e.seq != expect_seq:
                missing = (
                    f"entry #{expect_seq}"
                    if e.seq == expect_seq + 1
                    else f"entries #{expect_seq}-#{e.seq - 1}"
                )
                problems.append(f"{missing} missing (deleted?): the log jumps to #{e.seq}")
            elif e.prev != prev:
                problems.append(
                    f"entry #{e.seq}: prev does not match the hash of entry #{e.seq - 1} "
                    "(an entry before it was changed or inserted)"
                )
            if entry_hash({k: getattr(e, k) for k in FIELDS}) != e.hash:
                problems.append(f"entry #{e.seq}: its fields do not match its hash (changed)")
            expect_seq, prev = e.seq + 1, e.hash
        return problems

    def head(self) -> AuditEntry | None:
        row = self._conn().execute("SELECT * FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        return _entry(row) if row else None

    def get(self, seq: int) -> AuditEntry | None:
        row = self._conn().execute("SELECT * FROM audit WHERE seq = ?", (seq,)).fetchone()
        return _entry(row) if row else None

    def find(self, action: str, target: str | None = None, **detail: Any) -> AuditEntry | None:
        """The newest entry of ``action`` (on ``target``) whose detail has these members."""
        where, args = ["action = ?"], [action]
        if target is not None:
            where.append("target = ?")
            args.append(target)
        for k, v in detail.items():
            where.append(f"json_extract(detail, '$.{k}') = ?")
            args.append(v)
        row = (
            self._conn()
            .execute(
                f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT 1",  # noqa: S608 - keys are identifiers from code
                args,
            )
            .fetchone()
        )
        return _entry(row) if row else None

    def page(
        self,
        *,
        actor: str | None = None,
        target: str | None = None,
        action: str | None = None,
        via: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> AuditPage:
        """Entries matching every filter given, newest first."""
        where: list[str] = []
        args: list[Any] = []
        for col, val in (("actor", actor), ("target", target), ("action", action), ("via", via)):
            if val is not None:
                where.append(f"{col} = ?")
                args.append(val)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        conn = self._conn()
        total = conn.execute(f"SELECT count(*) FROM audit{clause}", args).fetchone()[0]  # noqa: S608 - fixed clauses
        rows = conn.execute(
            f"SELECT * FROM audit{clause} ORDER BY seq DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*args, limit, offset],
        ).fetchall()
        return AuditPage(int(total), [_entry(r) for r in rows])

    def answers(self, seqs: list[int]) -> dict[int, list[AuditEntry]]:
        """The gateways' answers recorded for the entries ``seqs`` (by ``detail.of``)."""
        if not seqs:
            return {}
        marks = ", ".join("?" * len(seqs))
        rows = self._conn().execute(
            f"SELECT * FROM audit WHERE json_extract(detail, '$.of') IN ({marks}) ORDER BY seq",  # noqa: S608
            seqs,
        )
        out: dict[int, list[AuditEntry]] = {}
        for r in rows:
            e = _entry(r)
            out.setdefault(e.details["of"], []).append(e)
        return out
