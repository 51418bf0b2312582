"""The real app in a real browser: no session -> the login page -> the dashboard works.

Unlike test_dashboard.py (the page against a stand-in API), this serves ``create_app`` with
uvicorn on a free loopback port over a store with three gateways, so the cookie, the
redirects and the dashboard's own requests are the real ones. Debian's ``chromium`` driven
by Playwright; skipped, with the reason, without them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from central.api.app import create_app
from central.store.base import DeviceState, WriteBatch
from central.store.sqlite import SqliteStore
from tests.broker import free_port, wait_until
from tests.central_auth import create_token

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright for Python")
expect = sync_api.expect

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("auth-flow")
    store = SqliteStore(tmp / "c.db")
    store.write(
        WriteBatch(
            devices=[
                DeviceState(
                    f"gw-{i}",
                    site=f"Site {i}",
                    region="North",
                    lat=-6.2,
                    lon=106.8,
                    online=True,
                    clients=i,
                    last_seen=1.0,
                )
                for i in range(3)
            ]
        )
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), 15, "uvicorn")
    try:
        yield {"url": f"http://127.0.0.1:{port}", "token": create_token(store, "viewer")}
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


@pytest.fixture
def page(served: dict[str, Any]) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_context().new_page()
        finally:
            browser.close()


def test_login_then_the_dashboard_loads(page: Any, served: dict[str, Any]) -> None:
    url = served["url"]
    page.goto(url + "/")
    expect(page).to_have_url(url + "/login?next=/")
    page.get_by_test_id("login-token").fill("titik_wrong")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_contain_text("not valid")
    page.get_by_test_id("login-token").fill(served["token"])
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url(url + "/")
    expect(page.get_by_test_id("tile-total")).to_have_text("3")
    cookies = {c["name"]: c for c in page.context.cookies()}
    assert cookies["titik_session"]["httpOnly"] is True
    assert cookies["titik_session"]["sameSite"] == "Strict"
    assert page.evaluate("document.cookie") == ""  # not readable by page scripts
    assert page.evaluate("sessionStorage.getItem('titik.csrf')")


def test_an_ended_session_goes_back_to_login(page: Any, served: dict[str, Any]) -> None:
    url = served["url"]
    page.goto(url + "/login?next=/")
    page.get_by_test_id("login-token").fill(served["token"])
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("tile-total")).to_have_text("3")
    csrf = page.evaluate("sessionStorage.getItem('titik.csrf')")
    status = page.evaluate(
        """csrf => fetch('/api/logout', {method: 'POST', headers: {'X-Titik-CSRF': csrf}})
                  .then(r => r.status)""",
        csrf,
    )
    assert status == 200
    page.reload()
    expect(page).to_have_url(url + "/login?next=/")
