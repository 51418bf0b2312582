"""The web console in Debian's chromium (Playwright for Python), against the real central API.

``tests/browser/console_app.py`` serves ``create_app`` over a real SQLite store holding 9,000
access points (titik-sim's plan of Jakarta), with real tokens (``tests/central_auth.py``),
the real audit log, and the console's actions publishing through a real Mosquitto started by
the test. Every page's requests are recorded: a request to any other host fails the test.

Skipped, with the reason, when ``/usr/bin/chromium`` or playwright is missing.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import Verifier, key_id, public_key_text
from tests.broker import Broker, subscriber
from tests.browser.console_app import SHOWCASE, ConsoleServer, offline
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
N = 9000
pytestmark = pytest.mark.broker


@dataclass
class Site:
    server: ConsoleServer
    broker: Broker
    key: Ed25519PrivateKey
    key_file: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def kid(self) -> str:
        raw = self.key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return key_id(raw)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "broker").mkdir()
    broker = Broker(tmp / "broker")
    broker.start()
    key = Ed25519PrivateKey.generate()
    key_file = tmp / "ops.pem"  # what `titik-ctl keygen --out ops.pem` writes
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ConsoleServer(
        tmp,
        n=N,
        broker=(broker.host, broker.port),
        signing_keys=[public_key_text(key.public_key())],
    )
    server.start()
    s = Site(server, broker, key, key_file)
    for role in ("viewer", "operator"):
        s.tokens[role] = create_token(server.store, role, f"ana-{role}")
    try:
        yield s
    finally:
        server.stop()
        broker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tab:
    page: Any
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        host = urlsplit(self.base).netloc
        return [
            u
            for u in self.requests
            if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).netloc != host
        ]

    def assert_clean(self) -> None:
        assert self.foreign() == [], f"requests to another host: {self.foreign()}"
        assert self.errors == [], self.errors


@pytest.fixture
def tab(site: Site, browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=site.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    t = Tab(page, site.url)
    page.on("request", lambda r: t.requests.append(r.url))
    page.on("console", lambda m: t.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(f"pageerror: {e}"))
    try:
        yield t
    finally:
        context.close()


def login(tab: Tab, token: str, path: str = "/") -> None:
    """Open ``path``, get sent to /login, log in with ``token``, land back on ``path``."""
    page = tab.page
    page.goto(path)
    expect(page).to_have_url(f"{tab.base}/login?next={quote(path, safe='/')}")
    page.get_by_test_id("login-token").fill(token)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(f"{tab.base}{path}")


def test_login_role_and_logout(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto("/map")
    expect(page).to_have_url(f"{site.url}/login?next=/map")
    page.get_by_test_id("login-token").fill("titik_not-a-token")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("not valid")
    tab.errors.clear()  # the refused login's 401 is logged by chromium; it was expected

    page.get_by_test_id("login-token").fill(site.tokens["viewer"])
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(f"{site.url}/map")
    expect(page.get_by_test_id("me")).to_have_text("ana-viewer")
    expect(page.get_by_test_id("role")).to_have_text("viewer")
    # A viewer is not offered the actions page.
    expect(page.locator('.nav-links a[href="/actions"]')).to_have_count(0)

    page.get_by_test_id("logout").click()
    expect(page).to_have_url(f"{site.url}/login")
    page.goto("/alerts")  # the session is gone
    expect(page).to_have_url(f"{site.url}/login?next=/alerts")
    tab.assert_clean()


def test_map_9000_clustered_zoom_and_pan(site: Site, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    login(tab, site.tokens["viewer"], "/map")
    m = page.get_by_test_id("map")
    expect(m).to_have_attribute("data-markers", str(N))
    expect(m).to_have_attribute("data-tiles", "no")  # no tile URL: nothing fetched for tiles
    clusters = page.get_by_test_id("map-cluster")
    # At the first view every access point is in a cluster (with its count) or a dot, and
    # the clusters know how many of theirs are offline.
    page.wait_for_function(
        """n => [...document.querySelectorAll('[data-testid=map-cluster]')]
                 .reduce((k, c) => k + Number(c.dataset.count), 0)
               + document.querySelectorAll('[data-testid=map-dot]').length === n""",
        arg=N,
    )
    counts = [int(c.get_attribute("data-count") or 0) for c in clusters.all()]
    assert sum(counts) + page.get_by_test_id("map-dot").count() == N
    down = sum(1 for i in range(N) if offline(i))
    assert sum(int(c.get_attribute("data-offline") or 0) for c in clusters.all()) == down
    assert len(counts) < 20, "9,000 markers must be clustered, not drawn one by one"
    # Cluster labels do not overlap one another.
    boxes = [c.bounding_box() for c in clusters.all()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert (
                a["x"] + a["width"] <= b["x"]
                or b["x"] + b["width"] <= a["x"]
                or a["y"] + a["height"] <= b["y"]
                or b["y"] + b["height"] <= a["y"]
            ), (a, b)
    page.screenshot(path=str(tmp_path / "map.png"))

    # Zoom in with the control: the clusters split.
    before = len(counts)
    page.locator(".leaflet-control-zoom-in").click()
    page.locator(".leaflet-control-zoom-in").click()
    page.wait_for_function(
        "n => document.querySelectorAll('[data-testid=map-cluster]').length > n", arg=before
    )
    # Pan by dragging: the view moves.
    centre = page.evaluate("() => document.querySelector('.leaflet-map-pane').style.transform")
    box = m.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 - 200, box["y"] + box["height"] / 2 - 100, steps=8)
    page.mouse.up()
    expect(page.locator(".leaflet-map-pane")).not_to_have_attribute(
        "style", f"transform: {centre};"
    )

    # Find one device: the map zooms to it and shows it as a dot; clicking it opens its history.
    page.get_by_test_id("map-find").fill("gw-sim-03005")
    page.get_by_test_id("map-find").press("Enter")
    dot = page.locator('[data-testid="map-dot"][data-id="gw-sim-03005"]')
    expect(dot).to_be_visible()
    expect(dot).to_have_attribute("data-online", "false")  # 3000-3149 are offline
    dot.click()
    expect(page).to_have_url(f"{site.url}/history?device=gw-sim-03005")
    tab.assert_clean()


def test_history_traffic_and_wan(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["viewer"], f"/history?device={SHOWCASE}")
    expect(page.get_by_test_id("hist-res")).to_have_attribute("data-resolution", "raw")
    for key in ("clients", "cpu_pct", "mem_used_pct", "temp_c", "traffic", "wan"):
        chart = page.get_by_test_id(f"hist-{key}")
        expect(chart.locator("canvas")).to_be_attached()
        assert int(chart.get_attribute("data-points") or 0) > 100, key
    # The WAN outage (20 samples) is a gap in traffic and a dip in the WAN chart.
    assert int(page.get_by_test_id("hist-traffic").get_attribute("data-points") or 0) == 340
    # 30 days back: the 5-minute rollups of 20 days ago, WAN traffic included.
    page.get_by_test_id("range-30d").click()
    expect(page.get_by_test_id("hist-res")).to_have_attribute("data-resolution", "5m")
    expect(page.get_by_test_id("hist-traffic")).not_to_have_attribute("data-points", "0")
    assert int(page.get_by_test_id("hist-wan").get_attribute("data-points") or 0) > 40
    expect(page.get_by_test_id("range-90d")).to_be_enabled()
    tab.assert_clean()


def test_alert_ack_and_snooze(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["operator"], "/alerts")
    rows = page.get_by_test_id("alert-row")
    expect(rows.first).to_be_visible()
    first = rows.first
    alert_id = first.get_attribute("data-id")
    first.get_by_test_id("alert-note").fill("crew on the way")
    first.get_by_test_id("alert-ack").click()
    expect(page.get_by_test_id("alert-result")).to_contain_text("Acknowledged")
    row = page.locator(f'[data-testid="alert-row"][data-id="{alert_id}"]')
    expect(row.get_by_test_id("alert-state")).to_contain_text("acknowledged by ana-operator")
    expect(row.get_by_test_id("alert-state")).to_contain_text("crew on the way")

    row.get_by_test_id("alert-snooze-minutes").select_option("240")
    row.get_by_test_id("alert-snooze").click()
    expect(page.get_by_test_id("alert-result")).to_contain_text("for 4 h")
    expect(row.get_by_test_id("alert-state")).to_contain_text("snoozed until")
    # Both are in the audit log, by name, from the web.
    page.goto(f"/audit?target={alert_id}")
    page.get_by_test_id("audit-target").fill(str(alert_id))
    page.get_by_test_id("audit-target").press("Enter")
    actions = page.get_by_test_id("audit-row").evaluate_all("rs => rs.map(r => r.dataset.action)")
    assert {"alert.ack", "alert.snooze"} <= set(actions)
    tab.assert_clean()


def test_viewer_cannot_act(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["viewer"], "/alerts")
    expect(page.get_by_test_id("alert-row").first).to_be_visible()
    expect(page.get_by_test_id("alert-ack")).to_have_count(0)
    page.goto("/actions")
    expect(page.get_by_test_id("action-result")).to_contain_text("needs the operator role")
    tab.assert_clean()


def page_result(page: Any) -> str:
    text: str = page.get_by_test_id("action-result").inner_text()
    return text


def load_key(page: Any, site: Site, key_file: Path) -> None:
    """Load the key file once the page is wired (its listeners attach after /api/me)."""
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.get_by_test_id("key-file").set_input_files(str(key_file))
    state = page.get_by_test_id("key-state")
    try:
        expect(state).not_to_have_text("no key loaded", timeout=15_000)
    except AssertionError:
        pytest.fail(f"no key loaded; the page says {page_result(page)!r}")


def sign_in_page(
    page: Any, site: Site, kind: str, target_kind: str, target: str, body: Any
) -> None:
    load_key(page, site, site.key_file)
    expect(page.get_by_test_id("key-state")).to_contain_text(f"key {site.kid} loaded")
    page.get_by_test_id("action-kind").select_option(kind)
    page.get_by_test_id("target-kind").select_option(target_kind)
    page.get_by_test_id("target-name").fill(target)
    page.get_by_test_id("action-body").fill(json.dumps(body))
    page.get_by_test_id("action-prepare").click()
    expect(page.get_by_test_id("review")).to_be_visible()
    expect(page.get_by_test_id("review-check")).to_contain_text("they match")
    page.get_by_test_id("action-sign").click()


def test_command_signed_in_the_page(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["operator"], "/actions")
    topic = "titik/gw/gw-sim-00001/cmd"
    with subscriber(site.broker, topic, client_id="test-cmd") as sub:
        sign_in_page(
            page, site, "command", "device", "gw-sim-00001", {"name": "collect_now", "args": {}}
        )
        expect(page.get_by_test_id("action-result")).to_contain_text("Sent:")
        msg = sub.next(lambda m: m.topic == topic)
    payload = msg.json()
    assert payload["name"] == "collect_now"
    assert payload["sig"]["kid"] == site.kid
    # The gateway's own check: the signature made in the page verifies.
    Verifier([public_key_text(site.key.public_key())]).verify(topic, payload)
    tab.assert_clean()


def test_config_push_to_a_group_signed_in_the_page(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["operator"], "/actions")
    topic = "titik/group/wave-2/config/desired"
    with subscriber(site.broker, topic, client_id="test-cfg") as sub:
        body = {"config": {"telemetry": {"interval_s": 120}}}
        sign_in_page(page, site, "config", "group", "wave-2", body)
        expect(page.get_by_test_id("action-result")).to_contain_text("Sent:")
        msg = sub.next(lambda m: m.topic == topic)
    payload = msg.json()
    assert payload["config"] == {"telemetry": {"interval_s": 120}}
    Verifier([public_key_text(site.key.public_key())]).verify(topic, payload)
    # Desired configs are retained: a gateway connecting later gets it too.
    with subscriber(site.broker, topic, client_id="test-cfg-late") as late:
        assert late.next(lambda m: m.topic == topic).retain

    # A config the agent's schema refuses never reaches the signing step.
    page.get_by_test_id("action-body").fill(
        json.dumps({"config": {"telemetry": {"interval_s": -5}}})
    )
    page.get_by_test_id("action-prepare").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("Refused before signing")
    expect(page.get_by_test_id("action-result")).to_contain_text("interval_s")
    expect(page.get_by_test_id("review")).to_be_hidden()
    tab.errors[:] = [e for e in tab.errors if "422" not in e]  # the refusal, expected
    tab.assert_clean()


def test_a_key_central_does_not_trust_is_refused(site: Site, tab: Tab, tmp_path: Path) -> None:
    page = tab.page
    login(tab, site.tokens["operator"], "/actions")
    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    load_key(page, site, other)
    expect(page.get_by_test_id("key-state")).to_contain_text("central does not trust it")
    page.get_by_test_id("target-name").fill("gw-sim-00002")
    page.get_by_test_id("action-prepare").click()
    page.get_by_test_id("action-sign").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("Not sent")
    tab.errors[:] = [e for e in tab.errors if "403" not in e]
    tab.assert_clean()


def test_public_page_and_docs_load_nothing_from_elsewhere(site: Site, tab: Tab) -> None:
    page = tab.page
    page.goto("/city")  # no login
    expect(page.get_by_test_id("city-aps")).to_have_text(
        f"{sum(1 for i in range(N) if not offline(i)):,}"
    )
    expect(page.get_by_test_id("city-region")).to_have_count(6)
    login(tab, site.tokens["viewer"], "/docs")
    expect(page.locator(".swagger-ui .title")).to_contain_text("Titik central")
    for path in ("/", "/alerts", "/audit"):
        page.goto(path)
        expect(page.get_by_test_id("me")).to_have_text("ana-viewer")
    tab.assert_clean()


def test_key_file_is_not_sent(site: Site, tab: Tab) -> None:
    """The private key never leaves the page: no request carries the PEM or its DER."""
    page = tab.page
    bodies: list[str] = []
    page.on("request", lambda r: bodies.append(r.post_data or ""))
    login(tab, site.tokens["operator"], "/actions")
    load_key(page, site, site.key_file)
    expect(page.get_by_test_id("key-state")).to_contain_text("loaded")
    page.get_by_test_id("target-name").fill("gw-sim-00003")
    page.get_by_test_id("action-prepare").click()
    page.get_by_test_id("action-sign").click()
    expect(page.get_by_test_id("action-result")).to_contain_text("Sent:")
    pem = site.key_file.read_text()
    der_b64 = "".join(pem.strip().splitlines()[1:-1])
    raw = site.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for body in bodies:
        assert der_b64 not in body and base64.b64encode(raw).decode() not in body
    tab.assert_clean()
