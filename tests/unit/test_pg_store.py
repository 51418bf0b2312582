"""The PostgreSQL store's own mechanics (the contract both stores keep is in
test_central_store.py): schema migrations in place, time partitions made ahead and dropped
by retention, rows moved out of the DEFAULT partition, "unavailable" told from "bad row",
and a server that goes away and comes back. A real PostgreSQL: tests/postgres.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import psycopg.errors
import pytest

from central.store.base import DeviceState, Sample, StoreUnavailable, WriteBatch
from central.store.pg import PgStore, schema
from central.store.pg.queries import run_safely
from central.store.pg.store import describe, unavailable
from central.store.pg.tables import PgAlertingStore, PgAuditLog
from tests.broker import wait_until
from tests.postgres import Postgres

NOW = 1_795_800_000.0  # 2026-11-27 17:20 UTC, a multiple of 300
DAY = 86400.0


def s(seq: int, ts: float, device: str = "d") -> Sample:
    return Sample(device, "a", seq, ts, False, 1, 3, 1.0, 2.0, 40.0, 4.0, "0.1", '{"x":1}')


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(r) for r in conn.execute(query.encode())]


def names(url: str, table: str) -> list[str]:
    with psycopg.connect(url) as conn:
        p = {
            "samples": schema.SAMPLES,
            "rollups_5m": schema.ROLLUPS,
            "service_history": schema.SERVICE_HISTORY,
        }[table]
        return sorted(schema.partitions(conn, p))


@pytest.fixture
def store(pg_url: str) -> Iterator[PgStore]:
    st = PgStore(pg_url, raw_days=2, rollup_days=30, clock=lambda: NOW)
    yield st
    st.close()


def test_a_version_1_database_is_upgraded_in_place(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        conn.execute(schema.MIGRATIONS[0].encode())
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        conn.execute(
            "INSERT INTO samples (device, sid, seq, ts, historical, clients, raw) "
            "VALUES ('d', 'a', 1, %s, false, 5, '{}')",
            (NOW,),
        )
        conn.execute("INSERT INTO devices (device, region, clients) VALUES ('d', 'North', 5)")
    st = PgStore(pg_url, clock=lambda: NOW)
    try:
        assert st.migrated == (1, schema.VERSION) == (1, 7)
        assert sql(pg_url, "SELECT version FROM schema_version") == [(schema.VERSION,)]
        (dev,) = st.load_devices()
        assert (dev.device, dev.region, dev.clients) == ("d", "North", 5)
        assert [p.clients for p in st.history("d", NOW - 10, NOW + 10)] == [5]
        # Version 2's and 3's tables work on the upgraded database.
        assert st.roll_up() == 1
        assert [p.count for p in st.net_history("d", NOW - 30 * DAY, NOW + 300)] == [1]
        assert st.alert_marks() == {}
        audit = PgAuditLog(pg_url)
        audit.append("ann", "x", "t", key_id=None, result="ok", via="cli")
        assert audit.verify() == []
        audit.close()
    finally:
        st.close()
    again = PgStore(pg_url, clock=lambda: NOW)
    assert again.migrated == (schema.VERSION, schema.VERSION)
    again.close()


def test_a_version_3_database_gets_the_alert_lifecycle_and_service_tables_keeping_its_data(
    pg_url: str,
) -> None:
    """Version 4 (the alert lifecycle, the service reports) on a database central left at
    version 3: its rows stay, the new tables work, the service history is partitioned."""
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for step in schema.MIGRATIONS[:3]:
            conn.execute(step.encode())
        conn.execute("INSERT INTO schema_version VALUES (3)")
        conn.execute("INSERT INTO devices (device, region, groups) VALUES ('d', 'North', '{g}')")
        conn.execute(
            "INSERT INTO alerts (kind, device, since, detail) VALUES ('offline', 'd', %s, 'x')",
            (NOW,),
        )
        conn.execute("INSERT INTO tokens VALUES ('t1', 'ann', 'admin', 'h', 0, NULL, NULL, NULL)")
    st = PgStore(pg_url, clock=lambda: NOW)
    try:
        assert st.migrated == (3, schema.VERSION)
        assert sql(pg_url, "SELECT version FROM schema_version") == [(schema.VERSION,)]
        assert [(a.kind, a.device) for a in st.alerts()] == [("offline", "d")]
        assert sql(pg_url, "SELECT name FROM tokens") == [("ann",)]
        assert "service_history_20261126" in names(pg_url, "service_history")
        life = PgAlertingStore(pg_url, clock=lambda: NOW)
        (row,) = life.new_alerts(0)
        assert (row["device"], row["groups"]) == ("d", '["g"]')
        w = life.add_window(group="g", start=NOW, end=NOW + 60, reason="r", who="ann")
        assert life.window_for("d", ["g"], "North", NOW + 1) == w
        life.close()
    finally:
        st.close()


def test_a_version_5_database_reads_the_wan_figures_of_json_jsonb_refuses(pg_url: str) -> None:
    """Version 6 (``titik_jsonb_lenient``) on a database left at version 5 with a sample whose
    raw holds \\u0000 already stored: the roll-up after the upgrade counts its WAN figures;
    version 7 sets the devices' fillfactor."""
    raw = '{"v":"\\u0000","net":{"wan":"wan","wan_up":true,"ifaces":{"wan":{"rx_bps":5}}}}'
    with psycopg.connect(pg_url) as conn:
        conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        for step in schema.MIGRATIONS[:5]:
            conn.execute(step.encode())
        conn.execute("INSERT INTO schema_version VALUES (5)")
        conn.execute(
            "INSERT INTO samples (device, sid, seq, ts, historical, raw) "
            "VALUES ('d', 'a', 1, %s, false, %s)",
            (NOW, raw),
        )
    st = PgStore(pg_url, clock=lambda: NOW)
    try:
        assert st.migrated == (5, schema.VERSION)
        # Version 7 too: the devices' pages are filled to half.
        assert sql(pg_url, "SELECT reloptions FROM pg_class WHERE relname = 'devices'") == [
            (["fillfactor=50"],)
        ]
        assert st.roll_up() == 1
        (b,) = st.net_history("d", NOW - 30 * DAY, NOW + 300)
        assert (b.count, b.rx_bps, b.tx_bps, b.wan_up) == (1, 5.0, None, 1.0)
    finally:
        st.close()


