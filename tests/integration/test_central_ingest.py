"""Central ingest against a real Mosquitto: agents, kill -9, shared subscriptions, bad input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol import Telemetry
from central.config import CentralConfig, load_config
from central.ingest.consumer import Consumer
from central.store.sqlite import SqliteStore
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, free_port, subscriber, wait_until
from tests.centralproc import stop_central

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]


def central_toml(path: Path, broker: Broker, *, client_id: str, db: Path, extra: str = "") -> Path:
    path.write_text(
        f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "{client_id}"
session_expiry_s = 600

[store]
path = "{db}"
batch_max = 200
batch_interval_s = 0.05

[ingest]
max_payload_bytes = 4096

[http]
port = {free_port()}
{extra}
"""
    )
    return path


@contextlib.contextmanager
def running_central(config: CentralConfig) -> Iterator[tuple[SqliteStore, Consumer]]:
    """An in-process consumer with its writer thread; stopped like SIGTERM would."""
    store = SqliteStore(config.store.path)
    consumer = Consumer(config, store)
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


def rows(db: Path, sql: str = "SELECT device, sid, seq FROM samples") -> list[tuple[object, ...]]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        try:
            return [tuple(r) for r in conn.execute(sql)]
        except sqlite3.OperationalError:
            return []  # not created yet


def telemetry(device: str, seq: int, *, sid: str = "s1", clients: int = 3) -> bytes:
    return (
        f'{{"v":1,"device":"{device}","seq":{seq},"boot":1,"sid":"{sid}","ts":{time.time():.3f},'
        f'"health":{{"cpu_pct":12.5,"load1":0.1,"mem_used_pct":40.0,"disk_used_pct":20.0,'
        f'"temp_c":50.0,"uptime_s":100}},"clients":{{"total":{clients}}},'
        f'"agent":{{"version":"0.1.0"}}}}'
    ).encode()


class Publisher:
    """A fast QoS 1 publisher; ``sent`` holds what the broker acknowledged."""

    def __init__(self, broker: Broker, client_id: str = "load") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_inflight_messages_set(500)
        self.client.max_queued_messages_set(0)
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _on_publish(self, *args: object) -> None:
        self.acked += 1

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1)

    def stream(self, devices: int, per_device: int, rate: float) -> set[tuple[str, int]]:
        sent: set[tuple[str, int]] = set()
        start = time.monotonic()
        for i in range(per_device):
            for d in range(devices):
                dev = f"gw-load{d:04d}"
                self.publish(f"titik/gw/{dev}/telemetry", telemetry(dev, i))
                sent.add((dev, i))
            ahead = start + len(sent) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing the load, not synchronising
        return sent

    def close(self, expect: int) -> None:
        wait_until(lambda: self.acked >= expect, 30, f"{expect} PUBACKs")
        self.client.loop_stop()
        self.client.disconnect()


def test_agents_to_store_match_what_a_subscriber_saw(broker: Broker, tmp_path: Path) -> None:
    n = 20
    db = tmp_path / "central.db"
    cfg = load_config(central_toml(tmp_path / "central.toml", broker, client_id="c1", db=db))
    agents: list[AgentProcess] = []
    with (
        running_central(cfg) as (store, consumer),
        subscriber(
            broker, "titik/gw/+/telemetry", "titik/gw/+/telemetry/batch", client_id="watch"
        ) as sub,
    ):
        try:
            for i in range(n):
                d = tmp_path / f"a{i}"
                d.mkdir()
                conf = write_config(d / "agent.toml", broker, device=f"gw-agent{i:02d}")
                conf.write_text(conf.read_text().replace("Jakarta Pusat", f"Region {i % 3}"))
                agents.append(AgentProcess(conf))
            per_device: dict[str, int] = {}

            def enough() -> bool:
                dev = sub.next(timeout=30).json()["device"]
                per_device[dev] = per_device.get(dev, 0) + 1
                return len(per_device) == n and min(per_device.values()) >= 3

            wait_until(enough, 60, "3 samples from every agent")
            wait_until(lambda: store.summary().online == n, 10, "all online in the store")
        finally:
            for a in agents:
                a.signal(signal.SIGTERM)
            for a in agents:
                a.wait(15)
                a.stop()
        # Everything the agents published before stopping is in the subscriber's queue now.
        with contextlib.suppress(AssertionError):
            while True:
                sub.next(timeout=1)
        # Samples taken before an agent's first connection come late, in a batch.
        seen = [
            Telemetry.model_validate_json(m.payload)
            for m in sub.seen
            if not m.topic.endswith("/batch")
        ]
        replayed = [
            Telemetry.model_validate(r) for m in sub.seen if m.topic.endswith("/batch")
            for r in m.json()["records"]
        ]  # fmt: skip
        want = {(t.device, t.sid, t.seq) for t in seen + replayed}
        wait_until(lambda: set(rows(db)) >= want, 15, "the store to catch up")
        wait_until(lambda: store.summary().online == 0, 10, "all offline after SIGTERM")
        assert set(rows(db)) == want
        assert consumer.stats.duplicates == 0 and sum(consumer.stats.bad.values()) == 0
        last = {t.device: t for t in sorted(seen, key=lambda t: t.seq)}
        summary = store.summary()
        assert (summary.total, summary.offline) == (n, n)
        page = store.devices(limit=100)
        assert page.total == n
        for d in page.items:
            assert (d.seq, d.clients, d.sid) == (
                last[d.device].seq,
                last[d.device].clients.total if last[d.device].clients else None,
                last[d.device].sid,
            )
            assert d.region == f"Region {int(d.device[-2:]) % 3}" and d.offline_reason == "shutdown"
            assert 0.1 < d.interval_s < 0.5
        assert store.devices(region="Region 0").total == 7


