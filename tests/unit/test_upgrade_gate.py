"""The upgrade journal and health gate (agent/remote/upgrade.py) across restarts, in-process.

The Upgrader is driven directly, as an agent starting with a journal on flash would, with the
real simulated upgrade hook (firmware_hooks/simulated/upgrade, under /bin/sh) and a link that
is only two callables (connected, acknowledged count). Each test writes the files the worker
or an earlier agent left, as they would be after a restart.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.remote.hooks import HookRunner
from agent.remote.upgrade import Upgrader
from tests.broker import wait_until

SIM_PKG = "var/lib/titik-sim/agent.pkg"


class Link:
    def __init__(self) -> None:
        self.connected = False
        self.acked = 0


def upgrader(tmp_path: Path, link: Link) -> Upgrader:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    hooks = HookRunner(None, "simulated", root=root, snapshot_dir=tmp_path / "snap")
    return Upgrader(
        tmp_path / "state",
        hooks,
        device="gw-1",
        platform="simulated",
        verifier=None,
        connected=lambda: link.connected,
        acked=lambda: link.acked,
        sim_state=root / "var/lib/titik-sim",
    )


def journal(tmp_path: Path, **over: Any) -> Path:
    up = tmp_path / "state/upgrade"
    up.mkdir(parents=True, exist_ok=True)
    body = {
        "id": "up-1",
        "from": "0.1.0",
        "to": "0.2.0",
        "format": "sim",
        "phase": "installing",
        "deadline": time.time() + 600,
        "package": str(up / "titik-agent_0.2.0.sim"),
        **over,
    }
    (up / "journal.json").write_text(json.dumps(body))
    return up


def install_sim(tmp_path: Path, version: str, *, healthy: bool = True) -> None:
    pkg = tmp_path / "root" / SIM_PKG
    pkg.parent.mkdir(parents=True, exist_ok=True)
    pkg.write_text(json.dumps({"package": "titik-agent", "version": version, "healthy": healthy}))


def steps(u: Upgrader) -> list[tuple[str, bool]]:
    return [(r["step"], r["ok"]) for r in u.take_reports()]


def test_the_new_agent_confirms_after_a_sample_is_acknowledged(tmp_path: Path) -> None:
    up = journal(tmp_path)
    (up / "install.result").write_text("ok\n")
    (up / "titik-agent_0.2.0.sim").write_text("package")
    (up / "previous.sim").write_text("the old one")
    install_sim(tmp_path, "0.2.0")
    link = Link()
    u = upgrader(tmp_path, link)
    u.tick()
    assert steps(u) == [("installed", True)]
    link.connected = True
    u.tick()
    assert steps(u) == []  # connected, but nothing acknowledged yet: not healthy
    link.acked = 1
    u.tick()
    assert steps(u) == [("confirmed", True)]
    assert (up / "confirmed").read_text() == "0.2.0\n"
    assert (up / "current.sim").read_text() == "package"
    assert not (up / "previous.sim").exists()  # one package kept between upgrades
    assert json.loads((up / "journal.json").read_text())["phase"] == "confirmed"
    u.tick()
    assert steps(u) == []  # once


def test_after_a_reboot_in_the_gate_the_new_agent_rolls_back_by_itself(tmp_path: Path) -> None:
    """No worker survived the reboot: the agent past its deadline starts the rollback."""
    up = journal(tmp_path, phase="installed", deadline=time.time() - 1)
    (up / "install.result").write_text("ok\n")
    (up / "job.format").write_text("sim\n")
    (up / "previous.sim").write_text(
        json.dumps({"package": "titik-agent", "version": "0.1.0", "healthy": True}) + "\n"
    )
    (up / "previous.sim.version").write_text("0.1.0\n")
    install_sim(tmp_path, "0.2.0", healthy=False)  # a new agent that never gets through
    u = upgrader(tmp_path, Link())
    u.tick()  # starts the hook's rollback worker
    wait_until(lambda: (up / "rollback.result").exists(), 30, "rollback.result")
    u.tick()
    reports = u.take_reports()
    assert [(r["step"], r["ok"]) for r in reports] == [("rolled_back", False)]
    assert reports[0]["error"].startswith("rolled back to 0.1.0: health gate missed")
    assert u.running() == "0.1.0"


def test_the_old_agent_reports_a_rollback_the_worker_made(tmp_path: Path) -> None:
    up = journal(tmp_path)
    (up / "install.result").write_text("ok\n")
    (up / "rollback.result").write_text("rolled back to 0.1.0: health gate: no confirmation\n")
    u = upgrader(tmp_path, Link())
    u.tick()
    reports = u.take_reports()
    assert [r["id"] for r in reports] == ["up-1"]  # the command's id, from the journal
    assert reports[0]["step"] == "rolled_back"
    assert "running 0.1.0" in reports[0]["error"]
    assert json.loads((up / "journal.json").read_text())["phase"] == "rolled_back"


@pytest.mark.parametrize(
    "body",
    [
        b"\x00{not json",
        b"[1, 2]",
        b'{"id": "up-1", "phase": "installing", "from": "0.1.0", "to": "0.2.0", "format": "sim",'
        b' "deadline": "soon"}',
        b'{"id": "up-1", "phase": "installing", "deadline": 1e308}',
    ],
)
def test_a_damaged_journal_is_ignored_and_upgrades_stay_possible(
    tmp_path: Path, body: bytes
) -> None:
    up = tmp_path / "state/upgrade"
    up.mkdir(parents=True)
    (up / "journal.json").write_bytes(body)
    u = upgrader(tmp_path, Link())
    assert u.journal is None
    u.tick()
    assert u.take_reports() == []


def test_an_install_that_never_answers_ends_as_failed(tmp_path: Path) -> None:
    journal(tmp_path, deadline=time.time() - 120)
    u = upgrader(tmp_path, Link())
    u.tick()
    assert steps(u) == [("failed", False)]


def test_a_failed_install_waits_for_the_workers_rollback(tmp_path: Path) -> None:
    """The worker writes install.result then rolls back; while it lives, the agent waits for
    the rollback's result instead of reporting "failed" for a gateway that is back on its old
    version (a race CI once lost)."""
    up = journal(tmp_path)
    (up / "install.result").write_text("failed: simulated failure\n")
    worker = subprocess.Popen(["sleep", "60"])
    try:
        (up / "worker.pid").write_text(f"{worker.pid}\n")
        u = upgrader(tmp_path, Link())
        u.tick()
        assert steps(u) == []
        (up / "rollback.result").write_text("rolled back to 0.1.0: install failed: simulated\n")
        u.tick()
        assert steps(u) == [("rolled_back", False)]
    finally:
        worker.kill()
        worker.wait()


def test_a_failed_install_with_no_worker_left_is_reported_failed(tmp_path: Path) -> None:
    up = journal(tmp_path)
    (up / "install.result").write_text("failed: simulated failure\n")
    u = upgrader(tmp_path, Link())
    u.tick()
    assert steps(u) == [("failed", False)]


def test_a_gateway_rolled_back_in_a_rollout_does_not_try_that_release_again_in_it(
    tmp_path: Path,
) -> None:
    """A rollout's commands reach a gateway again and again (each spread step and wave raises
    the cohort, central/rollout/upgrade.py): one that rolled back from the release answers
    each with a refusal instead of failing its health gate again; another rollout may retry."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.protocol.signing import Verifier, public_key_text
    from agent.protocol.upgrade import UpgradeRefused
    from tests.upgrade_rig import package_entry, signed_manifest

    key = Ed25519PrivateKey.generate()
    u = upgrader(tmp_path, Link())
    u.verifier = Verifier([public_key_text(key.public_key())])
    install_sim(tmp_path, "0.1.0")
    journal(tmp_path, phase="rolled_back", rollout="city-0.2.0", to="0.2.0")
    u.journal = u._read_journal()
    blob = b'{"package": "titik-agent", "version": "0.2.0"}\n'
    manifest = signed_manifest(key, "0.2.0", [package_entry("http://127.0.0.1:9/p", blob)])
    args = {"manifest": manifest, "rollout": {"id": "city-0.2.0", "percent": 100}}
    with pytest.raises(UpgradeRefused, match=r"rolled back from 0\.2\.0 already"):
        u.start("up:city-0.2.0:2.1", args)
    other = {"manifest": manifest, "rollout": {"id": "city-0.2.0-again", "percent": 100}}
    assert u.start("up:city-0.2.0-again:1.1", other)["step"] == "verified"
