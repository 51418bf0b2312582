"""WAN traffic and WAN state over time, for the console's history charts.

Every raw sample keeps the agent's whole message (``samples.raw``), so within
``store.raw_days`` the WAN interface's rates and ``net.wan_up`` are read from it with
SQLite's JSON functions. Past that, only 5-minute rollups are kept (up to
``store.rollup_days``): ``rollups_net_5m`` is filled by :meth:`SqliteStore.roll_up` from the
same samples, in the same transaction, as ``rollups_5m``, so the traffic and WAN charts reach
as far back as the other charts.

The WAN interface is the one ``net.wan`` names (the interface of the default route); its
``rx_bps``/``tx_bps`` are what the gateway received from and sent to the internet, i.e. the
users' download and upload. ``wan_up`` in a rollup is the share of the bucket's samples
that reported the WAN up (1.0 = up all the time), ``null`` when no sample said.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

BUCKET_S = 300

SCHEMA = """
CREATE TABLE IF NOT EXISTS rollups_net_5m (
    device TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    sum_rx_bps REAL NOT NULL, n_rx_bps INTEGER NOT NULL, max_rx_bps REAL,
    sum_tx_bps REAL NOT NULL, n_tx_bps INTEGER NOT NULL, max_tx_bps REAL,
    wan_up INTEGER NOT NULL, wan_known INTEGER NOT NULL,
    PRIMARY KEY (device, bucket)
);
CREATE INDEX IF NOT EXISTS rollups_net_bucket ON rollups_net_5m (bucket);
"""

#: The JSON path of one field of the WAN interface (``net.ifaces."<wan>".<field>``); the
#: interface name is quoted (``eth0.2`` has a dot). NULL when no WAN is named.
_WAN = "json_extract(raw, '$.net.wan')"


def _wan_field(field: str) -> str:
    return (
        f"CASE WHEN {_WAN} IS NULL THEN NULL ELSE "
        f"json_extract(raw, '$.net.ifaces.' || json_quote({_WAN}) || '.{field}') END"
    )


_WAN_UP = "json_extract(raw, '$.net.wan_up')"


def _if_json(expr: str) -> str:
    """``expr``, or NULL for a raw that is not JSON (json_extract would fail the query)."""
    return f"CASE WHEN json_valid(raw) THEN {expr} END"


_RAW_SELECT = f"""
SELECT ts, {_if_json(_wan_field("rx_bps"))} AS rx_bps,
       {_if_json(_wan_field("tx_bps"))} AS tx_bps, {_if_json(_WAN_UP)} AS wan_up
FROM samples WHERE device = ? AND ts >= ? AND ts < ? ORDER BY ts, seq
"""  # noqa: S608 - constants only

#: Folds the samples with ``? < id <= ?`` into ``rollups_net_5m`` (like ``_ROLLUP_NEW``); a
#: raw that is not JSON is skipped (PostgreSQL's fold keeps the same rule:
#: central/store/pg/queries.py).
ROLLUP = f"""
INSERT INTO rollups_net_5m
SELECT device, bucket, count(*), total(rx_bps), count(rx_bps), max(rx_bps),
       total(tx_bps), count(tx_bps), max(tx_bps),
       total(wan_up = 1), count(wan_up)
FROM (SELECT device, CAST(ts / {BUCKET_S} AS INTEGER) * {BUCKET_S} AS bucket,
             {_wan_field("rx_bps")} AS rx_bps, {_wan_field("tx_bps")} AS tx_bps,
             {_WAN_UP} AS wan_up
      FROM samples WHERE id > ? AND id <= ? AND json_valid(raw))
GROUP BY 1, 2
ON CONFLICT (device, bucket) DO UPDATE SET
  count = count + excluded.count,
  sum_rx_bps = sum_rx_bps + excluded.sum_rx_bps, n_rx_bps = n_rx_bps + excluded.n_rx_bps,
  max_rx_bps = max(coalesce(max_rx_bps, excluded.max_rx_bps),
                   coalesce(excluded.max_rx_bps, max_rx_bps)),
  sum_tx_bps = sum_tx_bps + excluded.sum_tx_bps, n_tx_bps = n_tx_bps + excluded.n_tx_bps,
  max_tx_bps = max(coalesce(max_tx_bps, excluded.max_tx_bps),
                   coalesce(excluded.max_tx_bps, max_tx_bps)),
  wan_up = wan_up + excluded.wan_up, wan_known = wan_known + excluded.wan_known
"""  # noqa: S608 - constants only

#: Deletes at most ``?`` rollups older than bucket ``?`` (arguments: cut, chunk).
PRUNE = (
    "DELETE FROM rollups_net_5m WHERE rowid IN "
    "(SELECT rowid FROM rollups_net_5m WHERE bucket < ? LIMIT ?)"
)


@dataclass(frozen=True, slots=True)
class NetPoint:
    """A raw sample (``count`` 1, ``wan_up`` 0 or 1) or a 5-minute rollup (averages, peaks,
    ``wan_up`` the share of samples with the WAN up)."""

    ts: float
    count: int
    rx_bps: float | None
    tx_bps: float | None
    rx_bps_max: float | None
    tx_bps_max: float | None
    wan_up: float | None


def _num(v: object) -> float | None:
    # A hostile agent's JSON could put a string where a number belongs: not a number, no point.
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def history(
    conn: sqlite3.Connection, device: str, since: float, until: float, *, raw: bool
) -> list[NetPoint]:
    """The WAN points of ``device`` in ``[since, until)``: raw samples or rollups."""
    if raw:
        out = []
        for r in conn.execute(_RAW_SELECT, (device, since, until)):
            rx, tx = _num(r["rx_bps"]), _num(r["tx_bps"])
            up = r["wan_up"]
            out.append(NetPoint(r["ts"], 1, rx, tx, rx, tx, None if up is None else float(up)))
        return out
    rows = conn.execute(
        "SELECT * FROM rollups_net_5m WHERE device = ? AND bucket >= ? AND bucket < ? "
        "ORDER BY bucket",
        (device, since // BUCKET_S * BUCKET_S, until),
    )
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
