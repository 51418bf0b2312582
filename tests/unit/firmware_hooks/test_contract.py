"""The contract every firmware hook keeps (docs/firmware_hooks.md), on every platform."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.remote.hooks import HookError
from tests.unit.firmware_hooks.harness import HOOK_SECTIONS, HOOKS, PLATFORMS, Gateway


def hook_files() -> list[Path]:
    return sorted(p for p in HOOKS.glob("*/*") if p.is_file())


def test_every_platform_has_an_executable_posix_sh_hook_per_section() -> None:
    for platform in PLATFORMS:
        for section in HOOK_SECTIONS:
            hook = HOOKS / platform / section
            assert hook.is_file(), hook
            assert hook.stat().st_mode & stat.S_IXUSR, f"{hook} is not executable"
            assert hook.read_text().startswith("#!/bin/sh\n"), hook


def test_shellcheck_passes_on_every_hook_and_lib_file() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package: shellcheck)")
    files = [str(p) for p in hook_files()]
    assert any(f.endswith("lib/common.sh") for f in files)
    res = subprocess.run(
        ["shellcheck", "-s", "sh", *files], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("section", HOOK_SECTIONS)
def test_usage_and_malformed_input_exit_2_with_a_json_reply(
    make_gateway: Callable[[str], Gateway], platform: str, section: str
) -> None:
    gw = make_gateway(platform)
    for args, stdin, error in [
        (("reboot",), b"{}\n", "usage: unknown action"),
        ((), b"{}\n", "usage: "),
        (("validate",), b"", "stdin: "),
        (("validate",), b'{"radios": {"radio0": {}}}\n', "stdin: "),
        (("apply",), b'{\n"ssids.a.ssid": "x",\n\n}\n', "stdin: "),
    ]:
        res = gw.raw(section, *args, stdin=stdin)
        assert res.returncode == 2, (args, res)
        reply = json.loads(res.stdout)
        assert reply["ok"] is False
        assert reply["error"].startswith(error), reply
        assert res.stdout.count(b"\n") == 1


@pytest.mark.parametrize(
    ("platform", "section"), [(p, s) for p in PLATFORMS for s in HOOK_SECTIONS]
)
def test_restore_without_a_snapshot_fails(
    make_gateway: Callable[[str], Gateway], platform: str, section: str
) -> None:
    gw = make_gateway(platform)
    with pytest.raises(HookError) as err:
        gw.runner().restore(section)
    assert err.value.reason == "snapshot: no snapshot to restore"
    assert err.value.exit_code == 1
    assert str(err.value) == f"{section} restore: snapshot: no snapshot to restore"
    assert gw.calls() == []
