"""The SQLite store's queries for the console and /metrics (a mixin of SqliteStore).

- Operators' marks on alerts (acknowledged by, snoozed until), written from the API's
  threads: one statement each, its own transaction, on the thread's own connection (the
  ingest writer keeps its own; WAL and ``busy_timeout`` serialise the two).
- Aggregates for /metrics computed in SQL, so a scrape does not build 10,000 DeviceState
  objects: counts by region, open alerts by region and kind, the number of gateways that are
  not config-compliant (the same rule as central.store.compliance, which a test compares it
  with), and one lean row per gateway for the optional per-gateway series.
"""

from __future__ import annotations

import sqlite3
from typing import Any, NamedTuple

from agent.protocol.topics import GROUP, GW, OWN_SOURCE
from central.store.base import AlertMark


class RegionRow(NamedTuple):
    region: str
    online: int
    offline: int
    clients: int


class DeviceRow(NamedTuple):
    device: str
    region: str
    site: str | None
    lat: float | None
    lon: float | None
    online: int
    clients: int | None
    cpu_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None
    disk_used_pct: float | None
    last_seen: float | None
    version: str | None
    platform: str | None


#: Gateways not compliant: some desired document that applies (one of its groups', or its
#: own) has a version the report does not list as applied. central.store.compliance says it
#: in Python; tests/unit/test_console_store.py checks the two agree.
NONCOMPLIANT_SQL = """
WITH want AS (
  SELECT d.device, c.version, c.target AS key
  FROM devices d, json_each(d.groups) g JOIN config_desired c ON c.target = :group || g.value
  WHERE c.version IS NOT NULL
  UNION ALL
  SELECT d.device, c.version, :own AS key
  FROM devices d JOIN config_desired c ON c.target = :gw || d.device
  WHERE c.version IS NOT NULL
)
SELECT count(DISTINCT w.device) FROM want w LEFT JOIN config_reported r ON r.device = w.device
WHERE r.device IS NULL OR r.state IS NOT 'applied'
   OR json_extract(r.versions, '$."' || w.key || '"') IS NOT w.version
"""


class ConsoleQueries:
    def _r(self) -> sqlite3.Connection:
        raise NotImplementedError

    # --- alert marks ----------------------------------------------------------------------

    def alert_marks(self) -> dict[str, AlertMark]:
        rows = self._r().execute("SELECT * FROM alert_marks")
        return {r["alert_id"]: AlertMark(**dict(r)) for r in rows}

    def mark_alert(self, mark: AlertMark) -> None:
        """Set the mark's fields that are not None (one statement: its own transaction)."""
        self._r().execute(
            "INSERT INTO alert_marks VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (alert_id) DO UPDATE "
            "SET acked_by = coalesce(excluded.acked_by, acked_by), "
            "acked_at = coalesce(excluded.acked_at, acked_at), "
            "snoozed_until = coalesce(excluded.snoozed_until, snoozed_until), "
            "snoozed_by = coalesce(excluded.snoozed_by, snoozed_by), "
            "note = coalesce(excluded.note, note)",
            (
                mark.alert_id,
                mark.acked_by,
                mark.acked_at,
                mark.snoozed_until,
                mark.snoozed_by,
                mark.note,
            ),
        )

    # --- /metrics -------------------------------------------------------------------------

    def noncompliant_count(self) -> int:
        args = {"group": f"{GROUP}/", "gw": f"{GW}/", "own": OWN_SOURCE}
        return int(self._r().execute(NONCOMPLIANT_SQL, args).fetchone()[0])

    def region_rows(self) -> list[RegionRow]:
        rows = self._r().execute(
            "SELECT coalesce(region, ''), sum(online != 0), sum(online = 0), "
            "sum(CASE WHEN online THEN coalesce(clients, 0) ELSE 0 END) "
            "FROM devices GROUP BY 1 ORDER BY 1"
        )
        return [RegionRow(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]

    def open_alerts_by_region(self) -> list[tuple[str, str, int]]:
        """``(region, kind, count)`` of open alerts ("" for a gateway without a region)."""
        rows = self._r().execute(
            "SELECT coalesce(d.region, ''), a.kind, count(*) FROM alerts a "
            "LEFT JOIN devices d ON d.device = a.device WHERE a.closed IS NULL "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
        return [(r[0], r[1], int(r[2])) for r in rows]

    def device_rows(self) -> list[DeviceRow]:
        cur: Any = self._r().cursor()
        cur.row_factory = None  # plain tuples, in DeviceRow's order: no per-row objects
        cur.execute(
            "SELECT device, coalesce(region, ''), site, lat, lon, online, clients, cpu_pct, "
            "mem_used_pct, temp_c, disk_used_pct, last_seen, version, platform "
            "FROM devices ORDER BY device"
        )
        rows: list[DeviceRow] = cur.fetchall()
        return rows
