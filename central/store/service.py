"""Service-health reports in central's SQLite file (issue 20, point 7).

Tables:

- ``service_latest``: each AP's newest report (by its ``ts``): its score and deductions, the
  probes that failed, a few figures; one small row per AP, so the roll-ups and /metrics scan
  10,000 of them in a few milliseconds. ``service_report`` holds that report itself
  (re-encoded by the wire model, ~1 KiB), apart: in the same rows it made the scan ten times
  slower.
- ``service_history``: one row per AP and 5-minute bucket (the newest report of the bucket;
  at the default 300 s cadence that is every report): the score, the deductions' names, and
  per radio, per SSID and probe figures as compact JSON, for the history page's charts. It is
  history at rollup resolution, so it is kept as long as the 5-minute rollups
  (``store.rollup_days``) and pruned with them.

Rows are written by the ingest writer in the batch's own transaction (:func:`write`, called
from :meth:`central.store.sqlite.SqliteStore.write`), so a report is acked only once stored,
like every other message. Reads go through :class:`ServiceStore`, which opens its own
per-thread connections (:class:`central.store.tables.SqliteTables`). Roll-ups per region and
site and the worst APs are computed in SQL at query time, from the latest rows of fresh
reports only: a report older than :data:`STALE_REPORTS` of its own interval (the AP turned
the report off, or went offline) no longer counts.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from agent.protocol.score import score
from agent.protocol.service import ServiceReport, encode_report
from central.store.tables import SqliteTables

BUCKET_S = 300
DAY_S = 86400.0
#: A latest report counts in roll-ups, the worst list and /metrics while it is younger than
#: this many of its own intervals (at least :data:`MIN_FRESH_S`).
STALE_REPORTS = 3
MIN_FRESH_S = 900.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS service_latest (
    device TEXT PRIMARY KEY, ts REAL NOT NULL, received REAL NOT NULL,
    interval_s INTEGER NOT NULL, score INTEGER NOT NULL, deductions TEXT NOT NULL,
    clients INTEGER, busy_pct REAL, dns_failed INTEGER, portal_failed INTEGER,
    inet_failed INTEGER, failed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS service_report (device TEXT PRIMARY KEY, ts REAL NOT NULL, report TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS service_history (
    device TEXT NOT NULL, bucket INTEGER NOT NULL, ts REAL NOT NULL, score INTEGER NOT NULL,
    reasons TEXT NOT NULL, radios TEXT NOT NULL, ssids TEXT NOT NULL, probes TEXT NOT NULL,
    PRIMARY KEY (device, bucket)
);
CREATE INDEX IF NOT EXISTS service_history_bucket ON service_history (bucket);
"""

#: Probes that count as failed, by name: what a citizen cannot get past.
PROBE_FAILURES = ("dns", "portal", "internet")
#: Internet loss at or above this (percent) is a failed Internet probe (no connect worked).
INTERNET_DOWN_PCT = 100.0


@dataclass(frozen=True, slots=True)
class ServiceRow:
    """One validated report as the batch carries it (built by :func:`to_row`)."""

    device: str
    received: float
    report: ServiceReport
    score: int
    deductions: list[tuple[str, int, str]]
    failed: list[str]


def failed_probes(report: ServiceReport) -> list[str]:
    """The probes of :data:`PROBE_FAILURES` that failed in ``report`` (unknown is not failed)."""
    p = report.probes
    if p is None:
        return []
    out = []
    if p.dns in ("fail", "timeout"):
        out.append("dns")
    if p.portal == "broken":
        out.append("portal")
    if p.loss_pct is not None and p.loss_pct >= INTERNET_DOWN_PCT:
        out.append("internet")
    return out


def failures(report: ServiceReport) -> list[str]:
    """What a citizen cannot get past: the failed probes, and a citizen path that failed
    (``citizen_path:<step>``, the step that ended the walk)."""
    out = failed_probes(report)
    walk = report.citizen_path
    if walk is not None and walk.fail is not None:
        out.append(f"citizen_path:{walk.fail}")
    return out


def to_row(device: str, report: ServiceReport, received: float) -> ServiceRow:
    """Score a validated report with the agent's own function (agent.protocol.score)."""
    s = score(report)
    return ServiceRow(
        device=device,
        received=received,
        report=report,
        score=s.score,
        deductions=[(d.name, d.points, d.detail) for d in s.deductions],
        failed=failures(report),
    )


def _flag(report: ServiceReport, name: str, known: bool) -> int | None:
    return None if not known else int(name in failed_probes(report))


