"""Agent upgrades end to end: a real agent process, a real Mosquitto, a real HTTP server.

The agent runs on the ``simulated`` platform, whose upgrade hook (firmware_hooks/simulated/
upgrade, run for real by the agent) installs a "package" by writing
``var/lib/titik-sim/agent.pkg`` under the test's root; the simulated agent takes the version
in it as its own (no process is replaced there), and a package with ``"healthy": false``
plays a new agent that never connects. The hook's detached worker is the real one: it waits
for the agent's confirmation until the health gate's deadline, and rolls back without it.
Operations is a plain MQTT client; every step arrives on the command result topic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import __version__
from agent.protocol.signing import public_key_text
from tests.agentproc import AgentProcess
from tests.broker import Broker
from tests.integration.test_remote import RESULT, Ops, agent_config
from tests.upgrade_rig import Files, http_server, package_entry, signed_manifest

pytestmark = pytest.mark.broker

KEY = Ed25519PrivateKey.generate()


def sim_package(version: str, *, healthy: bool = True) -> bytes:
    body = {"package": "titik-agent", "version": version, "healthy": healthy}
    return (json.dumps(body) + "\n").encode() + b"#" * 200_000  # big enough to show progress


@pytest.fixture
def ops(broker: Broker) -> Iterator[Ops]:
    o = Ops(broker, KEY)
    yield o
    o.close()


@pytest.fixture
def agent(broker: Broker, tmp_path: Path, ops: Ops) -> Iterator[AgentProcess]:
    trusted = public_key_text(KEY.public_key())
    proc = AgentProcess(
        agent_config(tmp_path, broker, f'[security]\ntrusted_keys = ["{trusted}"]\n')
    )
    ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"])
    yield proc
    proc.stop()


def steps_until(ops: Ops, cid: str, last: set[str], timeout: float = 60) -> list[dict[str, Any]]:
    """Every result of command ``cid`` until one whose step is in ``last``."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        msg = ops.sub.next(
            lambda m: m.topic == RESULT and m.json().get("id") == cid,
            max(0.1, deadline - time.monotonic()),
        )
        body = msg.json()
        out.append(body)
        step = body.get("step") or (body.get("result") or {}).get("step")
        if step in last or (not body["ok"] and "step" not in body):
            return out


def step_names(results: list[dict[str, Any]]) -> list[str]:
    return [r.get("step") or (r.get("result") or {}).get("step") for r in results]


def upgrade(ops: Ops, cid: str, manifest: dict[str, Any], timeout_s: float = 12) -> None:
    body = {
        "id": cid,
        "name": "upgrade",
        "args": {"manifest": manifest, "health_timeout_s": timeout_s},
        "expires_at": time.time() + 600,
    }
    ops.send("titik/gw/gw-test01/cmd", body)


def installed(tmp_path: Path) -> dict[str, Any] | None:
    path = tmp_path / "root/var/lib/titik-sim/agent.pkg"
    return json.loads(path.read_text().splitlines()[0]) if path.exists() else None


