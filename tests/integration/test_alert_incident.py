"""Issue 19, point 3, end to end: a real Mosquitto, ``titik-central run`` as a subprocess
and the real test receiver (``titik-central webhook-receiver``); on the SQLite file and on
a real PostgreSQL (``[store] url``, issue 21).

300 gateways of one region going offline together (their retained Wills, as the broker
publishes them when their links drop) give one incident and one notification, not 300;
one more gateway down alone in another region gives its own alert notification; when all
300 are back the incident is resolved (one more notification). A webhook that is down costs
ingest nothing: the deliveries are given up and counted while samples keep being stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from central.sim.localbroker import free_port
from tests.broker import Broker, wait_until
from tests.integration.test_alert_webhook import ReceiverProc
from tests.integration.test_central_hostile import Central, metric
from tests.integration.test_central_ingest import Publisher, central_toml, telemetry

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 300
REGION = "Jakarta Timur"


def status(online: bool, region: str, i: int) -> bytes:
    return json.dumps(
        {"online": online, "boot": 1, "region": region, "site": f"site-{i // 10}",
         "groups": ["timur"], **({} if online else {"reason": "will"})}
    ).encode()  # fmt: skip


def alerting_toml(url: str) -> str:
    return f"""
[alerts]
offline_after_min = 0.02
console_url = "http://ops.example"
[alerts.incidents]
window_s = 120
min_count = 3
group_wait_s = 3
[alerts.webhook]
url = "{url}"
retries = 1
backoff_s = 0.1
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def store_toml(request: pytest.FixtureRequest) -> Callable[[Path], None]:
    """Points a central.toml at PostgreSQL (a fresh database) for the "postgresql" run."""
    if request.param == "sqlite":
        return lambda conf: None
    url = request.getfixturevalue("pg_url")

    def to_pg(conf: Path) -> None:
        conf.write_text(conf.read_text().replace("[store]\n", f'[store]\nurl = "{url}"\n', 1))

    return to_pg


@pytest.fixture
def receiver() -> Iterator[ReceiverProc]:
    rx = ReceiverProc()
    yield rx
    rx.stop()


def test_300_gateways_down_together_are_one_incident(
    broker: Broker, tmp_path: Path, receiver: ReceiverProc, store_toml: Callable[[Path], None]
) -> None:
    conf = central_toml(
        tmp_path / "central.toml", broker, client_id="c-incident", db=tmp_path / "c.db",
        extra=alerting_toml(f"http://127.0.0.1:{receiver.port}/hook"),
    )  # fmt: skip
    store_toml(conf)
    central = Central(conf, tmp_path / "central.log")
    central.start(broker)
    pub = Publisher(broker, "gateways")
    try:
        gws = [f"gw-t{i:03d}" for i in range(N)]
        for i, gw in enumerate(gws):
            pub.publish(f"titik/gw/{gw}/status", status(True, REGION, i))
        pub.publish("titik/gw/gw-bogor/status", status(True, "Bogor", 0))
        wait_until(
            lambda: central.rows(
                "SELECT count(*) FROM devices WHERE online AND region IS NOT NULL"
            )[0][0]
            == N + 1,
            30,
            "all online",
        )
        for i, gw in enumerate(gws):
            pub.publish(f"titik/gw/{gw}/status", status(False, REGION, i))
        pub.publish("titik/gw/gw-bogor/status", status(False, "Bogor", 0))

        got = receiver.lines(2, timeout=60)
        by_type = {g["body"]["type"]: g["body"] for g in got}
        assert set(by_type) == {"incident", "alert"}, got
        inc = by_type["incident"]
        assert inc["event"] == "opened"
        assert inc["incident"]["count"] == N
        assert inc["incident"]["key"] == REGION
        assert sorted(inc["incident"]["devices"]) == gws
        assert inc["links"]["console"] == "http://ops.example/alerts"
        alone = by_type["alert"]
        assert (alone["event"], alone["alert"]["device"]) == ("raised", "gw-bogor")

        listed = central.get("/api/incidents?open=true")["items"]
        assert [(i["count"], i["down"]) for i in listed] == [(N, N)]
        alerts = central.get("/api/alerts?state=open")["items"]
        assert len(alerts) == N + 1
        assert {a["incident"] for a in alerts if a["device"] != "gw-bogor"} == {listed[0]["id"]}

        for i, gw in enumerate(gws):  # all back
            pub.publish(f"titik/gw/{gw}/status", status(True, REGION, i))
        [done] = receiver.lines(1, timeout=60)
        assert done["body"]["type"] == "incident"
        assert done["body"]["event"] == "resolved"
        assert done["body"]["incident"]["down"] == 0
        note = central.get("/api/notifications")
        assert note["stats"]["delivered"] == 3
        assert note["stats"]["failed"] == 0
        hist = central.get(f"/api/alerts/{alerts[0]['id']}/history")
        assert [e["event"] for e in hist["events"]] == ["raised", "resolved"]
        assert central.stop() == 0
    finally:
        pub.client.disconnect()
        central.kill()
    receiver.stop()
    assert receiver.proc.stdout is not None
    rest = [json.loads(x) for x in receiver.proc.stdout.read().splitlines() if x.strip()]
    assert rest == [], f"more notifications than one incident and one alert: {rest[:3]}"


def test_a_webhook_that_is_down_costs_ingest_nothing(
    broker: Broker, tmp_path: Path, store_toml: Callable[[Path], None]
) -> None:
    down = free_port()
    conf = central_toml(
        tmp_path / "central.toml", broker, client_id="c-down", db=tmp_path / "c.db",
        extra=alerting_toml(f"http://127.0.0.1:{down}/hook"),
    )  # fmt: skip
    store_toml(conf)
    central = Central(conf, tmp_path / "central.log")
    central.start(broker)
    pub = Publisher(broker, "gateways")
    try:
        for i in range(5):
            pub.publish(f"titik/gw/gw-d{i}/status", status(True, "Depok", i))
        wait_until(
            lambda: central.rows("SELECT count(*) FROM devices WHERE device LIKE 'gw-d%'")[0][0]
            == 5,
            20,
            "statuses stored",
        )
        for i in range(5):
            pub.publish(f"titik/gw/gw-d{i}/status", status(False, "Depok", i))

        def failed() -> bool:
            return central.get("/api/notifications")["stats"]["failed"] >= 1

        wait_until(failed, 60, "the incident's delivery given up")
        # Ingest went on meanwhile and goes on: samples are stored.
        t0 = time.monotonic()
        for seq in range(50):
            pub.publish("titik/gw/gw-live/telemetry", telemetry("gw-live", seq))
        wait_until(
            lambda: central.rows("SELECT count(*) FROM samples WHERE device = 'gw-live'")[0][0]
            == 50,
            20,
            "samples stored",
        )
        assert time.monotonic() - t0 < 20
        note: dict[str, Any] = central.get("/api/notifications")
        assert note["enabled"] is True
        assert note["stats"]["delivered"] == 0
        assert {r["status"] for r in note["recent"]} == {"failed"}
        assert note["recent"][0]["attempts"] == 2
        text = central.get("/metrics")
        failed = metric(text, 'titik_alert_notifications_total{result="failed"}')
        assert failed == note["stats"]["failed"] >= 1
        assert metric(text, 'titik_alert_notifications_total{result="delivered"}') == 0
        assert central.stop() == 0
    finally:
        pub.client.disconnect()
        central.kill()
    log = (tmp_path / "central.log").read_text()
    assert "gave up on incident/" in log
    assert "/hook" not in log  # only scheme, host and port of the URL are logged
