"""SQLite store: WAL, synchronous=NORMAL, one transaction per batch, de-dup by UNIQUE key.

Writes come from one thread (the ingest writer); queries open their own connection per
thread, so readers never block the writer (WAL).
"""

from __future__ import annotations

import json
import operator
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any

from agent.protocol import ConfigReported
from central.store import net, service
from central.store.base import (
    Alert,
    ComplianceRow,
    DesiredDoc,
    DevicePage,
    DeviceState,
    DeviceStatus,
    HistoryPoint,
    QuarantinePage,
    QuarantineRow,
    RegionPublic,
    ReportedDoc,
    SortKey,
    StoreUnavailable,
    Summary,
    WriteBatch,
    WriteResult,
    page_total,
)
from central.store.compliance import compliance
from central.store.console import ConsoleQueries
from central.store.tables import ThreadConnections

BUCKET_S = 300
DAY_S = 86400.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, sid TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    historical INTEGER NOT NULL, clients INTEGER, cpu_pct REAL, mem_used_pct REAL, temp_c REAL,
    disk_used_pct REAL,
    raw TEXT NOT NULL,
    UNIQUE (device, sid, seq)
);
CREATE INDEX IF NOT EXISTS samples_ts ON samples (ts);
CREATE TABLE IF NOT EXISTS devices (
    device TEXT PRIMARY KEY, site TEXT, region TEXT, lat REAL, lon REAL,
    groups TEXT NOT NULL DEFAULT '[]', online INTEGER NOT NULL DEFAULT 0,
    boot INTEGER NOT NULL DEFAULT 0, last_seen REAL, last_ts REAL, sid TEXT, seq INTEGER,
    clients INTEGER, cpu_pct REAL, mem_used_pct REAL, temp_c REAL, disk_used_pct REAL,
    version TEXT, platform TEXT,
    model TEXT, interval_s REAL NOT NULL DEFAULT 60, offline_since REAL, offline_reason TEXT
);
CREATE INDEX IF NOT EXISTS devices_region ON devices (region);
CREATE TABLE IF NOT EXISTS rollups_5m (
    device TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    sum_clients INTEGER NOT NULL, n_clients INTEGER NOT NULL, max_clients INTEGER,
    sum_cpu_pct REAL NOT NULL, n_cpu_pct INTEGER NOT NULL,
    sum_mem_used_pct REAL NOT NULL, n_mem_used_pct INTEGER NOT NULL,
    sum_disk_used_pct REAL NOT NULL, n_disk_used_pct INTEGER NOT NULL, max_temp_c REAL,
    PRIMARY KEY (device, bucket)
);
CREATE INDEX IF NOT EXISTS rollups_bucket ON rollups_5m (bucket);
CREATE TABLE IF NOT EXISTS config_desired (
    target TEXT PRIMARY KEY, version INTEGER, doc TEXT NOT NULL, received REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS config_reported (
    device TEXT PRIMARY KEY, version INTEGER, source TEXT, versions TEXT NOT NULL,
    state TEXT NOT NULL, error TEXT, hash TEXT, ts REAL, doc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alerts (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, device TEXT NOT NULL, since REAL NOT NULL,
    detail TEXT NOT NULL, closed REAL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts (device, kind) WHERE closed IS NULL;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, reason TEXT NOT NULL,
    topic TEXT NOT NULL, device TEXT, detail TEXT NOT NULL, size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS quarantine_reason ON quarantine (reason);
CREATE INDEX IF NOT EXISTS quarantine_device ON quarantine (device);
CREATE TABLE IF NOT EXISTS alert_marks (
    alert_id TEXT PRIMARY KEY, acked_by TEXT, acked_at REAL, snoozed_until REAL,
    snoozed_by TEXT, note TEXT
);
"""

#: SQLite primary result codes that mean "the database cannot write now", not "this row is
#: wrong": BUSY, LOCKED, NOMEM, READONLY, INTERRUPT, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL,
#: NOTADB (https://sqlite.org/rescode.html). Anything else (CONSTRAINT, MISMATCH, TOOBIG, a
#: Python value SQLite cannot bind) is about the data.
UNAVAILABLE_CODES = frozenset({5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26})


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot write at all (so no row is to blame)."""
    if isinstance(exc, OSError | MemoryError):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(exc, sqlite3.Error) and code is not None and code & 0xFF in UNAVAILABLE_CODES


#: Columns named before issue 17, when the store shortened the wire's names (``cpu_pct`` was
#: ``cpu``): renamed in place when an older database is opened, so the names are the same from
#: collector to wire to store to API.
LEGACY_COLUMNS = {
    "samples": {"cpu": "cpu_pct", "mem": "mem_used_pct", "temp": "temp_c", "disk": "disk_used_pct"},
    "devices": {"cpu": "cpu_pct", "mem": "mem_used_pct", "temp": "temp_c", "disk": "disk_used_pct"},
    "rollups_5m": {
        "sum_cpu": "sum_cpu_pct", "n_cpu": "n_cpu_pct", "sum_mem": "sum_mem_used_pct",
        "n_mem": "n_mem_used_pct", "sum_disk": "sum_disk_used_pct",
        "n_disk": "n_disk_used_pct", "max_temp": "max_temp_c",
    },
}  # fmt: skip


def rename_legacy_columns(conn: sqlite3.Connection) -> None:
    """Rename the columns of :data:`LEGACY_COLUMNS` in a database made before issue 17
    (``ALTER TABLE ... RENAME COLUMN``, SQLite 3.25+, which also updates indexes); one
    transaction, so a crash leaves either the old names or the new."""
    renames = []
    for table, cols in LEGACY_COLUMNS.items():
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        renames += [(table, old, new) for old, new in cols.items() if old in have]
    if not renames:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, old, new in renames:
            conn.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


DEVICE_COLS = (
    "device", "site", "region", "lat", "lon", "groups", "online", "boot", "last_seen",
    "last_ts", "sid", "seq", "clients", "cpu_pct", "mem_used_pct", "temp_c", "disk_used_pct",
    "version", "platform",
    "model", "interval_s", "offline_since", "offline_reason",
)  # fmt: skip
_PLACEHOLDERS = ", ".join("?" * len(DEVICE_COLS))
_UPDATES = ", ".join(f"{c} = excluded.{c}" for c in DEVICE_COLS[1:])
_UPSERT_DEVICE = f"INSERT INTO devices ({', '.join(DEVICE_COLS)}) VALUES ({_PLACEHOLDERS}) ON CONFLICT (device) DO UPDATE SET {_UPDATES}"  # noqa: S608 - fixed column names
# total() rather than sum(): sum() of integers raises "integer overflow" past 2^63, which
# would fail every later roll-up; total() is a float and cannot. An integral total is kept
# as an INTEGER by the column's affinity, so the usual rows are unchanged.
_ROLLUP_NEW = f"""
INSERT INTO rollups_5m
SELECT device, CAST(ts / {BUCKET_S} AS INTEGER) * {BUCKET_S}, count(*),
       total(clients), count(clients), max(clients),
       total(cpu_pct), count(cpu_pct), total(mem_used_pct), count(mem_used_pct),
       total(disk_used_pct), count(disk_used_pct), max(temp_c)
FROM samples WHERE id > ? AND id <= ? GROUP BY 1, 2
ON CONFLICT (device, bucket) DO UPDATE SET
  count = count + excluded.count,
  sum_clients = sum_clients + excluded.sum_clients,
  n_clients = n_clients + excluded.n_clients,
  max_clients = max(coalesce(max_clients, excluded.max_clients),
                    coalesce(excluded.max_clients, max_clients)),
  sum_cpu_pct = sum_cpu_pct + excluded.sum_cpu_pct, n_cpu_pct = n_cpu_pct + excluded.n_cpu_pct,
  sum_mem_used_pct = sum_mem_used_pct + excluded.sum_mem_used_pct,
  n_mem_used_pct = n_mem_used_pct + excluded.n_mem_used_pct,
  sum_disk_used_pct = sum_disk_used_pct + excluded.sum_disk_used_pct,
  n_disk_used_pct = n_disk_used_pct + excluded.n_disk_used_pct,
  max_temp_c = max(coalesce(max_temp_c, excluded.max_temp_c),
                   coalesce(excluded.max_temp_c, max_temp_c))
"""  # noqa: S608 - constants only
#: No device id or config target can contain "/" (they are one topic level each).
_PROBE = "/probe"
_PROBE_SAMPLE = (_PROBE, _PROBE, 0, 0.0, False, None, None, None, None, None, "{}")

_SORTS: dict[str, str] = {
    "device": "device",
    "-device": "device DESC",
    "clients": "coalesce(clients, -1), device",
    "-clients": "coalesce(clients, -1) DESC, device",
    "last_seen": "coalesce(last_seen, 0), device",
    "-last_seen": "coalesce(last_seen, 0) DESC, device",
    "region": "coalesce(region, ''), device",
}


_GET_DEVICE = operator.attrgetter(*DEVICE_COLS)
_GROUPS_AT = DEVICE_COLS.index("groups")


def _device_row(d: DeviceState) -> tuple[Any, ...]:
    row = list(_GET_DEVICE(d))
    row[_GROUPS_AT] = json.dumps(d.groups)
    return tuple(row)


def _device_from(row: sqlite3.Row) -> DeviceState:
    data = dict(row)
    data["groups"] = json.loads(data["groups"])
    data["online"] = bool(data["online"])
    return DeviceState(**data)


class SqliteStore(ConsoleQueries):
    def __init__(
        self,
        path: Path,
        *,
        raw_days: float = 7,
        rollup_days: float = 90,
        quarantine_rows: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.raw_days = raw_days
        self.rollup_days = rollup_days
        #: The quarantine keeps the newest this many rows (and none older than raw_days).
        self.quarantine_rows = quarantine_rows
        self.clock = clock
        path.parent.mkdir(parents=True, exist_ok=True)
        self._readers = ThreadConnections(self._connect)
        self._w = self._connect()
        rename_legacy_columns(self._w)
        self._w.executescript(SCHEMA)
        self._w.executescript(net.SCHEMA)
        self._w.executescript(service.SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # Autocommit mode: transactions are explicit (BEGIN ... COMMIT) in write().
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
        return conn

    def _r(self) -> sqlite3.Connection:
        """This thread's reader (the writer thread writes on ``_w``)."""
        return self._readers.get()

    def close(self) -> None:
        self._readers.close()
        self._w.close()

    # --- writes -------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> WriteResult:
        try:
            return self._write(batch)
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _write(self, batch: WriteBatch) -> WriteResult:
        w = self._w
        stored = 0
        w.execute("BEGIN IMMEDIATE")
        try:
            if batch.samples:
                stored = w.executemany(
                    "INSERT OR IGNORE INTO samples (device, sid, seq, ts, historical, clients, "
                    "cpu_pct, mem_used_pct, temp_c, disk_used_pct, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (s.device, s.sid, s.seq, s.ts, s.historical, s.clients,
                         s.cpu_pct, s.mem_used_pct, s.temp_c, s.disk_used_pct, s.raw)
                        for s in batch.samples
                    ],
                ).rowcount  # fmt: skip
            if batch.devices:
                w.executemany(_UPSERT_DEVICE, [_device_row(d) for d in batch.devices])
            for doc in batch.desired:
                w.execute(
                    "INSERT OR REPLACE INTO config_desired VALUES (?,?,?,?)",
                    (doc.target, doc.version, doc.doc, doc.received),
                )
            for r in batch.reported:
                w.execute(
                    "INSERT OR REPLACE INTO config_reported VALUES (?,?,?,?,?,?,?,?,?)",
                    (r.device, r.report.version, r.report.source, json.dumps(r.report.versions),
                     r.report.state, r.report.error, r.report.hash, r.report.ts, r.doc),
                )  # fmt: skip
            for a in batch.alerts:
                if a.close:
                    w.execute(
                        "UPDATE alerts SET closed = ? WHERE device = ? AND kind = ? AND closed IS NULL",
                        (a.at, a.device, a.kind),
                    )
                else:
                    w.execute(
                        "INSERT OR IGNORE INTO alerts (kind, device, since, detail) VALUES (?,?,?,?)",
                        (a.kind, a.device, a.at, a.detail),
                    )
            if batch.quarantined:
                w.executemany(
                    "INSERT INTO quarantine (at, reason, topic, device, detail, size, payload) "
                    "VALUES (?,?,?,?,?,?,?)",
                    [
                        (q.at, q.reason, q.topic, q.device, q.detail, q.size, q.payload)
                        for q in batch.quarantined
                    ],
                )
            if batch.service:
                service.write(w, batch.service)
            w.execute("COMMIT")
        except BaseException:
            # SQLite rolls back by itself after some errors (FULL, IOERR, NOMEM, BUSY); a
            # second ROLLBACK would raise and hide the cause.
            if w.in_transaction:
                w.execute("ROLLBACK")
            raise
        return WriteResult(stored=stored, duplicates=len(batch.samples) - stored)

    def probe(self) -> None:
        """Write one known-good row of every kind and roll it back.

        Tells "this batch holds a row the store cannot take" from "the store takes no row":
        raises :class:`StoreUnavailable` in the second case.
        """
        w = self._w
        try:
            w.execute("BEGIN IMMEDIATE")
            try:
                w.execute(
                    "INSERT INTO samples (device, sid, seq, ts, historical, clients, cpu_pct, "
                    "mem_used_pct, temp_c, disk_used_pct, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    _PROBE_SAMPLE,
                )
                w.execute(_UPSERT_DEVICE, _device_row(DeviceState(device=_PROBE)))
                w.execute("INSERT INTO config_desired VALUES (?, 1, '{}', 0)", (_PROBE,))
                w.execute(
                    "INSERT INTO config_reported VALUES (?, 1, 'gw', '{}', 'applied', NULL, "
                    "NULL, 0, '{}')",
                    (_PROBE,),
                )
                w.execute(
                    "INSERT INTO alerts (kind, device, since, detail) VALUES ('probe', ?, 0, '')",
                    (_PROBE,),
                )
                w.execute(
                    "INSERT INTO quarantine (at, reason, topic, device, detail, size, payload) "
                    "VALUES (0, 'probe', '', NULL, '', 0, x'')"
                )
            finally:
                if w.in_transaction:
                    w.execute("ROLLBACK")
        except Exception as exc:
            raise StoreUnavailable(f"the store refuses known-good rows: {exc}") from exc

    def roll_up(self) -> int:
        """Fold samples stored since the last call into ``rollups_5m``; return how many.

        New rows have ids above the watermark (AUTOINCREMENT never reuses one, and a
        duplicate adds no row), so each sample is counted exactly once, also across
        crashes: the watermark moves in the same transaction as the rollups.
        """
        w = self._w
        w.execute("BEGIN IMMEDIATE")
        try:
            row = w.execute("SELECT value FROM meta WHERE key = 'rolled_up'").fetchone()
            mark = row[0] if row else 0
            top = w.execute("SELECT coalesce(max(id), 0) FROM samples").fetchone()[0]
            if top > mark:
                w.execute(_ROLLUP_NEW, (mark, top))
                w.execute(net.ROLLUP, (mark, top))
                w.execute("INSERT OR REPLACE INTO meta VALUES ('rolled_up', ?)", (top,))
            w.execute("COMMIT")
        except BaseException:
            w.execute("ROLLBACK")
            raise
        return int(top - mark) if top > mark else 0

    def prune(self, now: float, chunk: int = 5000) -> int:
        """One short transaction per table; call again while it returns ``chunk`` or more."""
        raw_cut = now - self.raw_days * DAY_S
        roll_cut = int((now - self.rollup_days * DAY_S) // BUCKET_S * BUCKET_S)
        n = self._w.execute(
            "DELETE FROM samples WHERE id IN "
            "(SELECT id FROM samples WHERE ts < ? ORDER BY ts LIMIT ?)",
            (raw_cut, chunk),
        ).rowcount
        n += self._w.execute(
            "DELETE FROM rollups_5m WHERE rowid IN "
            "(SELECT rowid FROM rollups_5m WHERE bucket < ? LIMIT ?)",
            (roll_cut, chunk),
        ).rowcount
        n += self._w.execute(net.PRUNE, (roll_cut, chunk)).rowcount
        n += self._w.execute(service.PRUNE, (roll_cut, chunk)).rowcount
        # The quarantine: the newest quarantine_rows rows, none older than raw_days (ids grow
        # with time: AUTOINCREMENT).
        n += self._w.execute(
            "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE at < ? OR "
            "id <= (SELECT coalesce(max(id), 0) FROM quarantine) - ? ORDER BY id LIMIT ?)",
            (raw_cut, self.quarantine_rows, chunk),
        ).rowcount
        return n

    # --- queries ------------------------------------------------------------------------

    def load_devices(self) -> list[DeviceState]:
        return [_device_from(r) for r in self._r().execute("SELECT * FROM devices")]

    def summary(self) -> Summary:
        rows = (
            self._r()
            .execute(
                "SELECT coalesce(region, '') AS region, online, count(*) AS n, "
                "sum(CASE WHEN online THEN coalesce(clients, 0) ELSE 0 END) AS clients "
                "FROM devices GROUP BY 1, 2"
            )
            .fetchall()
        )
        online = sum(r["n"] for r in rows if r["online"])
        total = sum(r["n"] for r in rows)
        by_region: dict[str, int] = {}
        for r in rows:
            by_region[r["region"]] = by_region.get(r["region"], 0) + r["clients"]
        return Summary(
            online=online,
            offline=total - online,
            total=total,
            clients=sum(by_region.values()),
            clients_by_region=dict(sorted(by_region.items())),
        )

    def devices(
        self,
        *,
        region: str | None = None,
        group: str | None = None,
        status: DeviceStatus | None = None,
        q: str | None = None,
        sort: SortKey = "device",
        limit: int = 100,
        offset: int = 0,
    ) -> DevicePage:
        where: list[str] = []
        args: list[Any] = []
        if region is not None:
            where.append("region = ?")
            args.append(region)
        if group is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(devices.groups) WHERE value = ?)")
            args.append(group)
        if status is not None:
            where.append("online = ?")
            args.append(int(status == "online"))
        if q:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(
                "(device LIKE ? ESCAPE '\\' OR site LIKE ? ESCAPE '\\' OR region LIKE ? ESCAPE '\\')"
            )
            args += [like, like, like]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = _SORTS.get(sort)
        if order is None:
            raise ValueError(f"sort: must be one of {', '.join(_SORTS)}")
        conn = self._r()
        rows = conn.execute(
            f"SELECT * FROM devices{clause} ORDER BY {order} LIMIT ? OFFSET ?",  # noqa: S608 - clauses are fixed strings
            [*args, limit, offset],
        ).fetchall()
        total = page_total(offset, limit, len(rows))
        if total is None:
            total = conn.execute(f"SELECT count(*) FROM devices{clause}", args).fetchone()[0]  # noqa: S608
        return DevicePage(total=int(total), items=[_device_from(r) for r in rows])

    def device(self, device: str) -> DeviceState | None:
        row = self._r().execute("SELECT * FROM devices WHERE device = ?", (device,)).fetchone()
        return _device_from(row) if row else None

    def history(self, device: str, since: float, until: float) -> list[HistoryPoint]:
        """Raw samples when ``since`` is within ``raw_days``, else 5-minute rollups."""
        conn = self._r()
        if since >= self.clock() - self.raw_days * DAY_S:
            rows = conn.execute(
                "SELECT ts, clients, cpu_pct, mem_used_pct, temp_c, disk_used_pct FROM samples "
                "WHERE device = ? AND ts >= ? AND ts < ? ORDER BY ts, seq",
                (device, since, until),
            )
            return [
                HistoryPoint(r["ts"], 1, r["clients"], r["clients"], r["cpu_pct"],
                             r["mem_used_pct"], r["temp_c"], r["disk_used_pct"])
                for r in rows
            ]  # fmt: skip
        rows = conn.execute(
            "SELECT * FROM rollups_5m WHERE device = ? AND bucket >= ? AND bucket < ? ORDER BY bucket",
            (device, since // BUCKET_S * BUCKET_S, until),
        )
        return [
            HistoryPoint(
                ts=float(r["bucket"]),
                count=r["count"],
                clients=r["sum_clients"] / r["n_clients"] if r["n_clients"] else None,
                clients_max=r["max_clients"],
                cpu_pct=r["sum_cpu_pct"] / r["n_cpu_pct"] if r["n_cpu_pct"] else None,
                mem_used_pct=(
                    r["sum_mem_used_pct"] / r["n_mem_used_pct"] if r["n_mem_used_pct"] else None
                ),
                temp_c=r["max_temp_c"],
                disk_used_pct=(
                    r["sum_disk_used_pct"] / r["n_disk_used_pct"] if r["n_disk_used_pct"] else None
                ),
            )
            for r in rows
        ]

    def net_history(self, device: str, since: float, until: float) -> list[net.NetPoint]:
        """WAN traffic and state: from raw samples within ``raw_days``, else rollups."""
        raw = since >= self.clock() - self.raw_days * DAY_S
        return net.history(self._r(), device, since, until, raw=raw)

    def alerts(self, *, open_only: bool = True) -> list[Alert]:
        sql = "SELECT kind, device, since, detail, closed FROM alerts"
        if open_only:
            sql += " WHERE closed IS NULL"
        rows = self._r().execute(sql + " ORDER BY since, id")
        return [Alert(r["kind"], r["device"], r["since"], r["detail"], r["closed"]) for r in rows]

    def desired_docs(self) -> dict[str, DesiredDoc]:
        rows = self._r().execute("SELECT * FROM config_desired")
        return {
            r["target"]: DesiredDoc(r["target"], r["version"], r["doc"], r["received"])
            for r in rows
        }

    def reported_docs(self) -> dict[str, ReportedDoc]:
        return self._reported(self._r().execute("SELECT * FROM config_reported"))

    def reported_docs_of(self, devices: Collection[str]) -> dict[str, ReportedDoc]:
        """The reports of these gateways only (a page of the device list, one device)."""
        rows = self._r().execute(
            "SELECT * FROM config_reported WHERE device IN (SELECT value FROM json_each(?))",
            (json.dumps(list(devices)),),
        )
        return self._reported(rows)

    @staticmethod
    def _reported(rows: Iterable[sqlite3.Row]) -> dict[str, ReportedDoc]:
        out = {}
        for r in rows:
            # Validated when it came in: rebuilt without checking again.
            report = ConfigReported.model_construct(
                version=r["version"],
                source=r["source"],
                versions=json.loads(r["versions"]),
                state=r["state"],
                error=r["error"],
                hash=r["hash"],
                ts=r["ts"],
            )
            out[r["device"]] = ReportedDoc(r["device"], report, r["doc"])
        return out

    def compliance(self) -> list[ComplianceRow]:
        desired = self.desired_docs()
        reported = self.reported_docs()
        return [
            compliance(d, desired, reported.get(d.device)) for d in _sorted(self.load_devices())
        ]

    def public_summary(self) -> list[RegionPublic]:
        rows = self._r().execute(
            "SELECT coalesce(region, '') AS region, count(*) AS aps, "
            "sum(coalesce(clients, 0)) AS users FROM devices WHERE online GROUP BY 1 ORDER BY 1"
        )
        return [RegionPublic(r["region"], r["aps"], r["users"]) for r in rows]

    def quarantine(
        self,
        *,
        reason: str | None = None,
        device: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> QuarantinePage:
        conn = self._r()
        by_reason = {
            r[0]: r[1]
            for r in conn.execute(
                "SELECT reason, count(*) FROM quarantine GROUP BY 1 ORDER BY 1"
            ).fetchall()
        }
        where: list[str] = []
        args: list[Any] = []
        if reason is not None:
            where.append("reason = ?")
            args.append(reason)
        if device is not None:
            where.append("device = ?")
            args.append(device)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        total = conn.execute(f"SELECT count(*) FROM quarantine{clause}", args).fetchone()[0]  # noqa: S608 - fixed clauses
        rows = conn.execute(
            f"SELECT * FROM quarantine{clause} ORDER BY id DESC LIMIT ? OFFSET ?",  # noqa: S608
            [*args, limit, offset],
        ).fetchall()
        return QuarantinePage(
            total=int(total),
            by_reason=by_reason,
            items=[
                QuarantineRow(
                    id=r["id"],
                    at=r["at"],
                    reason=r["reason"],
                    topic=r["topic"],
                    device=r["device"],
                    detail=r["detail"],
                    payload=bytes(r["payload"]),
                    size=r["size"],
                )
                for r in rows
            ],
        )


def _sorted(devices: Iterable[DeviceState]) -> list[DeviceState]:
    return sorted(devices, key=lambda d: d.device)
