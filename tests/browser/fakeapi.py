"""A stand-in for central's HTTP API, for the dashboard's browser test only.

It serves the dashboard's files the way ``central/api/app.py`` does (``GET /`` is
``central/api/web/index.html``, ``/static/*`` is ``central/api/web/*``) and answers the API
contract from the JSON fixtures beside this file. ``/api/devices`` honours ``region``,
``group``, ``status``, ``q``, ``sort``, ``limit`` and ``offset``, so the dashboard's filters
and sorting are exercised for real. It is not the API: that one's own tests cover it.
"""

from __future__ import annotations

import copy
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

FIXTURES = Path(__file__).parent / "fixtures"
WEB = Path(__file__).resolve().parents[2] / "central" / "api" / "web"

SORTABLE = {
    "id",
    "region",
    "site",
    "online",
    "last_seen",
    "clients",
    "cpu_pct",
    "mem_used_pct",
    "temp_c",
}
LIST_FIELDS = (
    "id", "site", "region", "lat", "lon", "groups", "online", "last_seen", "clients",
    "cpu_pct", "mem_used_pct", "temp_c", "disk_used_pct", "version", "compliant",
)  # fmt: skip
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _sort_key(field: str, device: dict[str, Any]) -> tuple[int, Any]:
    """Nulls sort below every value (like the store's ``coalesce(x, -1)``)."""
    value = device.get(field)
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    return (1, value)


def filter_devices(devices: list[dict[str, Any]], query: dict[str, str]) -> list[dict[str, Any]]:
    """What ``GET /api/devices`` returns before paging, as the contract describes it."""
    out = list(devices)
    if region := query.get("region"):
        out = [d for d in out if d["region"] == region]
    if group := query.get("group"):
        out = [d for d in out if group in (d.get("groups") or [])]
    if status := query.get("status"):
        if status not in ("online", "offline"):
            raise ValueError(f"bad status {status!r}")
        out = [d for d in out if bool(d["online"]) == (status == "online")]
    if q := query.get("q", "").strip().lower():
        out = [d for d in out if q in d["id"].lower() or q in (d.get("site") or "").lower()]
    sort = query.get("sort", "id")
    field = sort.removeprefix("-")
    if field not in SORTABLE:
        raise ValueError(f"bad sort {sort!r}")
    out.sort(key=lambda d: d["id"])  # ties stay in id order, both directions
    out.sort(key=lambda d: _sort_key(field, d), reverse=sort.startswith("-"))
    return out


class FakeApi:
    """The fixture data (mutable by a test) and a record of the API requests received."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.reset()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def reset(self) -> None:
        with self.lock:
            self.summary: dict[str, Any] = load_fixture("summary.json")
            self.devices: list[dict[str, Any]] = load_fixture("devices.json")["items"]
            self.details: dict[str, dict[str, Any]] = load_fixture("details.json")
            self.history: dict[str, Any] = load_fixture("history.json")
            self.alerts: dict[str, Any] = load_fixture("alerts.json")
            self.requests = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def count(self, path: str) -> int:
        with self.lock:
            return sum(1 for p, _ in self.requests if p == path)

    def queries(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [q for p, q in self.requests if p == path]

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, Any]:  # noqa: PLR0911
        with self.lock:
            self.requests.append((path, query))
            if path == "/api/me":
                return 200, {"name": "test", "role": "viewer"}
            if path == "/api/console/settings":
                return 200, {
                    "map": {"tile_url": "", "attribution": "", "max_zoom": 19},
                    "retention": {"raw_days": 7, "rollup_days": 90},
                }
            if path == "/api/summary":
                return 200, copy.deepcopy(self.summary)
            if path == "/api/alerts":
                return 200, copy.deepcopy(self.alerts)
            if path == "/api/devices":
                return self._devices(query)
            if path == "/api/service/scores":  # no service reports in these fixtures
                return 200, {"items": [], "below": 60}
            if path == "/api/service/worst":
                return 200, {"items": []}
            if path.startswith("/api/devices/"):
                return self._device(path.split("/")[3:])
            return 404, {"detail": "not found"}

    def _devices(self, query: dict[str, str]) -> tuple[int, Any]:
        try:
            rows = filter_devices(self.devices, query)
            limit = int(query.get("limit", "100"))
            offset = int(query.get("offset", "0"))
        except ValueError as e:
            return 400, {"detail": str(e)}
        items = [{k: d.get(k) for k in LIST_FIELDS} for d in rows[offset : offset + limit]]
        return 200, {"total": len(rows), "items": items}

    def _device(self, parts: list[str]) -> tuple[int, Any]:
        dev_id = unquote(parts[0])
        found = next((d for d in self.devices if d["id"] == dev_id), None)
        if found is None or parts[1:] not in ([], ["history"]):
            return 404, {"detail": "not found"}
        if parts[1:] == ["history"]:
            return 200, copy.deepcopy(self.history)
        return 200, {**copy.deepcopy(found), **copy.deepcopy(self.details[dev_id])}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                split = urlsplit(self.path)
                if split.path.startswith("/api/"):
                    query = {k: v[-1] for k, v in parse_qs(split.query).items()}
                    status, payload = api.answer(split.path, query)
                    self._send(status, json.dumps(payload).encode(), "application/json")
                    return
                if split.path == "/":
                    file = WEB / "index.html"
                elif split.path.startswith("/static/"):
                    file = (WEB / unquote(split.path.removeprefix("/static/"))).resolve()
                    if WEB.resolve() not in file.parents:
                        file = WEB / "missing"
                else:
                    file = WEB / "missing"
                if not file.is_file():
                    self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")
                    return
                ctype = CONTENT_TYPES.get(file.suffix, "application/octet-stream")
                self._send(HTTPStatus.OK, file.read_bytes(), ctype)

        return Handler
