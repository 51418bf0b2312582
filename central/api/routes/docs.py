"""The API's own description: ``/openapi.json`` and Swagger UI at ``/docs`` (viewer or more)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from central.api.auth import require, require_page


def router(app: FastAPI) -> APIRouter:
    r = APIRouter()

    @r.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def get_openapi() -> dict[str, Any]:
        return app.openapi()

    @r.get("/docs", include_in_schema=False, dependencies=[Depends(require_page("viewer"))])
    def get_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} · API")

    return r
