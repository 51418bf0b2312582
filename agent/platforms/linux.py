"""Any Linux: psutil and /proc, /sys; clients from ``iw`` then ``hostapd_cli``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from agent.collectors import dhcp, health, network, wifi
from agent.platforms.base import Platform
from agent.protocol import Clients, Health, Net
from agent.runner import CommandError, CommandRunner, run_checked, run_command

if TYPE_CHECKING:
    from agent.collectors import Context

MAC_RE = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")
#: Interfaces whose MAC names the box, best first; else the first physical-looking one.
PREFERRED_MAC_IFACES = ("br-lan", "eth0", "end0", "wan", "lan", "wlan0")
#: How long what was discovered (AP interfaces, lease files, temperature sensors) is reused
#: before it is looked up again.
DISCOVERY_TTL_S = 300.0

T = TypeVar("T")


def recalled(ctx: Context, key: str) -> Any:
    """What :func:`remember` kept under ``key``, or None once it is DISCOVERY_TTL_S old."""
    expires, found = ctx.memo.get(key, (0.0, None))
    return found if ctx.mono < expires else None


def remember(ctx: Context, key: str, found: T) -> T:
    """Keep what a discovery ``found`` (radios, sensors, lease files) for DISCOVERY_TTL_S."""
    ctx.memo[key] = (ctx.mono + DISCOVERY_TTL_S, found)
    return found


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
        # Paths read every sample are built once and kept. pathlib interns every part of a
        # new Path; a part that dies with its Path ("route" of proc/net/route) is interned
        # again on the next sample, and that churn fills CPython's table of interned strings
        # until it is rebuilt at twice the size: +0.5 MiB of RSS after ~1,300 samples.
        # The files read every sample are kept as str, for files.read_file.
        self._sys = root / "sys"
        self._proc = root / "proc"
        self._uptime = str(root / "proc/uptime")
        self._meminfo = str(root / "proc/meminfo")
        self._route = str(root / "proc/net/route")
        self._net_dev = str(root / "proc/net/dev")
        self._net_class = root / "sys/class/net"
        self._net_class_s = str(self._net_class)
        self._lease_candidates = [root / p.lstrip("/") for p in self.lease_files]

    # -- what differs between Linux flavours
    def disk_path(self) -> str:
        return str(self.root)

    def wifi_ifaces(self) -> list[str]:
        return wifi.list_wifi_ifaces(self._net_class)

    # -- collectors
    def health(self, ctx: Context) -> Health:
        sensors = recalled(ctx, "sensors")
        if sensors is None:
            sensors = remember(ctx, "sensors", health.find_sensors(self._sys))
        sample, cur = health.read_health(
            self._meminfo, self._uptime, sensors, self.disk_path(), ctx.memo.get("cpu")
        )
        ctx.memo["cpu"] = cur
        return sample

    def network(self, ctx: Context) -> Net:
        counters = network.read_counters(self._net_dev, self.interfaces)
        prev, prev_mono = ctx.memo.get("net", ({}, ctx.mono))
        ctx.memo["net"] = (counters, ctx.mono)
        wan = network.read_default_route(self._route, ctx.memo)
        names = [*counters, wan] if wan and wan not in counters else counters
        link_up = network.read_link_up(self._net_class_s, names)
        return network.build_net(
            counters, link_up, prev, ctx.mono - prev_mono, wan, link_up.get(wan or "", False)
        )

    def clients(self, ctx: Context) -> Clients:
        by_iface: dict[str, int] = {}
        ifaces = recalled(ctx, "wifi_ifaces")
        if ifaces is None:
            # Radios rarely change; scanning sysfs (or ubus) every sample costs more than the rest.
            try:
                ifaces = remember(ctx, "wifi_ifaces", self.wifi_ifaces())
            except OSError as exc:
                ctx.warn("clients.wifi", str(exc))
                ifaces = remember(ctx, "wifi_ifaces", [])
        for iface in ifaces:
            try:
                by_iface[iface] = wifi.count_clients(self.runner, iface, self.wifi_sources)
            except CommandError as exc:
                ctx.warn(f"clients.{iface}", str(exc))
        leases: int | None = None
        # Probe which lease files exist with the interfaces, not every sample: the probe is a
        # stat per candidate, and the files rarely come or go.
        lease_paths = recalled(ctx, "lease_paths")
        if lease_paths is None:
            found = [path for path in self._lease_candidates if path.exists()]
            lease_paths = remember(ctx, "lease_paths", found)
        try:
            leases = dhcp.count_leases(lease_paths, ctx.wall)
        except OSError as exc:
            ctx.warn("clients.leases", str(exc))
        return Clients(total=sum(by_iface.values()), by_iface=by_iface, leases=leases)

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
        from agent.remote import diagnostics as d

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
