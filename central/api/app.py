"""The HTTP API: JSON for the dashboard and the city app, Prometheus text for monitoring.

:func:`create_app` is a pure factory (no globals): every app gets its own store, counters
and Prometheus registry, so tests can build many. Endpoints are plain ``def`` functions, so
FastAPI runs them in its thread pool; the SQLite store gives each thread its own connection
and, in WAL mode, readers never block the ingest writer. The contract is documented in
docs/central.md ("HTTP API"); fields may be added, never renamed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path as FsPath
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from fastapi import FastAPI, HTTPException, Path, Query, Response
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from agent import __version__
from agent.protocol import WIRE_TS_MAX, ConfigReported
from agent.protocol.topics import TOPIC_SAFE, group_target, gw_target
from central.api.metrics import FleetCollector
from central.ingest.consumer import BAD_REASONS, IngestStats
from central.store.base import (
    ComplianceRow,
    DesiredDoc,
    DeviceState,
    QuarantinePage,
    ReportedDoc,
    Store,
)
from central.store.compliance import compliance as compliance_of

WEB_DIR = FsPath(__file__).resolve().parent / "web"
DAY_S = 86400.0
PLACEHOLDER = "<!doctype html><title>Titik</title><p>Titik central: the dashboard is not installed; see <a href=/docs>/docs</a>.</p>\n"

#: Contract field -> attribute of :class:`DeviceState`.
SORT_FIELDS: dict[str, str] = {
    "id": "device",
    "region": "region",
    "site": "site",
    "online": "online",
    "last_seen": "last_seen",
    "clients": "clients",
    "cpu_pct": "cpu_pct",
    "mem_used_pct": "mem_used_pct",
    "temp_c": "temp_c",
}
#: Sorts the store does in SQL (contract value -> store key); the others are sorted here.
STORE_SORTS = {
    "id": "device",
    "-id": "-device",
    "clients": "clients",
    "-clients": "-clients",
    "last_seen": "last_seen",
    "-last_seen": "-last_seen",
    "region": "region",
}
Sort = Literal[
    "id", "-id", "region", "-region", "site", "-site", "online", "-online",
    "last_seen", "-last_seen", "clients", "-clients", "cpu_pct", "-cpu_pct",
    "mem_used_pct", "-mem_used_pct", "temp_c", "-temp_c",
]  # fmt: skip
MAX_LIMIT = 10_000
#: Every query parameter is bounded; anything outside is a 422 that names it. Paging past a
#: city's fleet returns nothing, so the offset's bound is generous; text filters are names of
#: at most 128 characters (agent.toml's site; a region is at most 64).
MAX_OFFSET = 1_000_000
MAX_TEXT = 128
MAX_QUARANTINE_LIMIT = 1000
#: A device id or group name: what goes into one MQTT topic level (agent.protocol.topics.TOPIC_SAFE).
NAME_PATTERN = f"^{TOPIC_SAFE.pattern}$"


@runtime_checkable
class ConfigDocs(Protocol):
    """Optional store extras (the SQLite store has them): the raw config documents."""

    def desired_docs(self) -> dict[str, DesiredDoc]: ...

    def reported_docs(self) -> dict[str, ReportedDoc]: ...


# --- response models ----------------------------------------------------------------------


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


# --- helpers --------------------------------------------------------------------------------


def _json_or_text(doc: str) -> Any:
    try:
        return json.loads(doc)
    except ValueError:
        return doc


def _item(d: DeviceState, compliant: bool) -> DeviceItem:
    return DeviceItem(
        id=d.device,
        site=d.site,
        region=d.region,
        lat=d.lat,
        lon=d.lon,
        groups=d.groups,
        online=d.online,
        last_seen=d.last_seen,
        clients=d.clients,
        cpu_pct=d.cpu_pct,
        mem_used_pct=d.mem_used_pct,
        temp_c=d.temp_c,
        disk_used_pct=d.disk_used_pct,
        version=d.version,
        compliant=compliant,
        offline_since=d.offline_since,
        offline_reason=d.offline_reason,
    )


def _sort_python(items: list[DeviceState], sort: str) -> list[DeviceState]:
    """Like the store's SQL: missing values first ascending (last descending), then by id."""
    desc = sort.startswith("-")
    attr = SORT_FIELDS[sort.lstrip("-")]
    out = sorted(items, key=lambda d: d.device)

    def key(d: DeviceState) -> tuple[bool, Any]:
        v = getattr(d, attr)
        return (v is not None, v if v is not None else 0)

    out.sort(key=key, reverse=desc)  # stable: ties keep the id order
    return out


