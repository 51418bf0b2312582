"""The .deb: lintian, layout, conffiles and vendored wheels (without installing it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # the session builds every package first

MACHINES = {"amd64": "x86_64", "arm64": "aarch64", "armhf": "armv7l"}
TRIPLES = {
    "amd64": "x86_64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "armhf": "arm-linux-gnueabihf",
}


def dpkg_deb(*args: str) -> str:
    return subprocess.run(["dpkg-deb", *args], capture_output=True, text=True, check=True).stdout


def test_lintian_reports_no_errors(debs: list[Path]) -> None:
    if not shutil.which("lintian"):
        pytest.fail("lintian not installed: run scripts/setup --dev")
    res = subprocess.run(
        ["lintian", "--fail-on", "error", *map(str, debs)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    errors = [line for line in res.stdout.splitlines() if line.startswith("E:")]
    assert not errors, "\n".join(errors)
    assert res.returncode == 0, res.stdout + res.stderr


def test_layout_and_conffiles(debs: list[Path], tmp_path: Path) -> None:
    for deb in debs:
        arch = deb.name.removesuffix(".deb").split("_")[2]
        assert dpkg_deb("-f", str(deb), "Architecture").strip() == arch
        names = [line.split()[-1] for line in dpkg_deb("-c", str(deb)).splitlines()]
        assert "./usr/bin/titik-agent" in names
        assert "./usr/lib/titik/agent/cli.py" in names
        assert "./usr/lib/systemd/system/titik-agent.service" in names
        assert "./etc/NetworkManager/dispatcher.d/90-titik-agent" in names
        assert not [n for n in names if "-packages/" in n or "__pycache__" in n]
        ctl = tmp_path / arch
        subprocess.run(["dpkg-deb", "-e", str(deb), str(ctl)], check=True)
        conffiles = (ctl / "conffiles").read_text().split()
        assert "/etc/titik/agent.toml" in conffiles
        assert "/etc/default/titik-agent" in conffiles
        etc = {n[1:] for n in names if n.startswith("./etc/") and not n.endswith("/")}
        assert etc <= set(conffiles), etc - set(conffiles)


def test_vendored_wheels_match_the_arch(debs: list[Path], tmp_path: Path) -> None:
    for deb in debs:
        arch = deb.name.removesuffix(".deb").split("_")[2]
        root = tmp_path / arch
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        vendor = root / "usr/lib/titik/vendor"
        wheels = (vendor / "wheels.txt").read_text().split()
        tags = ["-".join(w.removesuffix(".whl").split("-")[2:]) for w in wheels]
        binary = sorted(t for t in tags if t != "py3-none-any")
        # Debian 12 (Python 3.11) and 13 (3.13) share one package.
        assert [t.split("-")[0] for t in binary] == ["cp311", "cp313"], binary
        for tag in binary:
            assert "manylinux" in tag
            assert tag.endswith("_" + MACHINES[arch]), tag
        sos = sorted(p.name for p in vendor.rglob("*.so"))
        assert len(sos) == 2
        assert all(TRIPLES[arch] in so for so in sos), sos
