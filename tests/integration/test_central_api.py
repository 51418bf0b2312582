"""`titik-central run` serving the API while real agents publish through a real Mosquitto."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol import Telemetry
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, free_port, subscriber, wait_until
from tests.central_auth import auth_headers
from tests.centralproc import stop_central

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
AGENTS = 10
INTERVAL_S = 2.5  # stale after 3 intervals: time enough to compare after pausing the agents


#: A viewer's token, made in the test's database before central starts.
HEADERS: dict[str, str] = {}


def get(port: int, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=HEADERS)
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - loopback
        return json.load(r)


def up(port: int) -> bool:
    try:
        get(port, "/healthz")
    except (urllib.error.URLError, ConnectionError):
        return False
    return True


def test_api_numbers_match_what_the_agents_sent(broker: Broker, tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "central.toml"
    conf.write_text(
        f"""
[mqtt]
host = "{broker.host}"
port = {broker.port}
client_id = "c-api"

[store]
path = "{tmp_path / "central.db"}"
batch_interval_s = 0.05

[http]
host = "127.0.0.1"
port = {port}
"""
    )
    HEADERS.update(auth_headers(tmp_path / "central.db", "viewer"))
    log = tmp_path / "central.log"
    central = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
        cwd=ROOT,
        stderr=log.open("ab"),
    )
    agents: list[AgentProcess] = []
    try:
        wait_until(lambda: up(port) or central.poll() is not None, 20, "the API")
        assert central.poll() is None, log.read_text()
        # Logged by the ingest thread, which may come a moment after uvicorn is up.
        url = f"dashboard: http://127.0.0.1:{port}/"
        wait_until(lambda: url in log.read_text(), 10, "the dashboard URL in the log")
        # Without a credential: 401 (the whole role matrix is tests/unit/test_api_roles.py).
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/summary", timeout=5)
        assert refused.value.code == 401
        # A bad probe is counted once central has subscribed (so no status is missed).
        probe = paho.Client(CallbackAPIVersion.VERSION2, client_id="probe")
        probe.connect(broker.host, broker.port)
        probe.loop_start()

        def subscribed() -> bool:
            probe.publish("titik/gw/probe/telemetry", b"not json", qos=1).wait_for_publish(5)
            return bool(get(port, "/healthz")["ingest"]["bad"]["json"])

        wait_until(subscribed, 15, "central subscribed", poll=0.2)
        probe.loop_stop()
        probe.disconnect()

        with subscriber(broker, "titik/gw/+/telemetry", client_id="watch") as sub:
            for i in range(AGENTS):
                d = tmp_path / f"a{i}"
                d.mkdir()
                agent_conf = write_config(
                    d / "agent.toml", broker, device=f"gw-api{i:02d}", interval=INTERVAL_S
                )
                agent_conf.write_text(
                    agent_conf.read_text().replace("Jakarta Pusat", f"Region {i % 3}")
                )
                agents.append(AgentProcess(agent_conf))
            per_device: dict[str, int] = {}

            def enough() -> bool:
                dev = sub.next(timeout=30).json()["device"]
                per_device[dev] = per_device.get(dev, 0) + 1
                return len(per_device) == AGENTS and min(per_device.values()) >= 2

            wait_until(enough, 40, "2 samples from every agent")
            wait_until(lambda: get(port, "/api/summary")["online"] == AGENTS, 10, "all online")
            # Pause the agents: their last sample is then final and they stay online.
            for a in agents:
                a.signal(signal.SIGSTOP)
            with contextlib.suppress(AssertionError):
                while True:
                    sub.next(timeout=1)
            last: dict[str, Telemetry] = {}
            for m in sub.seen:
                t = Telemetry.model_validate_json(m.payload)
                if t.device not in last or t.seq > last[t.device].seq:
                    last[t.device] = t
            want = {d: t.clients.total if t.clients else None for d, t in last.items()}
            assert len(want) == AGENTS and any(want.values())

            def clients_match() -> bool:
                items = get(port, "/api/devices?limit=100")["items"]
                return {i["id"]: i["clients"] for i in items} == want

            wait_until(clients_match, 4, "the API to show each agent's last clients", poll=0.1)
            summary = get(port, "/api/summary")
            devices = get(port, "/api/devices?limit=100&sort=-clients")
            region0 = get(port, "/api/devices?region=Region%200")
            public = get(port, "/api/public/summary")
        for a in agents:
            a.signal(signal.SIGCONT)
            a.signal(signal.SIGTERM)

        assert (summary["total"], summary["online"], summary["offline"]) == (AGENTS, AGENTS, 0)
        assert summary["clients_total"] == sum(c or 0 for c in want.values())
        assert {r["region"]: (r["total"], r["online"]) for r in summary["by_region"]} == {
            "Region 0": (4, 4),
            "Region 1": (3, 3),
            "Region 2": (3, 3),
        }
        assert devices["total"] == AGENTS
        assert [i["clients"] for i in devices["items"]] == sorted(
            (c if c is not None else -1 for c in want.values()), reverse=True
        )
        for item in devices["items"]:
            assert item["region"] == f"Region {int(item['id'][-2:]) % 3}"
            assert item["online"] is True
        assert region0["total"] == 4
        assert (public["active_aps"], public["connected_users"]) == (
            AGENTS,
            summary["clients_total"],
        )
        for a in agents:
            a.wait(15)
        wait_until(lambda: get(port, "/api/summary")["online"] == 0, 10, "all offline")
        metrics = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers=HEADERS)
        with urllib.request.urlopen(metrics, timeout=5) as r:  # noqa: S310 - loopback
            assert 'titik_devices{status="offline"} 10.0' in r.read().decode()
        # SIGTERM: commit, ack, stop serving, disconnect, exit 0.
        assert stop_central(central, log, 15) == 0, log.read_text()
        assert not up(port)
    finally:
        for a in agents:
            with contextlib.suppress(ProcessLookupError):
                a.signal(signal.SIGCONT)
            a.stop()
        if central.poll() is None:
            central.kill()
            central.wait()