_UPSERT_LATEST = """
INSERT INTO service_latest VALUES (?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (device) DO UPDATE SET ts = excluded.ts, received = excluded.received,
  interval_s = excluded.interval_s, score = excluded.score, deductions = excluded.deductions,
  clients = excluded.clients, busy_pct = excluded.busy_pct, dns_failed = excluded.dns_failed,
  portal_failed = excluded.portal_failed, inet_failed = excluded.inet_failed,
  failed = excluded.failed
WHERE excluded.ts >= service_latest.ts
"""
_UPSERT_REPORT = """
INSERT INTO service_report VALUES (?,?,?)
ON CONFLICT (device) DO UPDATE SET ts = excluded.ts, report = excluded.report
WHERE excluded.ts >= service_report.ts
"""
_UPSERT_HISTORY = """
INSERT INTO service_history VALUES (?,?,?,?,?,?,?,?)
ON CONFLICT (device, bucket) DO UPDATE SET ts = excluded.ts, score = excluded.score,
  reasons = excluded.reasons, radios = excluded.radios, ssids = excluded.ssids,
  probes = excluded.probes
WHERE excluded.ts >= service_history.ts
"""


def _history_parts(r: ServiceReport) -> tuple[str, str, str]:
    """Per radio ``[channel, busy_pct, noise_dbm, clients]`` (clients: the SSID on the same
    AP interface), per SSID ``[sta, weak_pct, tx_mbps, rx_mbps, retry_pct, fail_pct]``
    (weak: share of stations below -70 dBm), probes ``[dns_ms, portal_ms, inet_ms, loss_pct,
    jitter_ms, broker_ms]``."""
    radios = {
        iface: [x.channel, x.busy_pct, x.noise_dbm, q.sta if (q := r.ssids.get(iface)) else None]
        for iface, x in r.radios.items()
    }
    ssids = {
        iface: [
            q.sta,
            round(100.0 * (q.rssi[0] + q.rssi[1]) / q.sta, 1) if q.sta else None,
            q.tx_mbps,
            q.rx_mbps,
            q.retry_pct,
            q.fail_pct,
        ]
        for iface, q in r.ssids.items()
    }
    p = r.probes
    probes = [p.dns_ms, p.portal_ms, p.inet_ms, p.loss_pct, p.jitter_ms, p.broker_ms] if p else []
    dump = json.dumps
    return dump(radios), dump(ssids), dump(probes)


def _clients(r: ServiceReport) -> int | None:
    # Each count is at most WIRE_INT_MAX (2^53 - 1), but a large report could hold enough
    # SSIDs for the sum to pass SQLite's 2^63 - 1: capped, not refused.
    return min(sum(q.sta for q in r.ssids.values()), 2**63 - 1) if r.ssids else None


class ExecuteMany(Protocol):
    """What :func:`write` needs of a connection: ``sqlite3.Connection``, or PostgreSQL's
    cursor behind central.store.pg.qmark.QmarkCursor (the same ``?`` statements)."""

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]], /) -> Any: ...


