"""Service health (issue 20), viewer or more: each AP's latest service report and its history,
roll-ups per region and site, and the worst APs with the reasons for their scores.

Scores are computed once, at ingest, by the agent's own function (agent.protocol.score), and
read back here: the API, the dashboard and the alerts show the same number.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field

from central.api.auth import require
from central.api.queries import MAX_LIMIT, MAX_TEXT
from central.api.routes.fleet import NOT_FOUND, DeviceId, Since, Until
from central.store.service import Latest, ServiceStore

DAY_S = 86400.0


class DeductionOut(BaseModel):
    name: str = Field(description="The rule's name (docs/protocol.md, 'The health score')")
    points: int
    detail: str = Field(description="What was measured, e.g. 'busiest radio's channel busy, %: 93'")


class ServiceLatestOut(BaseModel):
    device: str
    region: str | None
    site: str | None
    ts: float = Field(description="The report's end of interval (the gateway's clock)")
    received: float = Field(description="When central took it (central's clock)")
    score: int = Field(description="0-100, from agent.protocol.score")
    deductions: list[DeductionOut]
    failed: list[str] = Field(description="Probes that failed: dns, portal, internet")
    fresh: bool = Field(
        description="Younger than 3 of its intervals (15 min at least): counted in roll-ups"
    )
    report: dict[str, Any] | None = Field(
        default=None, description="The report itself (wire format; only for one AP)"
    )


class ServiceWorstOut(BaseModel):
    items: list[ServiceLatestOut]


class ServiceScoreOut(BaseModel):
    device: str
    score: int
    fresh: bool


class ServiceScoresOut(BaseModel):
    items: list[ServiceScoreOut] = Field(description="Every AP with a report, by device id")
    below: int = Field(description="alerts.service_score_below: scores under it are poor")


class ServicePointOut(BaseModel):
    ts: float
    score: int
    reasons: list[str]
    radios: dict[str, list[int | float | None]] = Field(
        description="By AP interface: [channel, busy_pct, noise_dbm, clients]"
    )
    ssids: dict[str, list[int | float | None]] = Field(
        description="By AP interface: [stations, weak_pct (< -70 dBm), tx_mbps, rx_mbps, "
        "retry_pct, fail_pct]"
    )
    probes: list[int | float | None] = Field(
        description="[dns_ms, portal_ms, inet_ms, loss_pct, jitter_ms, broker_ms]; [] if none"
    )


class ServiceHistoryOut(BaseModel):
    points: list[ServicePointOut]


class ServiceRollupOut(BaseModel):
    region: str
    site: str | None
    aps: int = Field(description="APs with a fresh report")
    mean_score: float
    min_score: int
    below: int = Field(description="APs scoring under alerts.service_score_below")
    dns_failed: int
    portal_failed: int
    inet_failed: int


class ServiceRollupsOut(BaseModel):
    by: Literal["region", "site"]
    below: int
    items: list[ServiceRollupOut]


def _out(x: Latest, *, with_report: bool = False) -> ServiceLatestOut:
    return ServiceLatestOut(
        device=x.device,
        region=x.region,
        site=x.site,
        ts=x.ts,
        received=x.received,
        score=x.score,
        deductions=[DeductionOut(name=n, points=p, detail=d) for n, p, d in x.deductions],
        failed=x.failed,
        fresh=x.fresh,
        report=x.report if with_report else None,
    )


def router(service: ServiceStore, below: int, clock: Callable[[], float]) -> APIRouter:
    r = APIRouter(tags=["service"], dependencies=[Depends(require("viewer"))])

    @r.get("/api/service/worst")
    def get_worst(
        limit: Annotated[int, Query(ge=0, le=MAX_LIMIT)] = 20,
        region: Annotated[str | None, Query(max_length=MAX_TEXT)] = None,
    ) -> ServiceWorstOut:
        """The APs with the lowest scores (fresh reports only), with their deductions."""
        return ServiceWorstOut(items=[_out(x) for x in service.worst(limit=limit, region=region)])

    @r.get("/api/service/scores")
    def get_scores() -> ServiceScoresOut:
        """Every AP's latest score: what the map and the device table colour by."""
        return ServiceScoresOut(
            items=[ServiceScoreOut(device=d, score=s, fresh=f) for d, s, f in service.scores()],
            below=below,
        )

    @r.get("/api/service/rollups")
    def get_rollups(by: Literal["region", "site"] = "region") -> ServiceRollupsOut:
        """Per region (or per region and site): mean and lowest score, APs under the
        threshold, APs with each probe failing."""
        rows = service.rollups(by, below)
        return ServiceRollupsOut(
            by=by,
            below=below,
            items=[ServiceRollupOut.model_validate(x, from_attributes=True) for x in rows],
        )

    @r.get("/api/devices/{device}/service", responses=NOT_FOUND)
    def get_latest(device: DeviceId) -> ServiceLatestOut:
        """The AP's latest service report, its score and deductions."""
        x = service.latest(device)
        if x is None:
            raise HTTPException(404, f"no service report from {device}")
        return _out(x, with_report=True)

    @r.get("/api/devices/{device}/service/history", responses=NOT_FOUND)
    def get_history(
        device: DeviceId, since: Since = None, until: Until = None
    ) -> ServiceHistoryOut:
        """Score, radio, client-quality and probe figures in [since, until], one point per
        5-minute bucket (the newest report of each)."""
        until = clock() if until is None else until
        since = until - DAY_S if since is None else since
        if since > until:
            raise HTTPException(422, "since must not be after until")
        points = service.history(device, since, until)
        return ServiceHistoryOut(
            points=[ServicePointOut.model_validate(p, from_attributes=True) for p in points]
        )

    return r
