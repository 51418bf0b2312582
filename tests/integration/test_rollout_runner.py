"""Rollouts in waves run by central, against a real Mosquitto and real agents (issue 19, 1).

Central runs as ``titik-central run`` (its rollout runner inside the consumer); the plan's
documents are signed here with a key the gateways trust and require, as titik-ctl or the
console would sign them, and put in central's store. The gateways are real agents on the
simulated platform: their ``wifi`` hook fails when ``etc/titik-sim/fail-apply`` exists under
their root (the stand-in for a firmware that cannot take the config).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.cohort import cohort
from agent.protocol.signing import public_key_text, sign
from central.rollout.engine import Run, to_dict
from central.rollout.plan import Limits, Plan, documents
from central.store.rollouts import RolloutStore
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, Subscriber, free_port, wait_until
from tests.centralproc import stop_central

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
IDS = [f"gw-r{n:02d}" for n in range(1, 9)]
TOPIC = "titik/group/g1/config/desired"


def ssid(name: str) -> dict[str, Any]:
    return {"wifi": {"ssids": {"public": {"ssid": name, "radios": ["radio0"]}}}}


def sim_ssid(root: Path) -> str | None:
    path = root / "var/lib/titik-sim/wifi.json"
    return json.loads(path.read_text()).get("ssids.public.ssid") if path.exists() else None


@dataclass
class City:
    broker: Broker
    key: Ed25519PrivateKey
    roots: dict[str, Path]
    db: Path
    log: Path
    argv: list[str]
    central: subprocess.Popen[bytes] | None = None

    def start_central(self) -> None:
        self.central = subprocess.Popen(self.argv, cwd=ROOT, stderr=self.log.open("ab"))
        mark = self.log.read_text().count("ingesting from")
        wait_until(lambda: self.log.read_text().count("ingesting from") > mark, 30, "ingest")

    def kill_central(self) -> None:
        assert self.central is not None
        self.central.kill()  # as a crash would
        self.central.wait(30)

    def publish_group(self, doc: dict[str, Any]) -> None:
        sub = Subscriber(self.broker, "titik/gw/+/config/reported", client_id="r-wait")
        try:
            import paho.mqtt.client as paho
            from paho.mqtt.enums import CallbackAPIVersion

            c = paho.Client(CallbackAPIVersion.VERSION2, client_id="r-pub")
            c.connect(self.broker.host, self.broker.port)
            c.loop_start()
            c.publish(TOPIC, json.dumps(sign(self.key, TOPIC, doc)), 1, True).wait_for_publish(5)
            c.loop_stop()
            c.disconnect()
            seen: set[str] = set()
            while seen != set(IDS):
                m = sub.next(
                    lambda m: m.json().get("version") == doc["version"]
                    and m.json()["state"] != "applying",
                    timeout=30,
                )
                assert m.json()["state"] == "applied", m.json()
                seen.add(m.topic.split("/")[2])
        finally:
            sub.close()

    def start_rollout(self, plan: Plan) -> None:
        waves, restore = documents(plan)
        signed = tuple(sign(self.key, TOPIC, d) for d in waves)
        run = Run(plan, signed, sign(self.key, TOPIC, restore))
        store = RolloutStore(self.db)
        try:
            store.create(plan.id, plan.group, "test", to_dict(run))
        finally:
            store.close()

    def rollout(self, rid: str) -> dict[str, Any]:
        store = RolloutStore(self.db)
        try:
            got = store.get(rid)
            assert got is not None
            return {"status": got.status, "state": got.state, "gate": got.gate}
        finally:
            store.close()


@pytest.fixture
def city(tmp_path: Path) -> Iterator[City]:
    broker = Broker(tmp_path)
    broker.start()
    key = Ed25519PrivateKey.generate()
    extra = (
        f'[security]\ntrusted_keys = ["{public_key_text(key.public_key())}"]\n'
        "require_signature = true\n"
    )

    def start(device: str) -> AgentProcess:
        root = tmp_path / device / "root"
        root.mkdir(parents=True)
        cfg = write_config(
            tmp_path / device / "agent.toml",
            broker,
            device=device,
            interval=1.0,
            extra=f'root = "{root}"\n[config]\nrollback_timeout_s = 3\n{extra}',
        )
        cfg.write_text(cfg.read_text().replace('groups = ["test"]', 'groups = ["g1"]'))
        return AgentProcess(cfg)

    db = tmp_path / "central.db"
    conf = tmp_path / "central.toml"
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "c-roll"\n'
        f'[store]\npath = "{db}"\nbatch_interval_s = 0.05\n'
        f'[http]\nhost = "127.0.0.1"\nport = {free_port()}\n'
        "[rollout]\ntick_s = 1\n"  # waves and gates a second apart, not 5 s
    )
    log = tmp_path / "central.log"
    log.touch()
    argv = [sys.executable, "-m", "central.cli", "run", "--config", str(conf)]
    c = City(broker, key, {d: tmp_path / d / "root" for d in IDS}, db, log, argv)
    c.start_central()
    with ThreadPoolExecutor(len(IDS)) as pool:
        agents = list(pool.map(start, IDS))
    try:
        c.publish_group({"version": 1, "config": ssid("Old")})  # the config before the rollout
        yield c
    finally:
        for a in agents:
            a.stop()
        if c.central is not None and c.central.poll() is None:
            stop_central(c.central, c.log, 30)
        broker.stop()


def wait_status(city: City, rid: str, want: str, timeout: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = city.rollout(rid)
        if got["status"] == want:
            return got
        time.sleep(0.5)
    raise AssertionError(f"rollout {rid} still {city.rollout(rid)}; log:\n{city.log.read_text()}")


def test_a_healthy_rollout_reaches_every_gateway_wave_by_wave(city: City) -> None:
    plan = Plan("r-ok", "g1", (50, 100), 1, ssid("New"), ssid("Old"), Limits(soak_s=3))
    first = set(cohort("r-ok", IDS, 50))
    assert 0 < len(first) < len(IDS)
    city.start_rollout(plan)
    got = wait_status(city, "r-ok", "completed")
    events = got["state"]["events"]
    assert [e.split(" ", 1)[1] for e in events] == [
        "wave 1/2 (50%) published",
        "wave 2/2 (100%) published",
        "completed: wave 2 passed",
    ]
    assert all(sim_ssid(city.roots[d]) == "New" for d in IDS)
    assert got["gate"]["verdict"] == "passed" and got["gate"]["size"] == len(IDS)


def test_a_failing_wave_halts_and_every_gateway_gets_the_old_config_back(city: City) -> None:
    plan = Plan("r-bad", "g1", (50, 100), 1, ssid("New"), ssid("Old"), Limits(soak_s=3))
    first = cohort("r-bad", IDS, 50)
    marker = city.roots[first[0]] / "etc/titik-sim/fail-apply"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    city.start_rollout(plan)
    got = wait_status(city, "r-bad", "halted")
    assert f"{first[0]}: rolled back" in got["state"]["reason"]
    # the restore (version 4, newer than both waves) reached everyone; no one kept "New"
    sub = Subscriber(city.broker, "titik/gw/+/config/reported", client_id="r-restored")
    try:
        restored: set[str] = set()
        while restored != set(IDS):
            m = sub.next(lambda m: (m.json().get("versions") or {}).get("group/g1") == 4, 60)
            restored.add(m.topic.split("/")[2])
    finally:
        sub.close()
    wait_until(lambda: all(sim_ssid(city.roots[d]) == "Old" for d in IDS), 30, "old config")
    assert [e.split(" ", 1)[1].split(":")[0] for e in got["state"]["events"]] == [
        "wave 1/2 (50%) published",
        "halted",
    ]


def test_a_rollout_goes_on_after_central_is_killed_mid_wave(city: City) -> None:
    plan = Plan("r-crash", "g1", (50, 100), 1, ssid("New"), ssid("Old"), Limits(soak_s=4))
    city.start_rollout(plan)
    wait_until(
        lambda: city.rollout("r-crash")["state"]["wave"] == 0, 30, "the first wave out", poll=0.2
    )
    city.kill_central()
    assert city.rollout("r-crash")["status"] == "running"
    city.start_central()
    got = wait_status(city, "r-crash", "completed")
    assert [e.split(" ", 1)[1] for e in got["state"]["events"]] == [
        "wave 1/2 (50%) published",
        "wave 2/2 (100%) published",
        "completed: wave 2 passed",
    ]
    assert all(sim_ssid(city.roots[d]) == "New" for d in IDS)
