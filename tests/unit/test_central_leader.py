"""One evaluator among several centrals (central/store/pg/leader.py) on a real PostgreSQL
(tests/postgres.py), and the leader's merge of what other instances stored
(central/ingest/fleet.py, ``FleetState.merge``)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import psycopg
import pytest

from agent.protocol import ConfigReported
from central.config import parse_config
from central.ingest.consumer import Consumer
from central.ingest.fleet import FleetState, Rules
from central.sim.localbroker import wait_until
from central.store.base import Alert, DeviceState, ReportedDoc, WriteBatch
from central.store.pg import PgStore
from central.store.pg.leader import LEADER_MSG, LOCK_LEADER, STANDBY_MSG, Leadership
from central.store.sqlite import SqliteStore


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_sqlite_is_always_the_leader() -> None:
    alone = Leadership(None)
    assert alone.leader and alone.check() and alone.check()
    alone.close()
    assert alone.leader


def test_one_leader_the_other_takes_over_when_its_session_ends(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "titik.central.leader")
    clock = Clock()
    changes: list[tuple[str, bool]] = []
    a = Leadership(pg_url, retry_s=3, clock=clock, on_change=lambda x: changes.append(("a", x)))
    b = Leadership(pg_url, retry_s=3, clock=clock, on_change=lambda x: changes.append(("b", x)))
    try:
        assert a.check() is True
        assert b.check() is False
        assert a.check() and a.leader and not b.leader
        # The standby does not ask again before its retry time.
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = 'titik-central leader' AND pid IN "
                "(SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s)",
                (LOCK_LEADER & 0xFFFFFFFF,),
            )
        assert b.check() is False  # the lock is free, but b's turn has not come
        # The leader's session ended (as a SIGKILL of its process ends it): it stops at once.
        assert a.check() is False and not a.leader
        clock.t += 3
        assert b.check() is True and b.leader
        assert a.check() is False  # a's turn not yet; then it finds the lock held
        clock.t += 3
        assert a.check() is False
        assert changes == [("a", True), ("a", False), ("b", True)]
    finally:
        a.close()
        b.close()
    said = [r.getMessage() for r in caplog.records if r.name == "titik.central.leader"]
    assert said.count(LEADER_MSG) == 2 and said.count(STANDBY_MSG) == 2
    assert any("lost the database connection" in m for m in said)


def test_close_gives_the_lock_up(pg_url: str) -> None:
    clock = Clock()
    a, b = Leadership(pg_url, clock=clock), Leadership(pg_url, clock=clock)
    try:
        assert a.check() and not b.check()
        a.close()

        def b_takes_it() -> bool:
            clock.t += 10  # b tries again at its next turn
            return b.check()

        # PostgreSQL frees a closed session's locks when its backend exits, a moment after
        # the client closed it (under load, after b's first try).
        wait_until(b_takes_it, 10, "the standby to take the lock a closed session gave up")
    finally:
        a.close()
        b.close()


def test_a_standby_without_the_database_keeps_trying() -> None:
    clock = Clock()
    # A port nothing listens on (the discard port on loopback): connection refused at once.
    x = Leadership("postgresql://titik@127.0.0.1:9/none?connect_timeout=2", clock=clock)
    assert x.check() is False and not x.leader
    clock.t += 10
    assert x.check() is False


def dev(name: str, **kw: object) -> DeviceState:
    base: dict[str, object] = {"device": name, "online": True, "last_seen": 100.0, "sid": "s"}
    base.update(kw)
    return DeviceState(**base)  # type: ignore[arg-type]


def test_merge_takes_the_newer_news_and_judges_alerts_again() -> None:
    fleet = FleetState(Rules())
    fleet.states = {
        "seen-here": dev("seen-here", last_seen=200.0, seq=20),
        "seen-there": dev("seen-there", last_seen=100.0, seq=10, temp_c=90.0),
        "will-there": dev("will-there", last_seen=150.0),
        "stale-here": dev("stale-here", online=False, offline_since=100.0, offline_reason="stale"),
    }
    stored = [
        dev("seen-here", last_seen=150.0, seq=15),  # an older view written over ours
        dev("seen-there", last_seen=180.0, seq=18, temp_c=50.0),
        # Another instance took its Will after we last saw it alive.
        dev(
            "will-there", last_seen=120.0, online=False, offline_since=160.0, offline_reason="will"
        ),
        dev("stale-here", last_seen=130.0, seq=13),  # alive again, seen elsewhere
        dev("only-there", last_seen=170.0),
    ]
    open_alerts = [
        Alert("temp", "seen-there", 90.0, "temp 90°C >= 80°C"),  # opened by another instance
        Alert("offline", "stale-here", 100.0, "offline since ..."),
    ]
    fleet.merge(stored, open_alerts, 200.0)
    s = fleet.states
    assert s["seen-here"].seq == 20 and fleet.dirty == {"seen-here"}  # ours is written again
    assert s["seen-there"].seq == 18
    assert not s["will-there"].online and s["will-there"].offline_reason == "will"
    assert s["stale-here"].online and "only-there" in s
    _, changes = fleet.take()
    closed = sorted((c.device, c.kind) for c in changes if c.close)
    assert closed == [("seen-there", "temp"), ("stale-here", "offline")]
    assert not [c for c in changes if not c.close]
    assert fleet.open_alerts == {}


def test_a_standby_consumer_ingests_but_evaluates_nothing(tmp_path: Path) -> None:
    """The writer asks the leadership each round: a standby runs no periodic job, no job
    aside (the alert engine), no fleet check (a gateway silent for long stays as stored), no
    roll-up; the leader does."""
    cfg = parse_config(f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp_path / "c.db"}"\n')
    store = SqliteStore(cfg.store.path)
    now = time.time()
    store.write(WriteBatch(devices=[dev("gw-quiet", last_seen=now - 3600, interval_s=60)]))
    consumer = Consumer(cfg, store)
    leading = threading.Event()
    asked = threading.Semaphore(0)
    ran = threading.Event()

    def leader() -> bool:
        asked.release()
        return leading.is_set()

    consumer.leader = leader
    consumer.periodic.append(lambda _now: ran.set())
    ran_aside = threading.Event()
    consumer.aside.append(lambda _now: ran_aside.set())
    stop = threading.Event()
    writer = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    writer.start()
    try:
        for _ in range(3):  # three rounds as a standby
            assert asked.acquire(timeout=10)
        assert not ran.is_set() and not ran_aside.is_set() and not consumer.stats.leader
        quiet = store.device("gw-quiet")
        assert quiet is not None and quiet.online
        leading.set()
        assert ran.wait(10) and consumer.stats.leader and ran_aside.wait(10)
        quiet = store.device("gw-quiet")
        assert quiet is not None and not quiet.online  # the leader's check found it stale
    finally:
        stop.set()
        writer.join(10)
        store.close()


def test_a_standby_rolls_nothing_up_even_when_it_stops(tmp_path: Path) -> None:
    """The roll-up is the leader's, including the last one a consumer runs as it stops."""
    cfg = parse_config(f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp_path / "c.db"}"\n')
    store = SqliteStore(cfg.store.path)
    consumer = Consumer(cfg, store)
    asked = threading.Semaphore(0)
    rolled: list[int] = []

    def leader() -> bool:
        asked.release()
        return False

    def roll_up() -> int:
        rolled.append(1)
        return 0

    consumer.leader = leader
    store.roll_up = roll_up  # type: ignore[method-assign]
    stop = threading.Event()
    writer = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    writer.start()
    try:
        for _ in range(2):
            assert asked.acquire(timeout=10)
    finally:
        stop.set()
        writer.join(10)
        store.close()
    assert not writer.is_alive() and not consumer.stats.leader
    assert rolled == []


