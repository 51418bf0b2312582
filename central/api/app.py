"""The HTTP API: JSON for the dashboard and the city app, Prometheus text for monitoring.

:func:`create_app` is a pure factory (no globals): every app gets its own store, counters
and Prometheus registry, so tests can build many. Endpoints are plain ``def`` functions, so
FastAPI runs them in its thread pool; the SQLite store gives each thread its own connection
and, in WAL mode, readers never block the ingest writer. The contract is documented in
docs/central.md ("HTTP API"); fields may be added, never renamed.

The endpoints live in routers (central/api/routes/), the queries behind them in
central/api/queries.py and the response models in central/api/models.py; this module only
wires them together.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from agent import __version__
from central.api.metrics import FleetCollector
from central.api.queries import Api
from central.api.routes import console, fleet, ops, public, web
from central.api.routes.web import WEB_DIR
from central.config import MapConfig
from central.ingest.consumer import IngestStats
from central.store.base import Store

__all__ = ["WEB_DIR", "create_app"]


def create_app(
    store: Store,
    stats: IngestStats | None = None,
    *,
    web_dir: Path = WEB_DIR,
    clock: Any = time.time,
    config_ttl_s: float = 5.0,
    map_config: MapConfig | None = None,
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
        docs_url=None,  # /docs is the console's, from the vendored Swagger UI (routes/console.py)
        redoc_url=None,  # ReDoc loads from a CDN: not offered
    )
    app.include_router(fleet.router(api))
    app.include_router(ops.quarantine_router(api))
    app.include_router(public.router(api))
    app.include_router(ops.health_router(stats))
    app.include_router(ops.metrics_router(registry))
    app.include_router(web.router(web_dir))
    app.include_router(console.router(store, map_config or MapConfig(), clock))
    app.include_router(console.pages_router(web_dir))
    web.mount_static(app, web_dir)
    return app
