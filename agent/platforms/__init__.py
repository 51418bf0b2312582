"""Platform dispatch: detect the firmware family once, at start (config may override)."""

from __future__ import annotations

from pathlib import Path

from agent.platforms.base import Platform
from agent.platforms.linux import LinuxPlatform
from agent.platforms.openwrt import OpenWrtPlatform
from agent.platforms.raspberrypi import RaspberryPiPlatform
from agent.platforms.simulated import SimulatedPlatform
from agent.runner import CommandRunner, run_command

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
    if kind == "simulated":
        return SimulatedPlatform(seed)
    cls = {"openwrt": OpenWrtPlatform, "raspberrypi": RaspberryPiPlatform, "linux": LinuxPlatform}
    if kind not in cls:
        raise ValueError(f"platform.kind: unknown platform {kind!r}")
    return cls[kind](root, runner, interfaces)
