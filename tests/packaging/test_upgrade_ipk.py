"""The upgrade hook's opkg path with the real .ipk, in an OpenWrt-like root.

opkg is the STAND-IN (tests/packaging/standins/opkg.py; it behaves as opkg-lede does, its
sources named there), with the root as the device's / (its --live-root: maintainer scripts run
chrooted into the root, /bin/sh there BusyBox ash or dash; procd is the stand-in rc.common that
logs start/stop). The hook (firmware_hooks/openwrt/upgrade) runs with TITIK_ROOT at the root.
It rebuilds the installed .ipk from opkg's database before the upgrade, and without the new
agent's confirmation reinstalls it with --force-downgrade at the deadline: the rebuilt package
must be one opkg reads, holding every file of the real one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.remote.hooks import HookRunner
from tests.broker import wait_until
from tests.packaging.conftest import Ipk
from tests.packaging.pkgtools import reversion_ipk
from tests.packaging.pysplit import Split
from tests.packaging.roots import openwrt_root, snapshot
from tests.packaging.test_opkg import IGNORE, SHELLS, ok, opkg, rc_log, status_with

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def device(request: pytest.FixtureRequest, tmp_path: Path, ipks: list[Ipk]) -> Iterator[Path]:
    shell: str = request.param
    ipk = next(i for i in ipks if i.arch == "x86_64")
    control = ipk.read("./control.tar.gz", "./control").decode()
    depends = next(line for line in control.splitlines() if line.startswith("Depends:"))
    closure = Split("openwrt-24.10").closure(d.strip() for d in depends[8:].split(","))
    with openwrt_root(tmp_path, shell) as root:
        status_with(root, *sorted(closure))
        (root / "etc/openwrt_release").write_text(
            "DISTRIB_ID='OpenWrt'\nDISTRIB_RELEASE='24.10.0'\nDISTRIB_ARCH='x86_64'\n"
        )
        yield root


def runner(device: Path, tmp_path: Path) -> HookRunner:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "opkg").write_text(
        "#!/bin/sh\n# opkg: the stand-in, with the device root as /\n"
        f'cd "{REPO}" && exec "{sys.executable}" -m tests.packaging.standins.opkg '
        f'--live-root "{device}" "$@"\n'
    )
    (bin_dir / "opkg").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return HookRunner(
        REPO / "firmware_hooks",
        "openwrt",
        root=device,
        snapshot_dir=tmp_path / "snap",
        timeout_s=120,
        env=env,
    )


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_real_ipk_upgrade_is_rolled_back_to_the_rebuilt_package(
    device: Path, ipks: list[Ipk], tmp_path: Path
) -> None:
    v1 = next(i for i in ipks if i.arch == "x86_64").path
    v2 = reversion_ipk(
        v1,
        tmp_path / "v2.ipk",
        "0.9.0-1",
        {"/usr/lib/titik/agent/__init__.py": b'__version__ = "0.9.0"\n'},
    )
    ok(opkg("--live-root", str(device), "install", str(v1)))
    installed_v1 = snapshot(device, IGNORE)
    hooks = runner(device, tmp_path)
    probe = hooks.call("upgrade", "probe", {"dir": str(tmp_path / "up")})
    assert (probe["format"], probe["arch"]) == ("ipk", "x86_64")
    v1_version = probe["installed"]
    up = tmp_path / "up"
    hooks.call(
        "upgrade",
        "install",
        {
            "dir": str(up),
            "package": str(v2),
            "version": "0.9.0",
            "from": "0.1.0",
            "deadline": int(time.time()) + 5,
        },
    )
    wait_until(lambda: (up / "install.result").exists(), 120, "install.result")
    assert (up / "install.result").read_text() == "ok\n", (up / "worker.log").read_text()
    assert b'"0.9.0"' in (device / "usr/lib/titik/agent/__init__.py").read_bytes()
    wait_until(lambda: (up / "rollback.result").exists(), 120, "rollback.result")
    result = (up / "rollback.result").read_text()
    assert result.startswith(f"rolled back to {v1_version}: health gate"), (
        result + (up / "worker.log").read_text()
    )
    status = (device / "usr/lib/opkg/status").read_text()
    assert f"Package: titik-agent\nVersion: {v1_version}\n" in status
    assert b'"0.9.0"' not in (device / "usr/lib/titik/agent/__init__.py").read_bytes()
    # Every file of the real package is back (byte code aside, which postinst rewrites).
    back = snapshot(device, IGNORE)
    missing = {p for p in installed_v1 - back if "__pycache__" not in p}
    assert missing == set()
    # The old prerm stopped the agent and the new postinst restarted it, on the upgrade and
    # again on the rollback (the rebuilt package kept its maintainer scripts).
    assert rc_log(device) == [
        "start titik",
        *["stop titik", "restart titik"] * 2,
    ], rc_log(device)
