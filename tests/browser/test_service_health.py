"""Service health (issue 20) in the web console, in Debian's chromium (Playwright for Python),
against the real central API (``tests/browser/console_app.py``: ``create_app`` over a real
SQLite store).

Thirty access points of titik-sim's plan send service reports made by the simulator's own
code (``agent.service.simulated.simulate`` on a ``SimulatedPlatform``): three of them with the
faults titik-sim plants (a saturated channel, an exhausted DHCP pool, a dead portal), stored
through the ingest path's row builder (``central.store.service.to_row``). The overview's
worst-APs list must show exactly those three first with their reasons; the map shows their
scores; the device table has a score column; the history page draws the radio and
client-quality charts. No request leaves the page's origin.

Skipped, with the reason, when ``/usr/bin/chromium`` or playwright is missing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from agent.collectors.base import Context
from agent.platforms.simulated import SimulatedPlatform
from agent.service.simulated import simulate
from central.store.base import WriteBatch
from central.store.service import to_row
from tests.browser.console_app import ConsoleServer
from tests.central_auth import create_token

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        "needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright for Python (pip install playwright)"
)
expect = sync_api.expect

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
N = 30
FAULTS = {
    "gw-sim-00004": ("busy_channel", "channel_busy"),
    "gw-sim-00011": ("dhcp_exhausted", "dhcp_pool_exhausted"),
    "gw-sim-00023": ("dead_portal", "portal_broken"),
}
HISTORY = "gw-sim-00004"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ConsoleServer, str]]:
    """The console over SQLite, then over PostgreSQL (issue 21)."""
    tmp = tmp_path_factory.mktemp("service-console")
    pg_url = None
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("postgres").create_database()
    srv = ConsoleServer(tmp, n=N, pg_url=pg_url)
    now = time.time()
    rows = []
    for p in srv.plan:
        device = str(p["id"])
        platform = SimulatedPlatform(device)
        platform.service_fault = FAULTS.get(device, (None, None))[0]
        memo: dict[str, Any] = {}
        # Two hours of reports, one per 5 minutes; the first has no channel survey yet.
        for k in range(24):
            wall = now - (23 - k) * 300
            report = simulate(platform, Context(wall=wall, mono=wall, memo=memo), 300)
            rows.append(to_row(device, report, wall))
    srv.store.write(WriteBatch(service=rows))
    srv.start()
    token = create_token(srv.store, "viewer", "ana-viewer")
    try:
        yield srv, token
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(server: tuple[ConsoleServer, str], browser: Any) -> Iterator[Any]:
    srv, token = server
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=srv.url)
    pg = context.new_page()
    pg.set_default_timeout(10_000)
    requests: list[str] = []
    errors: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    pg.goto("/")
    pg.get_by_test_id("login-token").fill(token)
    pg.get_by_test_id("login-submit").click()
    expect(pg).to_have_url(f"{srv.url}/")
    try:
        yield pg
        host = urlsplit(srv.url).netloc
        foreign = [
            u
            for u in requests
            if urlsplit(u).scheme in ("http", "https") and urlsplit(u).netloc != host
        ]
        assert foreign == [], f"requests to another host: {foreign}"
        assert errors == [], errors
    finally:
        context.close()


def test_worst_aps_list_and_scores_on_the_map_and_table(page: Any, tmp_path: Path) -> None:
    rows = page.get_by_test_id("worst-row")
    expect(rows).to_have_count(10)
    top = [rows.nth(i).get_attribute("data-id") for i in range(3)]
    assert set(top) == set(FAULTS), top
    for i in range(3):
        row = rows.nth(i)
        device = row.get_attribute("data-id")
        reason = FAULTS[device][1]
        expect(row.locator(f'[data-reason="{reason}"]')).to_be_visible()
    worst_healthy = int(rows.nth(3).get_attribute("data-score"))
    assert max(int(rows.nth(i).get_attribute("data-score")) for i in range(3)) < worst_healthy
    # The device table's score column.
    table_scores = page.locator('[data-testid="devices"] [data-testid="score"]')
    expect(table_scores).to_have_count(N)
    # A worst row opens the AP's detail with its score and reasons.
    rows.nth(0).locator("button").click()
    detail = page.get_by_test_id("detail-service")
    expect(detail).to_contain_text(FAULTS[top[0]][1])
    # The map: zoom to a faulty AP; its dot carries its score, in the poor or fair colour.
    busy = page.locator('[data-testid="worst-row"][data-id="gw-sim-00004"]')
    score = busy.get_attribute("data-score")
    lowest = min(int(rows.nth(i).get_attribute("data-score")) for i in range(3))
    page.goto("/map")
    expect(page.get_by_test_id("map")).to_have_attribute("data-markers", str(N))
    # Whatever is clustered, the lowest score shows (a cluster carries its lowest).
    page.wait_for_function(
        """low => Math.min(...[...document.querySelectorAll('[data-min-score]')].map(c => +c.dataset.minScore),
                           ...[...document.querySelectorAll('[data-testid=map-dot][data-score]')].map(d => +d.dataset.score)) === low""",
        arg=lowest,
    )
    page.get_by_test_id("map-find").fill("gw-sim-00004")
    page.get_by_test_id("map-find").press("Enter")
    dot = page.locator('[data-testid="map-dot"][data-id="gw-sim-00004"]')
    expect(dot).to_be_visible()
    expect(dot).to_have_attribute("data-score", score)
    label = page.locator(
        '.leaflet-marker-icon:has([data-id="gw-sim-00004"]) [data-testid="map-score"]'
    )
    expect(label).to_have_text(score)
    expect(label).to_have_class(re.compile(r"sc-(poor|fair)"))
    page.screenshot(path=str(tmp_path / "map-score.png"))


def test_history_has_radio_and_client_quality_charts(page: Any) -> None:
    page.goto(f"/history?device={quote(HISTORY)}")
    for key in ("svc-score", "svc-busy", "svc-noise", "svc-sta", "svc-retry"):
        chart = page.get_by_test_id(f"hist-{key}")
        expect(chart.locator("canvas")).to_be_attached()
        assert int(chart.get_attribute("data-points") or 0) >= 20, key
    # The saturated channel shows: the busy chart's latest value is 90 % or more.
    caption = page.get_by_test_id("hist-svc-busy").locator("figcaption")
    text = caption.inner_text()
    latest = float(text.split("latest")[1].strip().split()[0])
    assert latest >= 90, text
