"""The store contract, run against both stores (SQLite, and PostgreSQL started by
tests/postgres.py): de-duplication, bad rows, rollups, retention, queries and filters, the
quarantine, the console's aggregates. Tests of one store's own mechanics say so in their name.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent.protocol import ConfigReported
from central.store.base import (
    AlertChange,
    DesiredDoc,
    DeviceState,
    Quarantined,
    ReportedDoc,
    Sample,
    StoreUnavailable,
    WriteBatch,
)
from central.store.pg import PgStore
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


AnyStore = SqliteStore | PgStore
MakeStore = Callable[..., AnyStore]


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MakeStore]:
    """Opens a store of the parameter's kind (each call a new database); closes them after."""
    opened: list[AnyStore] = []

    def make(**kw: Any) -> AnyStore:
        kw.setdefault("clock", lambda: NOW)
        st: AnyStore
        if request.param == "sqlite":
            st = SqliteStore(tmp_path / f"t{len(opened)}.db", **kw)
        else:
            st = PgStore(request.getfixturevalue("postgres").create_database(), **kw)
        opened.append(st)
        return st

    yield make
    for st in opened:
        st.close()


@pytest.fixture
def store(make_store: MakeStore) -> AnyStore:
    return make_store(raw_days=7, rollup_days=90)


