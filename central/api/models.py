"""The API's response models: the JSON contract of docs/central.md ("HTTP API").

Fields may be added, never renamed: the dashboard, the city app and scripts read them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.protocol import ConfigReported
from agent.protocol.topics import group_target, gw_target
from central.ingest.consumer import BAD_REASONS


class RegionSummary(BaseModel):
    region: str = Field(description='Region name ("" for gateways without one)')
    total: int
    online: int
    offline: int
    clients: int = Field(description="Wi-Fi clients on the region's online gateways")


class SummaryOut(BaseModel):
    ts: float = Field(description="Server time of the answer (Unix seconds)")
    total: int
    online: int
    offline: int
    clients_total: int = Field(description="Wi-Fi clients on all online gateways")
    alerts_open: int
    by_region: list[RegionSummary]


class DeviceItem(BaseModel):
    id: str
    site: str | None
    region: str | None
    lat: float | None
    lon: float | None
    groups: list[str]
    online: bool
    last_seen: float | None = Field(description="Central's clock at the last sample or status")
    clients: int | None
    cpu_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None
    disk_used_pct: float | None
    version: str | None = Field(description="Agent version")
    compliant: bool = Field(description="Every desired config version applied")
    offline_since: float | None = None
    offline_reason: str | None = Field(
        default=None, description="shutdown, will, stale, ... while offline"
    )


class DevicesOut(BaseModel):
    total: int = Field(description="Devices matching the filters, before paging")
    items: list[DeviceItem]


class DesiredOut(BaseModel):
    version: int | None = Field(description="None when the retained document was cleared")
    document: Any = Field(description="The desired document (JSON)")
    received: float


class ReportedOut(ConfigReported):
    """The report's one shape (agent.protocol.ConfigReported) and the document as sent."""

    document: Any = Field(description="The report as the gateway sent it (JSON)")


class ConfigOut(BaseModel):
    desired: dict[str, DesiredOut] = Field(
        description=f"Desired documents that apply ({group_target('<g>')}, {gw_target('<id>')}), by target"
    )
    reported: ReportedOut | None
    missing: list[str] = Field(description="Targets whose version is not applied")


class DeviceDetail(DeviceItem):
    platform: str | None
    boot: int = Field(description="Session counter of the gateway")
    model: str | None = None
    interval_s: float = Field(description="Telemetry interval inferred from samples")
    config: ConfigOut


class HistoryPointOut(BaseModel):
    ts: float = Field(description="Sample time, or the 5-minute bucket's start")
    clients: float | None = Field(description="Clients (the bucket's average for 5m)")
    cpu_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None = Field(description="Temperature (the bucket's maximum for 5m)")
    disk_used_pct: float | None = None
    clients_max: int | None = None
    count: int = Field(default=1, description="Samples in the point")


class HistoryOut(BaseModel):
    resolution: Literal["raw", "5m"]
    points: list[HistoryPointOut]


class AlertOut(BaseModel):
    id: str = Field(description="Stable id: <kind>/<device>/<since>")
    kind: str
    device: str
    since: float
    until: float | None = Field(description="When it closed; None while open")
    detail: str
    acked_by: str | None = Field(default=None, description="Who acknowledged it (the console)")
    acked_at: float | None = None
    snoozed_until: float | None = Field(default=None, description="Snoozed until (Unix seconds)")
    snoozed_by: str | None = None
    note: str | None = Field(default=None, description="The operator's last note on it")
    state: str = Field(default="open", description="open, acknowledged, snoozed or resolved")
    maintenance: int | None = Field(
        default=None, description="The maintenance window it was raised under (notified nobody)"
    )
    incident: int | None = Field(default=None, description="The incident it belongs to")


class AlertsOut(BaseModel):
    items: list[AlertOut]


class ComplianceItem(BaseModel):
    device: str
    compliant: bool
    desired: dict[str, int]
    reported: dict[str, int]
    state: str | None
    error: str | None
    missing: list[str] = []


class ComplianceOut(BaseModel):
    total: int
    compliant: int
    items: list[ComplianceItem]


class PublicRegion(BaseModel):
    region: str
    active_aps: int
    connected_users: int


class PublicSummaryOut(BaseModel):
    ts: float
    active_aps: int
    connected_users: int
    by_region: list[PublicRegion]


class QuarantineItem(BaseModel):
    id: int
    at: float = Field(description="When central set it aside (Unix seconds)")
    reason: str = Field(description="Why: " + ", ".join(BAD_REASONS))
    topic: str = Field(description='The MQTT topic ("" for a row central derived itself)')
    device: str | None = Field(description="The gateway the topic names, if any")
    detail: str = Field(description="The error, naming the key or the limit")
    size: int = Field(description="The payload's size in bytes")
    truncated: bool = Field(description="Only the first ingest.quarantine_payload_bytes are kept")
    payload: str = Field(description="The kept bytes as UTF-8, other bytes as \\xNN escapes")


class QuarantineOut(BaseModel):
    total: int = Field(description="Kept messages matching the filters, before paging")
    by_reason: dict[str, int] = Field(description="Every kept message, counted by reason")
    items: list[QuarantineItem] = Field(description="Newest first")


class HealthOut(BaseModel):
    ok: bool
    ingest: dict[str, Any] | None = Field(description="The consumer's IngestStats counters")


class ErrorOut(BaseModel):
    detail: str
