"""What anyone may read: the city app's summary (active access points, connected users)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from central.api.auth import public
from central.api.models import PublicSummaryOut
from central.api.queries import Api


def router(api: Api) -> APIRouter:
    r = APIRouter(tags=["public"], dependencies=[Depends(public)])

    @r.get("/api/public/summary")
    def get_public_summary(response: Response) -> PublicSummaryOut:
        """Active access points and connected users, for the city app (no auth, CORS *)."""
        response.headers["Access-Control-Allow-Origin"] = "*"
        response.headers["Cache-Control"] = "public, max-age=30"
        return api.public_summary()

    return r
