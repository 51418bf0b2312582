"""Topics and wire models: the single source of truth for what travels over MQTT.

Central imports this module; ``docs/protocol.md`` embeds the JSON Schema generated from these
models, and a test fails when the two drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

#: Version of the telemetry and status payloads (``v``). Bump on incompatible change.
SCHEMA_VERSION = 1

#: The largest whole number the wire carries (seq, boot, config versions, counters): 2^53 - 1,
#: the largest integer a JavaScript client reads exactly, and well inside the 64-bit integers
#: of SQLite and PostgreSQL. Both sides refuse anything larger with a named error.
WIRE_INT_MAX = 2**53 - 1


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway; ``prefix`` and ``device`` are already validated topic-safe."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/gw/{self.device}"

    @property
    def telemetry(self) -> str:
        return f"{self.base}/telemetry"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def telemetry_batch(self) -> str:
        return f"{self.base}/telemetry/batch"

    @property
    def config_desired(self) -> str:
        return f"{self.base}/config/desired"

    @property
    def config_reported(self) -> str:
        return f"{self.base}/config/reported"

    @property
    def cmd(self) -> str:
        return f"{self.base}/cmd"

    @property
    def cmd_result(self) -> str:
        return f"{self.base}/cmd/result"

    def group_config_desired(self, group: str) -> str:
        return f"{self.prefix}/group/{group}/config/desired"

    def group_cmd(self, group: str) -> str:
        return f"{self.prefix}/group/{group}/cmd"


class Wire(BaseModel):
    # Unknown keys are kept, not refused: a newer agent may add fields an older consumer ignores.
    model_config = ConfigDict(extra="allow")


class Health(Wire):
    cpu_pct: float | None = Field(description="CPU busy since the last sample, percent")
    load1: float | None = Field(description="1-minute load average")
    load5: float | None = None
    load15: float | None = None
    mem_used_pct: float | None = Field(description="Memory in use (total - available), percent")
    mem_avail_b: int | None = Field(default=None, description="Memory available, bytes")
    disk_used_pct: float | None = Field(description="Root or overlay filesystem used, percent")
    temp_c: float | None = Field(description="Hottest thermal zone/hwmon sensor, °C; null if none")
    uptime_s: int | None = Field(description="Seconds since the kernel booted")


class Iface(Wire):
    up: bool | None = Field(description="Operational link state")
    rx: int = Field(description="Bytes received since the interface came up")
    tx: int = Field(description="Bytes sent since the interface came up")
    rx_bps: int | None = Field(
        default=None, description="Receive rate since the last sample, bytes/s"
    )
    tx_bps: int | None = Field(default=None, description="Send rate since the last sample, bytes/s")
    err: int = Field(
        default=0, description="Receive plus transmit errors since the interface came up"
    )


class Net(Wire):
    wan_up: bool | None = Field(
        description="A default route exists through an interface that is up"
    )
    wan: str | None = Field(default=None, description="Interface of the default route")
    ifaces: dict[str, Iface] = Field(default_factory=dict)


class Clients(Wire):
    total: int = Field(
        ge=0, description="Connected Wi-Fi stations over all access-point interfaces"
    )
    by_iface: dict[str, int] = Field(default_factory=dict, description="Stations per AP interface")
    leases: int | None = Field(
        default=None, ge=0, description="Active DHCP leases; null if no lease file"
    )


class AgentInfo(Wire):
    version: str
    buffered: int = Field(default=0, ge=0, description="Samples not yet acknowledged by the broker")
    dropped: int = Field(
        default=0,
        ge=0,
        description="Samples dropped by the buffer's size or age cap, or lost with a damaged "
        "buffer file, since start",
    )


class Telemetry(Wire):
    """``{prefix}/gw/{id}/telemetry``, QoS 1, not retained: one sample."""

    v: int = SCHEMA_VERSION
    device: str
    seq: int = Field(ge=0, description="Grows by one per sample; survives restarts")
    boot: int = Field(ge=0, description="MQTT session counter at sampling time; grows per connect")
    sid: str = Field(
        description="Identifies the agent's state lifetime; changes if its state is wiped"
    )
    ts: float = Field(description="UNIX seconds of the measurement")
    health: Health | None = None
    net: Net | None = None
    clients: Clients | None = None
    agent: AgentInfo
    errors: dict[str, str] | None = Field(
        default=None,
        description="Collector name (or name.part) to error; absent when all collectors worked",
    )

    @model_serializer(mode="wrap")
    def _omit_absent_errors(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Saves bytes on every message; every other null is meaningful and stays.
        data: dict[str, Any] = handler(self)
        if data.get("errors") is None:
            data.pop("errors", None)
        return data


class Status(Wire):
    """``{prefix}/gw/{id}/status``, QoS 1, retained. The MQTT Will is ``{"online": false, "boot": N}``."""

    online: bool
    boot: int = Field(
        ge=0, description="Session counter; a consumer ignores a status older than the last"
    )
    v: int = SCHEMA_VERSION
    ts: float | None = None
    version: str | None = None
    platform: str | None = None
    model: str | None = Field(
        default=None, description="Hardware model, when the platform knows it"
    )
    site: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    groups: list[str] | None = None
    boot_id: str | None = Field(default=None, description="Kernel boot id; changes on every reboot")
    reason: str | None = Field(
        default=None, description="Why the agent went offline, when it says so"
    )


class TelemetryBatch(Wire):
    """``{prefix}/gw/{id}/telemetry/batch``, QoS 1: buffered samples delivered late.

    Every record keeps its original ``seq`` and ``ts``. ``historical`` is always true: a
    consumer stores these but never lets them overwrite current state (Sparkplug's
    ``is_historical``). Records are oldest first within a batch.
    """

    v: int = SCHEMA_VERSION
    device: str
    historical: bool = True
    records: list[Telemetry]


def batch_payload(device: str, records: list[bytes]) -> bytes:
    """A :class:`TelemetryBatch` built from already-encoded samples, without re-parsing them."""
    head = f'{{"v":{SCHEMA_VERSION},"device":"{device}","historical":true,"records":['.encode()
    return head + b",".join(records) + b"]}"


def encode(model: BaseModel) -> bytes:
    """Compact JSON for the wire (no spaces). Nulls stay: ``temp_c: null`` means "no sensor"."""
    return model.model_dump_json().encode()
