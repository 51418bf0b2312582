"""simulated/wifi and simulated/hotspot: the demo's state files, and what every hook shares
(snapshots replaced whole, a half-replaced snapshot, running through the shebang)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.remote.hooks import HookError, HookRunner, flatten
from tests.unit.firmware_hooks.harness import (
    HOOK_SECTIONS,
    HOTSPOT,
    WIFI_FULL,
    Gateway,
    dump_wifi,
    wifi,
)


@pytest.mark.parametrize("section", HOOK_SECTIONS)
def test_simulated_keeps_a_state_file(sim: Gateway, section: str) -> None:
    runner = sim.runner()
    data = dump_wifi(WIFI_FULL) if section == "wifi" else HOTSPOT
    state = sim.root / f"var/lib/titik-sim/{section}.json"
    runner.validate(section, data)
    runner.snapshot(section)
    assert runner.apply(section, data) is True
    assert state.read_bytes() == flatten(data)
    assert json.loads(state.read_bytes())  # still JSON
    assert runner.apply(section, data) is False
    runner.restore(section)
    assert not state.exists()  # there was none at the snapshot
    events = (sim.root / "var/lib/titik-sim/events.log").read_text().splitlines()
    assert events == [f"{section} apply changed", f"{section} restore reloaded"]


@pytest.mark.parametrize("action", ["validate", "snapshot", "apply", "restore"])
def test_simulated_failure_markers(sim: Gateway, action: str) -> None:
    marker = sim.root / "etc/titik-sim" / f"fail-{action}"
    marker.parent.mkdir(parents=True)
    marker.touch()
    res = sim.raw("wifi", action, stdin=flatten(wifi(public={"ssid": "x"})))
    assert res.returncode == 1
    assert res.stdout == b'{"ok":false,"error":"simulated failure"}\n'
    runner = sim.runner()
    with pytest.raises(HookError, match=rf"^wifi {action}: simulated failure$"):
        getattr(runner, action)("wifi", *([{}] if action in ("validate", "apply") else []))
    assert not (sim.root / "var/lib/titik-sim/wifi.json").exists()


def test_a_new_snapshot_replaces_the_old_one(sim: Gateway) -> None:
    runner = sim.runner()
    state = sim.root / "var/lib/titik-sim/hotspot.json"
    runner.apply("hotspot", {"enabled": True})
    runner.snapshot("hotspot")
    runner.apply("hotspot", {"enabled": False})
    runner.snapshot("hotspot")
    runner.apply("hotspot", {"enabled": True, "upload_kbps": 64})
    runner.restore("hotspot")
    assert state.read_bytes() == flatten({"enabled": False})
    assert sorted(p.name for p in sim.snapshots.iterdir()) == ["hotspot"]


def test_restore_falls_back_to_a_snapshot_left_by_an_interrupted_replacement(sim: Gateway) -> None:
    runner = sim.runner()
    runner.apply("wifi", {"a": 1})
    runner.snapshot("wifi")
    # as if power failed between snap_commit's two renames
    (sim.snapshots / "wifi").rename(sim.snapshots / "wifi.old")
    runner.apply("wifi", {"a": 2})
    runner.restore("wifi")
    assert (sim.root / "var/lib/titik-sim/wifi.json").read_bytes() == flatten({"a": 1})


def test_hooks_run_directly_through_their_shebang(tmp_path: Path) -> None:
    runner = HookRunner(None, "simulated", root=tmp_path, snapshot_dir=tmp_path / "snap")
    assert runner.apply("hotspot", HOTSPOT) is True
