"""The rollouts page in Debian's chromium (Playwright), against ``titik-central run`` with its
rollout runner, a real Mosquitto and real agents (tests/rollout_city.py; issue 19, point 4).

The operator logs in, loads the signing key into the page, starts a rollout from the form
(central prepares, the page signs every document with WebCrypto, central checks and runs it)
and watches the progress bar; a wave whose gateway fails halts it with the reason shown;
pause, resume and abort are the page's buttons. Soak times are 1 s; central's runner ticks
every 5 s. Every page request stays on central's host (Tab.assert_clean).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.broker import wait_until
from tests.browser.test_console import CHROMIUM, CHROMIUM_ARGS, Tab, login, sync_api
from tests.rollout_city import City, rollout_city, sim_ssid, ssid

expect = sync_api.expect
pytestmark = [pytest.mark.broker, pytest.mark.slow]

IDS = [f"gw-w{n:02d}" for n in range(1, 7)]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    with rollout_city(tmp_path_factory.mktemp("page-rollout"), IDS) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def tab(city: City, browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=city.url)
    page = context.new_page()
    page.set_default_timeout(10_000)
    t = Tab(page, city.url)
    page.on("request", lambda r: t.requests.append(r.url))
    page.on("console", lambda m: t.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: t.errors.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: d.accept())  # the abort's "are you sure?"
    try:
        yield t
    finally:
        context.close()


def start_from_page(tab: Tab, city: City, rid: str, name: str, soak: float) -> Any:
    """Log in as an operator, load the key, fill the form, prepare, sign, start: the row."""
    page = tab.page
    login(tab, city.token("operator", "ana"), "/rollouts")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    page.get_by_test_id("key-file").set_input_files(str(city.key_file))
    expect(page.get_by_test_id("key-state")).to_contain_text(f"key {city.kid} loaded")
    page.get_by_test_id("ro-group").fill("g1")
    page.get_by_test_id("ro-id").fill(rid)
    page.get_by_test_id("ro-waves").fill("50,100")
    page.get_by_test_id("ro-soak").fill(str(soak))
    page.get_by_test_id("ro-config").fill(json.dumps(ssid(name)))
    page.get_by_test_id("ro-prepare").click()
    expect(page.get_by_test_id("ro-summary")).to_contain_text("group g1 (6 gateways) in 2 waves")
    page.get_by_test_id("ro-sign").click()
    expect(page.get_by_test_id("ro-result")).to_contain_text(f"Started: rollout {rid}")
    return page.get_by_test_id(f"rollout-{rid}")


def test_start_from_the_page_and_watch_it_complete(city: City, tab: Tab) -> None:
    # Soaks of 4 s: the first wave stays on the page for two of its 2 s refreshes.
    row = start_from_page(tab, city, "p-ok", "New", 4)
    bar = row.get_by_test_id("ro-progress")
    # It moves on its own: the first wave (50 %), then everyone, then completed.
    expect(bar).to_have_attribute("aria-valuenow", "50", timeout=30_000)
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(row.get_by_test_id("ro-gate")).to_contain_text("wave 2: 6/6 applied, 0 failed · passed")
    expect(row.locator(".ro-mark")).to_have_count(2)
    assert all(sim_ssid(city.roots[d]) == "New" for d in IDS)
    tab.assert_clean()


def test_a_failing_wave_shows_halted_with_its_reason(city: City, tab: Tab) -> None:
    before = {d: sim_ssid(city.roots[d]) for d in IDS}
    bad = city.fail_apply("p-bad", 50)
    try:
        row = start_from_page(tab, city, "p-bad", "Bad", 1)
        expect(row).to_have_attribute("data-status", "halted", timeout=60_000)
        expect(row.get_by_test_id("ro-status")).to_have_text("halted")
        expect(row.get_by_test_id("ro-reason")).to_contain_text("wave 1 failed its gate")
        expect(row.get_by_test_id("ro-reason")).to_contain_text(f"{bad}: rolled back")
        expect(row.get_by_test_id("ro-gate")).to_contain_text("failed")
        expect(row.get_by_test_id("ro-pause")).to_have_count(0)  # nothing to do on an ended one
        wait_until(
            lambda: {d: sim_ssid(city.roots[d]) for d in IDS} == before, 60, "restore", poll=0.5
        )
    finally:
        (city.roots[bad] / "etc/titik-sim/fail-apply").unlink()
    tab.assert_clean()


def test_pause_then_resume(city: City, tab: Tab) -> None:
    row = start_from_page(tab, city, "p-pause", "Paused", 600)
    expect(row.get_by_test_id("ro-wave")).to_contain_text("wave 1 of 2", timeout=30_000)
    expect(row.get_by_test_id("ro-gate")).to_contain_text("· soaking", timeout=30_000)
    row.get_by_test_id("ro-pause").click()
    expect(row).to_have_attribute("data-status", "paused", timeout=30_000)
    # Paused, the last gate's figures stay in view.
    expect(row.get_by_test_id("ro-gate")).to_contain_text("· soaking")
    expect(row.get_by_test_id("ro-resume")).to_be_visible()
    row.get_by_test_id("ro-resume").click()
    expect(row).to_have_attribute("data-status", "running", timeout=30_000)
    expect(row.get_by_test_id("ro-pause")).to_be_visible()
    row.get_by_test_id("ro-abort").click()  # leaves the group free for the next test
    expect(row).to_have_attribute("data-status", "aborted", timeout=30_000)
    tab.assert_clean()


def test_abort_puts_the_old_config_back(city: City, tab: Tab) -> None:
    before = {d: sim_ssid(city.roots[d]) for d in IDS}
    row = start_from_page(tab, city, "p-abort", "Aborted", 600)
    expect(row.get_by_test_id("ro-wave")).to_contain_text("wave 1 of 2", timeout=30_000)
    row.get_by_test_id("ro-abort").click()
    expect(row).to_have_attribute("data-status", "aborted", timeout=30_000)
    expect(row.get_by_test_id("ro-reason")).to_have_text(re.compile("aborted by ana"))
    expect(row.get_by_test_id("ro-abort")).to_have_count(0)
    wait_until(lambda: {d: sim_ssid(city.roots[d]) for d in IDS} == before, 60, "restore", poll=0.5)
    tab.assert_clean()


def test_a_viewer_sees_progress_but_no_buttons_or_form(city: City, tab: Tab) -> None:
    page = tab.page
    login(tab, city.token("viewer", "vic"), "/rollouts")
    expect(page.locator("body")).to_have_attribute("data-ready", "1")
    expect(page.get_by_test_id("rollout-p-ok")).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("start-card")).to_be_hidden()
    expect(page.get_by_test_id("ro-abort")).to_have_count(0)
    tab.assert_clean()


def test_an_agent_upgrade_started_by_ctl_is_listed_with_its_release_and_gate(
    city: City, tab: Tab
) -> None:
    """`titik-ctl upgrade` (docs/upgrades.md, "Waves") makes a rollout the page lists: its
    release, the commands sent, and its gate in upgrades (not applies)."""
    from tests.integration.test_ctl_rollout import sim_release, upgrade_ctl
    from tests.upgrade_rig import Files, http_server

    (city.db.parent / "ops.token").write_text(city.token("operator", "ana") + "\n")
    files = Files()
    with http_server(files) as base:
        path, data = sim_release(city, "9.0.0", base, name="a.sim")
        files.blobs["/a.sim"] = data
        r = upgrade_ctl(city, "start", "--group", "g1", "--manifest", path, "--id", "p-up",
                        "--waves", "50,100", "--steps", "2", "--spread", "1",
                        "--health-timeout", "10", "--soak", "10")  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
    login(tab, city.token("viewer", "vic"), "/rollouts")
    row = tab.page.get_by_test_id("rollout-p-up")
    expect(row).to_have_attribute("data-status", "completed")
    expect(row.get_by_test_id("ro-wave")).to_contain_text("agent 9.0.0 · 4/4 commands")
    expect(row.get_by_test_id("ro-gate")).to_contain_text(
        "wave 2: 6/6 upgraded, 0 failed (0% of 6 that answered) · passed"
    )
    tab.assert_clean()
