"""The PostgreSQL store's console and /metrics queries (the same methods, results and rules as
central/store/console.py and central/store/net.py for SQLite), a mixin of PgStore.

The WAN figures are read from each sample's ``raw`` text, parsed once per row (``OFFSET 0``
keeps PostgreSQL from folding the inner SELECT into the outer one, which would parse it once
per use), so the samples keep the exact text the gateway's record was stored with, as in
SQLite. Each query runs first with a plain ``raw::jsonb`` (its fast form); only if a row's
text is one jsonb refuses (``\\u0000``, a lone surrogate escape, text that is not JSON) is it
run again in its safe form (:data:`SAFE_J`: plpgsql functions that catch the error, a
subtransaction per row): see :func:`run_safely`. One odd sample thus never stops the
roll-up, the rows count as in SQLite, and the usual round pays for no subtransaction.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from agent.protocol.topics import GROUP, GW, OWN_SOURCE
from central.store.base import AlertMark
from central.store.console import DeviceRow, RegionRow
from central.store.net import NetPoint

BUCKET_S = 300

#: The sample's raw JSON, parsed once per row by the inner SELECT of each query (``j``).
_J = "j"
_WAN = f"({_J} -> 'net' ->> 'wan')"


def _number(expr: str) -> str:
    """A JSON number as float8; NULL for anything else (SQLite's rows skip those too)."""
    return f"(CASE WHEN jsonb_typeof({expr}) = 'number' THEN ({expr})::float8 END)"


def _wan_field(field: str) -> str:
    return _number(f"({_J} -> 'net' -> 'ifaces' -> {_WAN} -> '{field}')")


_WAN_UP = f"(CASE WHEN jsonb_typeof({_J} -> 'net' -> 'wan_up') = 'boolean' THEN ({_J} -> 'net' -> 'wan_up')::boolean END)"

#: How each row's ``raw`` is parsed: the fast form fails the statement on a text jsonb
#: refuses; the safe form never fails: ``titik_jsonb`` (a plpgsql function with an EXCEPTION
#: block: a subtransaction per row) and, for the rows it gives NULL, ``titik_jsonb_lenient``
#: (schema version 6: JSON with a ``\u0000`` or a lone surrogate escape read with those
#: replaced, so its WAN figures count as in SQLite; NULL for text that is not JSON, so that
#: row is skipped, as SQLite's ``json_valid`` skips it).
FAST_J = "raw::jsonb"
SAFE_J = "coalesce(titik_jsonb(raw), titik_jsonb_lenient(raw))"


def _raw_select(parse: str) -> str:
    return f"""
SELECT ts, {_wan_field("rx_bps")} AS rx_bps, {_wan_field("tx_bps")} AS tx_bps,
       {_WAN_UP} AS wan_up
FROM (SELECT ts, seq, {parse} AS j FROM samples
      WHERE device = %s AND ts >= %s AND ts < %s OFFSET 0) s
ORDER BY ts, seq
"""  # noqa: S608 - constants only


def _net_rollup(parse: str) -> str:
    """Folds the samples with ``%s < id <= %s`` into ``rollups_net_5m`` (net.ROLLUP's rule),
    each row's ``raw`` parsed by ``parse``; rows it gives NULL for are skipped."""
    return f"""
INSERT INTO rollups_net_5m AS r
SELECT device, bucket, count(*), coalesce(sum(rx_bps), 0), count(rx_bps), max(rx_bps),
       coalesce(sum(tx_bps), 0), count(tx_bps), max(tx_bps),
       count(*) FILTER (WHERE wan_up), count(wan_up)
FROM (SELECT device, trunc(ts / {BUCKET_S})::bigint * {BUCKET_S} AS bucket,
             {_wan_field("rx_bps")} AS rx_bps, {_wan_field("tx_bps")} AS tx_bps,
             {_WAN_UP} AS wan_up
      FROM (SELECT device, ts, {parse} AS j FROM samples
            WHERE id > %s AND id <= %s OFFSET 0) p
      WHERE j IS NOT NULL) s
GROUP BY 1, 2
ON CONFLICT (device, bucket) DO UPDATE SET
  count = r.count + excluded.count,
  sum_rx_bps = r.sum_rx_bps + excluded.sum_rx_bps, n_rx_bps = r.n_rx_bps + excluded.n_rx_bps,
  max_rx_bps = greatest(r.max_rx_bps, excluded.max_rx_bps),
  sum_tx_bps = r.sum_tx_bps + excluded.sum_tx_bps, n_tx_bps = r.n_tx_bps + excluded.n_tx_bps,
  max_tx_bps = greatest(r.max_tx_bps, excluded.max_tx_bps),
  wan_up = r.wan_up + excluded.wan_up, wan_known = r.wan_known + excluded.wan_known
"""  # noqa: S608 - constants only


def refused_json(exc: psycopg.Error) -> bool:
    """Whether ``exc`` is PostgreSQL refusing a row's text as jsonb: a data exception (class
    22: not JSON 22P02, ``\\u0000`` 22P05, a lone surrogate, a number out of range) or a
    document nested past the stack limit (54001). Anything else (the connection, a lock) is
    not about a row and is raised as it is."""
    state = exc.sqlstate or ""
    return state[:2] == "22" or state == "54001"


def run_safely(
    conn: psycopg.Connection[Any], fast: str, safe: str, args: tuple[Any, ...]
) -> psycopg.Cursor[Any]:
    """Run ``fast`` (rows parsed with ``raw::jsonb``); if a row's text is refused, undo it
    and run ``safe`` (:data:`SAFE_J`: that row read leniently or skipped).

    Both give the same result whenever ``fast`` succeeds: ``titik_jsonb`` returns what
    ``::jsonb`` returns for every text jsonb takes. Inside a transaction (the roll-up's) the
    undo is a savepoint, one subtransaction per statement where ``titik_jsonb`` costs one
    per row; outside one (autocommit: the history's read) a failed statement undoes itself."""
    outside = conn.autocommit and conn.info.transaction_status == TransactionStatus.IDLE
    try:
        if outside:
            return conn.execute(fast, args)
        with conn.transaction():
            return conn.execute(fast, args)
    except psycopg.Error as exc:
        if not refused_json(exc):
            raise
    return conn.execute(safe, args)


_RAW_SELECT = _raw_select(FAST_J)
_RAW_SELECT_SAFE = _raw_select(SAFE_J)

NONCOMPLIANT_SQL = """
WITH want AS (
  SELECT d.device, c.version, c.target AS key
  FROM devices d CROSS JOIN LATERAL unnest(d.groups) AS g(name)
  JOIN config_desired c ON c.target = %(group)s || g.name
  WHERE c.version IS NOT NULL
  UNION ALL
  SELECT d.device, c.version, %(own)s AS key
  FROM devices d JOIN config_desired c ON c.target = %(gw)s || d.device
  WHERE c.version IS NOT NULL
)
SELECT count(DISTINCT w.device) AS n FROM want w LEFT JOIN config_reported r ON r.device = w.device
WHERE r.device IS NULL OR r.state IS DISTINCT FROM 'applied'
   OR (r.versions -> w.key) IS DISTINCT FROM to_jsonb(w.version)
"""


class PgConsoleQueries:
    #: Folds the samples with ``%s < id <= %s`` into ``rollups_net_5m``: the fast form
    #: (``raw::jsonb``) and the safe one (``titik_jsonb``), run by :func:`run_safely`.
    NET_ROLLUP = _net_rollup(FAST_J)
    NET_ROLLUP_SAFE = _net_rollup(SAFE_J)

    raw_days: float
    clock: Callable[[], float]

    def _conn(self) -> AbstractContextManager[psycopg.Connection[dict[str, Any]]]:
        raise NotImplementedError

    # --- WAN history (central/store/net.py) -------------------------------------------------

    def net_history(self, device: str, since: float, until: float) -> list[NetPoint]:
        """WAN traffic and state: from raw samples within ``raw_days``, else rollups."""
        with self._conn() as conn:
            if since >= self.clock() - self.raw_days * 86400.0:
                out = []
                cur = run_safely(conn, _RAW_SELECT, _RAW_SELECT_SAFE, (device, since, until))
                for r in cur:
                    rx, tx, up = r["rx_bps"], r["tx_bps"], r["wan_up"]
                    out.append(
                        NetPoint(r["ts"], 1, rx, tx, rx, tx, None if up is None else float(up))
                    )
                return out
            rows = conn.execute(
                "SELECT * FROM rollups_net_5m WHERE device = %s AND bucket >= %s "
                "AND bucket < %s ORDER BY bucket",
                (device, int(since // BUCKET_S * BUCKET_S), until),
            ).fetchall()
        return [
            NetPoint(
                ts=float(r["bucket"]),
                count=r["count"],
                rx_bps=r["sum_rx_bps"] / r["n_rx_bps"] if r["n_rx_bps"] else None,
                tx_bps=r["sum_tx_bps"] / r["n_tx_bps"] if r["n_tx_bps"] else None,
                rx_bps_max=r["max_rx_bps"],
                tx_bps_max=r["max_tx_bps"],
                wan_up=r["wan_up"] / r["wan_known"] if r["wan_known"] else None,
            )
            for r in rows
        ]

    # --- alert marks ----------------------------------------------------------------------

    def alert_marks(self) -> dict[str, AlertMark]:
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM alert_marks").fetchall()
        return {r["alert_id"]: AlertMark(**r) for r in rows}

    def mark_alert(self, mark: AlertMark) -> None:
        """Set the mark's fields that are not None (one statement: its own transaction)."""
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO alert_marks AS m VALUES (%s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (alert_id) DO UPDATE "
                "SET acked_by = coalesce(excluded.acked_by, m.acked_by), "
                "acked_at = coalesce(excluded.acked_at, m.acked_at), "
                "snoozed_until = coalesce(excluded.snoozed_until, m.snoozed_until), "
                "snoozed_by = coalesce(excluded.snoozed_by, m.snoozed_by), "
                "note = coalesce(excluded.note, m.note)",
                (mark.alert_id, mark.acked_by, mark.acked_at, mark.snoozed_until,
                 mark.snoozed_by, mark.note),
            )  # fmt: skip

    # --- /metrics -------------------------------------------------------------------------

    def noncompliant_count(self) -> int:
        args = {"group": f"{GROUP}/", "gw": f"{GW}/", "own": OWN_SOURCE}
        with self._conn() as conn:
            row = conn.execute(NONCOMPLIANT_SQL, args).fetchone()
        return int(row["n"]) if row else 0

    def region_rows(self) -> list[RegionRow]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT coalesce(region, '') AS region, count(*) FILTER (WHERE online) AS up, "
                "count(*) FILTER (WHERE NOT online) AS down, "
                "sum(CASE WHEN online THEN coalesce(clients, 0) ELSE 0 END) AS clients "
                "FROM devices GROUP BY 1 ORDER BY 1"
            ).fetchall()
        return [
            RegionRow(r["region"], int(r["up"]), int(r["down"]), int(r["clients"])) for r in rows
        ]

    def open_alerts_by_region(self) -> list[tuple[str, str, int]]:
        """``(region, kind, count)`` of open alerts ("" for a gateway without a region)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT coalesce(d.region, '') AS region, a.kind, count(*) AS n FROM alerts a "
                "LEFT JOIN devices d ON d.device = a.device WHERE a.closed IS NULL "
                "GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        return [(r["region"], r["kind"], int(r["n"])) for r in rows]

    def device_rows(self) -> list[DeviceRow]:
        with self._conn() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                "SELECT device, coalesce(region, ''), site, lat, lon, online::int, clients, "
                "cpu_pct, mem_used_pct, temp_c, disk_used_pct, last_seen, version, platform "
                "FROM devices ORDER BY device"
            )
            rows: list[Any] = cur.fetchall()
        return rows