class Api:
    """The queries behind the endpoints, over any :class:`Store`."""

    def __init__(self, store: Store, clock: Any = time.time, config_ttl_s: float = 5.0) -> None:
        self.store = store
        self.clock = clock
        self.config_ttl_s = config_ttl_s
        self._docs: tuple[float, dict[str, DesiredDoc], dict[str, ReportedDoc]] | None = None
        self._docs_lock = threading.Lock()

    def config_docs(self) -> tuple[dict[str, DesiredDoc], dict[str, ReportedDoc]] | None:
        """Desired and reported documents, re-read at most every ``config_ttl_s``.

        Reading every report (one per gateway) costs tens of ms at 10,000 gateways, and the
        device list needs them for ``compliant``; configs change rarely, so a few seconds
        of lag is the price. ``/api/compliance`` always reads fresh.
        """
        if not isinstance(self.store, ConfigDocs):
            return None
        now = time.monotonic()
        with self._docs_lock:
            if self._docs is None or now - self._docs[0] >= self.config_ttl_s:
                self._docs = (now, self.store.desired_docs(), self.store.reported_docs())
            return self._docs[1], self._docs[2]

    def _compliance_rows(self, devices: Iterable[DeviceState]) -> dict[str, ComplianceRow]:
        docs = self.config_docs()
        if docs is not None:
            desired, reported = docs
            return {d.device: compliance_of(d, desired, reported.get(d.device)) for d in devices}
        wanted = {d.device for d in devices}
        return {r.device: r for r in self.store.compliance() if r.device in wanted}

    def noncompliant(self) -> int:
        """Gateways not compliant (for /metrics), from the cached config documents."""
        docs = self.config_docs()
        if docs is None:
            return sum(not r.compliant for r in self.store.compliance())
        desired, reported = docs
        return sum(
            not compliance_of(d, desired, reported.get(d.device)).compliant
            for d in self.store.load_devices()
        )

    def items(self, devices: list[DeviceState]) -> list[DeviceItem]:
        rows = self._compliance_rows(devices)
        return [_item(d, r.compliant if (r := rows.get(d.device)) else True) for d in devices]

    def summary(self) -> SummaryOut:
        s = self.store.summary()
        online_by = {r.region: r.active_aps for r in self.store.public_summary()}
        regions = sorted(set(s.clients_by_region) | set(online_by))
        totals = {r: self.store.devices(region=r, limit=0).total for r in regions if r}
        if "" in regions:  # gateways without a region: what the named regions leave
            totals[""] = max(0, s.total - sum(totals.values()))
        by_region = []
        for r in regions:
            online = online_by.get(r, 0)
            total = max(totals[r], online)
            by_region.append(
                RegionSummary(
                    region=r,
                    total=total,
                    online=online,
                    offline=total - online,
                    clients=s.clients_by_region.get(r, 0),
                )
            )
        return SummaryOut(
            ts=self.clock(),
            total=s.total,
            online=s.online,
            offline=s.offline,
            clients_total=s.clients,
            alerts_open=len(self.store.alerts(open_only=True)),
            by_region=by_region,
        )

    def devices(
        self,
        *,
        region: str | None,
        group: str | None,
        status: Literal["online", "offline"] | None,
        q: str | None,
        sort: str,
        limit: int,
        offset: int,
    ) -> DevicesOut:
        store_sort = STORE_SORTS.get(sort)
        if store_sort is not None and not q:
            page = self.store.devices(
                region=region,
                group=group,
                status=status,
                sort=store_sort,  # type: ignore[arg-type]  # checked: a SortKey value
                limit=limit,
                offset=offset,
            )
            return DevicesOut(total=page.total, items=self.items(page.items))
        # The store's q also matches the region and sorts on fewer fields: narrow in SQL,
        # then filter on id and site and sort here.
        found = self.store.devices(
            region=region, group=group, status=status, q=q or None, limit=2**62
        ).items
        if q:
            needle = q.casefold()
            found = [
                d
                for d in found
                if needle in d.device.casefold() or needle in (d.site or "").casefold()
            ]
        ordered = _sort_python(found, sort)
        return DevicesOut(total=len(ordered), items=self.items(ordered[offset : offset + limit]))

    def device(self, device: str) -> DeviceDetail:
        d = self.store.device(device)
        if d is None:
            raise HTTPException(404, f"no device {device}")
        desired_out: dict[str, DesiredOut] = {}
        reported_out: ReportedOut | None = None
        docs = self.config_docs()
        if docs is not None:
            desired = docs[0]
            reported = docs[1].get(device)
            row = compliance_of(d, desired, reported)
            for target in row.desired:
                doc = desired[target]
                desired_out[target] = DesiredOut(
                    version=doc.version, document=_json_or_text(doc.doc), received=doc.received
                )
            if reported is not None:
                reported_out = ReportedOut.model_validate(
                    reported.report.model_dump() | {"document": _json_or_text(reported.doc)}
                )
        else:
            row = next(r for r in self.store.compliance() if r.device == device)
        base = _item(d, row.compliant)
        return DeviceDetail(
            **base.model_dump(),
            platform=d.platform,
            boot=d.boot,
            model=d.model,
            interval_s=d.interval_s,
            config=ConfigOut(desired=desired_out, reported=reported_out, missing=row.missing),
        )

    def history(self, device: str, since: float | None, until: float | None) -> HistoryOut:
        if self.store.device(device) is None:
            raise HTTPException(404, f"no device {device}")
        now = self.clock()
        until = now if until is None else until
        since = until - DAY_S if since is None else since
        if since > until:
            raise HTTPException(422, "since must not be after until")
        # The store answers with raw samples within store.raw_days, else 5-minute rollups.
        raw_days: float = getattr(self.store, "raw_days", 7.0)
        store_clock = getattr(self.store, "clock", self.clock)
        raw = since >= store_clock() - raw_days * DAY_S
        points = self.store.history(device, since, until)
        return HistoryOut(
            resolution="raw" if raw else "5m",
            # The store's names are the API's (and the wire's), so a point is read as it is.
            points=[HistoryPointOut.model_validate(p, from_attributes=True) for p in points],
        )

    def alerts(self, open_: bool | None) -> AlertsOut:
        alerts = self.store.alerts(open_only=open_ is True)
        if open_ is False:
            alerts = [a for a in alerts if a.closed is not None]
        return AlertsOut(
            items=[
                AlertOut(
                    id=f"{a.kind}/{a.device}/{a.since:.3f}",
                    kind=a.kind,
                    device=a.device,
                    since=a.since,
                    until=a.closed,
                    detail=a.detail,
                )
                for a in alerts
            ]
        )

    def compliance(self) -> ComplianceOut:
        rows = self.store.compliance()
        return ComplianceOut(
            total=len(rows),
            compliant=sum(r.compliant for r in rows),
            items=[ComplianceItem.model_validate(r, from_attributes=True) for r in rows],
        )

    def quarantine(
        self, *, reason: str | None, device: str | None, limit: int, offset: int
    ) -> QuarantineOut:
        page: QuarantinePage = self.store.quarantine(
            reason=reason, device=device, limit=limit, offset=offset
        )
        return QuarantineOut(
            total=page.total,
            by_reason=page.by_reason,
            items=[
                QuarantineItem(
                    id=q.id,
                    at=q.at,
                    reason=q.reason,
                    topic=q.topic,
                    device=q.device,
                    detail=q.detail,
                    size=q.size,
                    truncated=len(q.payload) < q.size,
                    payload=q.payload.decode("utf-8", "backslashreplace"),
                )
                for q in page.items
            ],
        )

    def public_summary(self) -> PublicSummaryOut:
        regions = [
            PublicRegion(region=r.region, active_aps=r.active_aps, connected_users=r.users)
            for r in self.store.public_summary()
        ]
        return PublicSummaryOut(
            ts=self.clock(),
            active_aps=sum(r.active_aps for r in regions),
            connected_users=sum(r.connected_users for r in regions),
            by_region=regions,
        )


