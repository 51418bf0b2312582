"""The dashboard's files: ``GET /`` is web/index.html (viewer or more; a browser without a
credential is sent to /login), ``/static/*`` is web/* (public)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from central.api.auth import require_page

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
PLACEHOLDER = "<!doctype html><title>Titik</title><p>Titik central: the dashboard is not installed; see <a href=/docs>/docs</a>.</p>\n"


def router(web_dir: Path) -> APIRouter:
    r = APIRouter(dependencies=[Depends(require_page("viewer"))])
    index = web_dir / "index.html"

    @r.get("/", include_in_schema=False, response_model=None)
    def get_index() -> FileResponse | HTMLResponse:
        if index.is_file():
            return FileResponse(index)
        return HTMLResponse(PLACEHOLDER)

    return r


def mount_static(app: FastAPI, web_dir: Path) -> None:
    """``/static/*``: the files of ``web_dir`` (nothing when it does not exist). Public: the
    login page and the citizens' page need them, and they hold code, never fleet data."""
    if web_dir.is_dir():
        app.mount("/static", StaticFiles(directory=web_dir), name="static")
