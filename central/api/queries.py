"""The queries behind the endpoints (:class:`Api`), over any :class:`Store`, and their bounds.

No FastAPI routing here: the routers (central/api/routes/) call these and only these.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict
from typing import Any, Literal, Protocol, runtime_checkable

from fastapi import HTTPException

from agent.protocol.topics import TOPIC_SAFE
from central.api.models import (
    AlertOut,
    AlertsOut,
    ComplianceItem,
    ComplianceOut,
    ConfigOut,
    DesiredOut,
    DeviceDetail,
    DeviceItem,
    DevicesOut,
    HealthOut,
    HistoryOut,
    HistoryPointOut,
    PublicRegion,
    PublicSummaryOut,
    QuarantineItem,
    QuarantineOut,
    RegionSummary,
    ReportedOut,
    SummaryOut,
)
from central.ingest.consumer import IngestStats
from central.store.alerting import AlertingStore
from central.store.base import (
    Alert,
    AlertMark,
    ComplianceRow,
    DesiredDoc,
    DeviceState,
    QuarantinePage,
    ReportedDoc,
    Store,
)
from central.store.beside import alerting_of
from central.store.compliance import compliance as compliance_of
from central.store.console import RegionRow

DAY_S = 86400.0

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


@runtime_checkable
class ReportedDocsOf(Protocol):
    """Optional store extras (both stores have them): the reports of some gateways."""

    def reported_docs_of(self, devices: Collection[str]) -> dict[str, ReportedDoc]: ...


@runtime_checkable
class AlertMarks(Protocol):
    """Optional store extras (the SQLite store has them): operators' marks on alerts."""

    def alert_marks(self) -> dict[str, AlertMark]: ...

    def mark_alert(self, mark: AlertMark) -> None: ...


@runtime_checkable
class RegionCounts(Protocol):
    """Optional store extras (both stores have them, for /metrics): grouped counts."""

    def region_rows(self) -> list[RegionRow]: ...

    def open_alerts_by_region(self) -> list[tuple[str, str, int]]: ...


def alert_id(a: Alert) -> str:
    """An alert's stable API id: ``<kind>/<device>/<since, 3 decimals>``."""
    return f"{a.kind}/{a.device}/{a.since:.3f}"


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
        self._desired: tuple[float, dict[str, DesiredDoc]] | None = None
        self._life: AlertingStore | None = None

    def _lifecycle(self) -> AlertingStore | None:
        """The alert lifecycle's tables of the store's database (central/store/alerting.py)."""
        if self._life is None:
            self._life = alerting_of(self.store)
        return self._life

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

    def _page_docs(
        self, devices: Iterable[str]
    ) -> tuple[dict[str, DesiredDoc], dict[str, ReportedDoc]] | None:
        """Desired documents (re-read at most every ``config_ttl_s``: few, one per group and
        per gateway given its own) and the reports of ``devices`` only, read now: a page of
        the list costs a page of reports, not the fleet's (~0.7 s at 50,000 on SQLite)."""
        if not isinstance(self.store, ReportedDocsOf) or not isinstance(self.store, ConfigDocs):
            return self.config_docs()
        now = time.monotonic()
        with self._docs_lock:
            if self._desired is None or now - self._desired[0] >= self.config_ttl_s:
                self._desired = (now, self.store.desired_docs())
            desired = self._desired[1]
        return desired, self.store.reported_docs_of(list(devices))

    def _compliance_rows(self, devices: Iterable[DeviceState]) -> dict[str, ComplianceRow]:
        devices = list(devices)
        docs = self._page_docs(d.device for d in devices)
        if docs is not None:
            desired, reported = docs
            return {d.device: compliance_of(d, desired, reported.get(d.device)) for d in devices}
        wanted = {d.device for d in devices}
        return {r.device: r for r in self.store.compliance() if r.device in wanted}

    def noncompliant(self) -> int:
        """Gateways not compliant (for /metrics): in SQL where the store can (fresh, and
        ~4 times faster at 10,000 gateways), else from the cached config documents."""
        count = getattr(self.store, "noncompliant_count", None)
        if count is not None:
            return int(count())
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
        if isinstance(self.store, RegionCounts):
            return self._summary_grouped(self.store)
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

    def _summary_grouped(self, store: RegionCounts) -> SummaryOut:
        """The summary from two grouped queries: gateways by region (up, down, online
        gateways' clients) and open alerts by region and kind. The general path above asks
        once per region (40 round trips on PostgreSQL) and loads every open alert."""
        by_region = [
            RegionSummary(
                region=r.region, total=r.online + r.offline, online=r.online, offline=r.offline,
                clients=r.clients,
            )
            for r in sorted(store.region_rows())
        ]  # fmt: skip
        online = sum(r.online for r in by_region)
        total = sum(r.total for r in by_region)
        return SummaryOut(
            ts=self.clock(),
            total=total,
            online=online,
            offline=total - online,
            clients_total=sum(r.clients for r in by_region),
            alerts_open=sum(n for _, _, n in store.open_alerts_by_region()),
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
        docs = self._page_docs([device])
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

    def alerts(self, open_: bool | None, state: str | None = None) -> AlertsOut:
        alerts = self.store.alerts(open_only=open_ is True or state not in (None, "resolved"))
        if open_ is False or state == "resolved":
            alerts = [a for a in alerts if a.closed is not None]
        marks = self.store.alert_marks() if isinstance(self.store, AlertMarks) else {}
        life = self._lifecycle()
        open_only = open_ is True or state not in (None, "resolved")
        rows = {r.id: r for r in life.rows(open_only=open_only)} if life is not None else {}
        items = []
        for a in alerts:
            aid = alert_id(a)
            m = marks.get(aid)
            r = rows.get(aid)
            st = r.state if r is not None else ("resolved" if a.closed is not None else "open")
            if state is not None and st != state:
                continue
            items.append(
                AlertOut(
                    state=st,
                    maintenance=r.maintenance if r is not None else None,
                    incident=r.incident if r is not None else None,
                    id=aid,
                    kind=a.kind,
                    device=a.device,
                    since=a.since,
                    until=a.closed,
                    detail=a.detail,
                    **(
                        {
                            "acked_by": m.acked_by,
                            "acked_at": m.acked_at,
                            "snoozed_until": m.snoozed_until,
                            "snoozed_by": m.snoozed_by,
                            "note": m.note,
                        }
                        if m
                        else {}
                    ),
                )
            )
        return AlertsOut(items=items)

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
