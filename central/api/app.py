"""The HTTP API: JSON for the dashboard and the city app, Prometheus text for monitoring.

:func:`create_app` is a pure factory (no globals): every app gets its own store, counters
and Prometheus registry, so tests can build many. Endpoints are plain ``def`` functions, so
FastAPI runs them in its thread pool; the SQLite store gives each thread its own connection
and, in WAL mode, readers never block the ingest writer. The contract is documented in
docs/central.md ("HTTP API"); fields may be added, never renamed.

The endpoints live in routers (central/api/routes/), each declaring its role
(central/api/auth.py); the queries behind them are in central/api/queries.py and the response
models in central/api/models.py; this module only wires them together. Routers reach the
credentials check and the audit log as ``request.app.state.auth`` and
``request.app.state.audit``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from prometheus_client import CollectorRegistry
from prometheus_client.registry import Collector

from agent import __version__
from central.api.auth import Auth, AuthCollector
from central.api.metrics import (
    FleetCollector,
    MetricsQueries,
    RefreshedBlock,
    ServiceCollector,
    device_exposition,
)
from central.api.queries import Api
from central.api.routes import audit, console, docs, fleet, ops, public, service, session, web
from central.api.routes.web import WEB_DIR
from central.config import MapConfig
from central.ingest.consumer import IngestStats
from central.store.audit import AuditLog
from central.store.base import Store
from central.store.beside import service_of
from central.store.pg.tables import PgAuditLog, PgTokenStore
from central.store.tokens import TokenStore

__all__ = ["WEB_DIR", "create_app"]


def create_app(
    store: Store,
    stats: IngestStats | None = None,
    *,
    tokens: TokenStore | None = None,
    audit_log: AuditLog | None = None,
    web_dir: Path = WEB_DIR,
    clock: Any = time.time,
    config_ttl_s: float = 5.0,
    session_s: float = 12 * 3600.0,
    metrics_public: bool = False,
    device_series: bool = False,
    device_series_max_age_s: float = 15.0,
    routers: Sequence[APIRouter] = (),
    map_config: MapConfig | None = None,
    collectors: Sequence[Collector] = (),
    service_score_below: int = 60,
) -> FastAPI:
    """The API over ``store``; ``stats`` (the consumer's counters) feed /healthz and /metrics.

    ``tokens`` and ``audit_log`` default to the tables of the store's own database (its SQLite
    file ``store.path``, or PostgreSQL at ``store.url``); another store must pass them. ``config_ttl_s``: how long the
    desired config documents behind ``compliant`` may be reused (the reports are read with
    each page where the store can read some of them). ``session_s``: how long a dashboard
    session lasts. ``metrics_public``: serve /metrics without a token. ``device_series``:
    per-gateway series on /metrics ([metrics] device_series), rebuilt in the background every
    ``device_series_max_age_s`` while scraped (central.api.metrics.RefreshedBlock).
    ``routers``: more routers (the console's actions: central.api.routes.actions.build_router).
    ``collectors``: more series on /metrics (the webhook's:
    central.api.routes.alerting.WebhookCollector).
    ``service_score_below``: [alerts] service_score_below, for the service roll-ups (a store
    with neither a path nor a url has no service tables, and no service endpoints).
    """
    path: Path | None = getattr(store, "path", None)
    url: str | None = getattr(store, "url", None)
    if tokens is None or audit_log is None:
        if url:  # the PostgreSQL store: its tables are in the same database
            tokens = tokens or PgTokenStore(url)
            audit_log = audit_log or PgAuditLog(url)
        elif path is None:
            raise TypeError("create_app: pass tokens= and audit_log= for a store without a path")
        else:
            tokens = tokens or TokenStore(path)
            audit_log = audit_log or AuditLog(path)
    api = Api(store, clock, config_ttl_s)
    auth = Auth(tokens, session_s=session_s)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(store, stats, noncompliant=api.noncompliant))
    registry.register(AuthCollector(auth))
    for extra_collector in collectors:
        registry.register(extra_collector)
    health = service_of(store, clock=getattr(store, "clock", clock))
    if health is not None:
        registry.register(ServiceCollector(health, service_score_below))
    app = FastAPI(
        title="Titik central",
        version=__version__,
        description="Fleet state, history, alerts and config compliance of the Wi-Fi gateways.",
        # Served by routes/docs.py instead, behind a credential.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.auth = auth
    app.state.audit = audit_log
    app.include_router(fleet.router(api))
    app.include_router(ops.quarantine_router(api))
    app.include_router(public.router(api))
    if health is not None:
        app.include_router(service.router(health, service_score_below, clock))
    app.include_router(ops.health_router(stats))
    block = None
    if device_series and isinstance(store, MetricsQueries):
        rows = store.device_rows
        block = RefreshedBlock(lambda: device_exposition(rows()), max_age_s=device_series_max_age_s)
    app.state.device_series = block
    app.include_router(
        ops.metrics_router(registry, open_to_all=metrics_public, extra=block.get if block else None)
    )
    app.include_router(session.router(web_dir))
    app.include_router(audit.router())
    app.include_router(docs.router(app))
    for extra in routers:
        app.include_router(extra)
    app.include_router(web.router(web_dir))
    app.include_router(console.router(store, map_config or MapConfig(), clock))
    app.include_router(console.pages_router(web_dir))
    web.mount_static(app, web_dir)
    return app
