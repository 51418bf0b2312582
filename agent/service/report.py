"""The service-health report on its own schedule: :class:`ServiceReporter`.

Every ``service.interval_s`` (300 s), moved by up to ``service.jitter_s`` at random so that a
city's gateways neither probe nor publish together, the reporter reads each radio (the radio
collector's reading, so ``busy_pct`` covers the whole interval), its neighbours, each SSID's
client quality, the interval's hostapd and dnsmasq events, and runs the probes. Each part that
cannot be read costs its own key in ``errors`` and nothing else. The first report comes after
a random delay of up to ``jitter_s`` after the start.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.collectors import radio
from agent.collectors.base import Context, recalled, remember
from agent.collectors.files import read_file
from agent.collectors.wifi import ParseError
from agent.protocol.service import (
    CitizenPath,
    DhcpEvents,
    NeighbourId,
    Probes,
    RadioReport,
    ServiceReport,
    SsidQuality,
)
from agent.protocol.wire import RadioHealth
from agent.runner import CommandError, run_checked
from agent.service import events, neighbours, stations

if TYPE_CHECKING:
    from agent.service.citizen import CitizenResult
    from agent.service.probes import ProbeResult
    from agent.service_config import ServiceConfig

log = logging.getLogger("titik.service")

#: Pending broker round trips kept (a report whose PUBACK never comes is forgotten).
_MAX_PENDING = 4


class ServiceReporter:
    """One gateway's service reports. ``platform`` is the agent's (a LinuxHost, or a SimHost
    on the simulated platform); ``probe`` runs the probes (tests pass a stand-in)."""

    def __init__(
        self,
        cfg: ServiceConfig,
        platform: Any,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        probe: Callable[[ServiceConfig, random.Random], ProbeResult] | None = None,
        citizen: Callable[[ServiceConfig, random.Random, list[str]], CitizenResult] | None = None,
    ) -> None:
        self.cfg, self.platform = cfg, platform
        self.clock, self.wall = clock, wall
        self.rng = rng or random.Random()
        self._probe = probe
        self._citizen = citizen
        self._reports = 0  # made so far: the citizen path walks with every citizen_every-th
        self._memo: dict[str, Any] = {}
        self._stations: dict[str, dict[str, stations.Station]] = {}
        self._log_since = wall()
        self._started = wall()
        self._last_wall: float | None = None
        self._sent: dict[int, float] = {}
        self._broker_ms: float | None = None
        # The first within jitter_s of the start: a city's gateways starting together spread.
        self.next_at = clock() + self.rng.uniform(0, cfg.jitter_s)
        self._simulated = "simulated" in platform.kinds

    # -- schedule
    def due(self, now: float) -> bool:
        return now >= self.next_at

    def _schedule(self, now: float) -> None:
        j = self.cfg.jitter_s
        self.next_at = now + max(1.0, self.cfg.interval_s + self.rng.uniform(-j, j))

    # -- broker round trip (the previous report's PUBACK)
    def sent(self, mid: int | None) -> None:
        if mid is not None:
            if len(self._sent) >= _MAX_PENDING:
                self._sent.pop(next(iter(self._sent)))
            self._sent[mid] = self.clock()

    def acked(self, mid: int) -> None:
        at = self._sent.pop(mid, None)
        if at is not None:
            self._broker_ms = round((self.clock() - at) * 1000, 1)

    # -- the report
    def report(self) -> ServiceReport:
        """Take one report now, and schedule the next."""
        now, wall = self.clock(), self.wall()
        self._schedule(now)
        ctx = Context(wall=wall, mono=now, memo=self._memo)
        since = self._last_wall if self._last_wall is not None else self._started
        interval = max(0, round(wall - since))
        self._last_wall = wall
        if self._simulated:
            from agent.service.simulated import simulate, simulate_citizen_path

            rep = simulate(self.platform, ctx, interval)
            if self._citizen_due():
                rep = rep.model_copy(update={"citizen_path": simulate_citizen_path(self.platform)})
            return rep
        radios = self._radios(ctx)
        ssids = self._ssids(ctx, list(radios))
        dhcp = self._events(ctx, ssids)
        probes = self._probes(ctx)
        citizen = self._citizen_path(ctx)
        return ServiceReport(
            ts=round(wall, 3),
            interval_s=interval,
            radios=radios,
            ssids=ssids,
            dhcp=dhcp,
            probes=probes,
            citizen_path=citizen,
            errors=ctx.errors or None,
        )

    def _ifaces(self, ctx: Context) -> list[str]:
        ifaces = recalled(ctx, "wifi_ifaces")
        if ifaces is None:
            try:
                ifaces = remember(ctx, "wifi_ifaces", self.platform.wifi_ifaces())
            except OSError as exc:
                ctx.warn("service.wifi", str(exc))
                ifaces = remember(ctx, "wifi_ifaces", [])
        return list(ifaces)

    def _radios(self, ctx: Context) -> dict[str, RadioReport]:
        read = radio.COLLECTOR.for_platform(self.platform.kinds)
        try:
            found = read(self.platform, ctx) if read is not None else {}
        except (CommandError, OSError, ParseError) as exc:
            ctx.warn("radio", str(exc))
            found = {}
        out: dict[str, RadioReport] = {}
        for iface in self._ifaces(ctx):
            base = found.get(iface)
            fields = (
                base.model_dump() if base is not None else dict.fromkeys(RadioHealth.model_fields)
            )
            nbr, ids = self._neighbours(ctx, iface)
            out[iface] = RadioReport(**fields, nbr=nbr, nbr_ids=ids)
        return out

    def _own_bssids(self, ifaces: list[str]) -> set[str]:
        own = set()
        root = str(self.platform.root).rstrip("/")
        for iface in ifaces:
            try:
                own.add(read_file(f"{root}/sys/class/net/{iface}/address").decode().strip().lower())
            except OSError:
                continue
        return own

    def _neighbours(
        self, ctx: Context, iface: str
    ) -> tuple[dict[str, tuple[int, int]] | None, list[NeighbourId] | None]:
        try:
            text = run_checked(self.platform.runner, ["iw", "dev", iface, "scan", "dump"])
            seen = neighbours.parse_scan_dump(text)
        except (CommandError, ParseError) as exc:
            ctx.warn(f"neighbours.{iface}", str(exc))
            return None, None
        own = self._own_bssids(self._ifaces(ctx))
        ids = None
        if self.cfg.share_neighbour_ids:
            ids = [
                NeighbourId(
                    bssid=b.bssid,
                    ssid=(b.ssid or None) and b.ssid[:32],
                    channel=b.channel,
                    signal_dbm=b.signal_dbm,
                )
                for b in seen
                if b.bssid not in own and b.channel is not None and b.signal_dbm is not None
            ][:64]
        return neighbours.by_channel(seen, own), ids

    def _read_stations(self, iface: str) -> dict[str, stations.Station]:
        reasons = []
        for argv, parse in (
            (["iw", "dev", iface, "station", "dump"], stations.parse_station_dump),
            (["ubus", "call", f"hostapd.{iface}", "get_clients"], stations.parse_ubus_clients),
        ):
            try:
                return parse(run_checked(self.platform.runner, argv))
            except (CommandError, ParseError) as exc:
                reasons.append(str(exc))
        raise CommandError("; ".join(reasons))

    def _ssids(self, ctx: Context, ifaces: list[str]) -> dict[str, SsidQuality]:
        out = {}
        for iface in ifaces:
            try:
                now = self._read_stations(iface)
            except CommandError as exc:
                ctx.warn(f"stations.{iface}", str(exc))
                self._stations.pop(iface, None)
                continue
            q = stations.aggregate(now, self._stations.get(iface))
            self._stations[iface] = now
            out[iface] = SsidQuality(**q._asdict())
        return out

    def _log_source(self) -> str:
        logs = self.cfg.logs
        if logs == "auto":
            return "logread" if "openwrt" in self.platform.kinds else "journal"
        return logs

    def _events(self, ctx: Context, ssids: dict[str, SsidQuality]) -> DhcpEvents | None:
        source = self._log_source()
        if source == "off":
            return None
        since = self._log_since
        argv = events.logread_argv() if source == "logread" else events.journal_argv(since)
        try:
            text = run_checked(self.platform.runner, argv)
        except CommandError as exc:
            ctx.warn(f"events.{source}", str(exc))
            return None
        counts = events.parse_log(text, since, journal=source == "journal", ignore=self._own_macs())
        self._log_since = counts.newest
        for iface, q in list(ssids.items()):
            assoc, disassoc, auth_fail = counts.by_iface.get(iface, (0, 0, 0))
            ssids[iface] = q.model_copy(update={"ev": (assoc, disassoc, auth_fail)})
        return DhcpEvents(ack=counts.ack, nak=counts.nak, no_address=counts.no_address)

    def _probes(self, ctx: Context) -> Probes | None:
        result = None
        if self.cfg.probes:
            probe = self._probe
            if probe is None:
                from agent.service.probes import run_probes

                probe = run_probes
            try:
                result = probe(self.cfg, self.rng)
            except (OSError, ValueError) as exc:
                ctx.warn("probes", str(exc))
        if result is None:
            return Probes(broker_ms=self._broker_ms) if self._broker_ms is not None else None
        fields = result._asdict()
        log.debug("probes took %.0f ms", fields.pop("wall_ms") or 0.0)
        return Probes(**fields, broker_ms=self._broker_ms)

    def _own_macs(self) -> tuple[str, ...]:
        """The citizen path's hardware address as dnsmasq logs it, when the path is on: the
        DHCP events count citizens' leases, not the probe's."""
        if not self.cfg.citizen_path:
            return ()
        from agent.service.citizen import probe_mac

        root = str(self.platform.root).rstrip("/")
        return (probe_mac(self.cfg.citizen_interface, root).hex(":"),)

    def _citizen_due(self) -> bool:
        """Whether this report walks the path: with every ``citizen_every``-th, the first
        included, when ``citizen_path`` is on."""
        self._reports += 1
        return self.cfg.citizen_path and (self._reports - 1) % self.cfg.citizen_every == 0

    def _citizen_path(self, ctx: Context) -> CitizenPath | None:
        """A walk of the citizen path with every ``citizen_every``-th report (the first
        included), None otherwise. What went wrong on the AP itself (no such interface, port
        68 taken) goes to the log only: such a text could name an address."""
        cfg = self.cfg
        if not self._citizen_due():
            return None
        walk = self._citizen
        if walk is None:
            from agent.service.citizen import run_citizen_path

            walk = run_citizen_path
        notes: list[str] = []
        try:
            r = walk(cfg, self.rng, notes)
        except (OSError, ValueError) as exc:
            log.warning("citizen path: %s", exc)
            ctx.warn("citizen_path", type(exc).__name__)
            return None
        for note in notes:
            log.warning("citizen path on %s: %s", cfg.citizen_interface, note)
        log.debug("citizen path took %.0f ms", r.wall_ms)
        return CitizenPath(lease=r.lease, ms=r.ms, portal=r.portal, fail=r.fail, why=r.why)
