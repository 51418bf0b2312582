"""Schemathesis against the API's own OpenAPI spec: no request it can make gets a 5xx.

Every operation in ``/openapi.json`` is called with requests generated from its schema, both
fitting it and not (schemathesis' positive and negative modes, plus its coverage phase, which
tries each parameter's bounds and just past them), in-process through ASGI, on a store with a
few devices, samples, rollups, configs, alerts and quarantined messages. Issue 16 found
``offset >= 2^63`` and a 60,000-character ``q`` answering 500; the bounds now answer 422.

The examples per operation are bounded (``MAX_EXAMPLES``): the run takes about 10 s here.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from agent.protocol import ConfigReported
from central.api import auth
from central.api.app import create_app
from central.api.routes import alerting
from central.api.routes.rollouts import rollouts_router
from central.config import CentralConfig
from central.ingest.consumer import IngestStats
from central.store.base import (
    AlertChange,
    DesiredDoc,
    DeviceState,
    Quarantined,
    ReportedDoc,
    Sample,
    WriteBatch,
)
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers

NOW = 1_795_800_000.0
MAX_EXAMPLES = 100
HEADERS: dict[str, str] = {}


def fill(store: SqliteStore) -> None:
    devices = [
        DeviceState(
            f"gw-{i}",
            site=f"Site {i}",
            region=f"Region {i % 2}",
            lat=-6.2,
            lon=106.8,
            groups=["jkt"],
            online=i % 3 != 0,
            boot=2,
            last_seen=NOW - 10,
            clients=i,
            cpu_pct=10.0,
            mem_used_pct=40.0,
            temp_c=50.0,
            disk_used_pct=20.0,
            version="0.1.0",
            platform="simulated",
        )
        for i in range(5)
    ]
    store.write(
        WriteBatch(
            devices=devices,
            samples=[
                Sample("gw-1", "s", i, NOW - 3600 + 60 * i, False, 2, i, 1.0, 2.0, 3.0, 4.0, "x", "{}")
                for i in range(30)
            ]
            + [
                Sample("gw-1", "s", 100 + i, NOW - 20 * 86400 + 60 * i, True, 2, 1, None, None, None, None, "x", "{}")
                for i in range(10)
            ],
            desired=[DesiredDoc("group/jkt", 3, '{"version":3}', NOW), DesiredDoc("gw/gw-2", None, "", NOW)],
            reported=[ReportedDoc("gw-1", ConfigReported.model_construct(version=3, source="group/jkt", versions={"group/jkt": 3}, state="applied", error=None, hash="h", ts=NOW), "{}")],
            alerts=[AlertChange("offline", "gw-0", NOW - 100, "offline for 10 min")],
            quarantined=[
                Quarantined(NOW, "schema", "titik/gw/gw-3/telemetry", "gw-3", "seq: too big", b"\xff{", 2)
            ],
        )
    )  # fmt: skip
    store.roll_up()


def build_schema() -> Any:
    """The app over a throwaway store (the spec is loaded at import, before any fixture)."""
    where = Path(tempfile.mkdtemp(prefix="titik-schemathesis-"))
    atexit.register(shutil.rmtree, where, True)
    store = SqliteStore(where / "api.db", clock=lambda: NOW)
    fill(store)
    # An admin token: every operation is reached (the roles are tests/unit/test_api_roles.py's).
    HEADERS.update(auth_headers(store, "admin"))
    # The rollout API too, as titik-central run serves it (central/api/routes/rollouts.py).
    config = CentralConfig.model_validate({"mqtt": {"host": "localhost"}})
    app = create_app(
        store,
        IngestStats(received=3, stored=2),
        web_dir=where / "no-web",
        clock=lambda: NOW,
        routers=[
            # The alert lifecycle's endpoints (issue 19): windows, history, incidents.
            alerting.build_router(store, require=auth.require, clock=lambda: NOW),
            rollouts_router(config, store),
        ],
    )
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app, headers=HEADERS)
    loaded.config.generation.update(max_examples=MAX_EXAMPLES)
    return loaded


schema = build_schema()


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    # filter_too_much: a path parameter such as reopen's ``{alert:path}`` rejects most of
    # what hypothesis draws for it (a full run once drew too few to pass the health check);
    # the check is about the drawing, not the API: the requests that are made still count.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(headers=HEADERS, checks=[not_a_server_error])
