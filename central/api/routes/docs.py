"""The API's own description: ``/openapi.json`` and Swagger UI at ``/docs`` (viewer or more)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse

from central.api.auth import require, require_page

VENDOR = "/static/vendor/swagger-ui-dist"


def router(app: FastAPI) -> APIRouter:
    r = APIRouter()

    @r.get("/openapi.json", include_in_schema=False, dependencies=[Depends(require("viewer"))])
    def get_openapi() -> dict[str, Any]:
        return app.openapi()

    @r.get("/docs", include_in_schema=False, dependencies=[Depends(require_page("viewer"))])
    def get_docs() -> HTMLResponse:
        # The vendored swagger-ui-dist (scripts/vendor-web), not a CDN: /docs works offline.
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title} · API",
            swagger_js_url=f"{VENDOR}/swagger-ui-bundle.js",
            swagger_css_url=f"{VENDOR}/swagger-ui.css",
            swagger_favicon_url="data:,",
            # The default asks validator.swagger.io about the spec: another host.
            swagger_ui_parameters={"validatorUrl": None},
        )

    return r
