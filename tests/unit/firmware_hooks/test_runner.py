"""The agent's side of the hooks: flatten() and HookRunner (agent/remote/hooks.py)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pytest

from agent.remote.hooks import DEFAULT_HOOKS_DIR, HookError, HookRunner, flatten
from tests.unit.firmware_hooks.harness import HOOKS, wifi


def test_flatten_layout() -> None:
    section = {
        "radios": {"radio0": {"enabled": True, "channel": 6, "txpower": None, "rate": 1.5}},
        "ssids": {"public": {"ssid": 'Jakarta "Free" WiFi\\ ✓', "radios": ["radio0", "radio1"]}},
        "empty": {},
    }
    assert (
        flatten(section)
        == (
            "{\n"
            '"empty": null,\n'
            '"radios.radio0.channel": 6,\n'
            '"radios.radio0.enabled": true,\n'
            '"radios.radio0.rate": 1.5,\n'
            '"radios.radio0.txpower": null,\n'
            '"ssids.public.radios": "radio0 radio1",\n'
            '"ssids.public.ssid": "Jakarta \\"Free\\" WiFi\\\\ ✓"\n'
            "}\n"
        ).encode()
    )
    assert flatten({}) == b"{}\n"


@pytest.mark.parametrize(
    "bad",
    [
        {"ssid": "two\nlines"},
        {"ssid": "tab\there"},
        {"a.b": 1},
        {"a": {'q"': 1}},
        {"radios": ["radio 0"]},
        {"x": float("nan")},
        {"s": "\ud800"},
    ],
)
def test_flatten_refuses_what_would_break_the_layout(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any of the messages
        flatten(bad)


def test_flatten_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        flatten({"a": object()})


def test_default_hooks_dir_is_the_projects() -> None:
    assert DEFAULT_HOOKS_DIR == HOOKS
    runner = HookRunner(None, "openwrt", snapshot_dir=Path("/nonexistent"))
    assert runner.has("wifi")
    assert runner.has("hotspot")
    assert not runner.has("mqtt")
    assert not runner.has("../openwrt/wifi")
    assert not HookRunner(None, "linux", snapshot_dir=Path("/nonexistent")).has("wifi")


def test_missing_hook_is_a_hook_error(tmp_path: Path) -> None:
    runner = HookRunner(None, "linux", root=tmp_path, snapshot_dir=tmp_path)
    with pytest.raises(HookError, match=r"^wifi validate: no hook linux/wifi in "):
        runner.validate("wifi", {})


def stand_in_hook(tmp_path: Path, body: str) -> HookRunner:
    """A throwaway platform "test" whose wifi hook is ``body``."""
    hook = tmp_path / "hooks" / "test" / "wifi"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)
    return HookRunner(
        tmp_path / "hooks", "test", root=tmp_path, snapshot_dir=tmp_path / "snap", timeout_s=0.5
    )


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_runner_kills_a_hook_that_times_out_and_what_it_started(tmp_path: Path) -> None:
    runner = stand_in_hook(tmp_path, 'sleep 60 &\necho $! >"$TITIK_ROOT/child"\nwait\n')
    started = time.monotonic()
    with pytest.raises(HookError, match=r"^wifi apply: timed out after 0.5s; killed$") as err:
        runner.apply("wifi", {})
    assert time.monotonic() - started < 10
    assert err.value.exit_code is None
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while not process_gone(child):
        assert time.monotonic() < deadline, "the hook's child survived the timeout"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo hello\n", "exit 0, no valid JSON reply on stdout"),
        ("echo '{\"ok\":true}'; echo more\n", "exit 0, no valid JSON reply on stdout"),
        ("echo '[1]'\n", "exit 0, no valid JSON reply on stdout"),
        ('echo \'{"ok":"yes"}\'\n', "exit 0, no valid JSON reply on stdout"),
        ("exit 0\n", "exit 0, no valid JSON reply on stdout"),
        ("echo boom >&2; exit 127\n", "exit 127, no valid JSON reply on stdout (boom)"),
        ("echo '{\"ok\":true}'; exit 3\n", "exit 3 despite an ok reply"),
        ('echo \'{"ok":false,"error":"x: y"}\'\n', "x: y (exit 0)"),
        ("echo '{\"ok\":false}'; exit 1\n", "failed without saying why"),
        ('echo \'{"ok":false,"error":"x: y"}\'; exit 5\n', "x: y (exit 5)"),
        ('echo \'{"ok":false,"error":"stdin: bad"}\'; exit 2\n', "invalid input: stdin: bad"),
        ("printf '\\377\\376garbage'\n", "exit 0, no valid JSON reply on stdout"),
        ("kill -9 $$\n", "exit -9, no valid JSON reply on stdout"),
    ],
)
def test_runner_refuses_anything_but_a_proper_reply(tmp_path: Path, body: str, reason: str) -> None:
    runner = stand_in_hook(tmp_path, body)
    with pytest.raises(HookError) as err:
        runner.apply("wifi", {})
    assert err.value.reason == reason
    assert err.value.section == "wifi"
    assert err.value.action == "apply"


def test_runner_apply_without_changed_counts_as_changed(tmp_path: Path) -> None:
    assert stand_in_hook(tmp_path, "echo '{\"ok\":true}'\n").apply("wifi", {}) is True


def test_runner_never_shows_the_wifi_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = "hunter2-hunter2"
    body = (
        'key=$(sed -n \'s/^"ssids.public.key": "\\(.*\\)",*$/\\1/p\')\n'
        'echo "debug: got key $key" >&2\n'
        'printf \'{"ok":false,"error":"ssids.public.key: %s is weak"}\\n\' "$key"\n'
        "exit 1\n"
    )
    runner = stand_in_hook(tmp_path, body)
    data = wifi(public={"ssid": "x", "encryption": "psk2", "key": key})
    with (
        caplog.at_level(logging.DEBUG, logger="agent.remote.hooks"),
        pytest.raises(HookError) as err,
    ):
        runner.apply("wifi", data)
    assert err.value.reason == "ssids.public.key: *** is weak"
    assert "debug: got key ***" in caplog.text
    assert key not in caplog.text
    assert key not in str(err.value)


def test_runner_logs_stderr_of_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = stand_in_hook(tmp_path, "echo 'first' >&2; echo 'last words' >&2; exit 9\n")
    with caplog.at_level(logging.WARNING, logger="agent.remote.hooks"), pytest.raises(HookError):
        runner.validate("wifi", {})
    assert [r.getMessage() for r in caplog.records] == [
        "hook wifi validate: first",
        "hook wifi validate: last words",
    ]


def test_an_unusable_snapshot_dir_is_a_hook_error(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    runner = HookRunner(None, "simulated", root=tmp_path, snapshot_dir=tmp_path / "file" / "snap")
    with pytest.raises(HookError, match=r"^wifi snapshot: cannot create "):
        runner.snapshot("wifi")


def test_runner_takes_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = HookRunner(
        Path(os.path.relpath(HOOKS, tmp_path)),
        "simulated",
        root=Path("."),
        snapshot_dir=Path("snap"),
    )
    runner.snapshot("wifi")
    assert (tmp_path / "snap" / "wifi" / "state.json.absent").exists()
    assert runner.apply("wifi", {"a": 1}) is True
    assert (tmp_path / "var/lib/titik-sim/wifi.json").read_bytes() == b'{\n"a": 1\n}\n'