#: titik_jsonb_lenient's inputs (JSON text) and the value it gives; None is SQL NULL.
LENIENT = [
    (r'{"a":"\u0000"}', {"a": "\ufffd"}),
    (r'{"a":"\\u0000"}', {"a": "\\u0000"}),  # an escaped backslash, then "u0000": kept
    (r'{"a":"\\\u0000"}', {"a": "\\\ufffd"}),  # an escaped backslash, then a NUL escape
    (r'{"a":"\ud800x"}', {"a": "\ufffdx"}),
    (r'{"a":"x\udc00"}', {"a": "x\ufffd"}),
    (r'{"a":"\ud83d\ude00\udc00"}', {"a": "\U0001f600\ufffd"}),  # a pair is kept
    (r'{"a":"\n","n":1.5}', {"a": "\n", "n": 1.5}),
    ('{"a":', None),
    ('{"a":"\x01"}', None),  # a raw control character: not JSON, not made JSON
]


def test_the_lenient_parse_replaces_only_the_escapes_jsonb_refuses(store: PgStore) -> None:
    with store._conn() as conn:
        got = [
            conn.execute("SELECT titik_jsonb_lenient(%s) AS j", (text,)).fetchone()
            for text, _ in LENIENT
        ]
    assert [r["j"] if r else "no row" for r in got] == [want for _, want in LENIENT]


def test_the_fast_form_is_undone_and_the_safe_one_run_only_for_a_refused_row(
    store: PgStore,
) -> None:
    """run_safely inside the roll-up's transaction: a data error of the fast statement
    rolls back to its savepoint only (the transaction goes on, the safe form runs); an
    error that is not about a row's text is raised as it is."""
    with store._conn() as conn, conn.transaction():
        conn.execute("INSERT INTO meta VALUES ('before', 1)")
        cur = run_safely(conn, 'SELECT \'{"a":"\\u0000"}\'::jsonb AS x', "SELECT 2 AS x", ())
        assert cur.fetchall() == [{"x": 2}]
        cur = run_safely(conn, "SELECT '{}'::jsonb AS x", "SELECT 2 AS x", ())
        assert cur.fetchall() == [{"x": {}}]
        conn.execute("INSERT INTO meta VALUES ('after', 1)")
    assert sql(store.url, "SELECT key FROM meta ORDER BY key") == [("after",), ("before",)]
    with store._conn() as conn:  # outside a transaction (autocommit): the same
        cur = run_safely(conn, 'SELECT \'{"a":"\\u0000"}\'::jsonb AS x', "SELECT 2 AS x", ())
        assert cur.fetchall() == [{"x": 2}]
        with pytest.raises(psycopg.errors.UndefinedTable):
            run_safely(conn, "SELECT * FROM no_such_table", "SELECT 2", ())


