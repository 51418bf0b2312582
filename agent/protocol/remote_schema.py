"""The remote config: what operations may set on a gateway, one model per section.

A desired config document carries any subset of the sections. Group documents and the
gateway's own document are overlaid (see :mod:`agent.remote.desired`) and the result is
validated as a whole; unknown keys and out-of-range values are rejected, naming the key path.
Where a section overlaps the agent's config file (``telemetry``, ``mqtt``), it uses the same
names. docs/remote-config.schema.json is generated from :class:`RemoteConfig`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from agent.protocol.collectors import CollectorName
from agent.protocol.settings import LogLevel, Port
from agent.protocol.settings import Section as Strict

_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_WINDOW = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]-([01][0-9]|2[0-3]):[0-5][0-9]")


def _section_name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError("must be 1-32 of a-z, 0-9 and '_', starting with a letter")
    return value


def _window(value: str) -> str:
    if not _WINDOW.fullmatch(value):
        raise ValueError("must be HH:MM-HH:MM in the gateway's local time, e.g. 02:00-05:00")
    return value


SectionName = Annotated[str, AfterValidator(_section_name)]


class Radio(Strict):
    enabled: bool = True
    channel: int | Literal["auto"] = Field(default="auto", description="1-14, 32-177, or auto")
    txpower: int | None = Field(default=None, ge=0, le=30, description="dBm; null = driver default")
    htmode: (
        Literal[
            "HT20", "HT40", "VHT20", "VHT40", "VHT80", "VHT160", "HE20", "HE40", "HE80", "HE160"
        ]
        | None
    ) = None

    @model_validator(mode="after")
    def _channel_range(self) -> Radio:
        ch = self.channel
        if ch != "auto" and not (1 <= ch <= 14 or 32 <= ch <= 177):
            raise ValueError("channel: must be 1-14 (2.4 GHz), 32-177 (5 GHz) or 'auto'")
        return self


class Ssid(Strict):
    ssid: str = Field(min_length=1, max_length=32, description="Network name (1-32 bytes)")
    radios: list[SectionName] = Field(default_factory=lambda: ["radio0"], min_length=1)
    hidden: bool = False
    encryption: Literal["none", "owe", "psk2", "sae", "sae-mixed"] = "none"
    key: str | None = Field(default=None, min_length=8, max_length=63, description="WPA passphrase")
    max_clients: int | None = Field(default=None, ge=1, le=512, description="Stations per radio")
    isolation: bool = Field(default=True, description="Stations cannot reach each other")

    @model_validator(mode="after")
    def _key_needed(self) -> Ssid:
        if self.encryption in ("psk2", "sae", "sae-mixed") and not self.key:
            raise ValueError(f"key: required with encryption {self.encryption!r}")
        if len(self.ssid.encode()) > 32:
            raise ValueError("ssid: longer than 32 bytes")
        return self


class WifiSection(Strict):
    radios: dict[SectionName, Radio] = Field(default_factory=dict, description="By radio name")
    ssids: dict[SectionName, Ssid] = Field(default_factory=dict, description="By interface name")


class HotspotSection(Strict):
    """Per-client limits for a captive portal such as openNDS."""

    enabled: bool = True
    download_kbps: int | None = Field(default=None, ge=64, le=1_000_000)
    upload_kbps: int | None = Field(default=None, ge=64, le=1_000_000)
    session_timeout_min: int | None = Field(default=None, ge=1, le=7 * 24 * 60)


class TelemetrySection(Strict):
    interval_s: float | None = Field(default=None, ge=5, le=86400)
    collectors: list[CollectorName] | None = None


class MqttSection(Strict):
    """Move the gateway to another broker; rolled back if it cannot connect there."""

    host: str | None = Field(default=None, min_length=1, max_length=253)
    port: Port | None = None


class AgentSection(Strict):
    log_level: LogLevel | None = None


class MaintenanceSection(Strict):
    reboot_window: Annotated[str, AfterValidator(_window)] | None = Field(
        default=None, description="Reboots asked for outside this window wait for it"
    )


class ServiceSection(Strict):
    """The service-health report (issue 20): on or off, and how often. The rest of
    ``[service]`` (probes' targets, the portal URL...) stays in the gateway's agent.toml."""

    enabled: bool | None = Field(default=None, description="Publish the service report")
    interval_s: float | None = Field(
        default=None, ge=30, le=86400, description="Seconds between reports"
    )


class RemoteConfig(Strict):
    wifi: WifiSection | None = None
    hotspot: HotspotSection | None = None
    telemetry: TelemetrySection | None = None
    mqtt: MqttSection | None = None
    agent: AgentSection | None = None
    maintenance: MaintenanceSection | None = None
    service: ServiceSection | None = None