def query(store: AnyStore, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (no parameters) as tuples, on either store."""
    if isinstance(store, SqliteStore):
        return [tuple(r) for r in store._r().execute(sql).fetchall()]
    with store._conn() as conn:
        return [tuple(r.values()) for r in conn.execute(sql.encode()).fetchall()]


def count(store: AnyStore, table: str) -> int:
    return int(query(store, f"SELECT count(*) FROM {table}")[0][0])  # noqa: S608


def test_sqlite_wal_and_synchronous_normal(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "t.db")
    assert store._w.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._w.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    store.close()


def test_duplicates_are_ignored_but_a_new_sid_is_not(store: AnyStore) -> None:
    r1 = store.write(WriteBatch(samples=[s("d", 1, NOW), s("d", 2, NOW + 1)]))
    r2 = store.write(
        WriteBatch(samples=[s("d", 2, NOW + 1), s("d", 3, NOW + 2), s("d", 3, NOW + 2)])
    )
    r3 = store.write(WriteBatch(samples=[s("d", 1, NOW + 3, sid="wiped")]))
    assert (r1.stored, r1.duplicates) == (2, 0)
    assert (r2.stored, r2.duplicates) == (1, 2)
    assert (r3.stored, r3.duplicates) == (1, 0)
    assert count(store, "samples") == 4


def test_rollups_count_each_sample_once(store: AnyStore) -> None:
    batch = [
        s("d", i, NOW + i * 60, clients=i, temp_c=40.0 + i, cpu_pct=float(i)) for i in range(10)
    ]
    store.write(WriteBatch(samples=batch))
    assert store.roll_up() == 10
    store.write(WriteBatch(samples=batch[:3]))  # redelivered: not counted again
    assert store.roll_up() == 0
    rows = query(
        store, "SELECT bucket, count, max_clients, max_temp_c FROM rollups_5m ORDER BY bucket"
    )
    assert rows == [(NOW, 5, 4, 44.0), (NOW + 300, 5, 9, 49.0)]
    old = store.history("d", NOW - 30 * DAY, NOW + 3600)  # older than raw_days: rollups
    assert [(p.ts, p.count, p.clients, p.clients_max, p.cpu_pct) for p in old] == [
        (NOW, 5, 2.0, 4, 2.0),
        (NOW + 300, 5, 7.0, 9, 7.0),
    ]
    raw = store.history("d", NOW - DAY, NOW + 3600)
    assert [p.clients for p in raw] == list(range(10))


def test_sqlite_retention_deletes_in_chunks(tmp_path: Path) -> None:
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
def fleet_store(store: AnyStore) -> AnyStore:
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


def test_summary_and_public_summary(fleet_store: AnyStore) -> None:
    sm = fleet_store.summary()
    assert (sm.online, sm.offline, sm.total, sm.clients) == (3, 1, 4, 15)
    assert sm.clients_by_region == {"North": 15, "South": 0}  # offline clients don't count
    pub = fleet_store.public_summary()
    assert [(r.region, r.active_aps, r.users) for r in pub] == [("North", 2, 15), ("South", 1, 0)]


def test_device_filters_sort_and_paging(fleet_store: AnyStore) -> None:
    def names(**kw: object) -> list[str]:
        return [d.device for d in fleet_store.devices(**kw).items]  # type: ignore[arg-type]

    assert names() == ["gw-a", "gw-b", "gw-c", "gw-d"]
    assert names(region="South") == ["gw-c", "gw-d"]
    assert names(group="pilot") == ["gw-a", "gw-d"]
    assert names(status="offline") == ["gw-c"]
    assert names(status="online", group="jkt") == ["gw-a", "gw-b"]
    assert names(q="mall") == ["gw-b"]
    assert names(q="MALL") == ["gw-b"]  # ASCII case is ignored (SQLite's LIKE)
    assert names(q="_") == ["gw-c"]  # LIKE wildcards are literal
    assert names(sort="-clients") == ["gw-a", "gw-c", "gw-b", "gw-d"]
    assert names(sort="-last_seen") == ["gw-a", "gw-c", "gw-b", "gw-d"]
    page = fleet_store.devices(limit=2, offset=1)
    assert page.total == 4 and [d.device for d in page.items] == ["gw-b", "gw-c"]
    with pytest.raises(ValueError, match="sort"):
        fleet_store.devices(sort="bogus")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "total", "items"),
    [
        ({"limit": 2}, 4, 2),  # a full page: counted
        ({"limit": 3, "offset": 2}, 4, 2),  # the last page: its rows say the total
        ({"limit": 2, "offset": 2}, 4, 2),  # exactly full to the end: counted
        ({"limit": 2, "offset": 9}, 4, 0),  # past the end: counted
        ({"limit": 0}, 4, 0),  # the count alone
        ({"limit": 2**62, "region": "South"}, 2, 2),
        ({"limit": 2**62, "q": "zzz"}, 0, 0),
        ({"limit": 5, "offset": 1, "status": "online"}, 3, 2),
    ],
)
def test_device_page_totals_count_every_match(
    fleet_store: AnyStore, kw: dict[str, Any], total: int, items: int
) -> None:
    """The total is every match, whether read off the last page or counted apart."""
    page = fleet_store.devices(**kw)
    assert (page.total, len(page.items)) == (total, items)
    a = fleet_store.device("gw-a")
    assert a is not None and a.groups == ["jkt", "pilot"] and a.online is True
    assert fleet_store.device("nope") is None


def test_device_upsert_replaces_state(fleet_store: AnyStore) -> None:
    fleet_store.write(WriteBatch(devices=[dev("gw-a", region="East", online=False)]))
    a = fleet_store.device("gw-a")
    assert a is not None and a.region == "East" and not a.online and a.clients is None
    assert len(fleet_store.load_devices()) == 4


def test_every_device_field_and_awkward_text_round_trip(store: AnyStore) -> None:
    """Device rows and samples go to PostgreSQL as binary arrays in one statement each
    (central/store/pg/store.py): groups with quotes, commas, braces and backslashes come back
    as written and in order, an int among a float column's floats is taken, a device twice in
    one batch keeps its last row (as SQLite's statement per row does), and ``raw`` is kept
    byte for byte."""
    odd = ["a,b", 'q"uote', "back\\slash", "{brace}", "NULL", "é ü", ""]
    first = DeviceState("gw-1", site="s'1", region="R", lat=1, lon=106.5, groups=odd,
                        online=True, boot=2**40, last_seen=NOW, last_ts=NOW - 1, sid="x",
                        seq=7, clients=3, cpu_pct=1, mem_used_pct=2.5, temp_c=None,
                        disk_used_pct=9.0, version="0.1", platform="openwrt", model="m",
                        interval_s=30, offline_since=None, offline_reason=None)  # fmt: skip
    later = DeviceState("gw-1", groups=["z", "a"], seq=8, offline_since=NOW, offline_reason="will")
    other = DeviceState("gw-0", groups=[], lat=-6.2)
    store.write(WriteBatch(devices=[first, other]))
    assert store.device("gw-1") == first
    store.write(WriteBatch(devices=[first, later]))
    assert store.device("gw-1") == later and store.device("gw-0") == other
    raw = '{"k":"q\\"uote \\\\ é {x,y}","n":null}'
    one = s("gw-1", 1, NOW, cpu_pct=5)._replace(raw=raw)
    assert store.write(WriteBatch(samples=[one, s("gw-1", 2, NOW + 60)])).stored == 2
    assert query(store, "SELECT raw FROM samples WHERE seq = 1") == [(raw,)]
    assert [p.cpu_pct for p in store.history("gw-1", NOW - 1, NOW + 61)] == [5.0, 10.0]


def test_alerts_open_once_and_close(store: AnyStore) -> None:
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


def test_alert_changes_in_one_batch_apply_in_their_order(store: AnyStore) -> None:
    """A batch's opens and closes as one statement after another would leave them (the
    PostgreSQL store writes each run of opens or of closes in one statement)."""
    o, c = AlertChange, functools.partial(AlertChange, close=True)
    store.write(WriteBatch(alerts=[o("offline", "a", 1.0, "will"), o("offline", "b", 1.0)]))
    store.write(
        WriteBatch(
            alerts=[
                c("offline", "a", 2.0),  # closed, and closed once: the second close is a no-op
                c("offline", "a", 2.5),
                o("offline", "a", 3.0, "again"),  # opened again after its close
                o("offline", "a", 3.5, "twice"),  # already open: nothing
                c("offline", "b", 4.0),
                o("temp", "b", 4.0, "hot"),
                c("offline", "nobody", 5.0),  # nothing open: nothing
                o("offline", "c", 6.0),
                c("offline", "c", 7.0),  # opened and closed in the same batch
            ]
        )
    )
    rows = sorted(
        (a.device, a.kind, a.since, a.closed, a.detail) for a in store.alerts(open_only=False)
    )
    assert rows == [
        ("a", "offline", 1.0, 2.0, "will"),
        ("a", "offline", 3.0, None, "again"),
        ("b", "offline", 1.0, 4.0, ""),
        ("b", "temp", 4.0, None, "hot"),
        ("c", "offline", 6.0, 7.0, ""),
    ]
    many = [o("offline", f"gw-{i}", 8.0) for i in range(500)]
    store.write(WriteBatch(alerts=many + [c("offline", f"gw-{i}", 9.0) for i in range(500)]))
    assert len([a for a in store.alerts(open_only=False) if a.closed == 9.0]) == 500


def test_compliance_from_stored_docs(fleet_store: AnyStore) -> None:
    fleet_store.write(
        WriteBatch(
            desired=[DesiredDoc("group/jkt", 3, '{"version":3}', 1.0)],
            reported=[ReportedDoc("gw-a", ConfigReported.model_construct(version=3, source="group/jkt", versions={"group/jkt": 3}, state="applied", error=None, hash="h", ts=1.0), "{}")],
        )
    )  # fmt: skip
    rows = {r.device: r for r in fleet_store.compliance()}
    assert rows["gw-a"].compliant and not rows["gw-b"].compliant and rows["gw-c"].compliant
    assert rows["gw-b"].missing == ["group/jkt"]


def test_a_failed_batch_writes_nothing(store: AnyStore) -> None:
    # state is NOT NULL: a statement after the samples fails.
    report = ReportedDoc(
        "d",
        ConfigReported.model_construct(
            version=1, source="gw", versions={}, state=None, error=None, hash=None, ts=None
        ),
        "{}",
    )  # type: ignore[arg-type]
    bad = WriteBatch(samples=[s("d", 1, NOW)], reported=[report])
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)) as err:
        store.write(bad)
    assert not isinstance(err.value, StoreUnavailable)  # the row's fault: split, set aside
    assert count(store, "samples") == 0 and count(store, "rollups_5m") == 0
    assert store.write(WriteBatch(samples=[s("d", 1, NOW)])).stored == 1


def q(at: float, reason: str = "json", device: str | None = "d") -> Quarantined:
    return Quarantined(at, reason, f"titik/gw/{device}/telemetry", device, "why", b"{", 1)


def test_the_quarantine_keeps_the_newest_rows_and_none_past_raw_days(
    make_store: MakeStore,
) -> None:
    st = make_store(raw_days=1, quarantine_rows=100)
    st.write(WriteBatch(quarantined=[q(NOW - 2 * DAY)] * 5 + [q(NOW + i) for i in range(150)]))
    while st.prune(NOW, chunk=40):
        pass
    page = st.quarantine(limit=1000)
    assert page.total == 100 and page.by_reason == {"json": 100}
    assert [r.at for r in page.items] == [NOW + i for i in range(149, 49, -1)]  # newest first


def test_the_quarantine_filters_and_pages(store: AnyStore) -> None:
    store.write(WriteBatch(quarantined=[q(NOW), q(NOW + 1, "schema"), q(NOW + 2, device="e")]))
    assert store.quarantine(reason="schema").total == 1
    page = store.quarantine(device="d", limit=1, offset=1)
    assert page.total == 2 and [r.at for r in page.items] == [NOW]
    assert page.by_reason == {"json": 2, "schema": 1}


def test_the_probe_leaves_nothing_behind(store: AnyStore) -> None:
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


def test_roll_up_survives_sums_past_2_63(store: AnyStore) -> None:
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


def test_sqlite_a_database_from_before_issue_17_is_renamed_in_place(tmp_path: Path) -> None:
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


# --- more of the contract -------------------------------------------------------------------


def test_retention_keeps_what_is_within_and_removes_what_is_past(make_store: MakeStore) -> None:
    """Raw samples past raw_days and rollups past rollup_days go; nothing newer is lost.
    (PostgreSQL drops whole day partitions, so a raw row may outlive raw_days by up to a
    day: the rows here are well past it.)"""
    st = make_store(raw_days=1, rollup_days=20)
    old = [s("d", i, NOW - 3 * DAY + i) for i in range(25)]  # past raw_days, within rollups
    older = [s("d", 50 + i, NOW - 40 * DAY + i) for i in range(3)]  # past both
    new = [s("d", 100 + i, NOW - 600 + i) for i in range(5)]
    st.write(WriteBatch(samples=older + old + new))
    assert st.roll_up() == 33
    while st.prune(NOW, chunk=10):
        pass
    assert count(st, "samples") == 5
    assert [p.ts for p in st.history("d", NOW - 3600, NOW)] == [NOW - 600 + i for i in range(5)]
    # The rollups of 3 days ago are kept (rollup_days), those of 40 days ago are not.
    kept = st.history("d", NOW - 50 * DAY, NOW)
    assert [(p.ts, p.count) for p in kept] == [(NOW - 3 * DAY, 25), (NOW - 600, 5)]
    assert [p.ts for p in st.net_history("d", NOW - 50 * DAY, NOW)] == [NOW - 3 * DAY, NOW - 600]
    # Long after (the store's own clock still at NOW): everything goes, and prune ends.
    rounds = 0
    while st.prune(NOW + 200 * DAY, chunk=10):
        rounds += 1
        assert rounds < 100, "prune keeps finding work"
    assert count(st, "samples") == 0 and st.history("d", NOW - 50 * DAY, NOW) == []


def test_a_key_is_stored_once_even_with_another_ts(store: AnyStore) -> None:
    """(device, sid, seq) is the sample's identity: a second record under it is a duplicate,
    also in the same batch, also when its ts differs (a partitioned table's unique index
    must include ts on PostgreSQL: the store checks the key itself)."""
    r = store.write(WriteBatch(samples=[s("d", 1, NOW), s("d", 1, NOW + 5 * DAY)]))
    assert (r.stored, r.duplicates) == (1, 1)
    r = store.write(WriteBatch(samples=[s("d", 1, NOW - 2 * DAY, clients=9)]))
    assert (r.stored, r.duplicates) == (0, 1)
    assert [p.clients for p in store.history("d", NOW - 3 * DAY, NOW + 6 * DAY)] == [1]


def test_after_a_bad_row_the_probe_passes_and_the_rest_is_stored(store: AnyStore) -> None:
    """What the ingest writer does with a failed batch (central/ingest/consumer.py): the
    probe says the store is fine, so the batch is written in parts and only the bad one is
    refused; the others are kept."""
    bad = ReportedDoc(
        "d",
        ConfigReported.model_construct(
            version=1, source="gw", versions={}, state=None, error=None, hash=None, ts=None
        ),
        "{}",
    )  # type: ignore[arg-type]
    whole = WriteBatch(samples=[s("d", 1, NOW), s("d", 2, NOW + 60)], reported=[bad])
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)) as err:
        store.write(whole)
    assert not isinstance(err.value, StoreUnavailable)
    store.probe()  # no StoreUnavailable: a row was to blame
    assert store.write(WriteBatch(samples=whole.samples)).stored == 2
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)) as err:
        store.write(WriteBatch(reported=[bad]))
    assert not isinstance(err.value, StoreUnavailable)
    assert count(store, "samples") == 2 and count(store, "config_reported") == 0


def test_desired_and_reported_docs_round_trip(store: AnyStore) -> None:
    report = ConfigReported.model_construct(
        version=4, source="group/jkt", versions={"group/jkt": 4, "gw": 2}, state="applied",
        error=None, hash="abc", ts=NOW,
    )  # fmt: skip
    store.write(
        WriteBatch(
            desired=[DesiredDoc("group/jkt", 3, '{"a":1}', 1.0), DesiredDoc("gw/d", None, "", 2.0)],
            reported=[ReportedDoc("d", report, '{"r":1}')],
        )
    )
    store.write(WriteBatch(desired=[DesiredDoc("group/jkt", 4, '{"a":2}', 3.0)]))
    docs = store.desired_docs()
    assert docs == {
        "group/jkt": DesiredDoc("group/jkt", 4, '{"a":2}', 3.0),
        "gw/d": DesiredDoc("gw/d", None, "", 2.0),
    }
    (rep,) = store.reported_docs().values()
    assert rep.device == "d" and rep.doc == '{"r":1}'
    assert rep.report.versions == {"group/jkt": 4, "gw": 2} and rep.report.hash == "abc"
    assert (rep.report.state, rep.report.ts, rep.report.source) == ("applied", NOW, "group/jkt")


def test_reported_docs_of_reads_only_the_named_gateways(store: AnyStore) -> None:
    """The device list's page reads these (central/api/queries.py): the same documents as
    reported_docs, only those asked for; a gateway without a report is left out."""

    def report(v: int) -> ConfigReported:
        return ConfigReported.model_construct(
            version=v, source="group", versions={"group/all": v}, state="applied", error=None,
            hash=None, ts=NOW,
        )  # fmt: skip

    store.write(
        WriteBatch(reported=[ReportedDoc(f"gw-{i}", report(i), f'{{"v":{i}}}') for i in range(5)])
    )
    every = store.reported_docs()
    some = store.reported_docs_of(["gw-1", "gw-3", "gw-none", "gw-1"])
    assert set(some) == {"gw-1", "gw-3"}
    for name, doc in some.items():
        assert doc == every[name]
    assert store.reported_docs_of([]) == {}
    # Names with LIKE and JSON metacharacters are matched as themselves.
    assert store.reported_docs_of(["gw-%", 'gw-"1']) == {}


def test_the_console_aggregates(fleet_store: AnyStore) -> None:
    from central.store.base import AlertMark

    fleet_store.write(
        WriteBatch(
            alerts=[
                AlertChange("offline", "gw-c", 1.0, "gone"),
                AlertChange("temp", "gw-a", 2.0, "hot"),
                AlertChange("temp", "gw-b", 3.0, "hot"),
                AlertChange("temp", "ghost", 4.0, "hot"),  # no devices row: region ""
            ]
        )
    )
    assert fleet_store.open_alerts_by_region() == [
        ("", "temp", 1), ("North", "temp", 2), ("South", "offline", 1),
    ]  # fmt: skip
    assert [tuple(r) for r in fleet_store.region_rows()] == [
        ("North", 2, 0, 15), ("South", 1, 1, 0),
    ]  # fmt: skip
    rows = fleet_store.device_rows()
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in rows] == [
        ("gw-a", "North", "Alpha park", 1, 10), ("gw-b", "North", "Beta mall", 1, 5),
        ("gw-c", "South", "Gamma_station", 0, 7), ("gw-d", "South", "Delta", 1, None),
    ]  # fmt: skip
    fleet_store.mark_alert(AlertMark("temp/gw-a/2", acked_by="ann", acked_at=5.0))
    fleet_store.mark_alert(AlertMark("temp/gw-a/2", snoozed_until=99.0, snoozed_by="bob"))
    assert fleet_store.alert_marks() == {
        "temp/gw-a/2": AlertMark("temp/gw-a/2", "ann", 5.0, 99.0, "bob", None)
    }


@pytest.mark.parametrize(
    ("desired", "reports", "expect"),
    [
        ({}, {}, 0),
        ({"group/jkt": 3}, {}, 2),  # gw-a, gw-b lack it
        ({"group/jkt": 3}, {"gw-a": ("applied", {"group/jkt": 3})}, 1),
        ({"group/jkt": 3}, {"gw-a": ("rejected", {"group/jkt": 3})}, 2),
        ({"gw/gw-c": 2, "group/pilot": None}, {"gw-c": ("applied", {"gw": 2})}, 0),
        ({"gw/gw-c": 2}, {"gw-c": ("applied", {"gw": 1})}, 1),
    ],
)
def test_noncompliant_count_agrees_with_compliance(
    fleet_store: AnyStore, desired: dict[str, Any], reports: dict[str, Any], expect: int
) -> None:
    fleet_store.write(
        WriteBatch(
            desired=[DesiredDoc(t, v, "{}", 0.0) for t, v in desired.items()],
            reported=[
                ReportedDoc(d, ConfigReported(state=st, versions=vs), "{}")
                for d, (st, vs) in reports.items()
            ],
        )
    )
    rows = fleet_store.compliance()
    assert fleet_store.noncompliant_count() == sum(not r.compliant for r in rows) == expect


WAN = '{"net":{"wan":"eth0.2","wan_up":%s,"ifaces":{"eth0.2":{"rx_bps":%s,"tx_bps":7}}}}'


def test_wan_history_raw_and_rolled_up(store: AnyStore) -> None:
    def raw(i: int, up: str, rx: str) -> Sample:
        return s("d", i, NOW + i * 60)._replace(raw=WAN % (up, rx))

    store.write(
        WriteBatch(samples=[raw(0, "true", "100"), raw(1, "false", "300"), raw(2, "true", "null")])
    )
    pts = store.net_history("d", NOW - 60, NOW + 3600)
    assert [(p.rx_bps, p.tx_bps, p.wan_up) for p in pts] == [
        (100.0, 7.0, 1.0), (300.0, 7.0, 0.0), (None, 7.0, 1.0),
    ]  # fmt: skip
    store.roll_up()
    (b,) = store.net_history("d", NOW - 30 * DAY, NOW + 3600)
    assert (b.count, b.rx_bps, b.rx_bps_max, b.tx_bps, b.wan_up) == (3, 200.0, 300.0, 7.0, 2 / 3)


def _wan_samples(raws: list[str]) -> list[Sample]:
    return [s("d", i, NOW + i * 60)._replace(raw=text) for i, text in enumerate(raws)]


#: Valid JSON that PostgreSQL's jsonb refuses: a NUL escape, a lone high and a lone low
#: surrogate escape (SQLite's JSON functions read all three).
JSONB_REFUSES = ["\\u0000", "\\ud800", "\\udc00x"]


@pytest.mark.parametrize("odd", JSONB_REFUSES, ids=["nul", "high-surrogate", "low-surrogate"])
def test_wan_figures_of_a_raw_jsonb_refuses_count_as_in_sqlite(store: AnyStore, odd: str) -> None:
    """A sample whose raw holds an escape PostgreSQL's jsonb refuses is still JSON: the
    roll-up neither stops nor skips it, and its WAN figures count on both stores, in the
    5-minute rollup and in the raw history alike."""
    odd_raw = f'{{"agent":{{"version":"0.1{odd}x"}},' + WAN[1:] % ("false", "300")
    store.write(
        WriteBatch(samples=_wan_samples([WAN % ("true", "100"), odd_raw, WAN % ("true", "null")]))
    )
    pts = store.net_history("d", NOW - 60, NOW + 3600)
    assert [(p.rx_bps, p.tx_bps, p.wan_up) for p in pts] == [
        (100.0, 7.0, 1.0), (300.0, 7.0, 0.0), (None, 7.0, 1.0),
    ]  # fmt: skip
    assert store.roll_up() == 3
    (b,) = store.net_history("d", NOW - 30 * DAY, NOW + 3600)
    assert (b.count, b.rx_bps, b.rx_bps_max, b.tx_bps, b.wan_up) == (3, 200.0, 300.0, 7.0, 2 / 3)
    # The next round folds the next samples (the odd one is behind the watermark).
    store.write(WriteBatch(samples=_wan_samples([WAN % ("true", "1")] * 4)[3:]))
    assert store.roll_up() == 1


def test_a_raw_that_is_not_json_is_skipped_by_the_wan_figures_not_fatal(store: AnyStore) -> None:
    """Text that is not JSON at all has no WAN figures: the roll-up skips it (its count
    too, as SQLite's json_valid does) and folds the rest; the raw history shows the sample
    with no figures instead of failing."""
    raws = [WAN % ("true", "100"), '{"net":{"wan":', WAN % ("false", "300")]
    store.write(WriteBatch(samples=_wan_samples(raws)))
    pts = store.net_history("d", NOW - 60, NOW + 3600)
    assert [(p.rx_bps, p.tx_bps, p.wan_up) for p in pts] == [
        (100.0, 7.0, 1.0), (None, None, None), (300.0, 7.0, 0.0),
    ]  # fmt: skip
    assert store.roll_up() == 3
    (b,) = store.net_history("d", NOW - 30 * DAY, NOW + 3600)
    assert (b.count, b.rx_bps, b.rx_bps_max, b.wan_up) == (2, 200.0, 300.0, 0.5)
    (h,) = store.history("d", NOW - 30 * DAY, NOW + 3600)
    assert h.count == 3  # the other figures are columns: all three samples count there
