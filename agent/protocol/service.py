"""The service-health report: ``{prefix}/gw/{id}/service``, QoS 1, not retained, every
``service.interval_s`` (300 s by default, jittered).

What a citizen meets at one access point, in aggregates only: each radio (channel, width, power,
noise, how busy the channel was over the report's interval, the other APs heard), each SSID's
client quality (an RSSI histogram, median rates, retry and failure ratios, association and
authentication events), the DHCP server's failures, and the service probes (DNS, captive
portal, Internet, broker). :func:`agent.protocol.score.score` turns a report into the AP's
health score, on the gateway and in central alike.

These models live apart from :mod:`agent.protocol.wire` on purpose: a gateway with the report
off (the default) never imports this module. Built, they cost ~330 KiB of RSS (~50 KiB even with
pydantic's deferred build), and the agent's memory target has ~110 KiB to spare
(docs/architecture.md, "Service health on its own topic"). ``agent.protocol`` still exposes
them by name (``from agent.protocol import ServiceReport``), importing this module then.
No field can carry a client's MAC, IP or host name; neighbours' BSSIDs and SSIDs appear only
in ``nbr_ids``, which the gateway fills only when ``service.share_neighbour_ids`` is on.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agent.protocol.wire import SCHEMA_VERSION, Count, Number, Percent, RadioHealth, Timestamp, Wire

#: Upper edges (dBm, exclusive) of the RSSI histogram's first four buckets; the fifth holds the
#: rest. ``rssi_hist`` = clients at [< -80, -80 to -71, -70 to -61, -60 to -51, >= -50] dBm.
RSSI_EDGES: tuple[int, ...] = (-80, -70, -60, -50)

#: A signal level, whole dBm.
Dbm = Annotated[int, Field(strict=True, ge=-128, le=0)]
#: Milliseconds a probe took.
Millis = Annotated[float, Field(strict=True, ge=0, le=600_000)]


class NeighbourId(Wire):
    """One neighbouring AP, named: only when the operator turned ``share_neighbour_ids`` on."""

    bssid: str = Field(max_length=17, description="The neighbour's BSSID")
    ssid: str | None = Field(default=None, max_length=32, description="Its SSID, if broadcast")
    channel: Count
    signal_dbm: Dbm


class RadioReport(RadioHealth):
    """One radio over the report's interval (``busy_pct`` is the share of the whole interval).
    The radio collector's fields default to null here: the report's JSON leaves nulls out."""

    channel: Count | None = Field(default=None, description="Primary channel number")
    width_mhz: Count | None = Field(default=None, description="Channel width, MHz")
    txpower_dbm: Number | None = Field(default=None, description="Transmit power, dBm")
    noise_dbm: Annotated[int, Field(strict=True, ge=-200, le=0)] | None = Field(
        default=None, description="Noise floor on the channel in use, whole dBm"
    )
    busy_pct: Percent | None = Field(
        default=None, description="Share of the interval the channel in use was busy"
    )

    nbr: dict[str, tuple[Count, Dbm]] | None = Field(
        default=None,
        description="Other APs heard, by channel: [how many, strongest signal in dBm]; from the "
        "radio's last scan results (no scan is started)",
    )
    nbr_ids: list[NeighbourId] | None = Field(
        default=None, max_length=64, description="Absent unless service.share_neighbour_ids"
    )


class SsidQuality(Wire):
    """One SSID (one access-point interface) over the report's interval, aggregates only.
    Short keys: four of these are the report's largest part (issue 20's budget is 1 KiB)."""

    sta: Count = Field(description="Stations connected at report time")
    rssi: list[Count] = Field(
        min_length=5,
        max_length=5,
        description="Stations by signal (RSSI histogram): < -80, -80..-71, -70..-61, -60..-51, "
        ">= -50 dBm",
    )
    tx_mbps: Number | None = Field(
        default=None, ge=0, description="Median rate the AP sends at (last frame), Mbit/s"
    )
    rx_mbps: Number | None = Field(
        default=None, ge=0, description="Median rate the AP receives at (last frame), Mbit/s"
    )
    retry_pct: Percent | None = Field(
        default=None, description="Retransmissions per frame sent over the interval, percent"
    )
    fail_pct: Percent | None = Field(
        default=None, description="Frames given up on per frame sent over the interval, percent"
    )
    ev: tuple[Count, Count, Count] | None = Field(
        default=None,
        description="Events in the interval, from hostapd's log: [associations "
        "(AP-STA-CONNECTED), disassociations (AP-STA-DISCONNECTED), failed authentications "
        "(wrong key, 802.1X/EAP failure)]; absent without a log source",
    )


class DhcpEvents(Wire):
    """The AP's DHCP server (dnsmasq) over the interval, from its log."""

    ack: Count = Field(default=0, description="Leases given or renewed (DHCPACK)")
    nak: Count = Field(default=0, description="Requests refused (DHCPNAK)")
    no_address: Count = Field(
        default=0, description="Requests the pool could not serve: it is exhausted"
    )


