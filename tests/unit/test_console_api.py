"""The console's endpoints: WAN history (raw and rollups), settings, pages and offline /docs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from central.api.app import WEB_DIR, create_app
from central.config import ConfigError, MapConfig, parse_config
from central.store.base import DeviceState, Sample, WriteBatch
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers

NOW = 1_795_800_000.0  # a multiple of 300
DAY = 86400.0


def raw_sample(seq: int, ts: float, rx: int | None, tx: int | None, up: bool | None) -> Sample:
    net: dict[str, Any] = {"wan_up": up, "wan": "eth0.2" if up else None, "ifaces": {}}
    if up:
        net["ifaces"]["eth0.2"] = {"up": True, "rx": 1, "tx": 1, "rx_bps": rx, "tx_bps": tx}
    # A LAN interface with other numbers: it must not be read as the WAN.
    net["ifaces"]["br-lan"] = {"up": True, "rx": 1, "tx": 1, "rx_bps": 7, "tx_bps": 7}
    raw = json.dumps({"device": "gw-1", "seq": seq, "ts": ts, "net": net})
    return Sample("gw-1", "s", seq, ts, False, 1, 3, 10.0, 40.0, 50.0, 20.0, "0.1.0", raw)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteStore | PgStore]:
    """The same samples in SQLite and in PostgreSQL (tests/postgres.py)."""
    st: SqliteStore | PgStore
    if request.param == "sqlite":
        st = SqliteStore(tmp_path / "c.db", raw_days=7, rollup_days=90, clock=lambda: NOW)
    else:
        url = request.getfixturevalue("pg_url")
        st = PgStore(url, raw_days=7, rollup_days=90, clock=lambda: NOW)
    samples = [
        # Within raw_days: three samples, the WAN down in the middle one.
        raw_sample(1, NOW - 600, 1000, 200, True),
        raw_sample(2, NOW - 540, None, None, False),
        raw_sample(3, NOW - 480, 3000, 400, True),
        # 30 days ago, in one 5-minute bucket: only the rollups keep it once raw is pruned.
        raw_sample(10, NOW - 30 * DAY, 100, 10, True),
        raw_sample(11, NOW - 30 * DAY + 60, 300, 30, True),
        raw_sample(12, NOW - 30 * DAY + 120, None, None, False),
        raw_sample(13, NOW - 30 * DAY + 180, None, None, None),
    ]
    st.write(
        WriteBatch(devices=[DeviceState("gw-1", lat=-6.2, lon=106.8, online=True)], samples=samples)
    )
    st.roll_up()
    yield st
    st.close()


@pytest.fixture
def client(store: SqliteStore) -> TestClient:
    conf = MapConfig(tile_url="/tiles/{z}/{x}/{y}.png", attribution="© test", max_zoom=17)
    app = create_app(store, web_dir=WEB_DIR, clock=lambda: NOW, map_config=conf)
    return TestClient(app, headers=auth_headers(store, "viewer"))


@pytest.fixture
def anonymous(client: TestClient) -> TestClient:
    return TestClient(client.app, follow_redirects=False)


def test_net_history_raw_reads_the_wan_interface(client: TestClient) -> None:
    body = client.get("/api/devices/gw-1/net").json()
    assert body["resolution"] == "raw"
    got = [(p["rx_bps"], p["tx_bps"], p["wan_up"]) for p in body["points"]]
    assert got == [(1000, 200, 1), (None, None, 0), (3000, 400, 1)]


def test_net_history_rollups_past_raw_days(client: TestClient, store: SqliteStore) -> None:
    since, until = NOW - 31 * DAY, NOW - 29 * DAY
    body = client.get("/api/devices/gw-1/net", params={"since": since, "until": until}).json()
    assert body["resolution"] == "5m"
    [p] = body["points"]
    assert p["count"] == 4
    assert p["rx_bps"] == 200 and p["rx_bps_max"] == 300
    assert p["tx_bps"] == 20 and p["tx_bps_max"] == 30
    assert p["wan_up"] == pytest.approx(2 / 3)  # the sample that did not say is not counted
    # Pruning the raw samples keeps the rollup; pruning past rollup_days removes it.
    store.prune(NOW)
    again = client.get("/api/devices/gw-1/net", params={"since": since, "until": until}).json()
    assert again["points"] == body["points"]
    while store.prune(NOW + 61 * DAY):
        pass
    gone = client.get("/api/devices/gw-1/net", params={"since": since, "until": until}).json()
    assert gone["points"] == []


def test_net_history_rolls_up_once(store: SqliteStore) -> None:
    """A second roll_up adds nothing (the watermark is shared with rollups_5m)."""
    before = store.net_history("gw-1", NOW - 31 * DAY, NOW - 29 * DAY)
    store.roll_up()
    assert store.net_history("gw-1", NOW - 31 * DAY, NOW - 29 * DAY) == before


def test_net_history_errors(client: TestClient) -> None:
    assert client.get("/api/devices/nope/net").status_code == 404
    r = client.get("/api/devices/gw-1/net", params={"since": NOW, "until": NOW - 1})
    assert r.status_code == 422 and "since" in r.text


def test_settings_carry_the_map_and_the_retention(client: TestClient) -> None:
    assert client.get("/api/console/settings").json() == {
        "map": {"tile_url": "/tiles/{z}/{x}/{y}.png", "attribution": "© test", "max_zoom": 17},
        "retention": {"raw_days": 7.0, "rollup_days": 90.0},
    }


def test_map_config_is_checked() -> None:
    base = '[mqtt]\nhost = "b"\n'
    assert parse_config(base).map.tile_url == ""
    ok = parse_config(base + '[map]\ntile_url = "https://t.example/{z}/{x}/{y}.png"\n')
    assert ok.map.tile_url.startswith("https://")
    with pytest.raises(ConfigError, match=r"map\.tile_url"):
        parse_config(base + '[map]\ntile_url = "javascript:alert(1)"\n')
    with pytest.raises(ConfigError, match=r"map\.max_zoom"):
        parse_config(base + "[map]\nmax_zoom = 40\n")


def test_docs_are_offline(client: TestClient) -> None:
    """/docs names no other host, and every file it loads is served here."""
    html = client.get("/docs").text
    assert "SwaggerUIBundle" in html
    assert not re.search(r"https?://", html), html
    for ref in re.findall(r'(?:src|href)="(/[^"]+)"', html):
        assert client.get(ref).status_code == 200, ref
    assert client.get("/redoc").status_code == 404
    assert client.get("/openapi.json").status_code == 200


def test_without_a_credential(anonymous: TestClient) -> None:
    """The console's data need a viewer; its pages send a browser to /login; /city is public."""
    for url in ("/api/console/settings", "/api/devices/gw-1/net"):
        assert anonymous.get(url).status_code == 401, url
    for url in ("/map", "/history?device=gw-1", "/alerts", "/actions", "/audit", "/docs"):
        r = anonymous.get(url)
        assert r.status_code == 303, url
        assert r.headers["location"].startswith("/login?next=/"), url
    for url in ("/city", "/login", "/api/public/summary", "/static/city.js"):
        assert anonymous.get(url).status_code == 200, url


def test_pages_are_served(client: TestClient) -> None:
    for url in (
        "/",
        "/login",
        "/map",
        "/history",
        "/alerts",
        "/actions",
        "/rollouts",
        "/audit",
        "/city",
    ):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["content-type"].startswith("text/html"), url
        # Every script and stylesheet is on this server.
        assert not re.search(r'(?:src|href)="(?:https?:)?//', r.text), url
