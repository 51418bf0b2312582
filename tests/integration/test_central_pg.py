"""Central on PostgreSQL end to end: a real Mosquitto, a real PostgreSQL (tests/postgres.py),
``[store] url`` in central.toml, the consumer built by central.cli.build() and
``titik-central run`` itself."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from central.cli import build
from central.config import CentralConfig, load_config
from central.ingest.consumer import Consumer
from central.store.pg import PgStore
from central.store.pg.schema import VERSION
from central.store.pg.tables import PgAlertingStore, PgServiceStore
from tests.broker import Broker, wait_until
from tests.centralproc import dump_stacks, stop_central
from tests.integration.test_central_ingest import Publisher, central_toml, telemetry
from tests.service_reports import report

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


def pg_toml(tmp_path: Path, broker: Broker, url: str, client_id: str) -> Path:
    conf = central_toml(
        tmp_path / "central.toml", broker, client_id=client_id, db=tmp_path / "c.db"
    )
    text = conf.read_text().replace("[store]\n", f'[store]\nurl = "{url}"\n', 1)
    conf.write_text(text)
    return conf


def pg_rows(
    url: str, sql: str = "SELECT device, sid, seq FROM samples"
) -> list[tuple[object, ...]]:
    try:
        with psycopg.connect(url) as conn:
            return [tuple(r) for r in conn.execute(sql.encode())]
    except psycopg.errors.UndefinedTable:
        return []  # not created yet


@contextlib.contextmanager
def running(config: CentralConfig) -> Iterator[tuple[PgStore, Consumer]]:
    store, consumer = build(config)
    assert isinstance(store, PgStore)
    stop = threading.Event()
    writer = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    consumer.start()
    writer.start()
    try:
        assert consumer.subscribed.wait(10), "no SUBACK"
        yield store, consumer
    finally:
        stop.set()
        writer.join(10)
        consumer.stop()
        store.close()


def test_a_row_postgresql_refuses_is_set_aside_and_the_rest_is_stored(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    """A version string with a NUL character is valid JSON and valid telemetry, and SQLite
    stores it, but PostgreSQL's text cannot hold NUL: the writer splits the batch, keeps
    every other message and sets the refused row aside with reason "store" (as with
    SQLite's refusals, central/ingest/consumer.py). The sample itself is stored (its raw
    JSON spells the NUL as an escape); the gateway's devices row, whose version column
    would hold it, is the row refused."""
    cfg = load_config(pg_toml(tmp_path, broker, pg_url, "c-pg-bad"))
    nul = telemetry("gw-nul", 0).replace(b'"version":"0.1.0"', b'"version":"0.1\\u0000x"')
    with running(cfg) as (store, consumer):
        pub = Publisher(broker)
        for i in range(20):
            pub.publish("titik/gw/gw-good/telemetry", telemetry("gw-good", i))
            if i == 10:
                pub.publish("titik/gw/gw-nul/telemetry", nul)
        pub.close(21)
        wait_until(lambda: consumer.stats.acked >= 21, 15, "all acked")
        assert consumer.stats.bad["store"] == 1
        page = store.quarantine()
        assert page.by_reason == {"store": 1} and page.items[0].device == "gw-nul"
        assert sorted(r[2] for r in pg_rows(pg_url) if r[0] == "gw-good") == list(range(20))
        assert [r[0] for r in pg_rows(pg_url) if r[0] != "gw-good"] == ["gw-nul"]
        assert store.device("gw-nul") is None
        good = store.device("gw-good")
        assert good is not None and good.seq == 19


def test_service_reports_and_the_alert_lifecycle_run_on_postgresql(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    """A service report through the broker is stored in PostgreSQL (its latest row and its
    history); the failed portal probe raises an alert, and the alert engine, built by
    central.cli.build() as for SQLite, takes it in: its history says "raised". Nothing of
    this is written to a SQLite file."""
    cfg = load_config(pg_toml(tmp_path, broker, pg_url, "c-pg-life"))
    with running(cfg) as (store, _):
        pub = Publisher(broker)
        now = time.time()
        pub.publish("titik/gw/gw-s/service", json.dumps(report("dead_portal", ts=now)).encode())
        pub.close(1)
        service = PgServiceStore(pg_url)
        life = PgAlertingStore(pg_url)
        try:
            wait_until(lambda: service.latest("gw-s") is not None, 15, "the report stored")
            latest = service.latest("gw-s")
            assert latest is not None and latest.failed == ["portal"]
            assert len(service.history("gw-s", now - 1, now + 1)) == 1
            aid = next(a for a in store.alerts() if a.kind == "service_probe")
            wait_until(
                lambda: [e.event for e in life.history(life.rows(open_only=True)[0].rowid)]
                == ["raised"],
                15,
                "the alert taken in by the lifecycle",
            )
            assert aid.device == "gw-s"
        finally:
            service.close()
            life.close()
    assert not (tmp_path / "c.db").exists()


#: central's writer waiting on a row lock (pg_stat_activity; PostgreSQL 9.6+).
WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
    "AND query LIKE 'INSERT INTO devices%'"
)


def test_a_stop_waits_on_no_row_lock_and_what_it_held_comes_again(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    """Another session holds a device row locked, as an instance killed mid-transaction on
    another host does until PostgreSQL notices its dead connection: the writer's commit
    waits on it. SIGTERM: central stops all the same (central.cli.STOP_WRITER_S, then it
    cancels the commit), exit 0, the lock still held by the other; that commit's messages were
    never acked, so the next start gets them from the broker and stores each once."""
    conf = pg_toml(tmp_path, broker, pg_url, "c-pg-lock")
    log = tmp_path / "central.log"

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
            cwd=ROOT,
            stderr=log.open("ab"),
        )

    proc = start()
    gw = Publisher(broker, "gw-lock")
    sent = 0

    def stored_one() -> bool:
        nonlocal sent
        if pg_rows(pg_url, "SELECT device FROM devices WHERE device = 'gw-lock'"):
            return True
        gw.publish("titik/gw/gw-lock/telemetry", telemetry("gw-lock", sent))
        sent += 1  # lost until central has subscribed
        threading.Event().wait(0.1)  # pacing the probes, not synchronising
        return False

    holder = psycopg.connect(pg_url)  # not autocommit: its transaction keeps the lock
    try:
        wait_until(stored_one, 20, "central up and storing gw-lock")
        first = sent
        holder.execute("SELECT device FROM devices WHERE device = 'gw-lock' FOR UPDATE")
        # Its next device row waits on the lock (rows are flushed every second)...
        gw.publish("titik/gw/gw-lock/telemetry", telemetry("gw-lock", first))
        wait_until(
            lambda: pg_rows(pg_url, WAITING_ON_A_LOCK) == [(1,)],
            10,
            "central's writer waiting on the locked row",
            poll=0.1,
        )
        # ... and what comes meanwhile is received, not stored, not acked.
        for seq in range(first + 1, first + 21):
            gw.publish("titik/gw/gw-lock/telemetry", telemetry("gw-lock", seq))
        gw.close(first + 21)
        # What the test helpers send before they give up on a central: where it waits.
        stacks = dump_stacks(proc, log)
        assert "in _write" in stacks and "psycopg" in stacks, stacks
        assert proc.poll() is None
        # Without the bound it waits for the lock as long as the other holds it: 15 s is
        # STOP_WRITER_S, psycopg's cancel and the threads' joins on a loaded 2-core machine.
        assert stop_central(proc, log, 15) == 0
        assert "stopping without the writer's last commit" in log.read_text()
        assert holder.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        since = f"SELECT seq FROM samples WHERE device = 'gw-lock' AND seq > {first}"  # noqa: S608 - a number
        assert pg_rows(pg_url, since) == []
        holder.rollback()

        proc = start()  # its session again: the broker sends what was never acked
        want = [(seq,) for seq in range(first, first + 21)]
        mine = f"SELECT seq FROM samples WHERE device = 'gw-lock' AND seq >= {first}"  # noqa: S608 - a number
        wait_until(lambda: len(pg_rows(pg_url, mine)) >= 21, 30, "the messages again")
        assert sorted(pg_rows(pg_url, mine)) == want  # each once
        assert stop_central(proc, log, 15) == 0
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kill_9_on_postgresql_loses_nothing_and_duplicates_nothing(
    broker: Broker, tmp_path: Path, pg_url: str
) -> None:
    conf = pg_toml(tmp_path, broker, pg_url, "c-pg-kill")

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
            cwd=ROOT,
            stderr=(tmp_path / "central.log").open("ab"),
        )

    proc = start()
    probe = Publisher(broker, "probe")
    probes = 0

    def stored_a_probe() -> bool:
        nonlocal probes
        if pg_rows(pg_url):
            return True
        probe.publish("titik/gw/gw-probe/telemetry", telemetry("gw-probe", probes))
        probes += 1  # lost until central has subscribed
        threading.Event().wait(0.1)  # pacing the probes, not synchronising
        return False

    wait_until(stored_a_probe, 20, "central up and storing")
    probe.close(probes)
    load = "SELECT device, sid, seq FROM samples WHERE device != 'gw-probe'"
    pub = Publisher(broker)
    result: dict[str, set[tuple[str, int]]] = {}
    streamer = threading.Thread(target=lambda: result.update(sent=pub.stream(200, 40, 4000.0)))
    streamer.start()
    try:
        wait_until(lambda: len(pg_rows(pg_url, load)) > 1500, 20, "ingest under way")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert len(pg_rows(pg_url, load)) < 7000, "killed too late to mean anything"
        proc = start()
        streamer.join(30)
        pub.close(8000)
        want = {(d, "s1", seq) for d, seq in result["sent"]}
        wait_until(lambda: len(pg_rows(pg_url, load)) >= len(want), 30, "all messages stored")
        got = pg_rows(pg_url, load)
        assert len(got) == len(set(got)) == len(want) == 8000
        assert set(got) == want
        assert stop_central(proc, tmp_path / "central.log", 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "central.log").read_text()
    assert "store: PostgreSQL titik@127.0.0.1:" in log and f"(schema version 0 -> {VERSION})" in log
    assert "not yet" not in log  # every feature of SQLite's central is on PostgreSQL too
    assert not (tmp_path / "c.db").exists()  # tokens, audit, rollouts: in PostgreSQL too
