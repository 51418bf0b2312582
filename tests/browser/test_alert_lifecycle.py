"""Issue 19, point 4 (alerts): the alerts page in Debian's chromium against the real API.

``tests/browser/console_app.py`` serves ``create_app`` over a real store, SQLite and then
PostgreSQL (issue 21), (titik-sim's
plan, 300 access points, some offline with their alerts), with the console's actions publishing
through a real Mosquitto; the alert lifecycle engine (central/alerting/engine.py) runs on the
same file, ticked by the test where central's writer thread would tick it, and its
notifications are collected. An operator acknowledges, snoozes and reopens an alert from the
page and sees its state and history change; a maintenance window created from the page
silences the next alert of a gateway in its group (marked in the page, nobody notified),
while a gateway outside it notifies; gateways of one region down together are one incident
line with their count and list.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from central.alerting.engine import AlertEngine
from central.config import IncidentsConfig
from central.store.base import AlertChange, WriteBatch
from central.store.beside import alerting_of
from tests.broker import Broker
from tests.browser.console_app import ConsoleServer, offline
from tests.browser.test_console import CHROMIUM, CHROMIUM_ARGS, Tab, login
from tests.central_auth import create_token

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright for Python (pip install playwright)"
)
expect = sync_api.expect
pytestmark = pytest.mark.broker
N = 300


@dataclass
class Site:
    server: ConsoleServer
    broker: Broker
    engine: AlertEngine
    sent: list[dict[str, Any]] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    assert CHROMIUM.exists()
    tmp = tmp_path_factory.mktemp("alerts")
    (tmp / "broker").mkdir()
    broker = Broker(tmp / "broker")
    broker.start()
    pg_url = None
    if request.param == "postgresql":
        pg_url = request.getfixturevalue("postgres").create_database()
    server = ConsoleServer(tmp, n=N, broker=(broker.host, broker.port), pg_url=pg_url)
    server.start()
    sent: list[dict[str, Any]] = []
    life = alerting_of(server.store)
    assert life is not None
    engine = AlertEngine(life, IncidentsConfig(group_wait_s=0, min_count=1000), sent.append)
    engine.tick()  # takes in the alerts the store holds: each gets its "raised"
    s = Site(server, broker, engine, sent)
    s.tokens["operator"] = create_token(server.store, "operator", "ana-operator")
    try:
        yield s
    finally:
        life.close()
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


def events(row: Any) -> Any:
    return row.page.locator(
        f'[data-testid="alert-history"][data-id="{row.get_attribute("data-id")}"] '
        '[data-testid="alert-event"]'
    )


def test_acknowledge_snooze_reopen_change_state_and_history(site: Site, tab: Tab) -> None:
    page = tab.page
    login(tab, site.tokens["operator"], "/alerts")
    first = page.get_by_test_id("alert-row").first
    alert_id = first.get_attribute("data-id")
    row = page.locator(f'[data-testid="alert-row"][data-id="{alert_id}"]')
    expect(row.get_by_test_id("alert-state-badge")).to_have_text("open")
    row.get_by_test_id("alert-history-toggle").click()
    expect(events(row)).to_have_count(1)
    expect(events(row).nth(0)).to_contain_text("raised by central")

    row.get_by_test_id("alert-note").fill("crew on the way")
    row.get_by_test_id("alert-ack").click()
    expect(row.get_by_test_id("alert-state-badge")).to_have_text("acknowledged")
    expect(row.get_by_test_id("alert-state")).to_contain_text("acknowledged by ana-operator")
    expect(events(row)).to_have_count(2)
    expect(events(row).nth(1)).to_contain_text("acknowledged by ana-operator")
    expect(events(row).nth(1)).to_contain_text("crew on the way")

    row.get_by_test_id("alert-snooze-minutes").select_option("240")
    row.get_by_test_id("alert-snooze").click()
    expect(row.get_by_test_id("alert-state-badge")).to_have_text("snoozed")
    expect(row.get_by_test_id("alert-state")).to_contain_text("snoozed until")
    expect(events(row)).to_have_count(3)
    expect(events(row).nth(2)).to_contain_text("snoozed by ana-operator")
    expect(events(row).nth(2)).to_contain_text("until")

    # The state filter finds it among the snoozed ones only.
    page.get_by_test_id("alerts-state-filter").select_option("snoozed")
    expect(page.get_by_test_id("alert-row")).to_have_count(1)
    expect(page.get_by_test_id("alert-row").first).to_have_attribute("data-id", str(alert_id))
    page.get_by_test_id("alerts-state-filter").select_option("")

    row.get_by_test_id("alert-reopen").click()
    expect(row.get_by_test_id("alert-state-badge")).to_have_text("open")
    expect(events(row)).to_have_count(4)
    expect(events(row).nth(3)).to_contain_text("reopened by ana-operator")
    tab.assert_clean()


def test_a_window_from_the_page_silences_a_gateways_alert(site: Site, tab: Tab) -> None:
    page = tab.page
    plan = site.server.plan
    inside = next(p for i, p in enumerate(plan) if not offline(i) and "wave-2" in p["groups"])
    outside = next(p for i, p in enumerate(plan) if not offline(i) and "wave-2" not in p["groups"])
    login(tab, site.tokens["operator"], "/alerts")
    page.get_by_test_id("window-kind").select_option("group")
    page.get_by_test_id("window-target").fill("wave-2")
    page.get_by_test_id("window-end").fill("+2h")
    page.get_by_test_id("window-reason").fill("fibre works on Jl. Sudirman")
    page.get_by_test_id("window-add").click()
    expect(page.get_by_test_id("window-result")).to_contain_text("for group/wave-2")
    wrow = page.get_by_test_id("window-row")
    expect(wrow).to_have_count(1)
    expect(wrow.first).to_contain_text("fibre works on Jl. Sudirman (ana-operator)")
    expect(wrow.first).to_contain_text("on now")

    # A typo is refused, naming the field.
    page.get_by_test_id("window-target").fill("wave-22")
    page.get_by_test_id("window-add").click()
    expect(page.get_by_test_id("window-result")).to_contain_text("group: no gateway is in group")
    expect(wrow).to_have_count(1)

    # Both gateways go down; the rules raise their alerts; the engine takes them in.
    now = site.server.store.clock()
    site.server.store.write(
        WriteBatch(alerts=[AlertChange("temp", str(inside["id"]), now, "temp 85°C >= 80°C"),
                           AlertChange("temp", str(outside["id"]), now, "temp 86°C >= 80°C")])
    )  # fmt: skip
    before = len(site.sent)
    site.engine.tick()
    notified = [n["alert"]["device"] for n in site.sent[before:]]
    assert notified == [outside["id"]]

    page.reload()
    silenced = page.locator(f'[data-testid="alert-row"][data-id^="temp/{inside["id"]}/"]')
    expect(silenced.get_by_test_id("alert-maintenance")).to_contain_text("in maintenance")
    loud = page.locator(f'[data-testid="alert-row"][data-id^="temp/{outside["id"]}/"]')
    expect(loud.get_by_test_id("alert-state-badge")).to_have_text("open")
    expect(loud.get_by_test_id("alert-maintenance")).to_have_count(0)

    # Ending the window from the page.
    wrow.first.get_by_test_id("window-delete").click()
    expect(page.get_by_test_id("window-result")).to_contain_text("ended")
    expect(page.get_by_test_id("window-row")).to_have_count(0)
    assert tab.foreign() == []
    # The browser logs the refused typo (the 422 the page showed); nothing else went wrong.
    assert len(tab.errors) == 1
    assert "422" in tab.errors[0]


def test_gateways_down_together_are_one_incident_line(site: Site, tab: Tab) -> None:
    plan = site.server.plan
    region = str(plan[0]["region"])
    fallen = [str(p["id"]) for i, p in enumerate(plan) if not offline(i) and p["region"] == region]
    fallen = fallen[:6]
    now = site.server.store.clock()
    site.server.store.write(
        WriteBatch(
            alerts=[AlertChange("offline", d, now - k, "offline") for k, d in enumerate(fallen)]
        )
    )
    grouping = AlertEngine(
        alerting_of(site.server.store), IncidentsConfig(group_wait_s=0, min_count=3),
        site.sent.append,
    )  # fmt: skip
    before = len(site.sent)
    grouping.tick()
    grouping.store.close()
    assert [(n["type"], n["event"]) for n in site.sent[before:]] == [("incident", "opened")]
    page = tab.page
    login(tab, site.tokens["operator"], "/alerts")
    line = page.get_by_test_id("incident-row")
    expect(line).to_have_count(1)
    expect(line.first).to_contain_text(f"region {region}")
    expect(line.first.get_by_test_id("incident-count")).to_have_text("6 gateways, 6 still down")
    line.first.get_by_test_id("incident-count").click()  # opens the list
    for d in fallen:
        expect(line.first).to_contain_text(d)
    iid = site.sent[-1]["incident"]["id"]
    row = page.locator(f'[data-testid="alert-row"][data-id^="offline/{fallen[0]}/"]')
    expect(row.get_by_test_id("alert-incident")).to_have_text(f"incident #{iid}")
    tab.assert_clean()
