"""PostgreSQL store: the same contract as the SQLite store (central/store/base.py's
``Store``), for a central that outgrows one machine's SQLite file.

- One transaction per batch; a sample is stored once by its key ``(device, sid, seq)``.
  The samples are partitioned by ``ts`` and PostgreSQL enforces a unique index on a
  partitioned table only when it includes the partition key, so the unique index is
  ``(device, sid, seq, ts)`` (a redelivery carries the same ``ts``: two writers racing on
  it conflict there) and the insert also skips a key already stored under another ``ts``.
- :class:`StoreUnavailable` for "the database takes no row now" (connection lost, disk
  full, shutting down, a deadlock or serialisation failure), by SQLSTATE class; any other
  error is about the batch's rows, which the ingest writer then writes in halves to set the
  bad ones aside (central/ingest/consumer.py), as with SQLite.
- Connections come from a pool (psycopg_pool): the ingest writer and the API's threads
  share a few, broken ones are replaced, and each is in autocommit mode except inside an
  explicit transaction.
- Retention drops whole time partitions (central/store/pg/schema.py); the 5-minute rollups
  are folded in the database from a watermark on the samples' ids, as with SQLite.
- The Wi-Fi service reports are written in the batch's transaction by the SQLite store's own
  statements (central/store/service.py's ``write``, through :class:`QmarkCursor`); their
  history is partitioned and retained as the rollups are.
"""

from __future__ import annotations

import itertools
import json
import operator
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import ConnectionPool, PoolTimeout

