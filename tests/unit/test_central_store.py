"""The SQLite store: de-duplication, rollups, retention in chunks, queries and filters."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol import ConfigReported
from central.store.base import (
    AlertChange,
    DesiredDoc,
    DeviceState,
    Quarantined,
    ReportedDoc,
    Sample,
    WriteBatch,
)
from central.store.sqlite import SqliteStore

NOW = 1_795_800_000.0  # a multiple of 300
DAY = 86400.0


def s(device: str, seq: int, ts: float, *, sid: str = "a", clients: int = 1, **kw: float) -> Sample:
    return Sample(
        device, sid, seq, ts, False, 1, clients,
        kw.get("cpu_pct", 10.0), kw.get("mem_used_pct", 20.0), kw.get("temp_c", 40.0),
        kw.get("disk_used_pct", 30.0),
        "0.1", '{"x":1}',
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    st = SqliteStore(tmp_path / "t.db", raw_days=7, rollup_days=90, clock=lambda: NOW)
    yield st
    st.close()


def count(store: SqliteStore, table: str) -> int:
    return int(store._r().execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


def test_wal_and_synchronous_normal(store: SqliteStore) -> None:
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL


def test_duplicates_are_ignored_but_a_new_sid_is_not(store: SqliteStore) -> None:
    r1 = store.write(WriteBatch(samples=[s("d", 1, NOW), s("d", 2, NOW + 1)]))
    r2 = store.write(
        WriteBatch(samples=[s("d", 2, NOW + 1), s("d", 3, NOW + 2), s("d", 3, NOW + 2)])
    )
    r3 = store.write(WriteBatch(samples=[s("d", 1, NOW + 3, sid="wiped")]))
    assert (r1.stored, r1.duplicates) == (2, 0)
    assert (r2.stored, r2.duplicates) == (1, 2)
    assert (r3.stored, r3.duplicates) == (1, 0)
    assert count(store, "samples") == 4


def test_rollups_count_each_sample_once(store: SqliteStore) -> None:
    batch = [
        s("d", i, NOW + i * 60, clients=i, temp_c=40.0 + i, cpu_pct=float(i)) for i in range(10)
    ]
    store.write(WriteBatch(samples=batch))
    assert store.roll_up() == 10
    store.write(WriteBatch(samples=batch[:3]))  # redelivered: not counted again
    assert store.roll_up() == 0
    rows = (
        store._r()
        .execute("SELECT bucket, count, max_clients, max_temp_c FROM rollups_5m ORDER BY bucket")
        .fetchall()
    )
    assert [tuple(r) for r in rows] == [(NOW, 5, 4, 44.0), (NOW + 300, 5, 9, 49.0)]
    old = store.history("d", NOW - 30 * DAY, NOW + 3600)  # older than raw_days: rollups
    assert [(p.ts, p.count, p.clients, p.clients_max, p.cpu_pct) for p in old] == [
        (NOW, 5, 2.0, 4, 2.0),
        (NOW + 300, 5, 7.0, 9, 7.0),
    ]
    raw = store.history("d", NOW - DAY, NOW + 3600)
    assert [p.clients for p in raw] == list(range(10))


def test_retention_deletes_in_chunks(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "r.db", raw_days=1, rollup_days=2)
    old = [s("d", i, NOW - 3 * DAY + i) for i in range(25)]
    new = [s("d", 100 + i, NOW + i) for i in range(5)]
    st.write(WriteBatch(samples=old + new))
    st.roll_up()
    assert count(st, "rollups_5m") == 2 and count(st, "rollups_net_5m") == 2
    deleted = []
    while n := st.prune(NOW, chunk=10):
        deleted.append(n)
    # 10 raw + 1 rollup + 1 WAN rollup (central/store/net.py), then 10 raw, then 5 raw
    assert deleted == [12, 10, 5]
    assert count(st, "samples") == 5 and count(st, "rollups_5m") == 1
    assert count(st, "rollups_net_5m") == 1
    st.close()


def dev(name: str, **kw: object) -> DeviceState:
    return DeviceState(device=name, **kw)  # type: ignore[arg-type]


@pytest.fixture
def fleet_store(store: SqliteStore) -> SqliteStore:
    store.write(
        WriteBatch(
            devices=[
                dev("gw-a", region="North", site="Alpha park", groups=["jkt", "pilot"], online=True, clients=10, last_seen=3.0),
                dev("gw-b", region="North", site="Beta mall", groups=["jkt"], online=True, clients=5, last_seen=1.0),
                dev("gw-c", region="South", site="Gamma_station", groups=[], online=False, clients=7, last_seen=2.0),
                dev("gw-d", region="South", site="Delta", groups=["pilot"], online=True, clients=None),
            ]
        )
    )  # fmt: skip
    return store


def test_summary_and_public_summary(fleet_store: SqliteStore) -> None:
    sm = fleet_store.summary()
    assert (sm.online, sm.offline, sm.total, sm.clients) == (3, 1, 4, 15)
    assert sm.clients_by_region == {"North": 15, "South": 0}  # offline clients don't count
    pub = fleet_store.public_summary()
    assert [(r.region, r.active_aps, r.users) for r in pub] == [("North", 2, 15), ("South", 1, 0)]


def test_device_filters_sort_and_paging(fleet_store: SqliteStore) -> None:
    def names(**kw: object) -> list[str]:
        return [d.device for d in fleet_store.devices(**kw).items]  # type: ignore[arg-type]

    assert names() == ["gw-a", "gw-b", "gw-c", "gw-d"]
    assert names(region="South") == ["gw-c", "gw-d"]
    assert names(group="pilot") == ["gw-a", "gw-d"]
    assert names(status="offline") == ["gw-c"]
    assert names(status="online", group="jkt") == ["gw-a", "gw-b"]
    assert names(q="mall") == ["gw-b"]
    assert names(q="_") == ["gw-c"]  # LIKE wildcards are literal
    assert names(sort="-clients") == ["gw-a", "gw-c", "gw-b", "gw-d"]
    assert names(sort="-last_seen") == ["gw-a", "gw-c", "gw-b", "gw-d"]
    page = fleet_store.devices(limit=2, offset=1)
    assert page.total == 4 and [d.device for d in page.items] == ["gw-b", "gw-c"]
    with pytest.raises(ValueError, match="sort"):
        fleet_store.devices(sort="bogus")  # type: ignore[arg-type]
    a = fleet_store.device("gw-a")
    assert a is not None and a.groups == ["jkt", "pilot"] and a.online is True
    assert fleet_store.device("nope") is None


def test_device_upsert_replaces_state(fleet_store: SqliteStore) -> None:
    fleet_store.write(WriteBatch(devices=[dev("gw-a", region="East", online=False)]))
    a = fleet_store.device("gw-a")
    assert a is not None and a.region == "East" and not a.online and a.clients is None
    assert len(fleet_store.load_devices()) == 4


def test_alerts_open_once_and_close(store: SqliteStore) -> None:
    store.write(
        WriteBatch(
            alerts=[AlertChange("temp", "d", 1.0, "hot"), AlertChange("temp", "d", 2.0, "hot")]
        )
    )
    assert [(a.kind, a.since) for a in store.alerts()] == [("temp", 1.0)]
    store.write(WriteBatch(alerts=[AlertChange("temp", "d", 3.0, close=True)]))
    assert store.alerts() == []
    (closed,) = store.alerts(open_only=False)
    assert closed.closed == 3.0


def test_compliance_from_stored_docs(fleet_store: SqliteStore) -> None:
    fleet_store.write(
        WriteBatch(
            desired=[DesiredDoc("group/jkt", 3, '{"version":3}', 1.0)],
            reported=[ReportedDoc("gw-a", ConfigReported.model_construct(version=3, source="group/jkt", versions={"group/jkt": 3}, state="applied", error=None, hash="h", ts=1.0), "{}")],
        )
    )  # fmt: skip
    rows = {r.device: r for r in fleet_store.compliance()}
    assert rows["gw-a"].compliant and not rows["gw-b"].compliant and rows["gw-c"].compliant
    assert rows["gw-b"].missing == ["group/jkt"]


def test_a_failed_batch_writes_nothing(store: SqliteStore) -> None:
    # state is NOT NULL: a statement after the samples fails.
    report = ReportedDoc(
        "d",
        ConfigReported.model_construct(
            version=1, source="gw", versions={}, state=None, error=None, hash=None, ts=None
        ),
        "{}",
    )  # type: ignore[arg-type]
    bad = WriteBatch(samples=[s("d", 1, NOW)], reported=[report])
    with pytest.raises(sqlite3.IntegrityError):
        store.write(bad)
    assert count(store, "samples") == 0 and count(store, "rollups_5m") == 0
    assert store.write(WriteBatch(samples=[s("d", 1, NOW)])).stored == 1


def q(at: float, reason: str = "json", device: str | None = "d") -> Quarantined:
    return Quarantined(at, reason, f"titik/gw/{device}/telemetry", device, "why", b"{", 1)


def test_the_quarantine_keeps_the_newest_rows_and_none_past_raw_days(tmp_path: Path) -> None:
    st = SqliteStore(tmp_path / "q.db", raw_days=1, quarantine_rows=100)
    st.write(WriteBatch(quarantined=[q(NOW - 2 * DAY)] * 5 + [q(NOW + i) for i in range(150)]))
    while st.prune(NOW, chunk=40):
        pass
    page = st.quarantine(limit=1000)
    assert page.total == 100 and page.by_reason == {"json": 100}
    assert [r.at for r in page.items] == [NOW + i for i in range(149, 49, -1)]  # newest first
    st.close()


def test_the_quarantine_filters_and_pages(store: SqliteStore) -> None:
    store.write(WriteBatch(quarantined=[q(NOW), q(NOW + 1, "schema"), q(NOW + 2, device="e")]))
    assert store.quarantine(reason="schema").total == 1
    page = store.quarantine(device="d", limit=1, offset=1)
    assert page.total == 2 and [r.at for r in page.items] == [NOW]
    assert page.by_reason == {"json": 2, "schema": 1}


def test_the_probe_leaves_nothing_behind(store: SqliteStore) -> None:
    store.probe()
    for table in (
        "samples",
        "devices",
        "config_desired",
        "config_reported",
        "alerts",
        "quarantine",
    ):
        assert count(store, table) == 0, table


def test_roll_up_survives_sums_past_2_63(store: SqliteStore) -> None:
    """sum() of integers raised "integer overflow" past 2^63, failing every later roll-up;
    clients is bounded by WIRE_INT_MAX, and 1,100 such samples in one bucket pass 2^63."""
    big = [s("d", i, NOW + i * 0.1, clients=2**53 - 1) for i in range(1100)]
    store.write(WriteBatch(samples=big))
    assert store.roll_up() == 1100
    (p,) = store.history("d", NOW - 30 * DAY, NOW + 300)
    assert p.count == 1100 and p.clients == pytest.approx(2**53, rel=1e-3)


#: The three tables as central created them before issue 17 (short column names).
LEGACY_SCHEMA = """
CREATE TABLE samples (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, sid TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    historical INTEGER NOT NULL, clients INTEGER, cpu REAL, mem REAL, temp REAL, disk REAL,
    raw TEXT NOT NULL,
    UNIQUE (device, sid, seq)
);
CREATE TABLE devices (
    device TEXT PRIMARY KEY, site TEXT, region TEXT, lat REAL, lon REAL,
    groups TEXT NOT NULL DEFAULT '[]', online INTEGER NOT NULL DEFAULT 0,
    boot INTEGER NOT NULL DEFAULT 0, last_seen REAL, last_ts REAL, sid TEXT, seq INTEGER,
    clients INTEGER, cpu REAL, mem REAL, temp REAL, disk REAL, version TEXT, platform TEXT,
    model TEXT, interval_s REAL NOT NULL DEFAULT 60, offline_since REAL, offline_reason TEXT
);
CREATE TABLE rollups_5m (
    device TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    sum_clients INTEGER NOT NULL, n_clients INTEGER NOT NULL, max_clients INTEGER,
    sum_cpu REAL NOT NULL, n_cpu INTEGER NOT NULL, sum_mem REAL NOT NULL, n_mem INTEGER NOT NULL,
    sum_disk REAL NOT NULL, n_disk INTEGER NOT NULL, max_temp REAL,
    PRIMARY KEY (device, bucket)
);
INSERT INTO samples VALUES (1, 'd', 'a', 1, 1795800000.0, 0, 3, 12.5, 40.0, 55.0, 30.0, '{}');
INSERT INTO devices (device, clients, cpu, mem, temp, disk) VALUES ('d', 3, 12.5, 40.0, 55.0, 30.0);
INSERT INTO rollups_5m VALUES ('d', 1795108800, 2, 6, 2, 4, 20.0, 2, 80.0, 2, 60.0, 2, 61.0);
"""


def test_a_database_from_before_issue_17_is_renamed_in_place(tmp_path: Path) -> None:
    # The store's names are the wire's since issue 17 (cpu_pct, not cpu); an existing database
    # keeps its rows, under the new names, and opening it again changes nothing.
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(LEGACY_SCHEMA)
    conn.close()
    for _ in range(2):
        st = SqliteStore(db, raw_days=7, rollup_days=90, clock=lambda: NOW)
        try:
            (dev,) = st.load_devices()
            assert (dev.cpu_pct, dev.mem_used_pct, dev.temp_c, dev.disk_used_pct) == (
                12.5, 40.0, 55.0, 30.0,
            )  # fmt: skip
            raw = st.history("d", NOW - 10, NOW + 10)
            assert [(p.cpu_pct, p.temp_c) for p in raw] == [(12.5, 55.0)]
            old = st.history("d", NOW - 8 * DAY, NOW - 8 * DAY + 10)  # rollups: past raw_days
            assert [(p.cpu_pct, p.mem_used_pct, p.temp_c) for p in old] == [(10.0, 40.0, 61.0)]
        finally:
            st.close()
    with sqlite3.connect(db) as conn:
        cols = {r[1] for r in conn.execute("PRAGMA table_info(rollups_5m)")}
    conn.close()
    assert {"sum_cpu_pct", "max_temp_c"} <= cols and not {"sum_cpu", "max_temp"} & cols
