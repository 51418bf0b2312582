"""titik-ctl against a real Mosquitto and real agents on the simulated platform.

One broker and a fleet of six agents in group ``g1`` serve the rollout tests (each test
compares before and after, so their order does not matter); the signing test has its own.
The CLI runs in-process through ``central.ctl.main`` with stdout captured.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from central.ctl import cli as ctl
from central.ctl import session
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, Subscriber

pytestmark = pytest.mark.broker

IDS = [f"gw-c{n:02d}" for n in (4, 1, 6, 3, 5, 2)]  # sorted: gw-c01, gw-c02 are the canaries


@dataclass
class RunningGateways:
    broker: Broker
    roots: dict[str, Path]
    agents: list[AgentProcess]

    def run(self, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
        capsys.readouterr()
        code = ctl.main(
            ["--broker", f"{self.broker.host}:{self.broker.port}", "--timeout", "20", *argv]
        )
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    def retained(self, *topics: str) -> dict[str, Any]:
        """topic -> JSON of the retained messages now (read with the ctl's own snapshot)."""
        link = session.BrokerSession(session.settings_from(_args(self.broker), {}))
        link.connect()
        try:
            return {t: json.loads(p) for t, p in link.snapshot(*topics).items()}
        finally:
            link.close()


def _args(broker: Broker) -> Any:
    return ctl.build_parser().parse_args(["--broker", f"{broker.host}:{broker.port}", "devices"])


def start_agent(broker: Broker, workdir: Path, device: str, extra: str = "") -> AgentProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    cfg = write_config(
        workdir / "agent.toml",
        broker,
        device=device,
        interval=1.0,
        extra=f'root = "{root}"\n[config]\nrollback_timeout_s = 3\n{extra}',
    )
    cfg.write_text(cfg.read_text().replace('groups = ["test"]', 'groups = ["g1"]'))
    return AgentProcess(cfg)


def wait_online(broker: Broker, ids: list[str]) -> None:
    sub = Subscriber(broker, "titik/gw/+/status", client_id="ctl-test-wait")
    try:
        online: set[str] = set()
        while online != set(ids):
            m = sub.next(lambda m: m.json().get("online") is True, timeout=30)
            online.add(m.topic.split("/")[2])
    finally:
        sub.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateways]:
    base = tmp_path_factory.mktemp("ctl-fleet")
    broker = Broker(base)
    broker.start()
    with ThreadPoolExecutor(len(IDS)) as pool:
        agents = list(pool.map(lambda d: start_agent(broker, base / d, d), IDS))
    try:
        wait_online(broker, IDS)
        yield RunningGateways(broker, {d: base / d / "root" for d in IDS}, agents)
    finally:
        for a in agents:
            a.stop()
        broker.stop()


def ssid_config(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps({"wifi": {"ssids": {"public": {"ssid": name, "radios": ["radio0"]}}}})
    )
    return path


def sim_ssid(root: Path) -> str | None:
    path = root / "var/lib/titik-sim/wifi.json"
    return json.loads(path.read_text()).get("ssids.public.ssid") if path.exists() else None


def test_devices_lists_the_fleet(
    fleet: RunningGateways, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = fleet.run(capsys, "devices", "--group", "g1", "--status", "online")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "ONLINE", "SITE", "REGION", "GROUPS", "VERSION"]
    assert [line.split()[0] for line in lines[1:]] == sorted(IDS)
    assert all(" yes " in line and "g1" in line for line in lines[1:])
    code, out = fleet.run(capsys, "devices", "--status", "offline")
    assert code == 0
    assert "no devices match" in out