def test_a_newer_schema_is_refused_naming_both_versions(pg_url: str) -> None:
    PgStore(pg_url, clock=lambda: NOW).close()
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(schema.SchemaTooNew, match=r"version 99, newer than this central \(7\)"):
        PgStore(pg_url, clock=lambda: NOW)


def test_partitions_are_made_ahead_and_retention_drops_them(pg_url: str, store: PgStore) -> None:
    # raw_days=2: from 2 days back to 2 days ahead, one a day (ts is UTC seconds).
    assert names(pg_url, "samples") == [
        "samples_20261125", "samples_20261126", "samples_20261127", "samples_20261128",
        "samples_20261129",
    ]  # fmt: skip
    store.write(WriteBatch(samples=[s(1, NOW - 2 * DAY), s(2, NOW - DAY), s(3, NOW)]))
    assert sql(pg_url, "SELECT seq FROM samples_20261127") == [(3,)]
    assert store.roll_up() == 3
    # Three days later (30 November 17:20): 25, 26 and 27 November are wholly past raw_days.
    later = NOW + 3 * DAY
    store.clock = lambda: later
    while store.prune(later):
        pass
    got = names(pg_url, "samples")
    assert got == [
        "samples_20261128", "samples_20261129", "samples_20261130", "samples_20261201",
        "samples_20261202",
    ]  # fmt: skip
    assert sql(pg_url, "SELECT seq FROM samples") == []
    # The rollups (rollup_days=30) keep all three.
    assert sum(p.count for p in store.history("d", NOW - 10 * DAY, NOW + DAY)) == 3


def test_rows_outside_every_partition_wait_in_default_and_move_in_once(
    pg_url: str, store: PgStore
) -> None:
    far = NOW + 6 * DAY  # beyond the partitions made ahead: DEFAULT
    store.write(WriteBatch(samples=[s(1, far), s(2, NOW)]))
    assert sql(pg_url, "SELECT seq FROM samples_default") == [(1,)]
    assert store.roll_up() == 2
    store.clock = lambda: NOW + 5 * DAY
    store.ensure_partitions()  # makes 3 December's partition: the row moves into it
    assert sql(pg_url, "SELECT seq FROM samples_default") == []
    assert sql(pg_url, "SELECT seq FROM samples_20261203") == [(1,)]
    assert store.write(WriteBatch(samples=[s(1, far)])).duplicates == 1
    assert store.roll_up() == 0  # moved, not new: not counted again
    assert [
        p.count for p in store.history("d", far - 30 * DAY, far + 300) if p.ts >= far - 300
    ] == [1]


def test_unavailable_is_told_from_a_bad_row() -> None:
    for exc in (
        psycopg.errors.DiskFull(),
        psycopg.errors.AdminShutdown(),
        psycopg.errors.DeadlockDetected(),
        psycopg.errors.ReadOnlySqlTransaction(),
        psycopg.errors.DataCorrupted(),
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
    ):
        assert unavailable(exc), exc
    for exc in (
        psycopg.errors.NotNullViolation(),
        psycopg.errors.NumericValueOutOfRange(),
        psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),
        ValueError("x"),
    ):
        assert not unavailable(exc), exc


def test_the_url_is_described_without_its_password() -> None:
    assert describe("postgresql://titik:sekrit@db:6432/fleet") == "titik@db:6432/fleet"
    assert "sekrit" not in describe("postgresql://titik:sekrit@/fleet?host=/run/pg")


def test_the_cli_says_postgresql_is_unreachable_without_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from central.cli import main
    from tests.broker import free_port

    conf = tmp_path / "central.toml"
    url = f"postgresql://titik:sekrit@127.0.0.1:{free_port()}/fleet?connect_timeout=1"
    conf.write_text(f'[mqtt]\nhost = "127.0.0.1"\n[store]\nurl = "{url}"\n')
    assert main(["token", "list", "--config", str(conf)]) == 1
    err = capsys.readouterr().err
    assert (
        "titik-central token: [store] url: cannot connect to PostgreSQL at titik@127.0.0.1:" in err
    )
    assert "sekrit" not in err


def test_no_server_at_start_is_unavailable_naming_where_not_the_password() -> None:
    from tests.broker import free_port

    url = f"postgresql://titik:sekrit@127.0.0.1:{free_port()}/fleet"
    with pytest.raises(StoreUnavailable, match="cannot connect to PostgreSQL at titik@") as err:
        PgStore(url, connect_timeout_s=1)
    assert "sekrit" not in str(err.value)


