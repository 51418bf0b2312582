"""The upgrade hook (firmware_hooks/<platform>/upgrade, lib/upgrade.sh) under BusyBox ash and dash.

OpenWrt: opkg is a STAND-IN (tests/packaging/standins/opkg.py, which behaves as opkg-lede does,
its sources named there), called through a wrapper on PATH that gives it the test's root as
the device's /. The packages are hand-made .ipk files of a package named titik-agent (the real
.ipk is built and installed by tests/packaging/test_opkg.py). The hook's detached worker
runs for real: it installs, waits for ``confirmed`` until the deadline, and rolls back with
``opkg install --force-downgrade`` of the package it rebuilt from opkg's database.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.remote.hooks import HookError
from tests.broker import wait_until
from tests.packaging.pkgtools import make_ipk
from tests.unit.firmware_hooks.harness import REPO, Gateway

PKG = "titik-agent"


def opkg_wrapper(gw: Gateway) -> None:
    bin_dir = gw.tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    wrapper = bin_dir / "opkg"
    wrapper.write_text(
        "#!/bin/sh\n"
        "# opkg: a stand-in (tests/packaging/standins/opkg.py), with the test's root as /\n"
        f'cd "{REPO}" && exec "{sys.executable}" -m tests.packaging.standins.opkg '
        f'--live-root "{gw.root}" "$@"\n'
    )
    wrapper.chmod(0o755)
    gw.extra_env["PATH"] = f"{bin_dir}{os.pathsep}" + gw.env()["PATH"]
    gw.extra_env["TITIK_HOOK_SHELL"] = gw.shell.path


def status_version(root: Path) -> str | None:
    text = (root / "usr/lib/opkg/status").read_text()
    for stanza in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " "
        )
        if fields.get("Package") == PKG:
            return fields.get("Version")
    return None


@pytest.fixture
def openwrt(make_gateway: Callable[[str], Gateway]) -> Gateway:
    gw = make_gateway("openwrt")
    opkg_wrapper(gw)
    (gw.root / "etc").mkdir(parents=True, exist_ok=True)
    (gw.root / "etc/openwrt_release").write_text(
        "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='24.10.0'\nDISTRIB_ARCH='aarch64_cortex-a53'\n"
    )
    return gw


def ipk(gw: Gateway, version: str) -> Path:
    return make_ipk(
        gw.tmp / f"{PKG}_{version}.ipk",
        PKG,
        version,
        {"/usr/lib/titik/VERSION": f"{version}\n".encode(), f"/usr/lib/titik/only-{version}": b""},
        conffiles=(),
    )


def opkg_install(gw: Gateway, path: Path) -> None:
    import subprocess

    subprocess.run(["opkg", "install", str(path)], env=gw.env(), check=True, capture_output=True)


def test_probe_names_format_arch_and_the_installed_version(openwrt: Gateway) -> None:
    opkg_install(openwrt, ipk(openwrt, "0.1.0-1"))
    reply = openwrt.runner().call("upgrade", "probe", {"dir": str(openwrt.tmp / "up")})
    assert reply["format"] == "ipk"
    assert reply["arch"] == "aarch64_cortex-a53"
    assert reply["installed"] == "0.1.0-1"
    assert isinstance(reply["free_kb"], int)


def _install(gw: Gateway, new: Path, deadline_in: int) -> Path:
    up = gw.tmp / "up"
    gw.runner().call(
        "upgrade",
        "install",
        {
            "dir": str(up),
            "package": str(new),
            "version": "0.2.0",
            "from": "0.1.0",
            "deadline": int(time.time()) + deadline_in,
        },
    )
    return up


def test_opkg_upgrade_without_confirmation_is_rolled_back(openwrt: Gateway) -> None:
    opkg_install(openwrt, ipk(openwrt, "0.1.0-1"))
    up = _install(openwrt, ipk(openwrt, "0.2.0-1"), deadline_in=3)
    # The previous package was rebuilt from opkg's database before anything changed.
    assert (up / "previous.ipk").is_file()
    assert (up / "previous.ipk.version").read_text() == "0.1.0-1\n"
    wait_until(lambda: (up / "install.result").exists(), 30, "install.result")
    assert (up / "install.result").read_text() == "ok\n"
    wait_until(lambda: (up / "rollback.result").exists(), 30, "rollback.result")
    result = (up / "rollback.result").read_text()
    assert result.startswith("rolled back to 0.1.0-1: health gate"), result
    assert status_version(openwrt.root) == "0.1.0-1"
    assert (openwrt.root / "usr/lib/titik/VERSION").read_text() == "0.1.0-1\n"
    assert (openwrt.root / "usr/lib/titik/only-0.1.0-1").exists()
    assert not (openwrt.root / "usr/lib/titik/only-0.2.0-1").exists()  # opkg removed it


def test_opkg_upgrade_confirmed_stays(openwrt: Gateway) -> None:
    opkg_install(openwrt, ipk(openwrt, "0.1.0-1"))
    up = _install(openwrt, ipk(openwrt, "0.2.0-1"), deadline_in=4)
    wait_until(lambda: (up / "install.result").exists(), 30, "install.result")
    (up / "confirmed").write_text("0.2.0\n")  # what a healthy new agent writes
    wait_until(lambda: not (up / "worker.pid").exists(), 30, "the worker to end")
    assert not (up / "rollback.result").exists()
    assert status_version(openwrt.root) == "0.2.0-1"
    assert (openwrt.root / "usr/lib/titik/VERSION").read_text() == "0.2.0-1\n"


def test_an_older_package_is_refused_by_opkg_and_the_old_one_stays(openwrt: Gateway) -> None:
    opkg_install(openwrt, ipk(openwrt, "0.2.0-1"))
    up = _install(openwrt, ipk(openwrt, "0.1.5-1"), deadline_in=600)
    # The worker writes rollback.result first, then install.result (lib/upgrade.sh): both.
    wait_until(lambda: (up / "install.result").exists(), 30, "install.result")
    assert "Not downgrading package" in (up / "install.result").read_text()
    assert (up / "rollback.result").read_text().startswith("rolled back to 0.2.0-1 (still")
    assert status_version(openwrt.root) == "0.2.0-1"


def test_install_refuses_bad_input_and_no_package(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    with pytest.raises(HookError, match="invalid input: package: no such file"):
        runner.call(
            "upgrade",
            "install",
            {"dir": str(openwrt.tmp / "up"), "package": "/nope.ipk", "version": "1", "from": "0"},
        )
    new = ipk(openwrt, "0.2.0-1")
    with pytest.raises(HookError, match="cannot keep the running package"):
        _install(openwrt, new, 60)  # nothing installed: nothing to roll back to, so no upgrade


def test_simulated_hook_installs_and_rolls_back(make_gateway: Callable[[str], Gateway]) -> None:
    gw = make_gateway("simulated")
    gw.extra_env["TITIK_HOOK_SHELL"] = gw.shell.path
    new = gw.tmp / "new.sim"
    new.write_text(json.dumps({"package": PKG, "version": "0.2.0", "healthy": False}) + "\n")
    up = _install(gw, new, deadline_in=2)
    pkg = gw.root / "var/lib/titik-sim/agent.pkg"
    wait_until(lambda: (up / "rollback.result").exists(), 30, "rollback.result")
    assert (up / "rollback.result").read_text().startswith("rolled back to 0.1.0: health gate")
    assert json.loads(pkg.read_text())["version"] == "0.1.0"
    reply = gw.runner().call("upgrade", "probe", {"dir": str(up)})
    assert (reply["format"], reply["arch"], reply["installed"]) == ("sim", "all", "0.1.0")
