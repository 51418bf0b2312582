"""The store port: what goes in and out, independent of SQLite (PostgreSQL can follow)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Protocol

from agent.protocol import ConfigReported
from central.store.net import NetPoint

if TYPE_CHECKING:
    from central.store.service import ServiceRow

DeviceStatus = Literal["online", "offline"]
SortKey = Literal["device", "-device", "clients", "-clients", "last_seen", "-last_seen", "region"]


class Sample(NamedTuple):
    """One telemetry record as stored; ``raw`` is the record's compact JSON. A NamedTuple (one
    is made per record: ~0.5 us, a frozen dataclass of these 13 fields ~1.6 us); a copy with
    other values is ``s._replace(...)``."""

    device: str
    sid: str
    seq: int
    ts: float
    historical: bool
    boot: int
    clients: int | None
    cpu_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None
    disk_used_pct: float | None
    version: str | None
    raw: str


@dataclass(slots=True)
class DeviceState:
    """The current state of one gateway (the ``devices`` table)."""

    device: str
    site: str | None = None
    region: str | None = None
    lat: float | None = None
    lon: float | None = None
    groups: list[str] = field(default_factory=list)
    online: bool = False
    #: Highest session counter seen with ``online: true`` (or in live telemetry).
    boot: int = 0
    #: Central's clock when the last live sample or status arrived.
    last_seen: float | None = None
    #: The last live sample: its gateway timestamp, identity and values.
    last_ts: float | None = None
    sid: str | None = None
    seq: int | None = None
    clients: int | None = None
    cpu_pct: float | None = None
    mem_used_pct: float | None = None
    temp_c: float | None = None
    disk_used_pct: float | None = None
    version: str | None = None
    platform: str | None = None
    model: str | None = None
    #: Telemetry interval inferred from consecutive samples (seconds).
    interval_s: float = 60.0
    offline_since: float | None = None
    offline_reason: str | None = None


@dataclass(frozen=True, slots=True)
class DesiredDoc:
    """A desired config document; ``target`` is ``gw/<id>`` or ``group/<name>``.

    ``version`` None means the retained document was cleared.
    """

    target: str
    version: int | None
    doc: str
    received: float


@dataclass(frozen=True, slots=True)
class ReportedDoc:
    """A gateway's latest config report: the wire model (the report's one shape, from
    agent.protocol) and the text it came in."""

    device: str
    report: ConfigReported
    doc: str


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str
    device: str
    since: float
    detail: str
    closed: float | None = None


@dataclass(frozen=True)
class AlertMark:
    """An operator's mark on one alert (by its API id ``<kind>/<device>/<since>``): who
    acknowledged it, until when it is snoozed. Issue 19's alert lifecycle extends this."""

    alert_id: str
    acked_by: str | None = None
    acked_at: float | None = None
    snoozed_until: float | None = None
    snoozed_by: str | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AlertChange:
    """Open an alert (``closed`` None) or close the open one of ``(device, kind)``."""

    kind: str
    device: str
    at: float
    detail: str = ""
    close: bool = False


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A message (or a row derived from one) central could not take, kept with its reason.

    ``payload`` is capped (``size`` is the original length); ``device`` is the gateway the
    topic names, when it names one.
    """

    at: float
    reason: str
    topic: str
    device: str | None
    detail: str
    payload: bytes
    size: int


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    id: int
    at: float
    reason: str
    topic: str
    device: str | None
    detail: str
    payload: bytes
    size: int


@dataclass(frozen=True, slots=True)
class QuarantinePage:
    total: int
    by_reason: dict[str, int]
    items: list[QuarantineRow]


@dataclass(slots=True)
class WriteBatch:
    """Everything one transaction writes."""

    samples: list[Sample] = field(default_factory=list)
    devices: list[DeviceState] = field(default_factory=list)
    desired: list[DesiredDoc] = field(default_factory=list)
    reported: list[ReportedDoc] = field(default_factory=list)
    alerts: list[AlertChange] = field(default_factory=list)
    quarantined: list[Quarantined] = field(default_factory=list)
    #: Service-health reports (central/store/service.py), in the same transaction.
    service: list[ServiceRow] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(
            self.samples
            or self.devices
            or self.desired
            or self.reported
            or self.alerts
            or self.quarantined
            or self.service
        )


class StoreUnavailable(Exception):
    """The store cannot write at all right now (disk full, I/O error, locked, corrupt).

    Nothing about the batch is wrong: the caller keeps it and tries again later. Any other
    exception from :meth:`Store.write` means something in the batch could not be stored.
    """


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: int
    duplicates: int


@dataclass(frozen=True, slots=True)
class Summary:
    online: int
    offline: int
    total: int
    clients: int
    clients_by_region: dict[str, int]


@dataclass(frozen=True, slots=True)
class RegionPublic:
    region: str
    active_aps: int
    users: int


@dataclass(frozen=True, slots=True)
class DevicePage:
    total: int
    items: list[DeviceState]


def page_total(offset: int, limit: int, got: int) -> int | None:
    """A listing's total from its page alone when the page says it (fewer rows than the
    limit, and some rows or none skipped): else None, and the store counts. Spares the
    count's second pass over the matching rows whenever the last page is read (a search,
    every match read to sort it elsewhere): about 25 ms at 50,000 gateways on PostgreSQL."""
    if got < limit and (got > 0 or offset == 0):
        return offset + got
    return None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """A raw sample (``count`` 1) or a 5-minute rollup (averages, ``clients_max``)."""

    ts: float
    count: int
    clients: float | None
    clients_max: int | None
    cpu_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None
    disk_used_pct: float | None


@dataclass(frozen=True, slots=True)
class ComplianceRow:
    device: str
    compliant: bool
    #: Desired documents that apply (``gw/<id>``, ``group/<g>``) and their versions.
    desired: dict[str, int]
    reported: dict[str, int]
    state: str | None
    error: str | None
    missing: list[str]


class Store(Protocol):
    """A place for central's data. Writes happen on one thread; queries may come from any."""

    def write(self, batch: WriteBatch) -> WriteResult:
        """Write everything in one transaction; samples already stored are counted as duplicates.

        Raises :class:`StoreUnavailable` when the store cannot write at all; any other
        exception means a row of the batch could not be stored (nothing was written).
        """
        ...

    def probe(self) -> None:
        """Write a known-good row of every kind and undo it; :class:`StoreUnavailable` if
        that fails (so a failed batch is the store's fault, not one of its rows')."""
        ...

    def roll_up(self) -> int:
        """Fold samples stored since the last call into the 5-minute rollups."""
        ...

    def load_devices(self) -> list[DeviceState]: ...

    def prune(self, now: float, chunk: int = 5000) -> int:
        """Delete at most ``chunk`` expired raw rows and ``chunk`` rollups; return rows deleted."""
        ...

    def summary(self) -> Summary: ...

    def devices(
        self,
        *,
        region: str | None = None,
        group: str | None = None,
        status: DeviceStatus | None = None,
        q: str | None = None,
        sort: SortKey = "device",
        limit: int = 100,
        offset: int = 0,
    ) -> DevicePage: ...

    def device(self, device: str) -> DeviceState | None: ...

    def history(self, device: str, since: float, until: float) -> list[HistoryPoint]: ...

    def net_history(self, device: str, since: float, until: float) -> list[NetPoint]:
        """WAN traffic and state (central/store/net.py), raw or 5-minute rollups."""
        ...

    def alerts(self, *, open_only: bool = True) -> list[Alert]: ...

    def compliance(self) -> list[ComplianceRow]: ...

    def public_summary(self) -> list[RegionPublic]: ...

    def quarantine(
        self,
        *,
        reason: str | None = None,
        device: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> QuarantinePage:
        """Quarantined messages, newest first; ``total`` and ``by_reason`` count all kept."""
        ...

    def close(self) -> None: ...