def test_a_server_that_goes_away_is_unavailable_then_comes_back() -> None:
    pg = Postgres().start()
    try:
        st = PgStore(pg.create_database(), clock=lambda: NOW, connect_timeout_s=2)
        st.write(WriteBatch(samples=[s(1, NOW)]))
        pg.pause()
        with pytest.raises(StoreUnavailable):
            st.write(WriteBatch(samples=[s(2, NOW + 60)], devices=[DeviceState("d")]))
        with pytest.raises(StoreUnavailable):
            st.probe()
        pg.resume()
        # The pool replaces the broken connections: the batch the writer kept goes in, tried
        # again as the ingest writer does (every second while StoreUnavailable).
        deadline = time.monotonic() + 30
        while True:
            try:
                r = st.write(WriteBatch(samples=[s(2, NOW + 60)], devices=[DeviceState("d")]))
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline, "the store did not come back in 30 s"
                threading.Event().wait(1)  # the writer's RETRY_S
        assert (r.stored, r.duplicates) == (1, 0)
        st.probe()
        assert [p.ts for p in st.history("d", NOW - 10, NOW + 100)] == [NOW, NOW + 60]
        st.close()
    finally:
        pg.stop()


def test_roll_up_waits_for_a_writer_in_flight_and_skips_no_sample(store: PgStore) -> None:
    """Ids are handed out at insert and committed later: a fold that read the top id while
    a lower id was still uncommitted would skip that sample for good. A writer (another
    central instance) inserts and holds its transaction open; a later sample commits
    meanwhile; the roll-up waits for the first writer (its SHARE lock) and counts both."""
    with psycopg.connect(store.url) as slow:
        slow.execute(
            "INSERT INTO samples (device, sid, seq, ts, historical, raw) "
            "VALUES ('d', 'a', 1, %s, false, '{}')",
            (NOW,),
        )  # id 1, not committed yet
        store.write(WriteBatch(samples=[s(2, NOW + 1)]))  # id 2, committed
        folded: list[int] = []
        roll = threading.Thread(target=lambda: folded.append(store.roll_up()))
        roll.start()

        def waiting_for_a_lock() -> bool:
            rows = sql(
                store.url,
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE 'LOCK TABLE samples%'",
            )
            return rows[0][0] == 1

        wait_until(waiting_for_a_lock, 10, "the roll-up to wait for the open writer")
        slow.commit()
    roll.join(10)
    assert folded == [2]
    assert store.roll_up() == 0
    assert sql(store.url, "SELECT sum(count)::bigint FROM rollups_5m") == [(2,)]


def test_the_tables_connection_speaks_sqlites_sql(pg_url: str) -> None:
    """central/store/pg/tables.py's PgConn: ``?`` placeholders, a literal ``%``, rows by name
    and by position, BEGIN ... ROLLBACK on one connection, executemany."""
    from central.store.pg.tables import PgTables

    class T(PgTables):
        pass

    t = T()
    t._setup(pg_url, lambda: NOW)
    try:
        conn = t._conn()
        row = conn.execute("SELECT 'a%b' AS x, ? AS y", (7,)).fetchone()
        assert row is not None and (row["x"], row[1], dict(row)) == ("a%b", 7, {"x": "a%b", "y": 7})
        conn.execute("CREATE TABLE t (v bigint)")
        conn.execute("BEGIN IMMEDIATE")
        assert conn.in_transaction
        conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)])
        conn.execute("ROLLBACK")
        assert not conn.in_transaction
        assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 0
        assert conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,)]).rowcount == 2
        assert [r[0] for r in conn.execute("SELECT v FROM t ORDER BY v")] == [1, 2]
    finally:
        t.close()


def test_a_cluster_left_by_a_dead_test_session_is_stopped_by_the_next() -> None:
    """tests/postgres.py: a session killed before its teardown leaves its server running;
    the next session's harness stops it and removes its directory."""
    import subprocess
    import sys

    from tests.postgres import pg_bindir, reap_orphans

    root = Path(__file__).resolve().parents[2]
    code = (
        "import os; from tests.postgres import Postgres; print(Postgres().start().dir); os._exit(0)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    left = Path(out.stdout.strip())
    assert (left / "data" / "postmaster.pid").exists()
    reap_orphans(pg_bindir())
    assert not left.exists()
