"""Clients: connected Wi-Fi stations per access-point interface, and active DHCP leases.

The counting is :mod:`agent.collectors.wifi` (hostapd, iwinfo, iw) and
:mod:`agent.collectors.dhcp` (dnsmasq's lease file); this module takes the reading. Only
counts leave it: station MACs, lease addresses and host names never do.
"""

from __future__ import annotations

import math

from agent.collectors import dhcp, wifi
from agent.collectors.base import Collector, Context, LinuxHost, SimHost, recalled, remember
from agent.protocol import Clients
from agent.runner import CommandError


def collect(host: LinuxHost, ctx: Context) -> Clients:
    """Stations per AP interface from the platform's tools, tried in order; a radio that no
    tool can read costs only its own ``clients.<iface>`` error."""
    by_iface: dict[str, int] = {}
    ifaces = recalled(ctx, "wifi_ifaces")
    if ifaces is None:
        # Radios rarely change; scanning sysfs (or ubus) every sample costs more than the rest.
        try:
            ifaces = remember(ctx, "wifi_ifaces", host.wifi_ifaces())
        except OSError as exc:
            ctx.warn("clients.wifi", str(exc))
            ifaces = remember(ctx, "wifi_ifaces", [])
    for iface in ifaces:
        try:
            by_iface[iface] = wifi.count_clients(host.runner, iface, host.wifi_sources)
        except CommandError as exc:
            ctx.warn(f"clients.{iface}", str(exc))
    leases: int | None = None
    # Probe which lease files exist with the interfaces, not every sample: the probe is a
    # stat per candidate, and the files rarely come or go.
    lease_paths = recalled(ctx, "lease_paths")
    if lease_paths is None:
        candidates = ctx.memo.get("clients.lease_files")
        if candidates is None:
            root = host.root
            candidates = [root / p.lstrip("/") for p in host.lease_files]
            ctx.memo["clients.lease_files"] = candidates
        lease_paths = remember(ctx, "lease_paths", [p for p in candidates if p.exists()])
    try:
        leases = dhcp.count_leases(lease_paths, ctx.wall)
    except OSError as exc:
        ctx.warn("clients.leases", str(exc))
    return Clients(total=sum(by_iface.values()), by_iface=by_iface, leases=leases)


def simulate(sim: SimHost, ctx: Context) -> Clients:
    """A count around the site's daily curve, 60 % of it on the second (5 GHz) radio."""
    expected = sim.capacity * sim.busy(ctx.wall)
    total = max(0, round(sim.rng.gauss(expected, math.sqrt(expected) + 0.5)))
    on_5ghz = round(total * 0.6)
    radios = sim.radios
    by_iface = {radios[0]: total - on_5ghz, radios[1]: on_5ghz}
    return Clients(total=total, by_iface=by_iface, leases=total + sim.rng.randint(0, 3))


COLLECTOR = Collector("clients", {"linux": collect, "simulated": simulate})