def health(stats: IngestStats | None) -> HealthOut:
    return HealthOut(ok=True, ingest=asdict(stats) if stats is not None else None)


# --- the app --------------------------------------------------------------------------------

DeviceId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="Device id: 1-64 letters, digits, '.', '_' or '-'",
    ),
]


def create_app(
    store: Store,
    stats: IngestStats | None = None,
    *,
    web_dir: FsPath = WEB_DIR,
    clock: Any = time.time,
    config_ttl_s: float = 5.0,
) -> FastAPI:
    """The API over ``store``; ``stats`` (the consumer's counters) feed /healthz and /metrics.

    ``config_ttl_s``: how long the config documents behind ``compliant`` may be reused.
    """
    api = Api(store, clock, config_ttl_s)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, stats, noncompliant=api.noncompliant))
    app = FastAPI(
        title="Titik central",
        version=__version__,
        description="Fleet state, history, alerts and config compliance of the Wi-Fi gateways.",
    )
    not_found: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}

    @app.get("/api/summary", tags=["fleet"])
    def get_summary() -> SummaryOut:
        """Fleet counts, clients and open alerts, in all and per region."""
        return api.summary()

    @app.get("/api/devices", tags=["fleet"])
    def get_devices(
        region: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
        group: Annotated[str | None, Query(max_length=64)] = None,
        status: Literal["online", "offline"] | None = None,
        q: Annotated[
            str | None,
            Query(max_length=MAX_TEXT, description="Case-insensitive substring of id or site"),
        ] = None,
        sort: Annotated[Sort, Query(description="A field, or -field for descending")] = "id",
        limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> DevicesOut:
        """Devices matching the filters, sorted and paged; ``total`` counts before paging."""
        return api.devices(
            region=region, group=group, status=status, q=q, sort=sort, limit=limit, offset=offset
        )

    @app.get("/api/devices/{device}", tags=["fleet"], responses=not_found)
    def get_device(device: DeviceId) -> DeviceDetail:
        """One device with its platform, session and desired/reported config."""
        return api.device(device)

    @app.get("/api/devices/{device}/history", tags=["fleet"], responses=not_found)
    def get_history(
        device: DeviceId,
        since: Annotated[
            float | None,
            Query(
                ge=0,
                le=WIRE_TS_MAX,
                allow_inf_nan=False,
                description="Unix seconds; default until - 24 h",
            ),
        ] = None,
        until: Annotated[
            float | None,
            Query(
                ge=0, le=WIRE_TS_MAX, allow_inf_nan=False, description="Unix seconds; default now"
            ),
        ] = None,
    ) -> HistoryOut:
        """Raw samples when ``since`` is within store.raw_days, else 5-minute rollups."""
        return api.history(device, since, until)

    @app.get("/api/alerts", tags=["fleet"])
    def get_alerts(
        open_: Annotated[
            bool | None,
            Query(alias="open", description="true: open only; false: closed only; absent: all"),
        ] = None,
    ) -> AlertsOut:
        """Alerts, oldest first."""
        return api.alerts(open_)

    @app.get("/api/compliance", tags=["fleet"])
    def get_compliance() -> ComplianceOut:
        """Config compliance of every device."""
        return api.compliance()

    @app.get("/api/quarantine", tags=["ops"])
    def get_quarantine(
        reason: Annotated[
            str | None, Query(max_length=32, description="One of " + ", ".join(BAD_REASONS))
        ] = None,
        device: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=0, le=MAX_QUARANTINE_LIMIT)] = 100,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    ) -> QuarantineOut:
        """Messages central could not take, kept with their reason, newest first."""
        return api.quarantine(reason=reason, device=device, limit=limit, offset=offset)

    @app.get("/api/public/summary", tags=["public"])
    def get_public_summary(response: Response) -> PublicSummaryOut:
        """Active access points and connected users, for the city app (no auth, CORS *)."""
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cache-Control"] = "public, max-age=30"
        return api.public_summary()

    @app.get("/healthz", tags=["ops"])
    def get_health() -> HealthOut:
        """Liveness and the ingest counters."""
        return health(stats)

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def get_metrics() -> Response:
        """Prometheus text exposition: fleet gauges and ingest counters."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    index = web_dir / "index.html"

    @app.get("/", include_in_schema=False, response_model=None)
    def get_index() -> FileResponse | HTMLResponse:
        if index.is_file():
            return FileResponse(index)
        return HTMLResponse(PLACEHOLDER)

    if web_dir.is_dir():
        app.mount("/static", StaticFiles(directory=web_dir), name="static")
    return app