from agent.protocol import ConfigReported
from central.store import service
from central.store.base import (
    Alert,
    AlertChange,
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
from central.store.pg import schema
from central.store.pg.qmark import QmarkCursor
from central.store.pg.queries import PgConsoleQueries, run_safely

BUCKET_S = 300
DAY_S = 86400.0
#: Partitions are made this far ahead of the clock (and again at every retention round).
AHEAD_S = 2 * DAY_S
#: How long a caller waits for a (pooled) connection before the store counts as unavailable.
POOL_TIMEOUT_S = 10.0

#: SQLSTATE classes that mean "the database cannot write now", not "this row is wrong":
#: 08 connection exception, 25 invalid transaction state (25006: a read-only standby),
#: 40 transaction rollback (deadlock, serialisation), 53 insufficient resources (disk full,
#: out of memory, too many connections), 55 object not in prerequisite state (lock not
#: available), 57 operator intervention (shutdown, cancel), 58 system error (I/O), XX
#: internal error (data corrupted). https://www.postgresql.org/docs/current/errcodes-appendix.html
UNAVAILABLE_CLASSES = frozenset({"08", "25", "40", "53", "55", "57", "58", "XX"})


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database cannot write at all (so no row is to blame)."""
    if isinstance(exc, OSError | MemoryError | PoolTimeout | psycopg.InterfaceError):
        return True
    if isinstance(exc, psycopg.Error):
        state = exc.sqlstate
        if state is None:
            return isinstance(exc, psycopg.OperationalError)
        return state[:2] in UNAVAILABLE_CLASSES
    return False


def describe(url: str) -> str:
    """``user@host:port/dbname`` of a libpq url, never its password."""
    try:
        d = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparsable url)"
    host = d.get("host") or "localhost"
    return f"{d.get('user') or ''}@{host}:{d.get('port') or 5432}/{d.get('dbname') or ''}"


DEVICE_COLS = (
    "device", "site", "region", "lat", "lon", "groups", "online", "boot", "last_seen",
    "last_ts", "sid", "seq", "clients", "cpu_pct", "mem_used_pct", "temp_c", "disk_used_pct",
    "version", "platform",
    "model", "interval_s", "offline_since", "offline_reason",
)  # fmt: skip
_GET_DEVICE = operator.attrgetter(*DEVICE_COLS)
_DEVICE_TYPES = {
    "lat": "float8", "lon": "float8", "groups": "text", "online": "bool", "boot": "bigint",
    "last_seen": "float8", "last_ts": "float8", "seq": "bigint", "clients": "bigint",
    "cpu_pct": "float8", "mem_used_pct": "float8", "temp_c": "float8",
    "disk_used_pct": "float8", "interval_s": "float8", "offline_since": "float8",
}  # fmt: skip
#: A batch's device rows in one statement (a row per device; the last one if a device came
#: twice), the columns as binary arrays like the samples'. ``groups`` comes as each row's
#: JSON array (a text[][] must be rectangular), made a text[] again in order.
_UPSERT_DEVICES = (
    f"INSERT INTO devices ({', '.join(DEVICE_COLS)}) "  # noqa: S608 - fixed names
    "SELECT DISTINCT ON (device) "
    + ", ".join(
        "ARRAY(SELECT jsonb_array_elements_text(groups::jsonb))" if c == "groups" else c
        for c in DEVICE_COLS
    )
    + " FROM unnest("
    + ", ".join(f"%b::{_DEVICE_TYPES.get(c, 'text')}[]" for c in DEVICE_COLS)
    + f") WITH ORDINALITY AS u({', '.join(DEVICE_COLS)}, n) ORDER BY device, n DESC "
    "ON CONFLICT (device) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in DEVICE_COLS[1:])
)
_GROUPS = DEVICE_COLS.index("groups")
_FLOAT_COLS = tuple(i for i, c in enumerate(DEVICE_COLS) if _DEVICE_TYPES.get(c) == "float8")


def _device_columns(devices: list[DeviceState]) -> list[list[Any]]:
    cols = [list(c) for c in zip(*map(_GET_DEVICE, devices), strict=True)]
    cols[_GROUPS] = [json.dumps(g) for g in cols[_GROUPS]]
    for i in _FLOAT_COLS:
        cols[i] = _floats(cols[i])
    return cols


_SAMPLE_COLS = (
    "device, sid, seq, ts, historical, clients, cpu_pct, mem_used_pct, temp_c, disk_used_pct, raw"
)
#: One statement for the batch's samples: the first of each key in the batch, unless the key
#: is stored already (under any ts); ON CONFLICT catches a racing writer's same row.
#: The arrays go in binary (``%b``): in text format psycopg quotes every element of a text[]
#: with a regular expression, ~65 us for a 1 kB ``raw`` (bench/profile_ingest.py).
_INSERT_SAMPLES = f"""
INSERT INTO samples ({_SAMPLE_COLS})
SELECT DISTINCT ON (device, sid, seq) {_SAMPLE_COLS}
FROM unnest(%b::text[], %b::text[], %b::bigint[], %b::float8[], %b::bool[], %b::bigint[],
            %b::float8[], %b::float8[], %b::float8[], %b::float8[], %b::text[])
     WITH ORDINALITY AS u({_SAMPLE_COLS}, n)
WHERE NOT EXISTS (
    SELECT 1 FROM samples s WHERE s.device = u.device AND s.sid = u.sid AND s.seq = u.seq)
ORDER BY device, sid, seq, n
ON CONFLICT DO NOTHING
"""  # noqa: S608 - constants only

_GET_SAMPLE = operator.attrgetter(*_SAMPLE_COLS.split(", "))
_SAMPLE_FLOATS = (3, 6, 7, 8, 9)  # ts, cpu_pct, mem_used_pct, temp_c, disk_used_pct


def _floats(values: list[Any]) -> list[float | None]:
    """A binary array holds one Python type: a float column's ints (a Sample or DeviceState
    made in code, a ``Number`` given as 5) become floats."""
    return [None if v is None else float(v) for v in values]


#: Folds the samples with ``%s < id <= %s`` into rollups_5m. Sums are float8 (as SQLite's
#: total()), so they cannot overflow; GREATEST ignores NULLs as the SQLite max(coalesce()) does.
_ROLLUP = f"""
INSERT INTO rollups_5m AS r
SELECT device, trunc(ts / {BUCKET_S})::bigint * {BUCKET_S}, count(*),
       coalesce(sum(clients::float8), 0), count(clients), max(clients),
       coalesce(sum(cpu_pct), 0), count(cpu_pct), coalesce(sum(mem_used_pct), 0),
       count(mem_used_pct), coalesce(sum(disk_used_pct), 0), count(disk_used_pct), max(temp_c)
