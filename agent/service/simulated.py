"""The simulated platform's service report: plausible figures that follow the site's day,
without I/O, so demos and titik-sim carry it (agent/platforms/simulated.py).

A healthy simulated AP loses at most a few points (a busy hour's channel, a few weak
stations). ``SimHost.service_fault`` gives it one of the faults titik-sim plants for the
dashboard to find (issue 20, point 9), each strong enough to rank it below every healthy AP:

- ``busy_channel``: the first radio's channel 90-98 % busy, retries 30-45 % (``channel_busy``,
  ``retries``);
- ``dhcp_exhausted``: the DHCP pool is out of addresses: dnsmasq refuses 10-40 requests an
  interval and acknowledges none (``dhcp_pool_exhausted``);
- ``dead_portal``: the captive portal does not answer: the portal check says ``broken``
  (``portal_broken``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

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

#: The faults a simulated AP can be given (``SimulatedPlatform.service_fault``).
FAULTS: Final = ("busy_channel", "dhcp_exhausted", "dead_portal")


def simulate(sim: SimHost, ctx: Context, interval: int) -> ServiceReport:
    r = sim.rng
    fault = sim.service_fault
    busy = sim.busy(ctx.wall)
    radios = {}
    for i, (iface, base) in enumerate(radio.simulate(sim, ctx).items()):
        chan = base.channel or 1
        nbr = {str(chan): (r.randint(0, 6), -r.randint(45, 85))}
        radios[iface] = RadioReport(**base.model_dump(), nbr=nbr)
        if fault == "busy_channel" and i == 0:
            radios[iface].busy_pct = round(r.uniform(90, 98), 1)
    ssids = {}
    for i, iface in enumerate(sim.radios[:2]):
        n = max(0, round(sim.capacity * busy * r.uniform(0.3, 0.6)))
        # Most stations near the AP: a healthy site has few below -70 dBm.
        signals = [-min(92, max(35, round(r.triangular(38, 84, 55)))) for _ in range(n)]
        saturated = fault == "busy_channel" and i == 0
        retry = r.uniform(30, 45) if saturated else r.uniform(1, 6 + 10 * busy)
        ssids[iface] = SsidQuality(
            sta=n,
            rssi=rssi_histogram(signals),
            tx_mbps=round(r.uniform(20, 300), 1) if n else None,
            rx_mbps=round(r.uniform(10, 200), 1) if n else None,
            retry_pct=round(retry, 1) if n else None,
            fail_pct=round(r.uniform(0, 2), 1) if n else None,
            ev=(r.randint(0, n + 2), r.randint(0, n + 2), r.randint(0, 1)),
        )
    dhcp = (
        DhcpEvents(ack=0, nak=0, no_address=r.randint(10, 40))
        if fault == "dhcp_exhausted"
        else DhcpEvents(ack=r.randint(0, 20), nak=0, no_address=0)
    )
    dead = fault == "dead_portal"
    return ServiceReport(
        ts=round(ctx.wall, 3),
        interval_s=interval,
        radios=radios,
        ssids=ssids,
        dhcp=dhcp,
        probes=Probes(
            dns="ok",
            dns_ms=round(r.uniform(1, 30), 1),
            portal="broken" if dead else "open",
            portal_ms=round(r.uniform(1500, 2000) if dead else r.uniform(20, 120), 1),
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
