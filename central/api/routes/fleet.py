"""Fleet endpoints (viewer or more): summary, devices, one device, its history, alerts,
compliance."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query

from agent.protocol import WIRE_TS_MAX
from central.api.auth import require
from central.api.models import (
    AlertsOut,
    ComplianceOut,
    DeviceDetail,
    DevicesOut,
    ErrorOut,
    HistoryOut,
    SummaryOut,
)
from central.api.queries import MAX_LIMIT, MAX_OFFSET, MAX_TEXT, NAME_PATTERN, Api, Sort

DeviceId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=NAME_PATTERN,
        description="Device id: 1-64 letters, digits, '.', '_' or '-'",
    ),
]

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut}}

#: The window of a device's history endpoints (fleet, console, service).
Since = Annotated[
    float | None,
    Query(
        ge=0, le=WIRE_TS_MAX, allow_inf_nan=False, description="Unix seconds; default until - 24 h"
    ),
]
Until = Annotated[
    float | None,
    Query(ge=0, le=WIRE_TS_MAX, allow_inf_nan=False, description="Unix seconds; default now"),
]


def router(api: Api) -> APIRouter:
    r = APIRouter(tags=["fleet"], dependencies=[Depends(require("viewer"))])

    @r.get("/api/summary")
    def get_summary() -> SummaryOut:
        """Fleet counts, clients and open alerts, in all and per region."""
        return api.summary()

    @r.get("/api/devices")
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

    @r.get("/api/devices/{device}", responses=NOT_FOUND)
    def get_device(device: DeviceId) -> DeviceDetail:
        """One device with its platform, session and desired/reported config."""
        return api.device(device)

    @r.get("/api/devices/{device}/history", responses=NOT_FOUND)
    def get_history(device: DeviceId, since: Since = None, until: Until = None) -> HistoryOut:
        """Raw samples when ``since`` is within store.raw_days, else 5-minute rollups."""
        return api.history(device, since, until)

    @r.get("/api/alerts")
    def get_alerts(
        open_: Annotated[
            bool | None,
            Query(alias="open", description="true: open only; false: closed only; absent: all"),
        ] = None,
        state: Annotated[
            Literal["open", "acknowledged", "snoozed", "resolved"] | None,
            Query(description="Only alerts in this state (docs/alerts.md, 'States')"),
        ] = None,
    ) -> AlertsOut:
        """Alerts, oldest first, with their state (open, acknowledged, snoozed, resolved)."""
        return api.alerts(open_, state)

    @r.get("/api/compliance")
    def get_compliance() -> ComplianceOut:
        """Config compliance of every device."""
        return api.compliance()

    return r
