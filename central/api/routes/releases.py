"""Agent packages at ``/releases/<file>``, for the URLs of upgrade manifests (issue 22).

Optional (``[http] releases_dir``): a manifest's URLs may point anywhere (docs/upgrades.md,
"Publishing a release"); this is for a city whose gateways reach only central. No token: a
gateway has none for the HTTP API, a package holds no secret, and each gateway checks what
it downloaded against the size and SHA-256 of the signed manifest before installing it.
Starlette's FileResponse answers ``Range`` requests (206), so the agent's interrupted
download resumes (agent/remote/fetch.py). Only plain file names directly in the directory
are served: no path, no hidden file, no symlink out of it.
"""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")


def releases_router(directory: Path) -> APIRouter:
    r = APIRouter(tags=["releases"])
    root = directory.resolve()

    @r.api_route("/releases/{name}", methods=["GET", "HEAD"], responses={404: {}})
    def release(name: str) -> FileResponse:
        """A package of ``[http] releases_dir`` (ranges answered: a download resumes)."""
        path = (root / name).resolve()
        if not NAME.match(name) or path.parent != root or not path.is_file():
            raise HTTPException(404, f"no package {name!r} here (see [http] releases_dir)")
        return FileResponse(path, media_type="application/octet-stream")

    return r


__all__ = ["releases_router"]
