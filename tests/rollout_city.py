"""A small city for rollout tests that go through central's HTTP API (titik-ctl, the page).

Real parts only: a Mosquitto of the test's own (tests/broker.py), ``titik-central run`` as a
subprocess (its rollout runner inside the consumer, its HTTP API with ``[console]
signing_keys``), and real agents on the simulated platform that trust and require the
operator's key. An agent's ``wifi`` hook fails when ``etc/titik-sim/fail-apply`` exists under
its root: the stand-in for a firmware that cannot take the config (agent/platforms/simulated).
tests/integration/test_rollout_runner.py starts its city the same way.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol.cohort import cohort
from agent.protocol.signing import key_id, public_key_text, sign
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, Subscriber, free_port, wait_until
from tests.central_auth import create_token
from tests.centralproc import stop_central

ROOT = Path(__file__).resolve().parents[1]
GROUP = "g1"
TOPIC = f"titik/group/{GROUP}/config/desired"


def ssid(name: str) -> dict[str, Any]:
    return {"wifi": {"ssids": {"public": {"ssid": name, "radios": ["radio0"]}}}}


def sim_ssid(root: Path) -> str | None:
    """The public SSID the simulated firmware holds (what the wifi hook applied)."""
    path = root / "var/lib/titik-sim/wifi.json"
    return json.loads(path.read_text()).get("ssids.public.ssid") if path.exists() else None


@dataclass
class City:
    broker: Broker
    key: Ed25519PrivateKey
    key_file: Path
    ids: list[str]
    roots: dict[str, Path]
    db: Path
    log: Path
    url: str
    central: subprocess.Popen[bytes] | None = None
    agents: list[AgentProcess] = field(default_factory=list)
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def kid(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return key_id(raw)

    def token(self, role: str = "operator", name: str | None = None) -> str:
        """An API token of ``role`` named ``name`` (made once, as `titik-central token
        create` makes it, then reused)."""
        key = (role, name or f"ops-{role}")
        if key not in self.tokens:
            self.tokens[key] = create_token(self.db, *key)
        return self.tokens[key]

    def get(self, path: str, token: str) -> Any:
        headers = {"Authorization": f"Bearer {token}"}
        req = urllib.request.Request(self.url + path, headers=headers)  # noqa: S310 - http
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - the test's own URL
            return json.loads(r.read())

    def rollout(self, rid: str) -> dict[str, Any]:
        out: dict[str, Any] = self.get(f"/api/rollouts/{rid}", self.token("viewer", "reader"))
        return out

    def fail_apply(self, rid: str, percent: float) -> str:
        """Make the first gateway of the wave of ``percent`` fail to apply; its id."""
        device = cohort(rid, self.ids, percent)[0]
        marker = self.roots[device] / "etc/titik-sim/fail-apply"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return device

    def publish_group(self, doc: dict[str, Any]) -> None:
        """Publish the group's document (signed) and wait until every gateway applied it."""
        sub = Subscriber(self.broker, "titik/gw/+/config/reported", client_id="city-wait")
        try:
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id="city-pub")
            c.connect(self.broker.host, self.broker.port)
            c.loop_start()
            c.publish(TOPIC, json.dumps(sign(self.key, TOPIC, doc)), 1, True).wait_for_publish(5)
            c.loop_stop()
            c.disconnect()
            seen: set[str] = set()
            while seen != set(self.ids):
                m = sub.next(
                    lambda m: m.json().get("version") == doc["version"]
                    and m.json()["state"] != "applying",
                    timeout=30,
                )
                assert m.json()["state"] == "applied", m.json()
                seen.add(m.topic.split("/")[2])
        finally:
            sub.close()


@contextmanager
def rollout_city(tmp: Path, ids: list[str]) -> Iterator[City]:
    """Broker, central (HTTP API on a free port) and one agent per id in group g1, whose
    group document is ``{"version": 1, "config": ssid("Old")}`` once every agent applied it."""
    broker = Broker(tmp)
    broker.start()
    key = Ed25519PrivateKey.generate()
    key_file = tmp / "ops.pem"  # as `titik-ctl keygen --out ops.pem` writes it
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = public_key_text(key.public_key())
    trust = f'[security]\ntrusted_keys = ["{public}"]\nrequire_signature = true\n'

    def start(device: str) -> AgentProcess:
        root = tmp / device / "root"
        root.mkdir(parents=True)
        cfg = write_config(
            tmp / device / "agent.toml",
            broker,
            device=device,
            interval=1.0,
            extra=f'root = "{root}"\n[config]\nrollback_timeout_s = 3\n{trust}',
        )
        cfg.write_text(cfg.read_text().replace('groups = ["test"]', f'groups = ["{GROUP}"]'))
        return AgentProcess(cfg)

    db = tmp / "central.db"
    port = free_port()
    conf = tmp / "central.toml"
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "c-city"\n'
        f'[store]\npath = "{db}"\nbatch_interval_s = 0.05\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n'
        f'[console]\nsigning_keys = ["{public}"]\n'
        "[rollout]\ntick_s = 1\n"  # a test's waves and gates a tick apart, not 5 s
    )
    log = tmp / "central.log"
    argv = [sys.executable, "-m", "central.cli", "run", "--config", str(conf)]
    city = City(
        broker, key, key_file, ids, {d: tmp / d / "root" for d in ids}, db, log,
        f"http://127.0.0.1:{port}",
    )  # fmt: skip
    city.central = subprocess.Popen(argv, cwd=ROOT, stderr=log.open("ab"))
    try:
        wait_until(lambda: "ingesting from" in log.read_text(), 30, "central", poll=0.1)
        with ThreadPoolExecutor(len(ids)) as pool:
            city.agents = list(pool.map(start, ids))
        city.publish_group({"version": 1, "config": ssid("Old")})
        reader = city.token("viewer", "city-reader")
        wait_until(
            lambda: city.get(f"/api/devices?group={GROUP}", reader)["total"] == len(ids),
            30,
            "every gateway known to central",
            poll=0.25,
        )
        yield city
    finally:
        for a in city.agents:
            a.stop()
        if city.central.poll() is None:
            stop_central(city.central, city.log, 30)
        broker.stop()