def write(conn: ExecuteMany, rows: Iterable[ServiceRow]) -> None:
    """Inside the caller's transaction: the latest row and the history row of each report.
    An older report (a redelivery, or one overtaken) never replaces a newer one. The same
    statements on SQLite and PostgreSQL (central/store/pg/store.py)."""
    latest: list[tuple[Any, ...]] = []
    history: list[tuple[Any, ...]] = []
    reports: list[tuple[str, float, str]] = []
    for row in rows:
        r = row.report
        p = r.probes
        busy = [x.busy_pct for x in r.radios.values() if x.busy_pct is not None]
        latest.append(
            (
                row.device, r.ts, row.received, r.interval_s, row.score,
                json.dumps(row.deductions), _clients(r),
                max(busy) if busy else None,
                _flag(r, "dns", p is not None and p.dns is not None),
                _flag(r, "portal", p is not None and p.portal is not None),
                _flag(r, "internet", p is not None and p.loss_pct is not None),
                json.dumps(row.failed),
            )
        )  # fmt: skip
        reports.append((row.device, r.ts, encode_report(r).decode()))
        history.append(
            (
                row.device, int(r.ts // BUCKET_S * BUCKET_S), r.ts, row.score,
                json.dumps([d[0] for d in row.deductions]), *_history_parts(r),
            )
        )  # fmt: skip
    conn.executemany(_UPSERT_LATEST, latest)
    conn.executemany(_UPSERT_REPORT, reports)
    conn.executemany(_UPSERT_HISTORY, history)


#: Deletes at most ``?`` history rows older than bucket ``?`` (arguments: cut, chunk).
PRUNE = (
    "DELETE FROM service_history WHERE rowid IN "
    "(SELECT rowid FROM service_history WHERE bucket < ? LIMIT ?)"
)

# --- reads --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Latest:
    device: str
    region: str | None
    site: str | None
    ts: float
    received: float
    score: int
    deductions: list[tuple[str, int, str]]
    failed: list[str]
    fresh: bool
    report: dict[str, Any] | None  # only from latest(): the worst list does not read it


@dataclass(frozen=True, slots=True)
class HistoryRow:
    ts: float
    score: int
    reasons: list[str]
    radios: dict[str, list[float | None]]
    ssids: dict[str, list[float | None]]
    probes: list[float | None]


@dataclass(frozen=True, slots=True)
class Rollup:
    """One region (``site`` None) or one site of a region, over its APs with a fresh report."""

    region: str
    site: str | None
    aps: int
    mean_score: float
    min_score: int
    below: int
    dns_failed: int
    portal_failed: int
    inet_failed: int


class ServiceStore(SqliteTables):
    """Queries over the service tables (the API's threads; each its own connection). On
    PostgreSQL: central/store/pg/tables.py's PgServiceStore runs this same code, with the
    three SQL functions below spelled its way."""

    #: The larger of two values (SQLite's scalar ``max``).
    GREATEST = "max"
    #: How many rows of a group a condition ({}) holds for; 0 when none.
    COUNT_TRUE = "total({})"
    #: The length of a JSON array held as text ({}).
    JSON_LEN = "json_array_length({})"

    @property
    def _fresh(self) -> str:
        """The freshness test in SQL, on ``service_latest`` as ``s`` (argument: now)."""
        return f"s.received >= ? - {self.GREATEST}({MIN_FRESH_S}, {STALE_REPORTS} * s.interval_s)"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA, clock=clock)

    def _latest(self, r: sqlite3.Row, now: float) -> Latest:
        fresh = r["received"] >= now - max(MIN_FRESH_S, STALE_REPORTS * r["interval_s"])
        return Latest(
            device=r["device"],
            region=r["region"],
            site=r["site"],
            ts=r["ts"],
            received=r["received"],
            score=r["score"],
            deductions=[(n, p, d) for n, p, d in json.loads(r["deductions"])],
            failed=json.loads(r["failed"]),
            fresh=fresh,
            report=json.loads(r["report"]) if r["report"] else None,
        )

    def latest(self, device: str) -> Latest | None:
        r = (
            self._conn()
            .execute(
                "SELECT s.*, d.region, d.site, p.report FROM service_latest s "
                "LEFT JOIN devices d ON d.device = s.device "
                "LEFT JOIN service_report p ON p.device = s.device WHERE s.device = ?",
                (device,),
            )
            .fetchone()
        )
        return self._latest(r, self.clock()) if r else None

    def scores(self) -> list[tuple[str, int, bool]]:
        """``(device, score, fresh)`` of every AP with a report: the map's and table's colour."""
        now = self.clock()
        rows = self._conn().execute(
            f"SELECT s.device, s.score, {self._fresh} FROM service_latest s ORDER BY s.device",  # noqa: S608 - constants
            (now,),
        )
        return [(r[0], int(r[1]), bool(r[2])) for r in rows]

    def worst(
        self, *, limit: int = 20, region: str | None = None, below: int | None = None
    ) -> list[Latest]:
        """Fresh reports, lowest score first (ties: most deductions, then device id)."""
        now = self.clock()
        where, args = [self._fresh], [now]
        if region is not None:
            where.append("d.region = ?")
            args.append(region)  # type: ignore[arg-type]
        if below is not None:
            where.append("s.score < ?")
            args.append(below)
        rows = self._conn().execute(
            "SELECT s.*, d.region, d.site, NULL AS report FROM service_latest s "  # noqa: S608 - fixed clauses
            f"LEFT JOIN devices d ON d.device = s.device WHERE {' AND '.join(where)} "
            f"ORDER BY s.score, {self.JSON_LEN.format('s.deductions')} DESC, s.device LIMIT ?",
            (*args, limit),
        )
        return [self._latest(r, now) for r in rows]

    def history(self, device: str, since: float, until: float) -> list[HistoryRow]:
        rows = self._conn().execute(
            "SELECT * FROM service_history WHERE device = ? AND ts >= ? AND ts <= ? ORDER BY ts",
            (device, since, until),
        )
        return [
            HistoryRow(
                ts=r["ts"],
                score=r["score"],
                reasons=json.loads(r["reasons"]),
                radios=json.loads(r["radios"]),
                ssids=json.loads(r["ssids"]),
                probes=json.loads(r["probes"]),
            )
            for r in rows
        ]

    def rollups(self, by: Literal["region", "site"], below: int) -> list[Rollup]:
        """Per region, or per (region, site): APs, mean and min score, how many score under
        ``below``, how many have each probe failing. One SQL aggregate (fast at 10,000)."""
        site = "coalesce(d.site, '')" if by == "site" else "NULL"
        n = self.COUNT_TRUE.format
        rows = self._conn().execute(
            f"SELECT coalesce(d.region, '') AS region, {site} AS site, count(*) AS aps, "  # noqa: S608 - constants
            f"avg(s.score) AS mean, min(s.score) AS min, {n('s.score < ?')} AS below, "
            f"{n('s.dns_failed = 1')} AS dns, {n('s.portal_failed = 1')} AS portal, "
            f"{n('s.inet_failed = 1')} AS inet "
            "FROM service_latest s LEFT JOIN devices d ON d.device = s.device "
            f"WHERE {self._fresh} "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            (below, self.clock()),
        )
        return [
            Rollup(
                r["region"],
                r["site"],
                int(r["aps"]),
                round(float(r["mean"]), 1),
                int(r["min"]),
                int(r["below"]),
                int(r["dns"]),
                int(r["portal"]),
                int(r["inet"]),
            )
            for r in rows
        ]
