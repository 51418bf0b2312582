"""Raspberry Pi OS: like any Linux, plus the board model from the device tree."""

from __future__ import annotations

from agent.platforms.linux import LinuxPlatform


class RaspberryPiPlatform(LinuxPlatform):
    name = "raspberrypi"

    def model(self) -> str | None:
        try:
            text = (self.root / "proc/device-tree/model").read_bytes()
        except OSError:
            return None
        return text.rstrip(b"\x00\n").decode(errors="replace") or None
