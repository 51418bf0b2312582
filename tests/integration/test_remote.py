"""Remote config and commands against a real Mosquitto, with a plain MQTT client as operations.

The agent runs as a subprocess on the ``simulated`` platform, whose firmware hooks
(firmware_hooks/simulated/*) keep their state in files under a temporary root.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.protocol.signing import public_key_text, sign
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, Message, Subscriber, free_port, wait_until

pytestmark = pytest.mark.broker

DEV = "gw-test01"
BASE = f"titik/gw/{DEV}"
DESIRED = f"{BASE}/config/desired"
GROUP_DESIRED = "titik/group/test/config/desired"
REPORTED = f"{BASE}/config/reported"
CMD = f"{BASE}/cmd"
RESULT = f"{BASE}/cmd/result"


class Ops:
    """Operations: publishes desired configs and commands, reads reports and results."""

    def __init__(self, broker: Broker, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key
        self.sub = Subscriber(broker, REPORTED, RESULT, f"{BASE}/status", client_id="ops")
        self.pub = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="ops-pub", protocol=paho.MQTTv5
        )
        self.pub.connect(broker.host, broker.port)
        self.pub.loop_start()

    def send(
        self,
        topic: str,
        body: dict[str, Any],
        *,
        retain: bool = False,
        signed: bool = True,
        props: Properties | None = None,
    ) -> None:
        if self.key is not None and signed:
            body = sign(self.key, topic, body)
        self.pub.publish(
            topic, json.dumps(body), qos=1, retain=retain, properties=props
        ).wait_for_publish(5)

    def desire(self, version: int, config: dict[str, Any], topic: str = DESIRED) -> None:
        self.send(topic, {"version": version, "config": config}, retain=True)

    def report(self, pred: Any = lambda r: True, timeout: float = 20) -> dict[str, Any]:
        def ok(m: Message) -> bool:
            return m.topic == REPORTED and m.json()["state"] != "applying" and pred(m.json())

        return dict(self.sub.next(ok, timeout).json())

    def command(
        self,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        cid: str | None = None,
        expires_in: float = 60,
        **kw: Any,
    ) -> dict[str, Any]:
        cid = cid or f"{name}-{time.monotonic_ns()}"
        body = {"id": cid, "name": name, "args": args or {}, "expires_at": time.time() + expires_in}
        self.send(CMD, body, **kw)
        return self.result(cid)

    def result(self, cid: str, timeout: float = 20) -> dict[str, Any]:
        return dict(
            self.sub.next(lambda m: m.topic == RESULT and m.json()["id"] == cid, timeout).json()
        )

    def close(self) -> None:
        self.sub.close()
        self.pub.loop_stop()
        self.pub.disconnect()


def sim_state(root: Path, section: str) -> dict[str, Any] | None:
    path = root / "var/lib/titik-sim" / f"{section}.json"
    return json.loads(path.read_text()) if path.exists() else None


def agent_config(tmp_path: Path, broker: Broker, extra: str = "") -> Path:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return write_config(
        tmp_path / "agent.toml",
        broker,
        interval=1.0,
        extra=f'root = "{root}"\n[config]\nrollback_timeout_s = 3\n{extra}',
    )


@pytest.fixture
def ops(broker: Broker) -> Iterator[Ops]:
    o = Ops(broker)
    yield o
    o.close()


@pytest.fixture
def running(broker: Broker, tmp_path: Path, ops: Ops) -> Iterator[AgentProcess]:
    agent = AgentProcess(agent_config(tmp_path, broker))
    ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"])
    yield agent
    agent.stop()


SSID = {
    "wifi": {"ssids": {"public": {"ssid": "Jakarta Free WiFi", "radios": ["radio0", "radio1"]}}}
}


def test_desired_config_is_applied_and_reported(
    running: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    ops.desire(1, {**SSID, "telemetry": {"interval_s": 5}})
    rep = ops.report()
    assert rep["state"] == "applied", rep
    assert rep["version"] == 1
    assert rep["hash"]
    state = sim_state(tmp_path / "root", "wifi")
    assert state is not None
    assert state["ssids.public.ssid"] == "Jakarta Free WiFi"
    cfg = ops.command("get_config")["result"]
    assert cfg["agent"]["interval_s"] == 5
    assert cfg["applied"]["wifi"]["ssids"]["public"]["ssid"] == "Jakarta Free WiFi"


def test_same_version_again_applies_nothing(
    running: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    ops.desire(1, SSID)
    assert ops.report()["state"] == "applied"
    reports = len([m for m in ops.sub.seen if m.topic == REPORTED])
    wifi = tmp_path / "root/var/lib/titik-sim/wifi.json"
    mtime = wifi.stat().st_mtime_ns
    ops.desire(1, {"wifi": {"ssids": {"public": {"ssid": "Changed but same version"}}}})
    ops.command("collect_now")  # a barrier: messages are handled in order
    assert len([m for m in ops.sub.seen if m.topic == REPORTED]) == reports, "nothing reported"
    assert wifi.stat().st_mtime_ns == mtime


def test_group_and_device_overlay(broker: Broker, tmp_path: Path, ops: Ops) -> None:
    ops.desire(
        1, {"wifi": {"ssids": {"public": {"ssid": "Group", "max_clients": 50}}}}, GROUP_DESIRED
    )
    ops.desire(4, {"wifi": {"ssids": {"public": {"ssid": "Device"}}}})
    agent = AgentProcess(agent_config(tmp_path, broker))  # boots into both retained documents
    try:
        rep = ops.report(lambda r: r["versions"] == {"group/test": 1, "gw": 4})
    finally:
        agent.stop()
    assert rep["state"] == "applied"
    state = sim_state(tmp_path / "root", "wifi")
    assert state is not None
    assert state["ssids.public.ssid"] == "Device"
    assert state["ssids.public.max_clients"] == 50


def test_invalid_config_is_rejected_with_its_key_path(
    running: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    ops.desire(1, SSID)
    ops.report()
    before = sim_state(tmp_path / "root", "wifi")
    ops.desire(2, {"wifi": {"radios": {"radio0": {"channel": 15}}}, "telemetry": {"interval_s": 1}})
    rep = ops.report(lambda r: r["version"] == 2)
    assert rep["state"] == "rejected"
    assert rep["error"].startswith("wifi.radios.radio0")
    ops.desire(3, {"wifi": {"ssids": {"public": {"ssid": "x", "colour": "red"}}}})
    rep = ops.report(lambda r: r["version"] == 3)
    assert rep["state"] == "rejected"
    assert "wifi.ssids.public.colour: unknown key" in rep["error"]
    assert sim_state(tmp_path / "root", "wifi") == before
    assert ops.command("get_config")["result"]["agent"]["interval_s"] == 1.0  # unchanged


def test_a_failing_hook_rolls_back(running: AgentProcess, ops: Ops, tmp_path: Path) -> None:
    ops.desire(1, SSID)
    ops.report()
    before = sim_state(tmp_path / "root", "wifi")
    (tmp_path / "root/etc/titik-sim").mkdir(parents=True)
    (tmp_path / "root/etc/titik-sim/fail-apply").touch()
    ops.desire(2, {"wifi": {"ssids": {"public": {"ssid": "Never"}}}})
    rep = ops.report(lambda r: r["version"] == 2)
    assert rep["state"] == "rolled_back"
    assert "wifi apply" in rep["error"]
    assert sim_state(tmp_path / "root", "wifi") == before


def test_a_config_that_cuts_the_gateway_off_is_rolled_back(
    running: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    ops.desire(1, {**SSID, "mqtt": {"port": free_port()}})  # a dead broker port
    rep = ops.report(lambda r: r["version"] == 1, timeout=30)
    assert rep["state"] == "rolled_back"
    assert "no contact with the broker within 3s" in rep["error"]
    assert sim_state(tmp_path / "root", "wifi") is None  # the Wi-Fi change went back too
    assert ops.command("get_config")["result"]["agent"]["broker"].endswith(
        f":{running_port(tmp_path)}"
    )


def running_port(tmp_path: Path) -> int:
    text = (tmp_path / "agent.toml").read_text()
    return int(text.split("port = ")[1].split()[0])


def test_restart_mid_apply_leaves_a_consistent_state(
    broker: Broker, tmp_path: Path, ops: Ops
) -> None:
    cfg = agent_config(tmp_path, broker)
    cfg.write_text(cfg.read_text().replace("rollback_timeout_s = 3", "rollback_timeout_s = 600"))
    agent = AgentProcess(cfg)
    try:
        ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"])
        ops.desire(1, SSID)
        ops.report()
        before = sim_state(tmp_path / "root", "wifi")
        ops.desire(
            2, {"wifi": {"ssids": {"public": {"ssid": "Half"}}}, "mqtt": {"port": free_port()}}
        )
        journal = tmp_path / "state/remote/applying.json"
        wait_until(journal.exists, 10, "the apply to start")
        wait_until(lambda: sim_state(tmp_path / "root", "wifi") != before, 10, "the hook to apply")
        agent.signal(signal.SIGKILL)  # mid-apply: applied, not yet verified
        agent.wait(5)
    finally:
        agent.stop()
    agent = AgentProcess(cfg)
    try:
        rep = ops.report(lambda r: r["version"] == 2 and r["state"] == "rolled_back")
        ops.command("collect_now")  # it runs: back on the right broker
    finally:
        agent.stop()
    assert "restarted while applying" in rep["error"]
    assert sim_state(tmp_path / "root", "wifi") == before
    assert not journal.exists()


def test_each_command(running: AgentProcess, ops: Ops) -> None:
    assert ops.command("collect_now")["result"]["seq"] >= 0
    assert ops.command("restart_wifi")["ok"]
    diag = ops.command("diagnostics", {"http": "http://127.0.0.1:9/"})["result"]
    assert {"ping", "dns", "http", "resolvers", "default_route", "radios"} <= set(diag)
    kicked = ops.command("kick_client", {"mac": "02:00:00:00:00:01", "ban_s": 60})
    assert kicked["ok"]
    assert "02:00:00:00:00:01" not in json.dumps(kicked)  # not echoed back
    assert ops.command("get_config")["result"]["agent"]["platform"] == "simulated"
    res = ops.command("reboot", {"delay_s": 1})
    assert res["result"] == {"rebooting_in_s": 1.0}  # answered before going down
    # The simulated gateway "reboots": a new session comes online.
    ops.sub.next(
        lambda m: m.topic.endswith("/status") and m.json()["online"] and m.json()["boot"] >= 2
    )


def test_bad_commands_get_clear_errors(running: AgentProcess, ops: Ops) -> None:
    assert "unknown command 'format_disk'" in ops.command("format_disk")["error"]
    assert ops.command("reboot", {"delay_s": -5})["error"].startswith("args.delay_s")
    assert ops.command("kick_client", {"mac": "nope"})["error"].startswith("args.mac")
    assert ops.command("collect_now", {"now": True})["error"] == "args.now: unknown argument"
    assert "expired" in ops.command("collect_now", expires_in=-10)["error"]
    big = {
        "id": "big-1",
        "name": "collect_now",
        "args": {"x": "y" * 20000},
        "expires_at": time.time() + 60,
    }
    ops.send(CMD, big)
    assert "more than" in ops.result("big-1")["error"]
    ops.pub.publish(CMD, b"{not json", qos=1).wait_for_publish(5)
    assert ops.command("collect_now")["ok"]  # and the agent is still there


def test_a_duplicate_command_id_runs_once(running: AgentProcess, ops: Ops) -> None:
    first = ops.command("collect_now", cid="dup-1")
    second = ops.command("collect_now", cid="dup-1")
    assert first["ok"]
    assert not second["ok"]
    assert "already ran" in second["error"]


def test_mqtt5_response_topic_and_correlation_are_honoured(
    running: AgentProcess, ops: Ops, broker: Broker
) -> None:
    replies: list[paho.MQTTMessage] = []
    requester = paho.Client(
        CallbackAPIVersion.VERSION2, client_id="requester", protocol=paho.MQTTv5
    )
    requester.on_message = lambda c, u, m: replies.append(m)
    subscribed: list[bool] = []
    requester.on_subscribe = lambda *a: subscribed.append(True)
    requester.connect(broker.host, broker.port)
    requester.subscribe("ops/replies/42", qos=1)
    requester.loop_start()
    try:
        wait_until(lambda: bool(subscribed), 5, "SUBACK")
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = "ops/replies/42"
        props.CorrelationData = b"req-42"
        body = {"id": "rr-1", "name": "collect_now", "args": {}, "expires_at": time.time() + 60}
        ops.send(CMD, body, props=props)
        wait_until(lambda: bool(replies), 20, "the reply on the response topic")
    finally:
        requester.loop_stop()
        requester.disconnect()
    reply = replies[0]
    assert json.loads(reply.payload)["id"] == "rr-1"
    assert reply.properties is not None
    assert reply.properties.CorrelationData == b"req-42"


def test_signatures(broker: Broker, tmp_path: Path) -> None:
    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    extra = f'[security]\ntrusted_keys = ["{public_key_text(key.public_key())}"]\nrequire_signature = true\n'
    ops = Ops(broker, key)
    agent = AgentProcess(agent_config(tmp_path, broker, extra))
    try:
        ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"])
        assert ops.command("collect_now", cid="signed-1")["ok"]
        assert "signature: missing" in ops.command("collect_now", signed=False)["error"]
        body = sign(
            other,
            CMD,
            {"id": "forged-1", "name": "reboot", "args": {}, "expires_at": time.time() + 60},
        )
        ops.send(CMD, body, signed=False)
        assert "not trusted" in ops.result("forged-1")["error"]
        altered = sign(
            key,
            CMD,
            {"id": "alt-1", "name": "collect_now", "args": {}, "expires_at": time.time() + 60},
        )
        altered["name"] = "reboot"
        ops.send(CMD, altered, signed=False)
        assert "does not match" in ops.result("alt-1")["error"]
        replay = sign(
            key,
            CMD,
            {"id": "signed-1", "name": "collect_now", "args": {}, "expires_at": time.time() + 60},
        )
        ops.send(CMD, replay, signed=False)
        assert "already ran" in ops.result("signed-1")["error"]
        assert "expired" in ops.command("collect_now", expires_in=-1)["error"]
        # Desired configs too: an unsigned one is refused, a signed one applied.
        ops.send(DESIRED, {"version": 7, "config": SSID}, retain=True, signed=False)
        assert "signature: missing" in ops.report(lambda r: r["version"] == 7)["error"]
        ops.desire(8, SSID)
        assert ops.report(lambda r: r["version"] == 8)["state"] == "applied"
    finally:
        agent.stop()
        ops.close()


def test_the_service_report_is_turned_on_and_off_by_a_signed_desired_config(
    broker: Broker, tmp_path: Path
) -> None:
    """Issue 20: ``service.enabled`` and ``service.interval_s`` through the signed remote
    config; the agent's file keeps the report off (and names no jitter, so the first report
    comes at once)."""
    key = Ed25519PrivateKey.generate()
    extra = (
        f'[security]\ntrusted_keys = ["{public_key_text(key.public_key())}"]\n'
        "require_signature = true\n[service]\nenabled = false\njitter_s = 0\nprobes = false\n"
    )
    ops = Ops(broker, key)
    service = Subscriber(broker, f"{BASE}/service", client_id="ops-service")
    agent = AgentProcess(agent_config(tmp_path, broker, extra))
    try:
        ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"])
        assert ops.command("get_config")["result"]["agent"]["service"] is None
        ops.desire(1, {"service": {"enabled": True, "interval_s": 45}})
        assert ops.report(lambda r: r["version"] == 1)["state"] == "applied"
        first = service.next(timeout=20).json()
        assert first["radios"] and "ts" in first
        assert ops.command("get_config")["result"]["agent"]["service"] == {"interval_s": 45}
        # Out of range: refused, naming the key; the report stays as it was.
        ops.desire(2, {"service": {"enabled": True, "interval_s": 5}})
        rep = ops.report(lambda r: r["version"] == 2)
        assert rep["state"] == "rejected" and "service.interval_s" in rep["error"], rep
        assert ops.command("get_config")["result"]["agent"]["service"] == {"interval_s": 45}
        ops.desire(3, {"service": {"enabled": False}})
        assert ops.report(lambda r: r["version"] == 3)["state"] == "applied"
        assert ops.command("get_config")["result"]["agent"]["service"] is None
        # An unsigned document is refused whatever it says.
        ops.send(
            DESIRED,
            {"version": 4, "config": {"service": {"enabled": True}}},
            retain=True,
            signed=False,
        )
        assert "signature: missing" in ops.report(lambda r: r["version"] == 4)["error"]
        assert ops.command("get_config")["result"]["agent"]["service"] is None
    finally:
        agent.stop()
        service.close()
        ops.close()
