"""Central's side of the service report (issue 20, point 7): ingest through the consumer's
real writer path into a real store, the score the agent's function gives, history and
retention, roll-ups, the worst APs, alerts, the API and /metrics. Every test runs on SQLite
and on PostgreSQL (issue 21: central/store/service.py's code on both, PgServiceStore)."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from agent.protocol.score import score
from agent.protocol.service import ServiceReport
from central.api.app import create_app
from central.config import parse_config
from central.ingest.consumer import Consumer
from central.ingest.decode import Incoming
from central.store.beside import service_of
from central.store.pg import PgStore
from central.store.service import BUCKET_S
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers
from tests.service_reports import report

NOW = time.time()


class Rig:
    def __init__(self, tmp: Path, extra: str = "", pg_url: str | None = None) -> None:
        self.now = NOW
        where = f'url = "{pg_url}"' if pg_url else f'path = "{tmp / "c.db"}"'
        cfg = parse_config(
            f'[mqtt]\nhost = "127.0.0.1"\n[store]\n{where}\n'
            f"[ingest]\nquarantine_per_minute = 100000\n{extra}"
        )
        self.store: SqliteStore | PgStore
        if pg_url:
            self.store = PgStore(pg_url, clock=lambda: self.now)
        else:
            self.store = SqliteStore(cfg.store.path, clock=lambda: self.now)
        self.consumer = Consumer(cfg, self.store, clock=lambda: self.now)
        service = service_of(self.store, clock=lambda: self.now)
        assert service is not None
        self.service = service

    def status(self, device: str, region: str, site: str) -> Incoming:
        doc = {"online": True, "boot": 1, "v": 1, "ts": self.now, "region": region, "site": site}
        return Incoming(f"titik/gw/{device}/status", json.dumps(doc).encode(), 0, 0, 0)

    def commit(self, msgs: list[Incoming]) -> None:
        self.consumer._commit(msgs, threading.Event(), flush=True)

    def send(self, device: str, doc: dict[str, Any] | bytes) -> None:
        payload = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
        self.commit([Incoming(f"titik/gw/{device}/service", payload, 0, 0, 0)])

    def close(self) -> None:
        self.service.close()
        self.store.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_rig(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """Rigs on SQLite, or on PostgreSQL (a fresh database)."""
    made: list[Rig] = []

    def make(extra: str = "") -> Rig:
        url = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
        made.append(Rig(tmp_path, extra, url))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def rig(make_rig: Callable[..., Rig]) -> Rig:
    return make_rig()


def fleet(rig: Rig) -> None:
    """Six APs in two regions: three healthy, one of each fault."""
    rig.commit(
        [
            rig.status("gw-ok-1", "Pusat", "Taman 1"),
            rig.status("gw-ok-2", "Pusat", "Taman 1"),
            rig.status("gw-ok-3", "Utara", "Pasar 2"),
            rig.status("gw-busy", "Pusat", "Taman 1"),
            rig.status("gw-dhcp", "Utara", "Pasar 2"),
            rig.status("gw-portal", "Utara", "Halte 3"),
        ]
    )
    for d in ("gw-ok-1", "gw-ok-2", "gw-ok-3"):
        rig.send(d, report(ts=rig.now))
    rig.send("gw-busy", report("busy_channel", ts=rig.now))
    rig.send("gw-dhcp", report("dhcp_exhausted", ts=rig.now))
    rig.send("gw-portal", report("dead_portal", ts=rig.now))


def test_a_report_is_stored_with_the_agents_score(rig: Rig) -> None:
    doc = report("busy_channel", ts=rig.now)
    rig.send("gw-1", doc)
    assert rig.consumer.stats.accepted["service"] == 1
    latest = rig.service.latest("gw-1")
    assert latest is not None
    want = score(ServiceReport.model_validate(doc))
    assert latest.score == want.score < 100
    assert [d[0] for d in latest.deductions] == [d.name for d in want.deductions]
    assert "channel_busy" in [d[0] for d in latest.deductions]
    assert latest.report["radios"]["phy0-ap0"]["busy_pct"] == 94.0
    assert latest.fresh


def test_bad_reports_are_quarantined_with_their_reason_and_acked(rig: Rig) -> None:
    rig.send("gw-1", b"{not json")
    bad = report(ts=rig.now)
    bad["radios"]["phy0-ap0"]["busy_pct"] = 140
    rig.send("gw-1", bad)
    no_ts = report()
    del no_ts["ts"]
    rig.send("gw-1", no_ts)
    s = rig.consumer.stats
    assert s.bad["json"] == 1 and s.bad["schema"] == 2
    assert s.accepted["service"] == 0
    assert s.received == sum(s.accepted.values()) + sum(s.bad.values())
    rows = rig.store.quarantine(device="gw-1").items
    assert {r.reason for r in rows} == {"json", "schema"}
    assert any("radios.phy0-ap0.busy_pct" in r.detail for r in rows)
    assert any(r.detail.startswith("ts:") for r in rows)
    assert rig.service.latest("gw-1") is None


def test_a_bad_report_does_not_hold_up_the_rest_of_its_batch(rig: Rig) -> None:
    good = json.dumps(report(ts=rig.now)).encode()
    rig.commit(
        [
            Incoming("titik/gw/gw-1/service", b"[]", 0, 0, 0),
            Incoming("titik/gw/gw-2/service", good, 0, 0, 0),
        ]
    )
    assert rig.service.latest("gw-2") is not None
    assert rig.consumer.stats.bad["schema"] == 1


def test_a_nul_in_a_reports_names_is_stored_escaped_beside_the_rest_of_its_batch(
    rig: Rig,
) -> None:
    """PostgreSQL's text refuses NUL; a report's names (interfaces, error keys) may hold one.
    They are stored as JSON text (\\u0000), so the report is stored and read back whole on both
    stores, and the other reports of its batch with it."""
    odd = report("busy_channel", ts=rig.now)
    odd["radios"]["ph\x00y"] = odd["radios"]["phy0-ap0"]
    odd["ssids"]["ph\x00y"] = odd["ssids"]["phy0-ap0"]
    odd["errors"] = {"iw\x00": "exit 1\x00"}
    rig.commit(
        [
            Incoming("titik/gw/gw-1/service", json.dumps(odd).encode(), 0, 0, 0),
            Incoming("titik/gw/gw-2/service", json.dumps(report(ts=rig.now)).encode(), 0, 0, 0),
        ]
    )
    assert rig.consumer.stats.accepted["service"] == 2
    assert sum(rig.consumer.stats.bad.values()) == 0
    latest = rig.service.latest("gw-1")
    assert latest is not None and latest.report is not None
    assert latest.report["errors"] == {"iw\x00": "exit 1\x00"}
    (point,) = rig.service.history("gw-1", 0, rig.now + 1)
    assert "ph\x00y" in point.radios
    assert rig.service.latest("gw-2") is not None


def refuse_device(rig: Rig, device: str) -> None:
    """The database itself refuses ``device``'s service rows: a trigger in SQLite or
    PostgreSQL, as a row either would refuse on its own (the writer cannot tell the two)."""
    if isinstance(rig.store, PgStore):
        with psycopg.connect(rig.store.url, autocommit=True) as conn:
            conn.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION 'refused by the test'; END $$"
            )
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON service_latest FOR EACH ROW "
                f"WHEN (NEW.device = '{device}') EXECUTE FUNCTION refuse()"
            )
    else:
        with sqlite3.connect(rig.store.path) as conn:
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON service_latest "
                f"WHEN NEW.device = '{device}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )


def test_a_report_the_database_refuses_is_set_aside_and_the_rest_stored(rig: Rig) -> None:
    """The writer splits the batch and sets the refused report aside in the quarantine with
    reason "store" (counted, acked); the other reports of its batch are stored."""
    refuse_device(rig, "gw-bad")
    rig.commit(
        [
            Incoming(f"titik/gw/{d}/service", json.dumps(report(ts=rig.now)).encode(), 0, 0, 0)
            for d in ("gw-a", "gw-bad", "gw-b")
        ]
    )
    assert rig.consumer.stats.bad["store"] == 1
    assert rig.consumer.stats.accepted["service"] == 2
    (row,) = rig.store.quarantine(reason="store").items
    assert row.device == "gw-bad" and row.topic == "titik/gw/gw-bad/service"
    assert rig.service.latest("gw-bad") is None
    assert rig.service.latest("gw-a") is not None and rig.service.latest("gw-b") is not None


def test_an_older_report_never_replaces_a_newer_one(rig: Rig) -> None:
    rig.send("gw-1", report("dead_portal", ts=rig.now))
    rig.send("gw-1", report(ts=rig.now - 600))  # late, e.g. redelivered
    latest = rig.service.latest("gw-1")
    assert latest is not None and latest.failed == ["portal"]
    assert len(rig.service.history("gw-1", 0, rig.now + 1)) == 2


def test_history_one_point_per_bucket_and_pruned_with_the_rollups(rig: Rig) -> None:
    t0 = (rig.now // BUCKET_S) * BUCKET_S
    rig.send("gw-1", report(ts=t0 + 10))
    rig.send("gw-1", report("busy_channel", ts=t0 + 100))  # same bucket: replaces
    rig.send("gw-1", report(ts=t0 + BUCKET_S + 5))
    points = rig.service.history("gw-1", t0, t0 + 2 * BUCKET_S)
    assert [p.ts for p in points] == [t0 + 100, t0 + BUCKET_S + 5]
    busy = points[0]
    assert "channel_busy" in busy.reasons
    assert busy.radios["phy0-ap0"] == [6, 94.0, -92, 12]
    assert busy.ssids["phy0-ap0"][0] == 12 and busy.ssids["phy0-ap0"][4] == 38.0
    assert busy.probes[:3] == [8.5, 41.0, 22.0]
    # Older than rollup_days: pruned with the 5-minute rollups (raw_days does not touch it).
    while rig.store.prune(t0 + 8 * 86400):
        pass
    assert len(rig.service.history("gw-1", 0, t0 + 1e6)) == 2
    # SQLite deletes rows past rollup_days (90); PostgreSQL drops the week's partition once
    # all of it is past, up to a week later (central/store/pg/schema.py).
    while rig.store.prune(t0 + 91 * 86400):
        pass
    if isinstance(rig.store, PgStore):
        assert len(rig.service.history("gw-1", 0, t0 + 1e6)) in (0, 2)
        while rig.store.prune(t0 + 98 * 86400):
            pass
    assert rig.service.history("gw-1", 0, t0 + 1e6) == []
    assert rig.service.latest("gw-1") is not None  # the latest stays


def test_worst_aps_and_their_reasons(rig: Rig) -> None:
    fleet(rig)
    worst = rig.service.worst(limit=3)
    got = {w.device: [d[0] for d in w.deductions] for w in worst}
    assert set(got) == {"gw-busy", "gw-dhcp", "gw-portal"}
    assert "channel_busy" in got["gw-busy"]
    assert "dhcp_pool_exhausted" in got["gw-dhcp"]
    assert "portal_broken" in got["gw-portal"]
    assert [w.device for w in rig.service.worst(limit=10)][3:] == ["gw-ok-1", "gw-ok-2", "gw-ok-3"]
    assert {w.device for w in rig.service.worst(region="Pusat")} == {
        "gw-busy",
        "gw-ok-1",
        "gw-ok-2",
    }


def test_rollups_per_region_and_site(rig: Rig) -> None:
    fleet(rig)
    s = {d: rig.service.latest(d).score for d in ("gw-ok-1", "gw-busy", "gw-dhcp", "gw-portal")}  # type: ignore[union-attr]
    by_region = {r.region: r for r in rig.service.rollups("region", below=80)}
    pusat, utara = by_region["Pusat"], by_region["Utara"]
    assert pusat.aps == 3 and utara.aps == 3
    assert pusat.min_score == s["gw-busy"]
    assert pusat.mean_score == round((2 * s["gw-ok-1"] + s["gw-busy"]) / 3, 1)
    assert utara.min_score == min(s["gw-dhcp"], s["gw-portal"])
    assert (pusat.below, utara.below) == (1, 2)
    assert (utara.portal_failed, utara.dns_failed, pusat.portal_failed) == (1, 0, 0)
    sites = {(r.region, r.site): r for r in rig.service.rollups("site", below=80)}
    assert sites[("Utara", "Halte 3")].aps == 1 and sites[("Utara", "Halte 3")].portal_failed == 1
    assert sites[("Pusat", "Taman 1")].aps == 3


def test_stale_reports_leave_the_rollups_and_the_worst_list(rig: Rig) -> None:
    fleet(rig)
    rig.now += 3 * 300 + 1  # three intervals (900 s) and a second later
    assert rig.service.worst() == []
    assert rig.service.rollups("region", 60) == []
    latest = rig.service.latest("gw-busy")
    assert latest is not None and not latest.fresh


def test_low_score_and_failed_probe_raise_alerts_and_clear(make_rig: Callable[..., Rig]) -> None:
    rig = make_rig("[alerts]\nservice_score_below = 80\n")
    rig.send("gw-busy", report("busy_channel", ts=rig.now))
    rig.send("gw-portal", report("dead_portal", ts=rig.now))
    open_ = {(a.device, a.kind): a.detail for a in rig.store.alerts(open_only=True)}
    assert "channel_busy" in open_[("gw-busy", "service_score")]
    assert open_[("gw-portal", "service_probe")] == "failed: portal"
    assert ("gw-busy", "service_probe") not in open_
    rig.now += 300
    rig.send("gw-busy", report(ts=rig.now))
    rig.send("gw-portal", report(ts=rig.now))
    assert not [a for a in rig.store.alerts(open_only=True) if a.kind.startswith("service")]
    closed = {(a.device, a.kind) for a in rig.store.alerts(open_only=False) if a.closed}
    assert closed >= {("gw-busy", "service_score"), ("gw-portal", "service_probe")}


def test_a_failed_citizen_path_raises_the_probe_alert_naming_its_step(rig: Rig) -> None:
    doc = report(ts=rig.now)
    doc["citizen_path"] = {"lease": False, "ms": [4000.0], "fail": "dhcp", "why": "no_offer"}
    rig.send("gw-walk", doc)
    open_ = {(a.device, a.kind): a.detail for a in rig.store.alerts(open_only=True)}
    assert open_[("gw-walk", "service_probe")] == "failed: citizen_path:dhcp"
    worst = {w.device: w for w in rig.service.worst()}
    assert worst["gw-walk"].failed == ["citizen_path:dhcp"]
    assert "citizen_dhcp" in [d[0] for d in worst["gw-walk"].deductions]
    rig.now += 300
    doc = report(ts=rig.now)
    doc["citizen_path"] = {"lease": True, "ms": [5.0, 1.0, 20.0, 40.0], "portal": "open"}
    rig.send("gw-walk", doc)
    assert ("gw-walk", "service_probe") not in {
        (a.device, a.kind) for a in rig.store.alerts(open_only=True)
    }


def test_api_and_metrics(rig: Rig, tmp_path: Path) -> None:
    fleet(rig)
    app = create_app(
        rig.store,
        rig.consumer.stats,
        web_dir=tmp_path / "no-web",
        clock=lambda: rig.now,
        service_score_below=80,
    )
    with TestClient(app, headers=auth_headers(rig.store, "viewer")) as c:
        worst = c.get("/api/service/worst", params={"limit": 3}).json()["items"]
        assert {w["device"] for w in worst} == {"gw-busy", "gw-dhcp", "gw-portal"}
        one = next(w for w in worst if w["device"] == "gw-dhcp")
        assert one["deductions"][0]["name"] == "dhcp_pool_exhausted"
        assert one["region"] == "Utara" and one["report"] is None
        latest = c.get("/api/devices/gw-portal/service").json()
        assert latest["failed"] == ["portal"] and latest["report"]["probes"]["portal"] == "broken"
        assert c.get("/api/devices/gw-none/service").status_code == 404
        hist = c.get("/api/devices/gw-busy/service/history").json()["points"]
        assert len(hist) == 1 and hist[0]["radios"]["phy0-ap0"][1] == 94.0
        assert (
            c.get(
                "/api/devices/gw-busy/service/history", params={"since": 10, "until": 5}
            ).status_code
            == 422
        )
        roll = c.get("/api/service/rollups", params={"by": "site"}).json()
        assert roll["below"] == 80 and {i["site"] for i in roll["items"]} >= {"Halte 3"}
        scores = {i["device"]: i["score"] for i in c.get("/api/service/scores").json()["items"]}
        assert len(scores) == 6 and scores["gw-busy"] < scores["gw-ok-1"]
        text = c.get("/metrics").text
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    mins = {s.labels["region"]: s.value for s in fams["titik_region_service_score_min"].samples}
    assert mins["Pusat"] == scores["gw-busy"]
    failed = {
        (s.labels["region"], s.labels["probe"]): s.value
        for s in fams["titik_region_service_probe_failed"].samples
    }
    assert failed[("Utara", "portal")] == 1 and failed[("Pusat", "portal")] == 0
    # Per-region only: no series names a device.
    for name in ("titik_region_service_score_mean", "titik_region_service_aps"):
        assert all("device" not in s.labels for s in fams[name].samples)
