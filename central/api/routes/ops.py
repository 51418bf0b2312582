"""Operations endpoints: the quarantine (operator), liveness (public), Prometheus metrics."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from central.api.auth import public, require
from central.api.models import HealthOut, QuarantineOut
from central.api.queries import MAX_OFFSET, MAX_QUARANTINE_LIMIT, Api, health
from central.ingest.consumer import BAD_REASONS, IngestStats


def quarantine_router(api: Api) -> APIRouter:
    """Operator or more: the kept payloads are raw bytes from the broker."""
    r = APIRouter(tags=["ops"], dependencies=[Depends(require("operator"))])

    @r.get("/api/quarantine")
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

    return r


def health_router(stats: IngestStats | None) -> APIRouter:
    """Public: a load balancer or systemd watchdog asks it without a token."""
    r = APIRouter(tags=["ops"], dependencies=[Depends(public)])

    @r.get("/healthz")
    def get_health() -> HealthOut:
        """Liveness and the ingest counters."""
        return health(stats)

    return r


def metrics_router(
    registry: CollectorRegistry,
    *,
    open_to_all: bool = False,
    extra: Callable[[], bytes] | None = None,
) -> APIRouter:
    """Viewer or more (Prometheus sends a Bearer token: its ``authorization`` setting), or
    public when ``auth.metrics_public`` is set in central.toml. ``extra``: more families in
    the text format, appended (the per-gateway series)."""
    dep = public if open_to_all else require("viewer")
    r = APIRouter(tags=["ops"], dependencies=[Depends(dep)])

    @r.get("/metrics", response_class=Response)
    def get_metrics() -> Response:
        """Prometheus text exposition: fleet and per-region gauges, ingest counters and, with
        [metrics] device_series, per-gateway health series."""
        body = generate_latest(registry)
        if extra is not None:
            body += extra()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return r
