"""The ``[service]`` section of agent.toml: the service-health report.

Its own module so that a gateway whose config has no ``[service]`` section never imports it
(:func:`agent.config._service_section` does, when the section is there).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from agent.protocol.settings import Section


def _address_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        host = ""
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"{value!r}: must be an IP address and a port, e.g. 1.1.1.1:443 or [2606:4700::1111]:443"
            " (an address, so the probe measures the path and not the resolver)"
        )
    return value


#: ``address:port`` (an IPv6 address in brackets: ``[2606:4700::1111]:443``).
AddressPort = Annotated[str, AfterValidator(_address_port)]

_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,15}")


def _interface_name(value: str) -> str:
    # Python's re, not Field(pattern=...): pydantic-core's regex engine costs ~0.5 MB
    # (docs/architecture.md, "Memory on the gateway").
    if not _IFNAME.fullmatch(value):
        raise ValueError(
            f"{value!r}: must be a network interface name (1 to 15 letters, digits, or . _ - : @),"
            " e.g. br-lan"
        )
    return value


#: A Linux network interface name (IFNAMSIZ: 15 characters).
InterfaceName = Annotated[str, AfterValidator(_interface_name)]


class ServiceConfig(Section):
    """The ``[service]`` section: the service-health report (docs/architecture.md, "Service
    health on its own topic"). Imported on first use (see
    :func:`agent.config._service_section`)."""

    enabled: bool = Field(
        default=False,
        description="Publish the service-health report (its own topic, docs/protocol.md)",
    )
    interval_s: float = Field(default=300.0, ge=30, le=86400, description="Seconds between reports")
    jitter_s: float = Field(
        default=30.0, ge=0, le=3600, description="Each report moves by up to this much, at random"
    )
    share_neighbour_ids: bool = Field(
        default=False,
        description="Send neighbouring APs' BSSIDs and SSIDs too (privacy: off unless the "
        "operator needs them, e.g. to find a rogue AP)",
    )
    logs: Literal["auto", "logread", "journal", "off"] = Field(
        default="auto",
        description="Where hostapd and dnsmasq events are read: logread (OpenWrt), journal "
        "(journalctl), auto (by platform), off",
    )
    probes: bool = Field(default=True, description="Run the service probes with each report")
    probe_budget_s: float = Field(
        default=2.0, gt=0, le=10, description="Wall time all probes of one report may take"
    )
    dns_server: AddressPort = Field(
        default="127.0.0.1:53", description="The AP's own resolver, as its clients use it"
    )
    dns_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        description="The name the DNS probe (and the citizen path) looks up; default: "
        "portal_url's host (the portal check then connects to the address it got)",
    )
    portal_url: str = Field(
        default="http://connectivitycheck.gstatic.com/generate_204",
        description="An http:// URL that answers 204 No Content on the open Internet",
    )
    targets: list[AddressPort] = Field(
        default_factory=lambda: ["1.1.1.1:443", "9.9.9.9:443"],
        max_length=8,
        description="Internet targets for TCP connects (latency, loss, jitter)",
    )
    connects: int = Field(default=3, ge=1, le=10, description="TCP connects per target")
    citizen_path: bool = Field(
        default=False,
        description="Walk the citizen path: a DHCP lease on citizen_interface, DNS through the "
        "leased server, the portal check and an Internet fetch (docs/protocol.md)",
    )
    citizen_interface: InterfaceName = Field(
        default="br-lan",
        description="The LAN bridge the citizens' DHCP answers on (br-lan on OpenWrt)",
    )
    citizen_every: int = Field(
        default=1,
        ge=1,
        le=288,
        description="Walk it with every Nth report only (1: every report; 3: every third)",
    )
    citizen_dhcp_timeout_s: float = Field(
        default=4.0,
        gt=0,
        le=30,
        description="Wall time the citizen path's DHCP step may take (dnsmasq waits up to 3 s "
        "on a ping before it offers an address)",
    )
    citizen_budget_s: float = Field(
        default=2.0,
        gt=0,
        le=10,
        description="Wall time the citizen path's steps after the lease (DNS, portal, Internet) "
        "may take together",
    )
    citizen_portal: Literal["open", "portal"] = Field(
        default="open",
        description="What the portal check should meet for a citizen: open (the Internet) or "
        "portal (a captive portal the citizens sign in at; the path ends there)",
    )
    citizen_url: str = Field(
        default="http://detectportal.firefox.com/success.txt",
        description="An http:// URL the path's last step fetches; it must answer 2xx",
    )

    @model_validator(mode="after")
    def _portal_is_http(self) -> ServiceConfig:
        if not self.portal_url.startswith("http://"):
            raise ValueError("portal_url: must start with http:// (a portal intercepts HTTP)")
        if not self.citizen_url.startswith("http://"):
            raise ValueError(
                "citizen_url: must start with http:// (a portal intercepts HTTP, and plain HTTP "
                "needs no CA bundle on the gateway)"
            )
        return self
