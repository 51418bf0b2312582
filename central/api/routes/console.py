"""The web console: its pages, its settings and the WAN history.

Every page is a static HTML shell under ``central/api/web/`` (no data in it), viewer or more
(a browser without a session is sent to ``/login``) except the citizens' page; the data come
from the JSON API with the visitor's credential. The libraries the pages use are vendored
(``central/api/web/vendor/``, ``scripts/vendor-web``), so no page loads anything from another
host (``/docs`` too: routes/docs.py points Swagger UI at the vendored swagger-ui-dist).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import FileResponse, HTMLResponse
from pydantic import BaseModel, Field

from central.api.auth import public, require, require_page
from central.api.routes.fleet import NOT_FOUND, DeviceId, Since, Until
from central.config import MapConfig
from central.store.base import Store

DAY_S = 86400.0

#: URL path -> the page's file in web/ (viewer or more). "/" (the overview) is routes/web.py's,
#: "/login" routes/session.py's, "/docs" routes/docs.py's.
PAGES = {
    "/map": "map.html",
    "/history": "history.html",
    "/alerts": "alerts.html",
    "/actions": "actions.html",
    "/rollouts": "rollouts.html",
    "/audit": "audit.html",
}
#: The citizens' page: public, like the summary it shows.
CITY = ("/city", "city.html")


class MapSettings(BaseModel):
    tile_url: str = Field(description="Leaflet tile URL template; '' = no tiles")
    attribution: str
    max_zoom: int


class RetentionSettings(BaseModel):
    raw_days: float = Field(description="Raw samples are kept this long (history at full detail)")
    rollup_days: float = Field(description="5-minute rollups are kept this long (history's end)")


class ConsoleSettings(BaseModel):
    map: MapSettings
    retention: RetentionSettings


class NetPointOut(BaseModel):
    ts: float = Field(description="Sample time, or the start of a 5-minute bucket")
    count: int = Field(description="Samples behind the point")
    rx_bps: float | None = Field(description="WAN receive rate (users' download), bytes/s")
    tx_bps: float | None = Field(description="WAN send rate (users' upload), bytes/s")
    rx_bps_max: float | None = Field(description="Peak receive rate in the bucket")
    tx_bps_max: float | None = Field(description="Peak send rate in the bucket")
    wan_up: float | None = Field(
        description="1 up, 0 down; in a bucket the share of samples with the WAN up; null: unknown"
    )


class NetHistoryOut(BaseModel):
    resolution: Literal["raw", "5m"]
    points: list[NetPointOut]


def router(store: Store, map_config: MapConfig, clock: Callable[[], float]) -> APIRouter:
    """The console's JSON endpoints (settings, WAN history)."""
    r = APIRouter(tags=["console"], dependencies=[Depends(require("viewer"))])

    def retention() -> RetentionSettings:
        return RetentionSettings(
            raw_days=float(getattr(store, "raw_days", 7.0)),
            rollup_days=float(getattr(store, "rollup_days", 90.0)),
        )

    @r.get("/api/console/settings")
    def get_settings() -> ConsoleSettings:
        """What the pages need to know: the map's tiles and how far back history goes."""
        return ConsoleSettings(
            map=MapSettings(
                tile_url=map_config.tile_url,
                attribution=map_config.attribution,
                max_zoom=map_config.max_zoom,
            ),
            retention=retention(),
        )

    @r.get("/api/devices/{device}/net", responses=NOT_FOUND)
    def get_net_history(
        device: DeviceId, since: Since = None, until: Until = None
    ) -> NetHistoryOut:
        """WAN traffic and WAN state: raw samples within store.raw_days, else 5-minute rollups."""
        if store.device(device) is None:
            raise HTTPException(404, f"no device {device}")
        until = clock() if until is None else until
        since = until - DAY_S if since is None else since
        if since > until:
            raise HTTPException(422, "since must not be after until")
        store_clock: Callable[[], float] = getattr(store, "clock", clock)
        raw = since >= store_clock() - retention().raw_days * DAY_S
        points = store.net_history(device, since, until)
        return NetHistoryOut(
            resolution="raw" if raw else "5m",
            points=[NetPointOut.model_validate(p, from_attributes=True) for p in points],
        )

    return r


def pages_router(web_dir: Path) -> APIRouter:
    """The console's HTML pages: a browser without a session is sent to /login; /city is public."""
    r = APIRouter(include_in_schema=False)

    def page(file: str) -> FileResponse | HTMLResponse:
        path = web_dir / file
        if path.is_file():
            return FileResponse(path, headers={"Cache-Control": "no-cache"})
        return HTMLResponse("the console's pages are not installed", status_code=404)

    viewer = [Depends(require_page("viewer"))]
    for url, file in PAGES.items():
        r.add_api_route(
            url,
            lambda file=file: page(file),
            methods=["GET"],
            response_model=None,
            name=file,
            dependencies=viewer,
        )
    url, file = CITY
    r.add_api_route(
        url,
        lambda: page(file),
        methods=["GET"],
        response_model=None,
        name=file,
        dependencies=[Depends(public)],
    )
    return r