class Probes(Wire):
    """The service probes of one run, each bounded in time (the whole run <= probe_budget_s)."""

    dns: Literal["ok", "nxdomain", "fail", "timeout"] | None = Field(
        default=None, description="A lookup through the AP's own resolver"
    )
    dns_ms: Millis | None = None
    portal: Literal["open", "portal", "broken"] | None = Field(
        default=None,
        description="The captive-portal check: open Internet, a portal in the way, or neither",
    )
    portal_ms: Millis | None = None
    inet_ms: Millis | None = Field(
        default=None, description="Median TCP connect time to the Internet targets"
    )
    loss_pct: Percent | None = Field(
        default=None, description="Internet connects that failed or timed out, percent"
    )
    jitter_ms: Millis | None = Field(
        default=None,
        description="Mean difference between consecutive Internet connect times (jitter)",
    )
    broker_ms: Millis | None = Field(
        default=None,
        description="Publish to PUBACK of the previous service report (MQTT round trip)",
    )


class CitizenPath(Wire):
    """The citizen path: the AP took a DHCP lease on its own LAN bridge as a citizen would, then
    looked up a name (the portal check's host) through the leased DNS server, ran the portal check and
    fetched a page from the Internet. The first step that failed ends the path. Verdicts and
    times only: no address (the lease's, the server's, the probe's own) is in any field."""

    lease: bool = Field(description="A DHCP lease was obtained (and released again)")
    ms: list[Millis] = Field(
        max_length=4,
        description="Each step's time, in order (dhcp, dns, portal, inet), for the steps that "
        "ran, the failing one included",
    )
    portal: Literal["open", "portal", "broken"] | None = Field(
        default=None, description="What the portal check met, when it ran"
    )
    fail: Literal["dhcp", "dns", "portal", "inet"] | None = Field(
        default=None, description="The step that failed and ended the path; absent: all passed"
    )
    why: (
        Literal[
            "no_offer",
            "nak",
            "no_ack",
            "no_dns",
            "error",
            "timeout",
            "nxdomain",
            "fail",
            "open",
            "portal",
            "broken",
            "no_address",
            "refused",
            "redirect",
            "status",
        ]
        | None
    ) = Field(
        default=None,
        description="Why it failed: dhcp no_offer (no server answered, or its pool is "
        "exhausted), nak, no_ack, no_dns (a lease without a DNS server), error (on the AP: no "
        "such interface, port 68 taken); dns timeout, nxdomain, fail; portal: what it met "
        "(open, portal, broken) when another was expected; inet no_address, timeout, refused, "
        "redirect (a 3xx), status (another non-2xx), error",
    )


class ServiceReport(Wire):
    """``{prefix}/gw/{id}/service``, QoS 1, not retained: one service-health report.

    Absent fields are unknown (the JSON leaves out nulls to save bytes). The gateway is the
    one the topic names: the broker's ACL lets a gateway publish only under its own id, so the
    topic is authoritative, and a ``device`` field could only disagree with it."""

    v: Count = SCHEMA_VERSION
    ts: Timestamp = Field(description="UNIX seconds at the end of the report's interval")
    interval_s: Count = Field(description="Seconds the interval's counts and shares cover")
    radios: dict[str, RadioReport] = Field(default_factory=dict, description="By AP interface")
    ssids: dict[str, SsidQuality] = Field(
        default_factory=dict, description="By AP interface: one SSID each"
    )
    dhcp: DhcpEvents | None = None
    probes: Probes | None = None
    citizen_path: CitizenPath | None = Field(
        default=None,
        description="The citizen path's last walk; absent unless service.citizen_path is on",
    )
    errors: dict[str, str] | None = Field(
        default=None, description="Part to error, for what could not be read"
    )


def encode_report(report: ServiceReport) -> bytes:
    """Compact JSON without nulls (an absent field is an unknown one)."""
    return report.model_dump_json(exclude_none=True).encode()


__all__ = [
    "RSSI_EDGES",
    "CitizenPath",
    "DhcpEvents",
    "NeighbourId",
    "Probes",
    "RadioReport",
    "ServiceReport",
    "SsidQuality",
    "encode_report",
]
