"""Roots for the OpenWrt package tests: a cached Debian 13 root with python3, copied by overlayfs.

No OpenWrt image runs here, so maintainer scripts run chrooted into a Debian 13 (trixie) minbase
root, made once by tests/packaging/test_chroot.py's cached_root and extended here, once, with
python3 (3.13, as on OpenWrt 25.12: postinst byte-compiles with it), python3-psutil and
python3-cryptography (the split test's stand-ins for the feed's packages) and busybox (OpenWrt's
shell and applets). It is cached as $TITIK_TEST_ROOTS/trixie-python3. Each test gets a copy-on-write
overlay of it, made to look like OpenWrt where the package touches it: the directories base-files
ships, /etc/rc.common (a stand-in: tests/packaging/standins/rc.common), and /bin/sh as busybox's
ash or dash.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.test_chroot import CACHE, READY, _run, cached_root

STANDINS = Path(__file__).with_name("standins")
PYTHON_ROOT = "trixie-python3"
PYTHON_PACKAGES = ["python3", "python3-psutil", "python3-cryptography", "busybox"]
# Directories OpenWrt's base-files (and netifd, procd) ship, which the package puts files in.
OPENWRT_DIRS = [
    "etc/config",
    "etc/init.d",
    "etc/rc.d",
    "etc/hotplug.d/iface",
    "lib/upgrade/keep.d",
    "usr/bin",
    "usr/libexec",
    "var/etc",  # RAM; services render their configuration there (titik: /var/etc/titik)
    "var/log",
]


def python_root() -> Path:
    """The cached trixie root with PYTHON_PACKAGES installed; made on first use."""
    root = CACHE / PYTHON_ROOT
    if (root / READY).exists():
        return root
    base = cached_root("trixie")
    tmp = CACHE / f"{PYTHON_ROOT}.tmp"
    if tmp.exists():
        subprocess.run(["umount", str(tmp / "proc")], check=False, capture_output=True)
        shutil.rmtree(tmp)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(tmp)], check=True)
    (tmp / READY).unlink()
    shutil.copy("/etc/resolv.conf", tmp / "etc/resolv.conf")
    subprocess.run(["mount", "-t", "proc", "proc", str(tmp / "proc")], check=True)
    try:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C",
        }
        res = _run(["chroot", str(tmp), "apt-get", "update", "-qq"], timeout=300, env=env)
        if res.returncode != 0:
            pytest.skip(f"apt-get update in trixie failed (network?): {res.stderr[-500:]}")
        res = _run(
            [
                "chroot",
                str(tmp),
                "apt-get",
                "install",
                "-y",
                "-qq",
                "--no-install-recommends",
                *PYTHON_PACKAGES,
            ],
            timeout=900,
            env=env,
        )
        if res.returncode != 0:
            pytest.skip(f"apt-get install {PYTHON_PACKAGES} in trixie failed: {res.stderr[-800:]}")
        subprocess.run(["chroot", str(tmp), "apt-get", "clean"], check=False, env=env)
    finally:
        subprocess.run(["umount", str(tmp / "proc")], check=False)
    (tmp / READY).touch()
    tmp.rename(root)
    return root


@contextlib.contextmanager
def overlay(lower: Path, where: Path) -> Iterator[Path]:
    """A writable copy-on-write view of `lower` at where/root, unmounted afterwards."""
    upper, work, merged = where / "upper", where / "work", where / "root"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ],
        check=True,
    )
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=False)


@contextlib.contextmanager
def openwrt_root(tmp_path: Path, shell: str) -> Iterator[Path]:
    """An overlay of the python root, with OpenWrt's directories, rc.common and /bin/sh = shell."""
    if os.geteuid() != 0:
        pytest.skip("chroot and overlay mounts need root")
    lower = python_root()
    with overlay(lower, tmp_path / "ovl") as root:
        for d in OPENWRT_DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy(STANDINS / "rc.common", root / "etc/rc.common")
        (root / "etc/rc.common").chmod(0o755)
        sh = root / "usr/bin/sh"
        sh.unlink()
        sh.symlink_to({"busybox sh": "busybox", "dash": "dash"}[shell])
        yield root


def snapshot(root: Path, ignore: tuple[str, ...] = ()) -> set[str]:
    """Every path under root (relative), for before/after comparisons."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        if rel.split(os.sep)[0] in {"proc", "sys", "dev"}:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = os.path.normpath(os.path.join(rel, name))
            if not path.startswith(ignore):
                out.add(path)
    return out
