"""Platform dispatch: detect the firmware family once, at start (config may override)."""

from __future__ import annotations

import importlib
from pathlib import Path

from agent.platforms.base import Platform
from agent.runner import CommandRunner, run_command

# Only the platform in use is imported: every module costs RAM on a 128 MB router.
CLASSES = {
    "linux": ("agent.platforms.linux", "LinuxPlatform"),
    "openwrt": ("agent.platforms.openwrt", "OpenWrtPlatform"),
    "raspberrypi": ("agent.platforms.raspberrypi", "RaspberryPiPlatform"),
    "simulated": ("agent.platforms.simulated", "SimulatedPlatform"),
}

__all__ = ["Platform", "detect", "make_platform"]


def detect(root: Path = Path("/")) -> str:
    """``openwrt`` if /etc/openwrt_release exists, ``raspberrypi`` if the device tree names a
    Raspberry Pi, else ``linux``. ``simulated`` is only ever chosen by config."""
    if (root / "etc/openwrt_release").exists():
        return "openwrt"
    try:
        model = (root / "proc/device-tree/model").read_bytes()
    except OSError:
        model = b""
    if b"Raspberry Pi" in model:
        return "raspberrypi"
    return "linux"


def make_platform(
    kind: str,
    root: Path = Path("/"),
    *,
    runner: CommandRunner = run_command,
    interfaces: list[str] | None = None,
    seed: int | str = 0,
) -> Platform:
    if kind == "auto":
        kind = detect(root)
    if kind not in CLASSES:
        raise ValueError(f"platform.kind: unknown platform {kind!r}")
    module, name = CLASSES[kind]
    cls = getattr(importlib.import_module(module), name)
    if kind == "simulated":
        platform: Platform = cls(seed)
    else:
        platform = cls(root, runner, interfaces)
    return platform