def test_upgrade_reports_every_step_and_confirms(
    agent: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    blob = sim_package("0.2.0")
    files = Files(blobs={"/titik-agent_0.2.0.sim": blob})
    with http_server(files) as base:
        manifest = signed_manifest(
            KEY, "0.2.0", [package_entry(f"{base}/titik-agent_0.2.0.sim", blob)], __version__
        )
        upgrade(ops, "up-1", manifest)
        results = steps_until(ops, "up-1", {"confirmed", "rolled_back", "failed"})
    names = step_names(results)
    assert names[0] == "verified", results
    assert results[0]["result"]["from"] == __version__
    assert "downloading" in names
    assert names[names.index("downloading") :] == [
        *["downloading"] * names.count("downloading"),
        "downloaded",
        "preflight",
        "installing",
        "installed",
        "confirmed",
    ], results
    assert all(r["ok"] for r in results), results
    pct = [r["result"]["pct"] for r in results if r.get("step") == "downloading"]
    assert pct == sorted(pct) and pct[-1] == 100
    assert installed(tmp_path) == {"package": "titik-agent", "version": "0.2.0", "healthy": True}
    state = tmp_path / "state/upgrade"
    assert json.loads((state / "journal.json").read_text())["phase"] == "confirmed"
    assert (state / "current.sim").exists()  # the next upgrade's way back
    # The same release again: refused as already running, nothing fetched.
    with http_server(files) as base:
        res = ops.command("upgrade", {"manifest": manifest})
    assert not res["ok"]
    assert "0.2.0 is running already" in res["error"]


def test_a_new_agent_that_never_reports_healthy_is_rolled_back(
    agent: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    blob = sim_package("0.3.0", healthy=False)
    files = Files(blobs={"/bad.sim": blob})
    with http_server(files) as base:
        manifest = signed_manifest(KEY, "0.3.0", [package_entry(f"{base}/bad.sim", blob)])
        upgrade(ops, "up-bad", manifest, timeout_s=10)
        results = steps_until(ops, "up-bad", {"confirmed", "rolled_back", "failed"})
    names = step_names(results)
    assert names[-2:] == ["installed", "rolled_back"], results
    last = results[-1]
    assert not last["ok"]
    assert "health gate" in last["error"], last
    assert f"rolled back to {__version__}" in last["error"], last
    assert f"running {__version__}" in last["error"], last
    assert installed(tmp_path) == {
        "package": "titik-agent",
        "version": __version__,
        "healthy": True,
    }


def test_a_failing_install_is_rolled_back_at_once(
    agent: AgentProcess, ops: Ops, tmp_path: Path
) -> None:
    (tmp_path / "root/etc/titik-sim").mkdir(parents=True)
    (tmp_path / "root/etc/titik-sim/fail-install").touch()
    blob = sim_package("0.2.0")
    files = Files(blobs={"/p.sim": blob})
    with http_server(files) as base:
        manifest = signed_manifest(KEY, "0.2.0", [package_entry(f"{base}/p.sim", blob)])
        upgrade(ops, "up-fail", manifest, timeout_s=600)
        results = steps_until(ops, "up-fail", {"confirmed", "rolled_back", "failed"}, 30)
    assert results[-1]["step"] == "rolled_back", results
    assert "install failed: simulated failure" in results[-1]["error"]


def test_refusals_come_before_any_fetch(agent: AgentProcess, ops: Ops, tmp_path: Path) -> None:
    blob = sim_package("0.2.0")
    files = Files(blobs={"/p.sim": blob})
    with http_server(files) as base:
        entry = package_entry(f"{base}/p.sim", blob)
        forged = signed_manifest(Ed25519PrivateKey.generate(), "0.2.0", [entry])
        res = ops.command("upgrade", {"manifest": forged})
        assert not res["ok"] and "not trusted" in res["error"]
        older = signed_manifest(KEY, "0.0.9", [entry], "0.0.1")
        res = ops.command("upgrade", {"manifest": older})
        assert not res["ok"] and "downgrades are refused" in res["error"]
        floor = signed_manifest(KEY, "0.9.0", [entry], "0.5.0")
        res = ops.command("upgrade", {"manifest": floor})
        assert not res["ok"] and "upgrades from 0.5.0 or later" in res["error"]
        other = signed_manifest(
            KEY, "0.9.0", [package_entry(f"{base}/p.deb", blob, "deb", "arm64")]
        )
        res = ops.command("upgrade", {"manifest": other})
        assert not res["ok"] and "no package for sim/all" in res["error"]
        out = ops.command(
            "upgrade",
            {
                "manifest": signed_manifest(KEY, "0.9.0", [entry]),
                "rollout": {"id": "r", "percent": 0},
            },
        )
        assert out["ok"] and out["result"]["step"] == "skipped"
    assert files.requests == []  # nothing was fetched for any of them
    assert installed(tmp_path) is None
