"""The real central API (``create_app`` over a real SQLite store) served by uvicorn on a free
loopback port, with a city-sized fleet in the store, for the console's browser tests.

The fleet is titik-sim's plan (``central.sim.fleet.gateway_plan``: Jakarta's regions, ids
``gw-sim-NNNNN``); every 25th access point and a block of 150 are offline (so clusters of
every colour exist), and ``gw-sim-00000`` has 6 hours of raw samples with WAN traffic (a WAN
outage in the middle) plus 5-minute rollups from 20 days ago, so the history page has both
resolutions to draw.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from central.actions.core import Console
from central.actions.publish import MqttPublisher
from central.api import auth
from central.api.app import WEB_DIR, create_app
from central.api.routes import alerting
from central.api.routes.actions import build_router
from central.config import CentralMqttConfig, MapConfig
from central.sim.fleet import gateway_plan
from central.store.base import AlertChange, DeviceState, Sample, WriteBatch
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore

SHOWCASE = "gw-sim-00000"
DAY = 86400.0


def offline(i: int) -> bool:
    return i % 25 == 7 or 3000 <= i < 3150


def _raw(seq: int, ts: float, wan_up: bool, rx: int, tx: int) -> str:
    ifaces = {"br-lan": {"up": True, "rx": 1, "tx": 1, "rx_bps": tx, "tx_bps": rx}}
    if wan_up:
        ifaces["wan"] = {"up": True, "rx": 1, "tx": 1, "rx_bps": rx, "tx_bps": tx}
    return json.dumps(
        {
            "device": SHOWCASE,
            "seq": seq,
            "ts": ts,
            "net": {"wan_up": wan_up, "wan": "wan" if wan_up else None, "ifaces": ifaces},
        }
    )


def showcase_samples(now: float) -> list[Sample]:
    out = []
    seq = 0
    for start, n in ((now - 20 * DAY, 240), (now - 6 * 3600, 360)):
        for k in range(n):
            ts = start + k * 60
            up = not 150 <= k < 170
            rx = int(200_000 + 150_000 * ((k % 60) / 60)) if up else 0
            out.append(
                Sample(SHOWCASE, "s1", seq, ts, False, 1, 5 + k % 30, 10.0 + k % 40, 45.0,
                       55.0 + (k % 10), 30.0, "0.1.0", _raw(seq, ts, up, rx, rx // 5))
            )  # fmt: skip
            seq += 1
    return out


def fill(store: SqliteStore, n: int, now: float) -> list[dict[str, Any]]:
    plan = gateway_plan(n)
    devices = [
        DeviceState(
            str(p["id"]),
            site=str(p["site"]),
            region=str(p["region"]),
            lat=float(p["lat"]),  # type: ignore[arg-type]
            lon=float(p["lon"]),  # type: ignore[arg-type]
            groups=list(p["groups"]),  # type: ignore[call-overload]
            online=not offline(i),
            last_seen=now - (900 if offline(i) else 20),
            clients=None if offline(i) else i % 40,
            cpu_pct=12.0,
            mem_used_pct=40.0,
            temp_c=50.0,
            disk_used_pct=20.0,
            version="0.1.0",
            platform="simulated",
            offline_since=now - 900 if offline(i) else None,
        )
        for i, p in enumerate(plan)
    ]
    alerts = [
        AlertChange("offline", d.device, now - 600, "offline for 10 min")
        for d in devices[:200]
        if not d.online
    ]
    store.write(WriteBatch(devices=devices, samples=showcase_samples(now), alerts=alerts))
    store.roll_up()
    return plan


@dataclass
class ConsoleServer:
    """``create_app`` over a filled store, served on 127.0.0.1:<free port> in a thread."""

    tmp: Path
    n: int = 9000
    map_config: MapConfig = field(default_factory=MapConfig)
    now: float = field(default_factory=time.time)
    #: The console's actions, as central runs them: published through this broker
    #: (host, port), signatures checked against these keys ([console] signing_keys).
    broker: tuple[str, int] | None = None
    signing_keys: list[str] = field(default_factory=list)
    #: PostgreSQL's url (an empty database) to serve from instead of a SQLite file.
    pg_url: str | None = None

    def __post_init__(self) -> None:
        self.store: SqliteStore | PgStore
        if self.pg_url:
            self.store = PgStore(self.pg_url, clock=time.time)
        else:
            self.store = SqliteStore(self.tmp / "console.db", clock=time.time)
        self.plan = fill(self.store, self.n, self.now)
        self.publisher: MqttPublisher | None = None
        routers = []
        if self.broker is not None:
            host, port = self.broker
            self.publisher = MqttPublisher(CentralMqttConfig(host=host, port=port))
            self.publisher.start()
            store = self.store
            console = Console(
                prefix="titik",
                signing_keys=self.signing_keys,
                publisher=self.publisher,
                docs=store,
                members=lambda g: store.devices(group=g, limit=0).total,
            )
            routers.append(
                build_router(
                    console=console,
                    store=store,
                    require=auth.require,
                    audit_of=lambda request: request.app.state.audit,
                )
            )
        # The alert lifecycle's endpoints (history, reopen, maintenance, incidents).
        routers.append(alerting.build_router(self.store, require=auth.require))
        self.app: FastAPI = create_app(
            self.store, web_dir=WEB_DIR, map_config=self.map_config, routers=routers
        )
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout: float = 20.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)  # polling the server's own flag: uvicorn offers no event
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        if self.publisher is not None:
            self.publisher.stop()
        self.store.close()
