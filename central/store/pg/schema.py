"""The PostgreSQL store's schema: ordered migrations and the time partitions.

Migrations: ``schema_version`` holds one row, the version the database is at. At start,
:func:`migrate` applies every step above it in order, each in its own transaction together
with the new version number, under a transaction-level advisory lock, so an existing
database upgrades in place, a crash leaves it at a whole version, and two instances starting
at once apply each step once. A step is never edited once released: a change is a new step.

Partitions: raw samples are partitioned by range on ``ts`` (one partition a day), the
5-minute rollups by range on ``bucket`` (one a week). :func:`ensure_partitions` creates them
ahead of time; retention drops a whole partition once all of it is past the retention
(``DROP TABLE``: no row-by-row DELETE, no bloat, no vacuum debt). Each table also has a
DEFAULT partition for rows outside every partition (a replay from long ago, a clock far
ahead); those few are deleted row by row, and moved into their partition if one is made
for them later.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

DAY_S = 86400

#: pg_advisory_xact_lock keys: one for migrations, one for making/dropping partitions.
LOCK_MIGRATE = 0x7469_7469_6B00_0001
LOCK_PARTITIONS = 0x7469_7469_6B00_0002
#: Making or dropping a partition locks its parent table for an instant; behind a long query
#: that wait would queue every writer and reader after it. Give up instead (SQLSTATE 55P03)
#: and try again at the next retention round.
LOCK_TIMEOUT = "SET LOCAL lock_timeout = '2s'"


@dataclass(frozen=True, slots=True)
class Partitioned:
    table: str
    column: str
    width_s: int


SAMPLES = Partitioned("samples", "ts", DAY_S)
ROLLUPS = Partitioned("rollups_5m", "bucket", 7 * DAY_S)
NET_ROLLUPS = Partitioned("rollups_net_5m", "bucket", 7 * DAY_S)
#: The service reports' history (schema version 4): one row per AP and 5-minute bucket, kept
#: as long as the 5-minute rollups, as in SQLite.
SERVICE_HISTORY = Partitioned("service_history", "bucket", 7 * DAY_S)

#: Version 1: the tables of the SQLite store's SCHEMA (central/store/sqlite.py), the same
#: columns under the same names; ``groups`` is a text[] and ``versions`` a jsonb.
V1 = """
CREATE TABLE samples (
    id bigserial NOT NULL,
    device text NOT NULL, sid text NOT NULL, seq bigint NOT NULL, ts double precision NOT NULL,
    historical boolean NOT NULL, clients bigint, cpu_pct double precision,
    mem_used_pct double precision, temp_c double precision, disk_used_pct double precision,
    raw text NOT NULL,
    UNIQUE (device, sid, seq, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX samples_id ON samples (id);
CREATE INDEX samples_device_ts ON samples (device, ts);
CREATE TABLE samples_default PARTITION OF samples DEFAULT;
CREATE TABLE devices (
    device text COLLATE "C" PRIMARY KEY, site text, region text COLLATE "C",
    lat double precision,
    lon double precision, groups text[] NOT NULL DEFAULT '{}',
    online boolean NOT NULL DEFAULT false, boot bigint NOT NULL DEFAULT 0,
    last_seen double precision, last_ts double precision, sid text, seq bigint, clients bigint,
    cpu_pct double precision, mem_used_pct double precision, temp_c double precision,
    disk_used_pct double precision, version text, platform text, model text,
    interval_s double precision NOT NULL DEFAULT 60, offline_since double precision,
    offline_reason text
);
CREATE INDEX devices_region ON devices (region);
CREATE TABLE rollups_5m (
    device text NOT NULL, bucket bigint NOT NULL, count bigint NOT NULL,
    sum_clients double precision NOT NULL, n_clients bigint NOT NULL, max_clients bigint,
    sum_cpu_pct double precision NOT NULL, n_cpu_pct bigint NOT NULL,
    sum_mem_used_pct double precision NOT NULL, n_mem_used_pct bigint NOT NULL,
    sum_disk_used_pct double precision NOT NULL, n_disk_used_pct bigint NOT NULL,
    max_temp_c double precision,
    PRIMARY KEY (device, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE rollups_5m_default PARTITION OF rollups_5m DEFAULT;
CREATE TABLE config_desired (
    target text PRIMARY KEY, version bigint, doc text NOT NULL,
    received double precision NOT NULL
);
CREATE TABLE config_reported (
    device text PRIMARY KEY, version bigint, source text, versions jsonb NOT NULL,
    state text NOT NULL, error text, hash text, ts double precision, doc text NOT NULL
);
CREATE TABLE alerts (
    id bigserial PRIMARY KEY, kind text COLLATE "C" NOT NULL, device text NOT NULL,
    since double precision NOT NULL, detail text NOT NULL, closed double precision
);
CREATE UNIQUE INDEX alerts_open ON alerts (device, kind) WHERE closed IS NULL;
CREATE TABLE meta (key text PRIMARY KEY, value bigint NOT NULL);
CREATE TABLE quarantine (
    id bigserial PRIMARY KEY, at double precision NOT NULL, reason text COLLATE "C" NOT NULL,
    topic text NOT NULL, device text, detail text NOT NULL, size bigint NOT NULL,
    payload bytea NOT NULL
);
CREATE INDEX quarantine_reason ON quarantine (reason);
CREATE INDEX quarantine_device ON quarantine (device);
"""

#: Version 2: the console's tables (central/store/net.py's WAN rollups, central/store/
#: console.py's alert marks), and a JSON parse that yields NULL instead of failing, so one
#: sample with a raw text PostgreSQL's jsonb refuses (e.g. \\u0000) cannot stop the roll-up.
V2 = """
CREATE TABLE rollups_net_5m (
    device text NOT NULL, bucket bigint NOT NULL, count bigint NOT NULL,
    sum_rx_bps double precision NOT NULL, n_rx_bps bigint NOT NULL,
    max_rx_bps double precision,
    sum_tx_bps double precision NOT NULL, n_tx_bps bigint NOT NULL,
    max_tx_bps double precision,
    wan_up bigint NOT NULL, wan_known bigint NOT NULL,
    PRIMARY KEY (device, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE rollups_net_5m_default PARTITION OF rollups_net_5m DEFAULT;
CREATE TABLE alert_marks (
    alert_id text PRIMARY KEY, acked_by text, acked_at double precision,
    snoozed_until double precision, snoozed_by text, note text
);
CREATE FUNCTION titik_jsonb(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN t::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""

#: Version 3: the tables beside the samples (central/store/pg/tables.py runs the SQLite
#: classes' code on them): API tokens and sessions, the audit log, rollouts. The same columns
#: as their SQLite SCHEMA; the audit log refuses UPDATE and DELETE by trigger, as there.
V3 = """
CREATE TABLE tokens (
    id text PRIMARY KEY, name text NOT NULL, role text NOT NULL, hash text NOT NULL UNIQUE,
    created double precision NOT NULL, expires double precision, revoked double precision,
    last_used double precision
);
CREATE TABLE sessions (
    hash text PRIMARY KEY, token_id text NOT NULL REFERENCES tokens (id), csrf text NOT NULL,
    created double precision NOT NULL, expires double precision NOT NULL
);
CREATE INDEX sessions_token ON sessions (token_id);
CREATE TABLE audit (
    seq bigint PRIMARY KEY, at double precision NOT NULL, actor text NOT NULL,
    action text NOT NULL, target text NOT NULL, key_id text, via text NOT NULL,
    result text NOT NULL, detail text NOT NULL, ref text, prev text NOT NULL,
    hash text NOT NULL
);
CREATE INDEX audit_ref ON audit (ref);
CREATE INDEX audit_actor ON audit (actor);
CREATE INDEX audit_target ON audit (target);
CREATE INDEX audit_of ON audit ((detail::jsonb -> 'of'));
CREATE INDEX audit_cmd_id ON audit ((detail::jsonb -> 'id'));
CREATE FUNCTION titik_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only';
END $$;
CREATE TRIGGER audit_no_update BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION titik_audit_append_only();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
    FOR EACH STATEMENT EXECUTE FUNCTION titik_audit_append_only();
CREATE TABLE rollouts (
    id text PRIMARY KEY, grp text NOT NULL, status text NOT NULL,
    created double precision NOT NULL, created_by text NOT NULL,
    updated double precision NOT NULL, state text NOT NULL, gate text
);
CREATE INDEX rollouts_status ON rollouts (status);
CREATE TABLE rollout_intents (
    seq bigserial PRIMARY KEY, rollout text NOT NULL REFERENCES rollouts (id),
    action text NOT NULL, who text NOT NULL, at double precision NOT NULL,
    taken double precision
);
"""

#: Version 4: the alert lifecycle (central/store/alerting.py: history, maintenance windows,
#: incidents, webhook deliveries) and the Wi-Fi service reports (central/store/service.py),
#: the same columns as their SQLite SCHEMA. ``service_history`` is partitioned by ``bucket``
#: (a week a partition) and dropped a partition at a time past ``store.rollup_days``, as the
#: rollups are. ``device`` sorts bytewise (COLLATE "C"), as in SQLite.
V4 = """
CREATE TABLE alert_events (
    seq bigserial PRIMARY KEY, alert bigint NOT NULL, at double precision NOT NULL,
    event text NOT NULL, who text NOT NULL, until double precision, note text
);
CREATE INDEX alert_events_alert ON alert_events (alert, seq);
CREATE TABLE alert_info (
    alert bigint PRIMARY KEY, taken double precision NOT NULL, region text, site text,
    maintenance bigint, incident bigint, notified bigint NOT NULL DEFAULT 0,
    resolved double precision
);
CREATE INDEX alert_info_open ON alert_info (resolved);
CREATE INDEX alert_info_incident ON alert_info (incident);
CREATE TABLE maint_windows (
    id bigserial PRIMARY KEY, grp text, device text, region text,
    start double precision NOT NULL, "end" double precision NOT NULL, reason text NOT NULL,
    who text NOT NULL, created double precision NOT NULL, deleted double precision,
    deleted_by text
);
CREATE TABLE incidents (
    id bigserial PRIMARY KEY, scope text NOT NULL, key text NOT NULL,
    opened double precision NOT NULL, first_down double precision NOT NULL,
    last_down double precision NOT NULL, resolved double precision,
    notified_count bigint NOT NULL DEFAULT 0, notified_at double precision
);
CREATE INDEX incidents_open ON incidents (scope, key, resolved);
CREATE TABLE notifications (
    id bigserial PRIMARY KEY, at double precision NOT NULL, subject text NOT NULL,
    event text NOT NULL, status text NOT NULL, attempts bigint NOT NULL DEFAULT 0,
    error text, done double precision
);
CREATE TABLE alerting_meta (key text PRIMARY KEY, value double precision NOT NULL);
CREATE TABLE service_latest (
    device text COLLATE "C" PRIMARY KEY, ts double precision NOT NULL,
    received double precision NOT NULL, interval_s bigint NOT NULL, score bigint NOT NULL,
    deductions text NOT NULL, clients bigint, busy_pct double precision, dns_failed bigint,
    portal_failed bigint, inet_failed bigint, failed text NOT NULL
);
CREATE TABLE service_report (
    device text PRIMARY KEY, ts double precision NOT NULL, report text NOT NULL
);
CREATE TABLE service_history (
    device text NOT NULL, bucket bigint NOT NULL, ts double precision NOT NULL,
    score bigint NOT NULL, reasons text NOT NULL, radios text NOT NULL, ssids text NOT NULL,
    probes text NOT NULL,
    PRIMARY KEY (device, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE service_history_default PARTITION OF service_history DEFAULT;
CREATE INDEX service_history_device_ts ON service_history (device, ts);
"""

#: Version 5: upgrade rollouts (issue 22): each gateway's latest upgrade step per rollout,
#: as the SQLite ``upgrade_steps`` (central/store/rollouts.py).
V5 = """
CREATE TABLE upgrade_steps (
    rollout text NOT NULL REFERENCES rollouts (id), device text NOT NULL, cmd text NOT NULL,
    step text NOT NULL, ok integer NOT NULL, error text, ts double precision,
    failures integer NOT NULL, at double precision NOT NULL, PRIMARY KEY (rollout, device)
);
"""

#: Version 6: the jsonb of a sample's ``raw`` that is JSON jsonb refuses: a ``\u0000`` or a
#: lone surrogate escape in a string (valid JSON, which SQLite's JSON functions read). Those
#: escapes become ``\ufffd`` (the replacement character, as Python's ``errors="replace"``)
#: and the text is parsed again, so the sample's WAN figures count as in SQLite; NULL (the row
#: skipped, as SQLite's ``json_valid`` skips it) for text that is still refused, i.e. not
#: JSON. Escaped backslashes (``\\``) are set aside first (as U+0001, which JSON text cannot
#: hold unescaped), so ``\\u0000`` (a backslash, then "u0000") is left as it is. Called only
#: for the rows ``titik_jsonb`` gives NULL (central/store/pg/queries.py, ``SAFE_J``).
V6 = r"""
CREATE FUNCTION titik_jsonb_lenient(t text) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    s text;
BEGIN
    IF strpos(t, chr(1)) > 0 THEN
        RETURN NULL;
    END IF;
    s := replace(t, '\\', chr(1));
    s := regexp_replace(s, '\\u0000', '\\ufffd', 'g');
    s := regexp_replace(
        s, '\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})', '\\ufffd', 'g');
    s := regexp_replace(
        s, '(?<!\\u[dD][89abAB][0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}', '\\ufffd', 'g');
    RETURN replace(s, chr(1), '\\')::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END $$;
"""

#: Version 7: ``devices`` pages are filled to half, so the once-a-second upsert of every live
#: gateway's row (by each instance) finds room for the new row version on the same page: a
#: HOT update, no new entry in the table's two indexes, and the page's old versions pruned
#: as it is read. With pages full (the default) 50 of 3,000 updates were HOT
#: (bench/diag/pg_statements.py, docs/benchmarks.md, issue 21). Pages written before keep
#: their rows until those move (an update that does not fit goes to a page with room).
V7 = """
ALTER TABLE devices SET (fillfactor = 50);
"""

#: The steps, in order: MIGRATIONS[i] takes a database from version i to i + 1.
MIGRATIONS: tuple[str, ...] = (V1, V2, V3, V4, V5, V6, V7)
VERSION = len(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer central than this one."""


_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"


def _rows(
    conn: psycopg.Connection[Any], query: str, args: tuple[Any, ...] = ()
) -> list[tuple[Any, ...]]:
    """The rows of ``query`` as tuples, whatever the connection's row factory."""
    with conn.cursor(row_factory=tuple_row) as cur:
        cur.execute(query.encode(), args)
        return cur.fetchall()


def current_version(conn: psycopg.Connection[Any]) -> int:
    (row,) = _rows(conn, "SELECT max(version) FROM schema_version")
    return int(row[0]) if row[0] is not None else 0


def migrate(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    """Bring the database to :data:`VERSION`; ``(from, to)``. :class:`SchemaTooNew` if the
    database is newer than this code (a downgrade would misread it)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
        conn.execute(_VERSION_TABLE)
    start = current_version(conn)
    if start > VERSION:
        raise SchemaTooNew(
            f"the database is at schema version {start}, newer than this central ({VERSION}): "
            "upgrade central, or point [store] url at another database"
        )
    for step in range(start, VERSION):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_MIGRATE,))
            if current_version(conn) > step:  # another instance did it meanwhile
                continue
            conn.execute(MIGRATIONS[step].encode())
            conn.execute("DELETE FROM schema_version")
            conn.execute("INSERT INTO schema_version VALUES (%s)", (step + 1,))
    return start, VERSION


def _name(p: Partitioned, start: int) -> str:
    return f"{p.table}_{time.strftime('%Y%m%d', time.gmtime(start))}"


def partitions(conn: psycopg.Connection[Any], p: Partitioned) -> dict[str, int]:
    """The table's range partitions (not DEFAULT): name -> start."""
    rows = _rows(
        conn,
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class t ON t.oid = i.inhparent "
        "WHERE t.relname = %s AND t.relnamespace = 'public'::regnamespace",
        (p.table,),
    )
    out = {}
    for name, bound in rows:
        if bound.startswith("FOR VALUES FROM ("):
            out[str(name)] = int(float(bound.split("(", 1)[1].split(")", 1)[0].strip("'")))
    return out


def ensure_partitions(
    conn: psycopg.Connection[Any], p: Partitioned, since: float, until: float
) -> int:
    """Create the partitions covering ``[since, until]`` that are missing; return how many.

    Rows already in the DEFAULT partition for a new partition's range are moved into it in
    the same transaction (PostgreSQL refuses to create a partition whose rows sit in DEFAULT).
    """
    have = set(partitions(conn, p).values())
    first = int(since // p.width_s * p.width_s)
    made = 0
    for start in range(first, int(until) + 1, p.width_s):
        if start in have:
            continue
        end = start + p.width_s
        name = _name(p, start)
        ident = sql.Identifier
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
            if start in partitions(conn, p).values():
                continue
            conn.execute(LOCK_TIMEOUT)
            lo, hi = sql.Literal(start), sql.Literal(end)
            default, col, table = ident(f"{p.table}_default"), ident(p.column), ident(p.table)
            waiting = conn.execute(
                sql.SQL("SELECT 1 FROM {d} WHERE {c} >= {lo} AND {c} < {hi} LIMIT 1").format(
                    d=default, c=col, lo=lo, hi=hi
                )
            ).fetchone()
            if waiting:
                conn.execute(
                    sql.SQL("CREATE TEMP TABLE moving (LIKE {t}) ON COMMIT DROP").format(t=table)
                )
                conn.execute(
                    sql.SQL(
                        "WITH m AS (DELETE FROM {d} WHERE {c} >= {lo} AND {c} < {hi} "
                        "RETURNING *) INSERT INTO moving SELECT * FROM m"
                    ).format(d=default, c=col, lo=lo, hi=hi)
                )
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {n} PARTITION OF {t} FOR VALUES FROM ({lo}) TO ({hi})"
                ).format(n=ident(name), t=table, lo=lo, hi=hi)
            )
            if waiting:
                conn.execute(sql.SQL("INSERT INTO {t} SELECT * FROM moving").format(t=table))
        made += 1
    return made


def drop_one_expired(conn: psycopg.Connection[Any], p: Partitioned, cut: float) -> int:
    """Drop the oldest partition that lies wholly before ``cut``; its estimated row count
    (at least 1), or 0 when none is due."""
    due = sorted(
        (start, name) for name, start in partitions(conn, p).items() if start + p.width_s <= cut
    )
    if not due:
        return 0
    _, name = due[0]
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_PARTITIONS,))
        conn.execute(LOCK_TIMEOUT)
        rows = _rows(
            conn, "SELECT reltuples FROM pg_class WHERE relname = %s AND relkind = 'r'", (name,)
        )
        if not rows:  # another instance dropped it
            return 0
        conn.execute(sql.SQL("DROP TABLE {n}").format(n=sql.Identifier(name)))
    return max(1, int(rows[0][0]))
