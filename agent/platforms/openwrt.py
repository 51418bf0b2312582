"""OpenWrt: clients from hostapd over ubus (``iwinfo`` as fallback); disk is the overlay."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

from agent.collectors import wifi
from agent.platforms.linux import LinuxPlatform
from agent.runner import CommandError, run_checked


class OpenWrtPlatform(LinuxPlatform):
    name = "openwrt"
    wifi_sources: ClassVar[tuple[str, ...]] = ("ubus", "iwinfo")
    lease_files: ClassVar[tuple[str, ...]] = ("/tmp/dhcp.leases",)

    def disk_path(self) -> str:
        # The writable overlay is what fills up; the squashfs root is always 100 %.
        overlay = self.root / "overlay"
        return str(overlay if os.path.ismount(overlay) else self.root)

    def wifi_ifaces(self) -> list[str]:
        # hostapd's ubus objects name exactly the AP interfaces (phy0-ap0 on 23.05+, wlan0 before).
        try:
            names = wifi.parse_ubus_hostapd_list(
                run_checked(self.runner, ["ubus", "list", "hostapd.*"])
            )
        except (CommandError, wifi.ParseError):
            names = []
        return names or super().wifi_ifaces()

    def restart_wifi(self) -> dict[str, Any]:
        run_checked(self.runner, ["wifi", "reload"], 60)
        return {"restarted": "wifi"}

    def kick_client(self, mac: str, ban_s: int) -> dict[str, Any]:
        body = json.dumps({"addr": mac, "reason": 5, "deauth": True, "ban_time": ban_s * 1000})
        for iface in self.wifi_ifaces():
            res = self.runner(["ubus", "call", f"hostapd.{iface}", "del_client", body], 5)
            if res.returncode == 0:
                return {"kicked": True, "iface": iface}
        return {"kicked": False, "reason": "no such station on any access point"}

    def model(self) -> str | None:
        try:
            text = (self.root / "tmp/sysinfo/model").read_text().strip()
        except OSError:
            return None
        return text or None

    def state_dir(self) -> Path:
        # /var is /tmp (RAM) on OpenWrt; state must live on flash, where keep.d preserves it.
        return Path("/etc/titik/state")