def test_kill_9_loses_nothing_and_duplicates_nothing(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "central.db"
    conf = central_toml(tmp_path / "central.toml", broker, client_id="c-kill", db=db)

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
        if rows(db):
            return True
        probe.publish("titik/gw/gw-probe/telemetry", telemetry("gw-probe", probes))
        probes += 1  # lost until central has subscribed
        time.sleep(0.1)
        return False

    wait_until(stored_a_probe, 15, "central up and storing")
    probe.close(probes)
    load = "SELECT device, sid, seq FROM samples WHERE device != 'gw-probe'"

    pub = Publisher(broker)
    result: dict[str, set[tuple[str, int]]] = {}
    streamer = threading.Thread(target=lambda: result.update(sent=pub.stream(200, 40, 4000.0)))
    streamer.start()
    try:
        wait_until(lambda: len(rows(db, load)) > 1500, 20, "ingest under way")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert len(rows(db, load)) < 7000, "killed too late to mean anything"
        proc = start()
        streamer.join(30)
        pub.close(8000)
        want = {(d, "s1", seq) for d, seq in result["sent"]}
        wait_until(lambda: len(rows(db, load)) >= len(want), 30, "all messages stored")
        got = rows(db, load)
        assert len(got) == len(set(got)) == len(want) == 8000
        assert set(got) == want
        # SIGTERM: commit, ack, disconnect, exit 0.
        assert stop_central(proc, tmp_path / "central.log", 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_two_instances_share_the_load_and_store_each_message_once(
    broker: Broker, tmp_path: Path
) -> None:
    dbs = [tmp_path / "c1.db", tmp_path / "c2.db"]
    cfgs = [
        load_config(central_toml(tmp_path / f"c{i}.toml", broker, client_id=f"c{i}", db=db))
        for i, db in enumerate(dbs)
    ]
    with running_central(cfgs[0]) as (_, c1), running_central(cfgs[1]) as (_, c2):
        pub = Publisher(broker)
        sent = pub.stream(50, 20, 5000.0)
        pub.close(len(sent))
        wait_until(
            lambda: c1.stats.acked + c2.stats.acked >= len(sent), 20, "both instances to ack"
        )
    got = rows(dbs[0]) + rows(dbs[1])
    assert len(got) == len(sent) == 1000
    assert {(d, seq) for d, _, seq in got} == sent
    assert len(rows(dbs[0])) > 0 and len(rows(dbs[1])) > 0


def test_bad_payloads_are_counted_and_quarantined_while_ingest_goes_on(
    broker: Broker, tmp_path: Path
) -> None:
    db = tmp_path / "central.db"
    cfg = load_config(central_toml(tmp_path / "central.toml", broker, client_id="c-bad", db=db))
    good = telemetry("gw-good", 0)
    bad: list[tuple[str, bytes]] = [
        ("titik/gw/gw-bad/telemetry", b'{"v":1,"device":'),  # json
        ("titik/gw/gw-bad/telemetry", b'{"v":1,"device":"gw-bad","seq":-1}'),  # schema
        ("titik/gw/gw-bad/telemetry", b"\xff\xfe"),  # json (not UTF-8)
        ("titik/gw/gw-bad/telemetry", telemetry("gw-other", 1)),  # device_mismatch
        ("titik/gw/gw-bad/telemetry", b" " * 5000 + good),  # oversized
        ("titik/gw/gw-bad/telemetry/batch", b'{"device":"gw-bad","records":[' + good + b"]}"),
        ("titik/gw/gw-bad/status", b'{"online":"maybe","boot":1}'),  # schema
        ("titik/gw/gw-bad/config/reported", b"[1, 2]"),  # schema
        ("titik/gw/gw-bad/config/desired", b'{"version":"x"}'),  # schema
    ]
    with running_central(cfg) as (store, consumer):
        pub = Publisher(broker)
        for i, (topic, payload) in enumerate(bad):
            pub.publish(topic, payload)
            pub.publish("titik/gw/gw-good/telemetry", telemetry("gw-good", i))
        pub.publish("titik/gw/gw-good/status", json.dumps({"online": True, "boot": 1}).encode())
        pub.close(2 * len(bad) + 1)
        wait_until(lambda: consumer.stats.acked >= 2 * len(bad) + 1, 10, "all acked")
        assert consumer.stats.bad == {
            "oversized": 1,
            "json": 2,
            "schema": 4,
            "device_mismatch": 2,
            "topic": 0,
            "store": 0,
            "internal": 0,
        }
        # Each one is kept in the quarantine with its reason, topic and (capped) payload.
        page = store.quarantine(limit=100)
        assert page.total == len(bad) and page.by_reason == {
            "oversized": 1,
            "json": 2,
            "schema": 4,
            "device_mismatch": 2,
        }
        kept = sorted((q.topic, q.payload, q.size) for q in page.items)
        assert kept == sorted((t, p[:4096], len(p)) for t, p in bad)
        assert {q.device for q in page.items} == {"gw-bad"}
        assert sorted(r[2] for r in rows(db)) == list(range(len(bad)))
        assert {r[0] for r in rows(db)} == {"gw-good"}
        good_dev = store.device("gw-good")
        assert good_dev is not None and good_dev.seq == len(bad) - 1 and good_dev.boot == 1
        assert store.device("gw-other") is None
