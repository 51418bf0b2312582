"""The agent against a real Mosquitto (started by the fixture on a free loopback port)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.protocol import Status, Telemetry
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, subscriber

pytestmark = pytest.mark.broker

DEV = "gw-test01"
TELEMETRY = f"titik/gw/{DEV}/telemetry"
STATUS = f"titik/gw/{DEV}/status"


def test_telemetry_arrives_and_validates(broker: Broker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.toml", broker, platform="linux")
    with subscriber(broker, TELEMETRY) as sub:
        agent = AgentProcess(cfg)
        try:
            samples = [
                Telemetry.model_validate_json(sub.next(timeout=15).payload) for _ in range(3)
            ]
        finally:
            agent.stop()
    assert [s.seq for s in samples] == [samples[0].seq, samples[0].seq + 1, samples[0].seq + 2]
    last = samples[-1]
    assert last.device == DEV
    assert last.v == 1
    assert last.health is not None and last.health.uptime_s is not None
    assert last.health.cpu_pct is not None  # second sample onwards has a CPU reading
    assert last.net is not None and "lo" not in last.net.ifaces
    assert last.clients is not None and last.clients.total >= 0
    assert last.agent.version


def test_status_online_is_retained(broker: Broker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.toml", broker)
    agent = AgentProcess(cfg)
    try:
        with subscriber(broker, TELEMETRY, client_id="first") as sub:
            sub.next(timeout=15)  # the agent is up and publishing
        # A client that subscribes later still gets the status: it is retained.
        with subscriber(broker, STATUS, client_id="late") as late:
            msg = late.next(timeout=5)
    finally:
        agent.stop()
    status = Status.model_validate_json(msg.payload)
    assert msg.retain
    assert status.online is True
    assert status.boot >= 1
    assert status.site == "Test site" and status.groups == ["test"]


def test_kill_9_makes_broker_publish_retained_offline_will(broker: Broker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.toml", broker)
    with subscriber(broker, STATUS) as sub:
        agent = AgentProcess(cfg)
        try:
            online = Status.model_validate_json(sub.next(lambda m: m.json()["online"]).payload)
            agent.signal(signal.SIGKILL)
            agent.wait(5)
            offline = sub.next(lambda m: not m.json()["online"])
        finally:
            agent.stop()
    will = Status.model_validate_json(offline.payload)
    assert will.boot == online.boot  # a consumer can match the Will to the session
    with subscriber(broker, STATUS, client_id="late") as late:
        retained = late.next(timeout=5)
    assert retained.retain and retained.json()["online"] is False


def test_sigterm_publishes_offline_and_exits_0(broker: Broker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.toml", broker)
    with subscriber(broker, STATUS) as sub:
        agent = AgentProcess(cfg)
        try:
            sub.next(lambda m: m.json()["online"])
            t0 = time.monotonic()
            agent.signal(signal.SIGTERM)
            code = agent.wait(5)
            elapsed = time.monotonic() - t0
            offline = sub.next(lambda m: not m.json()["online"])
        finally:
            agent.stop()
    assert code == 0, agent.output()
    assert elapsed < 5
    assert offline.json()["reason"] == "shutdown"


def test_broker_down_at_start_then_appears(stopped_broker: Broker, tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "agent.toml", stopped_broker)
    agent = AgentProcess(cfg)
    try:
        deadline = time.monotonic() + 10
        while "retry 3" not in agent.output():  # it keeps retrying with backoff
            assert time.monotonic() < deadline, agent.output()
            assert agent.proc.poll() is None, agent.output()
            time.sleep(0.05)
        stopped_broker.start()
        with subscriber(stopped_broker, TELEMETRY) as sub:
            sample = Telemetry.model_validate_json(sub.next(timeout=15).payload)
    finally:
        agent.stop()
    assert sample.device == DEV


def test_bad_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[mqtt]\nhost = "localhost"\nport = 70000\n')
    res = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 2
    assert "mqtt.port" in res.stderr


def test_source_address_is_where_the_connection_leaves_from(broker: Broker, tmp_path: Path) -> None:
    """``mqtt.source_address``: the broker sees the gateway connect from that address (all
    of 127.0.0.0/8 is this machine's, so 127.0.0.2 is one of its addresses)."""
    cfg = write_config(tmp_path / "agent.toml", broker)
    text = cfg.read_text()
    cfg.write_text(
        text.replace(
            "reconnect_max_s = 0.5\n", 'reconnect_max_s = 0.5\nsource_address = "127.0.0.2"\n'
        )
    )
    with subscriber(broker, TELEMETRY) as sub:
        agent = AgentProcess(cfg)
        try:
            sub.next(timeout=15)
        finally:
            agent.stop()
    assert "New client connected from 127.0.0.2:" in broker.log.read_text()