def test_a_long_job_aside_never_holds_up_the_writer(tmp_path: Path) -> None:
    """The alert engine's tick runs aside: while one takes long (a city's 50,000 alerts),
    the writer goes on with its rounds; a job that fails runs again next round."""
    cfg = parse_config(f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp_path / "c.db"}"\n')
    store = SqliteStore(cfg.store.path)
    consumer = Consumer(cfg, store)
    rounds = threading.Semaphore(0)
    consumer.periodic.append(lambda _now: rounds.release())
    inside, release = threading.Event(), threading.Event()
    calls: list[float] = []

    def slow(now: float) -> None:
        calls.append(now)
        if len(calls) == 1:
            raise RuntimeError("the store went away")  # logged; tried again next round
        inside.set()
        release.wait(30)

    consumer.aside.append(slow)
    stop = threading.Event()
    writer = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    writer.start()
    try:
        assert inside.wait(10)
        for _ in range(3):  # three of the writer's rounds while the job aside is held
            assert rounds.acquire(timeout=10)
        assert consumer.stats.maintenance_errors == 1 and len(calls) == 2
    finally:
        release.set()
        stop.set()
        writer.join(10)
        consumer.stop()
        store.close()
    assert not writer.is_alive()


def test_instances_counts_the_centrals_on_the_database(pg_url: str) -> None:
    clock = Clock()
    a, b = Leadership(pg_url, clock=clock), Leadership(pg_url, clock=clock)
    try:
        assert Leadership(None).instances() == 1
        assert a.check() and not b.check()
        assert a.instances() == b.instances() == 2
        b.close()
        # A closed session leaves pg_stat_activity when its backend exits, a moment later.
        wait_until(lambda: a.instances() == 1, 10, "b's session to leave pg_stat_activity")
    finally:
        a.close()
        b.close()


