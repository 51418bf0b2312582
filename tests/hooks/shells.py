"""The two real shells every shell test runs under, and the userland each one gets.

OpenWrt's /bin/sh is BusyBox ash with BusyBox's applets; Debian's is dash with GNU tools. A
test runs a script under ``Shell.path`` with ``Shell.path_dirs`` first on PATH: for BusyBox,
every applet as a symlink (so sed, awk, grep, mktemp are BusyBox's), and for both, a
``python3`` that is this interpreter itself, for the uci stand-in (tests/hooks/bin/uci).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SHELLS = ("busybox", "dash")


@dataclass(frozen=True)
class Shell:
    name: str  # "busybox" or "dash"
    path: str  # what a script runs with: [path, script, args...]
    path_dirs: tuple[str, ...]  # put on PATH before this machine's own


def python_dir(d: Path) -> Path:
    """A `python3` for the uci stand-in: this interpreter, without any wrapper (pyenv shims
    cost more start-up time than the stand-in itself)."""
    (d / "python3").symlink_to(os.path.realpath(sys.executable))
    return d


def busybox_dir(d: Path) -> Path:
    """Every BusyBox applet as a symlink in d, so a script runs with OpenWrt's userland."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (Debian package: busybox)")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        if "/" not in applet:
            (d / applet).symlink_to(busybox)
    return d


def make_shell(name: str, python: Path, busybox: Path | None) -> Shell:
    if name == "busybox":
        assert busybox is not None
        return Shell(name, str(busybox / "sh"), (str(python), str(busybox)))
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash is not installed (Debian package: dash)")
    return Shell(name, dash, (str(python),))