def test_push_to_one_device(
    fleet: RunningGateways, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out = fleet.run(
        capsys, "config", "push", "--device", "gw-c06", "--file", str(ssid_config(tmp_path, "Solo"))
    )
    assert code == 0, out
    assert "gw-c06: applied" in out
    assert sim_ssid(fleet.roots["gw-c06"]) == "Solo"
    code, out = fleet.run(capsys, "config", "show", "gw-c06")
    assert code == 0, out
    assert '"ssid": "Solo"' in out
    assert '"state": "applied"' in out


def test_canary_rollout_on_a_healthy_fleet(
    fleet: RunningGateways, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    cfg = ssid_config(tmp_path, "Group healthy")
    code, out = fleet.run(
        capsys, "config", "push", "--group", "g1", "--file", str(cfg), "--canary", "2"
    )
    assert code == 0, out
    assert "canary: gw-c01, gw-c02 (2 of 6)" in out
    assert "summary: applied 6, failed 0, pending 0 of 6" in out
    assert "canary device documents restored: gw-c01, gw-c02" in out
    for d in IDS:
        if d != "gw-c06":  # its own document (test_push_to_one_device) may override the SSID
            assert sim_ssid(fleet.roots[d]) == "Group healthy", d
    desired = fleet.retained("titik/gw/gw-c01/config/desired", "titik/group/g1/config/desired")
    assert desired["titik/group/g1/config/desired"]["config"] == json.loads(cfg.read_text())
    assert desired["titik/gw/gw-c01/config/desired"]["config"] == {}  # restored: no own settings


def test_failing_canaries_halt_the_rollout(
    fleet: RunningGateways, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    canaries, rest = ["gw-c01", "gw-c02"], ["gw-c03", "gw-c04", "gw-c05", "gw-c06"]
    watched = [f"titik/gw/{d}/config/reported" for d in rest] + ["titik/group/g1/config/desired"]
    before = fleet.retained(*watched)
    markers = [fleet.roots[d] / "etc/titik-sim/fail-apply" for d in canaries]
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    try:
        cfg = ssid_config(tmp_path, "Never everywhere")
        code, out = fleet.run(
            capsys, "config", "push", "--group", "g1", "--file", str(cfg), "--canary", "2"
        )
    finally:
        for m in markers:
            m.unlink()
    assert code == 1, out
    assert "HALTED: 2 of 2 canary devices failed" in out
    assert "gw-c01: rolled_back: " in out and "gw-c02: rolled_back: " in out
    assert "wifi apply" in out
    assert fleet.retained(*watched) == before  # no group document, no report from the rest
    for d in rest:
        assert sim_ssid(fleet.roots[d]) != "Never everywhere"


def test_command_to_one_device(fleet: RunningGateways, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = fleet.run(capsys, "cmd", "--device", "gw-c03", "collect_now")
    assert code == 0, out
    assert 'gw-c03: ok {"seq": ' in out
    code, out = fleet.run(capsys, "cmd", "--device", "gw-c03", "reboot", "--arg", "delay_s=-5")
    assert code == 1
    assert "gw-c03: error: args.delay_s" in out


def test_command_to_a_group(fleet: RunningGateways, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = fleet.run(capsys, "cmd", "--group", "g1", "collect_now")
    assert code == 0, out
    assert sum(1 for line in out.splitlines() if ": ok {" in line) == len(IDS)


def test_signed_pushes(broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "ops.pem"
    assert ctl.main(["keygen", "--out", str(key)]) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    assert public.startswith("ed25519:")
    assert key.stat().st_mode & 0o777 == 0o600
    extra = f'[security]\ntrusted_keys = ["{public}"]\nrequire_signature = true\n'
    agent = start_agent(broker, tmp_path / "gw", "gw-sig01", extra)
    try:
        wait_online(broker, ["gw-sig01"])
        common = ["--broker", f"{broker.host}:{broker.port}", "--timeout", "20"]
        push = [
            "config",
            "push",
            "--device",
            "gw-sig01",
            "--file",
            str(ssid_config(tmp_path, "Signed")),
        ]
        assert ctl.main([*common, "--key", str(key), *push]) == 0
        out = capsys.readouterr().out
        assert "(signed)" in out and "gw-sig01: applied" in out
        assert ctl.main([*common, *push]) == 1
        out = capsys.readouterr().out
        assert "gw-sig01: rejected: signature: missing" in out
        assert (
            ctl.main([*common, "--key", str(key), "cmd", "--device", "gw-sig01", "collect_now"])
            == 0
        )
    finally:
        agent.stop()


def test_snapshot_collects_a_city_of_retained_statuses(broker: Broker) -> None:
    """9,000 statuses and 9,000 config reports take seconds to arrive; an earlier version
    stopped collecting after 2 s and saw 883 of a group of 1,000 (titik-sim at 9,000)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    n = 18_000
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="seed")
    pub.max_queued_messages_set(0)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        body = json.dumps({"online": True, "boot": 1, "groups": ["cohort-1"], "pad": "x" * 200})
        infos = [
            pub.publish(f"titik/gw/gw-{i:05d}/status", body, qos=1, retain=True) for i in range(n)
        ]
        for info in infos:
            info.wait_for_publish(30)
    finally:
        pub.disconnect()
        pub.loop_stop()
    link = session.BrokerSession(session.settings_from(_args(broker), {}))
    link.connect()
    try:
        found = link.snapshot("titik/gw/+/status")
    finally:
        link.close()
    assert len(found) == n