def test_the_merge_reads_only_the_rows_newer_than_its_own(pg_url: str) -> None:
    store = PgStore(pg_url)
    try:
        store.write(
            WriteBatch(
                devices=[
                    dev("a", last_seen=100.0),
                    dev(
                        "b",
                        last_seen=50.0,
                        online=False,
                        offline_since=120.0,
                        offline_reason="will",
                    ),
                    dev("c", last_seen=80.0),
                ]
            )
        )
        stored = store.device_news()
        assert stored == {"a": 100.0, "b": 120.0, "c": 80.0}
        fleet = FleetState(Rules())
        fleet.states = {"a": dev("a", last_seen=90.0), "c": dev("c", last_seen=85.0)}
        names = fleet.newer_stored(stored)
        assert sorted(names) == ["a", "b"] and fleet.dirty == {"c"}
        rows = store.devices_named(names)
        assert sorted(d.device for d in rows) == ["a", "b"] and store.devices_named([]) == []
        fleet.merge(rows, [], 130.0)
        assert fleet.states["a"].last_seen == 100.0 and fleet.states["b"].offline_reason == "will"
        assert fleet.states["c"].last_seen == 85.0
    finally:
        store.close()


def test_an_older_report_committed_later_does_not_hide_the_newer(pg_url: str) -> None:
    """Two instances: a gateway's "applying" went to one, its "applied" to the other, which
    committed first (tests/integration/test_central_multi.py saw a rollout's gate halt on
    it when the first instance was killed and its session redelivered "applying" later)."""
    store = PgStore(pg_url)

    def report(state: str, ts: float | None) -> ReportedDoc:
        r = ConfigReported.model_validate(
            {
                "version": 1,
                "source": "group",
                "versions": {"group/g1": 1},
                "state": state,
                "ts": ts,
            }
        )
        return ReportedDoc(device="gw-1", report=r, doc="{}")

    try:
        store.write(WriteBatch(reported=[report("applied", 200.0)]))
        store.write(WriteBatch(reported=[report("applying", 199.0)]))
        assert store.reported_docs()["gw-1"].report.state == "applied"
        store.write(WriteBatch(reported=[report("rejected", 201.0)]))
        assert store.reported_docs()["gw-1"].report.state == "rejected"
        store.write(WriteBatch(reported=[report("applied", None)]))  # no ts: taken as it comes
        assert store.reported_docs()["gw-1"].report.state == "applied"
    finally:
        store.close()
