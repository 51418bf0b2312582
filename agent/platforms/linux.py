"""Any Linux: /proc and /sys under ``root``, tools through ``runner``; clients from ``iw``
then ``hostapd_cli``. This is what collectors read through (:class:`agent.collectors.base.LinuxHost`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

from agent.collectors import dhcp, health, network, wifi
from agent.platforms.base import Platform
from agent.runner import CommandRunner, run_checked, run_command

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
#: Interfaces whose MAC names the box, best first; else the first physical-looking one.
PREFERRED_MAC_IFACES = ("br-lan", "eth0", "end0", "wan", "lan", "wlan0")


def normalise_mac(text: str) -> str | None:
    mac = text.strip().lower()
    if not MAC_RE.match(mac) or mac == "00:00:00:00:00:00":
        return None
    return mac.replace(":", "")


class LinuxPlatform(Platform):
    name = "linux"
    wifi_sources: ClassVar[tuple[str, ...]] = ("iw", "hostapd_cli")
    lease_files: ClassVar[tuple[str, ...]] = dhcp.DEFAULT_LEASE_FILES

    def __init__(
        self,
        root: Path = Path("/"),
        runner: CommandRunner = run_command,
        interfaces: list[str] | None = None,
    ) -> None:
        self.root = root
        self.runner = runner
        self.interfaces = interfaces or []
        # Built once: pathlib interns every part of a new Path (see agent.collectors.health).
        self._proc = root / "proc"
        self._route = str(root / "proc/net/route")
        self._net_class = root / "sys/class/net"
        self._net_class_s = str(self._net_class)

    # -- what differs between Linux flavours
    def disk_path(self) -> str:
        return str(self.root)

    def wifi_ifaces(self) -> list[str]:
        return wifi.list_wifi_ifaces(self._net_class)

    # -- identity
    def primary_mac(self) -> str | None:
        net = self._net_class
        try:
            names = sorted(p.name for p in net.iterdir())
        except OSError:
            return None
        ordered = [n for n in PREFERRED_MAC_IFACES if n in names] + [
            n for n in names if n != "lo" and n not in PREFERRED_MAC_IFACES
        ]
        for name in ordered:
            try:
                mac = normalise_mac((net / name / "address").read_text())
            except OSError:
                continue
            if mac:
                return mac
        return None

    def boot_id(self) -> str | None:
        return health.read_boot_id(self._proc)

    # -- actions
    def restart_wifi(self) -> dict[str, Any]:
        run_checked(self.runner, ["systemctl", "restart", "hostapd"], 30)
        return {"restarted": "hostapd"}

    def kick_client(self, mac: str, ban_s: int) -> dict[str, Any]:
        for iface in self.wifi_ifaces():
            res = self.runner(["hostapd_cli", "-i", iface, "deauthenticate", mac], 5)
            if res.returncode == 0 and "OK" in res.stdout:
                return {"kicked": True, "iface": iface}
        return {"kicked": False, "reason": "no such station on any access point"}

    def reboot(self) -> None:
        run_checked(self.runner, ["reboot"], 30)

    def diagnostics(self, targets: dict[str, str]) -> dict[str, Any]:
        from agent.platforms import diagnostics as d

        out: dict[str, Any] = {
            "ping": d.ping(self.runner, targets["ping"]),
            "dns": d.dns(targets["dns"]),
            "resolvers": d.read_resolvers(self.root),
            "default_route": network.read_default_route(self._route, {}),
            "radios": {},
        }
        if "http" in targets:
            out["http"] = d.http(targets["http"])
        radios = self.wifi_ifaces()
        link_up = network.read_link_up(self._net_class_s, radios)
        out["radios"] = {i: link_up.get(i) for i in radios}
        return out
