"""The simulated platform's service report: plausible figures that follow the site's day,
without I/O, so demos and titik-sim carry it (agent/platforms/simulated.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.collectors import radio
from agent.protocol.service import (
    CitizenPath,
    DhcpEvents,
    Probes,
    RadioReport,
    ServiceReport,
    SsidQuality,
)
from agent.service.stations import rssi_histogram

if TYPE_CHECKING:
    from agent.collectors.base import Context, SimHost


def simulate(sim: SimHost, ctx: Context, interval: int) -> ServiceReport:
    r = sim.rng
    busy = sim.busy(ctx.wall)
    radios = {}
    for iface, base in radio.simulate(sim, ctx).items():
        chan = base.channel or 1
        nbr = {str(chan): (r.randint(0, 6), -r.randint(45, 85))}
        radios[iface] = RadioReport(**base.model_dump(), nbr=nbr)
    ssids = {}
    for iface in sim.radios[:2]:
        n = max(0, round(sim.capacity * busy * r.uniform(0.3, 0.6)))
        signals = [-r.randint(40, 88) for _ in range(n)]
        ssids[iface] = SsidQuality(
            sta=n,
            rssi=rssi_histogram(signals),
            tx_mbps=round(r.uniform(20, 300), 1) if n else None,
            rx_mbps=round(r.uniform(10, 200), 1) if n else None,
            retry_pct=round(r.uniform(1, 12 + 20 * busy), 1) if n else None,
            fail_pct=round(r.uniform(0, 2), 1) if n else None,
            ev=(r.randint(0, n + 2), r.randint(0, n + 2), r.randint(0, 1)),
        )
    return ServiceReport(
        ts=round(ctx.wall, 3),
        interval_s=interval,
        radios=radios,
        ssids=ssids,
        dhcp=DhcpEvents(ack=r.randint(0, 20), nak=0, no_address=0),
        probes=Probes(
            dns="ok",
            dns_ms=round(r.uniform(1, 30), 1),
            portal="open",
            portal_ms=round(r.uniform(20, 120), 1),
            inet_ms=round(r.uniform(10, 60), 1),
            loss_pct=0.0,
            jitter_ms=round(r.uniform(0, 8), 1),
        ),
    )


def simulate_citizen_path(sim: SimHost) -> CitizenPath:
    """A walk that passes, with times like a dnsmasq that pings before it offers (~3 s)."""
    r = sim.rng
    ms = [r.uniform(2950, 3100), r.uniform(1, 30), r.uniform(20, 120), r.uniform(40, 250)]
    return CitizenPath(lease=True, ms=[round(m, 1) for m in ms], portal="open")