FROM samples WHERE id > %s AND id <= %s GROUP BY 1, 2
ON CONFLICT (device, bucket) DO UPDATE SET
  count = r.count + excluded.count,
  sum_clients = r.sum_clients + excluded.sum_clients,
  n_clients = r.n_clients + excluded.n_clients,
  max_clients = greatest(r.max_clients, excluded.max_clients),
  sum_cpu_pct = r.sum_cpu_pct + excluded.sum_cpu_pct,
  n_cpu_pct = r.n_cpu_pct + excluded.n_cpu_pct,
  sum_mem_used_pct = r.sum_mem_used_pct + excluded.sum_mem_used_pct,
  n_mem_used_pct = r.n_mem_used_pct + excluded.n_mem_used_pct,
  sum_disk_used_pct = r.sum_disk_used_pct + excluded.sum_disk_used_pct,
  n_disk_used_pct = r.n_disk_used_pct + excluded.n_disk_used_pct,
  max_temp_c = greatest(r.max_temp_c, excluded.max_temp_c)
"""  # noqa: S608 - constants only

_PROBE = "/probe"

_SORTS: dict[str, str] = {
    "device": "device",
    "-device": "device DESC",
    "clients": "coalesce(clients, -1), device",
    "-clients": "coalesce(clients, -1) DESC, device",
    "last_seen": "coalesce(last_seen, 0), device",
    "-last_seen": "coalesce(last_seen, 0) DESC, device",
    "region": "coalesce(region, ''), device",
}


def _device_from(row: dict[str, Any]) -> DeviceState:
    row["groups"] = list(row["groups"])
    return DeviceState(**row)


_CLOSE_ALERTS = (
    "UPDATE alerts AS a SET closed = v.at FROM unnest(%s::text[], %s::text[], %s::float8[]) "
    'AS v(device, kind, at) WHERE a.device = v.device AND a.kind = v.kind COLLATE "C" '
    "AND a.closed IS NULL"
)
_OPEN_ALERTS = (
    "INSERT INTO alerts (kind, device, since, detail) "
    "SELECT * FROM unnest(%s::text[], %s::text[], %s::float8[], %s::text[]) "
    "ON CONFLICT (device, kind) WHERE closed IS NULL DO NOTHING"
)


def _write_alerts(cur: Any, alerts: list[AlertChange]) -> None:
    """Open and close alerts in their order, one statement per run of opens or of closes.

    One statement per alert was a round trip each on the writer's connection: after a
    city-wide outage a batch closes thousands of offline alerts at once (the gateways'
    online statuses), and at 50,000 the writer stored no sample for the first 20 s of the
    recovery (docs/benchmarks.md, "Light gateways"). Within a run only the first change of
    a (device, kind) counts, as it would one statement after another: a second open finds
    the alert open, a second close finds it closed."""
    for close, run in itertools.groupby(alerts, key=operator.attrgetter("close")):
        first: dict[tuple[str, str], AlertChange] = {}
        for a in run:
            first.setdefault((a.device, a.kind), a)
        rows = list(first.values())
        devices = [a.device for a in rows]
        kinds = [a.kind for a in rows]
        ats = [a.at for a in rows]
        if close:
            cur.execute(_CLOSE_ALERTS, (devices, kinds, ats))
        else:
            cur.execute(_OPEN_ALERTS, (kinds, devices, ats, [a.detail for a in rows]))


class PgStore(PgConsoleQueries):
    def __init__(
        self,
        url: str,
        *,
        raw_days: float = 7,
        rollup_days: float = 90,
        quarantine_rows: int = 10_000,
        pool_size: int = 8,
        connect_timeout_s: float = POOL_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.where = describe(url)
        self.raw_days = raw_days
        self.rollup_days = rollup_days
        self.quarantine_rows = quarantine_rows
        self.clock = clock
        self._pool: ConnectionPool[psycopg.Connection[dict[str, Any]]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True, "row_factory": dict_row},
            check=ConnectionPool.check_connection,
            timeout=connect_timeout_s,
            name="titik-store",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout_s)
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {self.where} within {connect_timeout_s:g} s: "
                "check [store] url, that the server runs and accepts this user (pg_hba.conf)"
            ) from exc
        try:
            with self._pool.connection() as conn:
                self.migrated = schema.migrate(conn)
            self.ensure_partitions()
        except BaseException:
            self._pool.close()
            raise

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        with self._pool.connection() as conn:
            yield conn

    def close(self) -> None:
        self._pool.close()

    def ensure_partitions(self, now: float | None = None) -> int:
        """Make the partitions from the retention's start to :data:`AHEAD_S` ahead of ``now``
        (the clock's by default). None of them lies wholly past the retention, so retention
        never drops what this has just made."""
        now = self.clock() if now is None else now
        made = 0
        with self._conn() as conn:
            c: Any = conn
            made += schema.ensure_partitions(
                c, schema.SAMPLES, now - self.raw_days * DAY_S, now + AHEAD_S
            )
            for p in (schema.ROLLUPS, schema.NET_ROLLUPS, schema.SERVICE_HISTORY):
                made += schema.ensure_partitions(
                    c, p, now - self.rollup_days * DAY_S, now + 7 * DAY_S
                )
        return made

    # --- writes -------------------------------------------------------------------------

    def write(self, batch: WriteBatch) -> WriteResult:
        try:
            return self._write(batch)
        except Exception as exc:
            if unavailable(exc):
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc
            raise

    def _write(self, batch: WriteBatch) -> WriteResult:
        stored = 0
        with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
            if batch.samples:
                cols = [list(c) for c in zip(*map(_GET_SAMPLE, batch.samples), strict=True)]
                for i in _SAMPLE_FLOATS:
                    cols[i] = _floats(cols[i])
                cur.execute(_INSERT_SAMPLES, cols)
                stored = cur.rowcount
            if batch.devices:
                cur.execute(_UPSERT_DEVICES, _device_columns(batch.devices))
            for doc in batch.desired:
                cur.execute(
                    "INSERT INTO config_desired VALUES (%s, %s, %s, %s) ON CONFLICT (target) "
                    "DO UPDATE SET version = excluded.version, doc = excluded.doc, "
                    "received = excluded.received",
                    (doc.target, doc.version, doc.doc, doc.received),
                )
            for r in batch.reported:
                cur.execute(
                    "INSERT INTO config_reported VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                    "ON CONFLICT (device) DO UPDATE SET version = excluded.version, "
                    "source = excluded.source, versions = excluded.versions, "
                    "state = excluded.state, error = excluded.error, hash = excluded.hash, "
                    "ts = excluded.ts, doc = excluded.doc WHERE excluded.ts IS NULL OR "
                    # Several instances: an older report (its "applying") taken by another
                    # instance and committed later never hides the newer one ("applied").
                    "config_reported.ts IS NULL OR excluded.ts >= config_reported.ts",
                    (r.device, r.report.version, r.report.source, json.dumps(r.report.versions),
                     r.report.state, r.report.error, r.report.hash, r.report.ts, r.doc),
                )  # fmt: skip
            if batch.alerts:
                _write_alerts(cur, batch.alerts)
            if batch.service:
                service.write(QmarkCursor(cur), batch.service)
            if batch.quarantined:
                cur.executemany(
                    "INSERT INTO quarantine (at, reason, topic, device, detail, size, payload) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s)",
                    [
                        (q.at, q.reason, q.topic, q.device, q.detail, q.size, q.payload)
                        for q in batch.quarantined
                    ],
                )
        return WriteResult(stored=stored, duplicates=len(batch.samples) - stored)

    def probe(self) -> None:
        """Write one known-good row of every kind and roll it back; :class:`StoreUnavailable`
        if the database refuses them (then no row of a failed batch is to blame)."""
        try:
            with self._conn() as conn, conn.transaction(force_rollback=True):
                conn.execute(
                    f"INSERT INTO samples ({_SAMPLE_COLS}) VALUES "  # noqa: S608
                    "(%s, %s, 0, 0, false, NULL, NULL, NULL, NULL, NULL, '{}')",
                    (_PROBE, _PROBE),
                )
                conn.execute(_UPSERT_DEVICES, _device_columns([DeviceState(device=_PROBE)]))
                conn.execute("INSERT INTO config_desired VALUES (%s, 1, '{}', 0)", (_PROBE,))
                conn.execute(
                    "INSERT INTO config_reported VALUES (%s, 1, 'gw', '{}', 'applied', NULL, "
                    "NULL, 0, '{}')",
                    (_PROBE,),
                )
                conn.execute(
                    "INSERT INTO alerts (kind, device, since, detail) VALUES ('probe', %s, 0, '')",
                    (_PROBE,),
                )
                conn.execute(
                    "INSERT INTO quarantine (at, reason, topic, device, detail, size, payload) "
                    "VALUES (0, 'probe', '', NULL, '', 0, '')"
                )
                conn.execute(
                    "INSERT INTO service_latest VALUES "
                    "(%s, 0, 0, 0, 0, '[]', NULL, NULL, NULL, NULL, NULL, '[]')",
                    (_PROBE,),
                )
                conn.execute("INSERT INTO service_report VALUES (%s, 0, '{}')", (_PROBE,))
                conn.execute(
                    "INSERT INTO service_history VALUES (%s, 0, 0, 0, '[]', '{}', '{}', '[]')",
                    (_PROBE,),
                )
        except Exception as exc:
            raise StoreUnavailable(f"the store refuses known-good rows: {exc}") from exc

    def roll_up(self) -> int:
        """Fold samples stored since the last call into the rollups; return how many.

        The watermark is the highest sample id folded. Ids are handed out when a row is
        inserted, not when it commits, so a writer could still commit an id below one
        already visible: a brief SHARE lock on ``samples`` (it waits for the writers in
        flight and holds new ones back for an instant) makes every id up to the top final
        before the fold. The fold and the new watermark commit together; the watermark row
        is locked, so two instances never fold the same ids.
        """
        with self._conn() as conn:
            with conn.transaction():
                # Not behind a stuck transaction for long: writers would queue behind us.
                conn.execute(schema.LOCK_TIMEOUT)
                conn.execute("LOCK TABLE samples IN SHARE MODE")
                got = conn.execute("SELECT coalesce(max(id), 0) AS top FROM samples").fetchone()
                top = int(got["top"]) if got else 0
            with conn.transaction():
                conn.execute(
                    "INSERT INTO meta VALUES ('rolled_up', 0) ON CONFLICT (key) DO NOTHING"
                )
                row = conn.execute(
                    "SELECT value FROM meta WHERE key = 'rolled_up' FOR UPDATE"
                ).fetchone()
                mark = int(row["value"]) if row else 0
                if top <= mark:
                    return 0
                conn.execute(_ROLLUP, (mark, top))
                run_safely(conn, self.NET_ROLLUP, self.NET_ROLLUP_SAFE, (mark, top))
                conn.execute("UPDATE meta SET value = %s WHERE key = 'rolled_up'", (top,))
        return top - mark

    def prune(self, now: float, chunk: int = 5000) -> int:
        """Drop at most one expired partition of each table, delete at most ``chunk``
        expired rows of each DEFAULT partition and of the quarantine; short transactions.
        Returns rows removed (a dropped partition counts its estimated rows, at least 1):
        call again while it returns more than 0."""
        raw_cut = now - self.raw_days * DAY_S
        roll_cut = int((now - self.rollup_days * DAY_S) // BUCKET_S * BUCKET_S)
        self.ensure_partitions(now)
        n = 0
        with self._conn() as conn:
            c: Any = conn
            n += schema.drop_one_expired(c, schema.SAMPLES, raw_cut)
            n += schema.drop_one_expired(c, schema.ROLLUPS, roll_cut)
            n += schema.drop_one_expired(c, schema.NET_ROLLUPS, roll_cut)
            n += schema.drop_one_expired(c, schema.SERVICE_HISTORY, roll_cut)
            for table, col, cut in (
                ("samples_default", "ts", raw_cut),
                ("rollups_5m_default", "bucket", roll_cut),
                ("rollups_net_5m_default", "bucket", roll_cut),
                ("service_history_default", "bucket", roll_cut),
            ):
                n += conn.execute(
                    f"DELETE FROM {table} WHERE ctid = ANY(ARRAY("  # noqa: S608 - constants
                    f"SELECT ctid FROM {table} WHERE {col} < %s LIMIT %s))",
                    (cut, chunk),
                ).rowcount
            # The quarantine: the newest quarantine_rows rows, none older than raw_days.
            n += conn.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine WHERE at < %s "
                "OR id <= (SELECT coalesce(max(id), 0) FROM quarantine) - %s ORDER BY id "
                "LIMIT %s)",
                (raw_cut, self.quarantine_rows, chunk),
            ).rowcount
        return n

    # --- queries ------------------------------------------------------------------------

    def load_devices(self) -> list[DeviceState]:
        with self._conn() as conn:
            return [_device_from(r) for r in conn.execute("SELECT * FROM devices")]

    def device_news(self) -> dict[str, float]:
        """When central last heard of each gateway (central/ingest/fleet.py's ``news``): two
        columns of every row, for the leader's merge of what other instances stored."""
        with self._conn() as conn, conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(
                "SELECT device, CASE WHEN online THEN coalesce(last_seen, 0) ELSE "
                "greatest(coalesce(last_seen, 0), coalesce(offline_since, 0)) END FROM devices"
            )
            return {str(d): float(t) for d, t in cur.fetchall()}

    def devices_named(self, names: list[str]) -> list[DeviceState]:
        """The rows of these gateways (those missing are left out)."""
        if not names:
            return []
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM devices WHERE device = ANY(%s)", (names,))
            return [_device_from(r) for r in rows]

    def summary(self) -> Summary:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT coalesce(region, '') AS region, online, count(*) AS n, "
                "sum(CASE WHEN online THEN coalesce(clients, 0) ELSE 0 END) AS clients "
                "FROM devices GROUP BY 1, 2"
            ).fetchall()
        online = sum(r["n"] for r in rows if r["online"])
        total = sum(r["n"] for r in rows)
        by_region: dict[str, int] = {}
        for r in rows:
            by_region[r["region"]] = by_region.get(r["region"], 0) + int(r["clients"])
        return Summary(
            online=int(online),
            offline=int(total - online),
            total=int(total),
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
            where.append("region = %s")
            args.append(region)
        if group is not None:
            where.append("%s = ANY(groups)")
            args.append(group)
        if status is not None:
            where.append("online = %s")
            args.append(status == "online")
        if q:
            like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            # ILIKE: SQLite's LIKE ignores ASCII case, PostgreSQL's does not.
            where.append(
                "(device ILIKE %s ESCAPE '\\' OR site ILIKE %s ESCAPE '\\' "
                "OR region ILIKE %s ESCAPE '\\')"
            )
            args += [like, like, like]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        order = _SORTS.get(sort)
        if order is None:
            raise ValueError(f"sort: must be one of {', '.join(_SORTS)}")
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT * FROM devices{clause} ORDER BY {order} LIMIT %s OFFSET %s",  # noqa: S608 - fixed clauses
                [*args, limit, offset],
            ).fetchall()
            total = page_total(offset, limit, len(rows))
            if total is None:
                row = conn.execute(f"SELECT count(*) AS n FROM devices{clause}", args).fetchone()  # noqa: S608
                total = int(row["n"]) if row else 0
        return DevicePage(total=total, items=[_device_from(r) for r in rows])

    def device(self, device: str) -> DeviceState | None:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM devices WHERE device = %s", (device,)).fetchone()
        return _device_from(row) if row else None

    def history(self, device: str, since: float, until: float) -> list[HistoryPoint]:
        """Raw samples when ``since`` is within ``raw_days``, else 5-minute rollups."""
        with self._conn() as conn:
            if since >= self.clock() - self.raw_days * DAY_S:
                rows = conn.execute(
                    "SELECT ts, clients, cpu_pct, mem_used_pct, temp_c, disk_used_pct "
                    "FROM samples WHERE device = %s AND ts >= %s AND ts < %s ORDER BY ts, seq",
                    (device, since, until),
                ).fetchall()
                return [
                    HistoryPoint(r["ts"], 1, r["clients"], r["clients"], r["cpu_pct"],
                                 r["mem_used_pct"], r["temp_c"], r["disk_used_pct"])
                    for r in rows
                ]  # fmt: skip
            rows = conn.execute(
                "SELECT * FROM rollups_5m WHERE device = %s AND bucket >= %s AND bucket < %s "
                "ORDER BY bucket",
                (device, int(since // BUCKET_S * BUCKET_S), until),
            ).fetchall()
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

    def alerts(self, *, open_only: bool = True) -> list[Alert]:
        sql = "SELECT kind, device, since, detail, closed FROM alerts"
        if open_only:
            sql += " WHERE closed IS NULL"
        with self._conn() as conn:
            rows = conn.execute(sql + " ORDER BY since, id").fetchall()
        return [Alert(r["kind"], r["device"], r["since"], r["detail"], r["closed"]) for r in rows]

    def desired_docs(self) -> dict[str, DesiredDoc]:
        with self._conn() as conn:
            rows = conn.execute("SELECT * FROM config_desired").fetchall()
        return {
            r["target"]: DesiredDoc(r["target"], r["version"], r["doc"], r["received"])
            for r in rows
        }

    def reported_docs(self) -> dict[str, ReportedDoc]:
        with self._conn() as conn:
            return _reported(conn.execute("SELECT * FROM config_reported").fetchall())

    def reported_docs_of(self, devices: Collection[str]) -> dict[str, ReportedDoc]:
        """The reports of these gateways only (a page of the device list, one device)."""
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT * FROM config_reported WHERE device = ANY(%s)", (list(devices),)
            ).fetchall()
        return _reported(rows)

    def compliance(self) -> list[ComplianceRow]:
        desired = self.desired_docs()
        reported = self.reported_docs()
        devices = sorted(self.load_devices(), key=lambda d: d.device)
        return [compliance(d, desired, reported.get(d.device)) for d in devices]

    def public_summary(self) -> list[RegionPublic]:
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT coalesce(region, '') AS region, count(*) AS aps, "
                "sum(coalesce(clients, 0)) AS users FROM devices WHERE online GROUP BY 1 "
                "ORDER BY 1"
            ).fetchall()
        return [RegionPublic(r["region"], int(r["aps"]), int(r["users"])) for r in rows]

    def quarantine(
        self,
        *,
        reason: str | None = None,
        device: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> QuarantinePage:
        where: list[str] = []
        args: list[Any] = []
        if reason is not None:
            where.append("reason = %s")
            args.append(reason)
        if device is not None:
            where.append("device = %s")
            args.append(device)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._conn() as conn:
            by_reason = {
                r["reason"]: int(r["n"])
                for r in conn.execute(
                    "SELECT reason, count(*) AS n FROM quarantine GROUP BY 1 ORDER BY 1"
                )
            }
            total = conn.execute(f"SELECT count(*) AS n FROM quarantine{clause}", args).fetchone()  # noqa: S608 - fixed clauses
            rows = conn.execute(
                f"SELECT * FROM quarantine{clause} ORDER BY id DESC LIMIT %s OFFSET %s",  # noqa: S608
                [*args, limit, offset],
            ).fetchall()
        return QuarantinePage(
            total=int(total["n"]) if total else 0,
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


def _reported(rows: Iterable[dict[str, Any]]) -> dict[str, ReportedDoc]:
    out = {}
    for r in rows:
        # Validated when it came in: rebuilt without checking again.
        report = ConfigReported.model_construct(
            version=r["version"],
            source=r["source"],
            versions=r["versions"],
            state=r["state"],
            error=r["error"],
            hash=r["hash"],
            ts=r["ts"],
        )
        out[r["device"]] = ReportedDoc(r["device"], report, r["doc"])
    return out
