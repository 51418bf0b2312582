"""Issue 19, point 3: the alert lifecycle (states and history), maintenance windows and
incidents, over a real store and the real API (TestClient); the clock is passed in. Every
test that takes ``w`` runs on SQLite and on PostgreSQL (issue 21: the same
central/store/alerting.py code, central/store/pg/tables.py's PgAlertingStore).

The notifications are collected from the engine's ``notify`` (the webhook's queue is tested
in test_alert_webhook.py, with a real HTTP receiver)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from central.alerting.engine import AlertEngine
from central.alerting.windows import parse_time
from central.api import auth
from central.api.app import create_app
from central.api.routes.alerting import build_router as alerting_router
from central.config import IncidentsConfig
from central.store.alerting import ROWIDS_CHUNK, AlertingError
from central.store.base import AlertChange, DeviceState, WriteBatch
from central.store.beside import alerting_of
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class World:
    def __init__(self, tmp: Path, pg_url: str | None = None) -> None:
        self.clock = Clock()
        self.store: SqliteStore | PgStore
        if pg_url is None:
            self.store = SqliteStore(tmp / "t.db", clock=self.clock)
        else:
            self.store = PgStore(pg_url, clock=self.clock)
        life = alerting_of(self.store, clock=self.clock)
        assert life is not None
        self.life = life
        self.sent: list[dict[str, Any]] = []
        self.rules = IncidentsConfig(window_s=120, min_count=3, group_wait_s=30)
        self.engine = AlertEngine(
            self.life, self.rules, self.sent.append, console_url="https://ops", clock=self.clock
        )
        routers = [alerting_router(self.store, require=auth.require, clock=self.clock)]
        self.app = create_app(self.store, clock=self.clock, routers=routers)
        self.client = TestClient(self.app)
        self.op = auth_headers(self.store, "operator", "ana")
        self.viewer = auth_headers(self.store, "viewer", "vic")

    def devices(self, *specs: tuple[str, str, list[str]]) -> None:
        self.store.write(
            WriteBatch(
                devices=[
                    DeviceState(d, region=r, site=f"{r}-site", groups=g, online=True)
                    for d, r, g in specs
                ]
            )
        )

    def raise_(self, device: str, kind: str = "offline", since: float | None = None) -> str:
        at = self.clock.t if since is None else since
        self.store.write(WriteBatch(alerts=[AlertChange(kind, device, at, f"{kind} test")]))
        return f"{kind}/{device}/{at:.3f}"

    def close(self, device: str, kind: str = "offline") -> None:
        self.store.write(WriteBatch(alerts=[AlertChange(kind, device, self.clock.t, close=True)]))

    def tick(self, advance: float = 0.0) -> None:
        self.clock.t += advance
        self.engine.tick(self.clock.t)

    def events(self, aid: str) -> list[str]:
        r = self.client.get(f"/api/alerts/{aid}/history", headers=self.viewer)
        assert r.status_code == 200, r.text
        return [e["event"] for e in r.json()["events"]]


@pytest.fixture(params=["sqlite", "postgresql"])
def w(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    pg = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    world = World(tmp_path, pg)
    yield world
    world.client.close()
    world.life.close()
    world.store.close()


def test_states_and_history_through_ack_snooze_unsnooze_reopen_resolve(w: World) -> None:
    w.devices(("gw-1", "north", ["g1"]))
    aid = w.raise_("gw-1", "temp")
    w.tick()
    assert w.events(aid) == ["raised"]
    # a temp alert is notified at once (no group wait: only offline alerts are grouped)
    assert [(n["type"], n["event"]) for n in w.sent] == [("alert", "raised")]
    assert w.sent[0]["links"]["history"] == f"https://ops/api/alerts/{aid}/history"

    life = w.life
    a = life.find(aid)
    assert a is not None
    assert a.state == "open"
    life.record(a.rowid, "acked", "ana", note="on it")
    assert life.find(aid).state == "acknowledged"  # type: ignore[union-attr]
    life.record(a.rowid, "snoozed", "ana", until=w.clock.t + 600)
    got = w.client.get("/api/alerts", params={"state": "snoozed"}, headers=w.viewer).json()
    assert [i["id"] for i in got["items"]] == [aid]
    assert got["items"][0]["state"] == "snoozed"
    w.tick(601)  # the snooze ends: it comes back and notifies again
    assert life.find(aid).state == "open"  # type: ignore[union-attr]
    assert w.sent[-1]["event"] == "unsnoozed"
    assert (
        w.client.get("/api/alerts", params={"state": "snoozed"}, headers=w.viewer).json()["items"]
        == []
    )

    life.record(a.rowid, "acked", "ana")
    r = w.client.post(f"/api/alerts/{aid}/reopen", headers=w.op)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "open"
    assert w.client.post(f"/api/alerts/{aid}/reopen", headers=w.op).status_code == 409
    assert w.client.post(f"/api/alerts/{aid}/reopen", headers=w.viewer).status_code == 403

    w.close("gw-1", "temp")
    w.tick(5)
    hist = w.client.get(f"/api/alerts/{aid}/history", headers=w.viewer).json()
    assert [e["event"] for e in hist["events"]] == [
        "raised", "acked", "snoozed", "unsnoozed", "acked", "reopened", "resolved",
    ]  # fmt: skip
    assert [e["who"] for e in hist["events"]] == [
        "central", "ana", "ana", "central", "ana", "ana", "central",
    ]  # fmt: skip
    assert hist["state"] == "resolved"
    assert w.sent[-1]["event"] == "resolved"
    # every operator's change is in the audit log
    actions = [e.action for e in w.app.state.audit.page(limit=100).items]
    assert "alert.reopen" in actions


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_ack_and_snooze_endpoints_write_history(
    request: pytest.FixtureRequest, tmp_path: Path, kind: str
) -> None:
    """The existing endpoints (routes/actions.py) keep answering as before and now record
    the transitions with who did it; a note with a NUL (which PostgreSQL's text refuses) is
    refused naming the field, on both stores, and nothing is recorded for it."""
    from central.actions.core import Console
    from central.api.routes.actions import build_router

    store: SqliteStore | PgStore
    if kind == "sqlite":
        store = SqliteStore(tmp_path / "t.db")
    else:
        store = PgStore(request.getfixturevalue("pg_url"))
    store.write(WriteBatch(devices=[DeviceState("gw-1", region="r")]))
    store.write(WriteBatch(alerts=[AlertChange("disk", "gw-1", 1000.0, "disk 95%")]))
    console = Console(prefix="titik", signing_keys=[], publisher=None, docs=store,
                      members=lambda g: 0)  # fmt: skip
    router = build_router(console=console, store=store, require=auth.require,
                          audit_of=lambda r: r.app.state.audit)  # fmt: skip
    app = create_app(store, routers=[router, alerting_router(store, require=auth.require)])
    op = auth_headers(store, "operator", "budi")
    with TestClient(app) as c:
        aid = "disk/gw-1/1000.000"
        r = c.post(f"/api/alerts/{aid}/ack", json={"note": "bad\x00note"}, headers=op)
        assert r.status_code == 422
        assert "note" in r.text
        r = c.post(f"/api/alerts/{aid}/ack", json={"note": "replacing the card"}, headers=op)
        assert r.status_code == 200
        assert r.json()["acked_by"] == "budi"
        assert c.get("/api/alerts", headers=op).json()["items"][0]["state"] == "acknowledged"
        r = c.post(f"/api/alerts/{aid}/snooze", json={"minutes": 30}, headers=op)
        assert r.status_code == 200
        hist = c.get(f"/api/alerts/{aid}/history", headers=op).json()
        assert [(e["event"], e["who"]) for e in hist["events"]] == [
            ("acked", "budi"),
            ("snoozed", "budi"),
        ]
        assert hist["events"][0]["note"] == "replacing the card"
        assert hist["events"][1]["until"] == pytest.approx(r.json()["snoozed_until"])
        assert hist["state"] == "snoozed"
        assert c.get("/api/alerts/disk/gw-1/9.000/history", headers=op).status_code == 404
        # a NUL in the id is refused before the store sees it (PostgreSQL would refuse it)
        assert c.get("/api/alerts/disk/gw-1%00/1000.000/history", headers=op).status_code == 422
    store.close()


def test_maintenance_window_marks_the_alert_and_notifies_nobody(w: World) -> None:
    w.devices(("gw-1", "north", ["kemang"]), ("gw-2", "north", ["other"]))
    r = w.client.post(
        "/api/maintenance",
        json={"group": "kemang", "start": "now", "end": "+2h", "reason": "fibre works"},
        headers=w.op,
    )
    assert r.status_code == 201, r.text
    win = r.json()
    assert win["active"] is True
    assert win["who"] == "ana"
    assert win["end"] == pytest.approx(T0 + 7200)
    a1 = w.raise_("gw-1", "temp")
    a2 = w.raise_("gw-2", "temp")
    w.tick(1)
    assert [n["alert"]["device"] for n in w.sent] == ["gw-2"]
    items = {i["id"]: i for i in w.client.get("/api/alerts", headers=w.viewer).json()["items"]}
    assert items[a1]["maintenance"] == win["id"]
    assert items[a2]["maintenance"] is None
    history = w.client.get(f"/api/alerts/{a1}/history", headers=w.viewer).json()
    assert "in maintenance" in history["events"][0]["note"]
    w.close("gw-1", "temp")
    w.tick(1)
    assert [n["alert"]["device"] for n in w.sent] == ["gw-2"]  # nor its resolution

    listed = w.client.get("/api/maintenance", headers=w.viewer).json()["items"]
    assert [x["id"] for x in listed] == [win["id"]]
    assert w.client.delete(f"/api/maintenance/{win['id']}", headers=w.viewer).status_code == 403
    r = w.client.delete(f"/api/maintenance/{win['id']}", headers=w.op)
    assert r.status_code == 200
    assert r.json()["deleted_by"] == "ana"
    assert w.client.get("/api/maintenance", headers=w.viewer).json()["items"] == []
    every = w.client.get("/api/maintenance?all=true", headers=w.viewer).json()["items"]
    assert len(every) == 1
    assert w.client.delete(f"/api/maintenance/{win['id']}", headers=w.op).status_code == 404
    actions = [e.action for e in w.app.state.audit.page(limit=100).items]
    assert {"maintenance.add", "maintenance.delete"} <= set(actions)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"group": "nope", "end": "+1h", "reason": "x"}, "group: no gateway is in group 'nope'"),
        ({"device": "gw-9", "end": "+1h", "reason": "x"}, "device: no gateway"),
        ({"group": "kemang", "end": "tomorrow", "reason": "x"}, "end: 'tomorrow' is not a time"),
        ({"group": "kemang", "start": "2026-12-06T22:00", "end": "+1h", "reason": "x"},
         "start: '2026-12-06T22:00' has no time zone"),
        ({"group": "kemang", "start": "+1h", "end": "+2h", "reason": "x"}, "start: a duration"),
        ({"group": "kemang", "start": "now", "end": "now", "reason": "x"}, "end: must be after"),
        ({"group": "kemang", "start": 1000, "end": 2000, "reason": "x"}, "end: is in the past"),
        ({"group": "kemang", "end": "+100d", "reason": "x"}, "end: a window lasts at most"),
        ({"group": "kemang", "end": "+1h", "reason": "  "}, "reason: say why"),
        ({"group": "kemang", "region": "north", "end": "+1h", "reason": "x"}, "exactly one"),
        # PostgreSQL's text refuses NUL: refused before any query, on both stores alike
        ({"group": "kemang", "end": "+1h", "reason": "fibre\x00works"}, "reason: holds a NUL"),
        ({"region": "no\x00rth", "end": "+1h", "reason": "x"}, "region: holds a NUL"),
    ],
)  # fmt: skip
def test_bad_windows_are_refused_naming_the_field(
    w: World, body: dict[str, Any], field: str
) -> None:
    w.devices(("gw-1", "north", ["kemang"]))
    r = w.client.post("/api/maintenance", json=body, headers=w.op)
    assert r.status_code == 422
    assert field in r.json()["detail"]
    assert w.life.windows(include_ended=True) == []


def test_parse_time_forms() -> None:
    assert parse_time("2026-12-06T22:00Z", "start", now=0) == 1796594400.0
    assert parse_time("2026-12-07T05:00+07:00", "start", now=0) == 1796594400.0
    assert parse_time("now", "start", now=5.0) == 5.0
    assert parse_time("+90m", "end", now=0, start=100.0) == 5500.0
    with pytest.raises(AlertingError, match=r"^end: out of range"):
        parse_time("1e30", "end", now=0)


def test_gateways_down_together_make_one_incident(w: World) -> None:
    region = [(f"gw-{i:03d}", "north", ["g"]) for i in range(50)]
    w.devices(*region, ("gw-s1", "south", ["g"]), ("gw-s2", "south", ["g"]))
    down = T0 - 600  # they went down 10 min ago (the offline alert comes offline_after later)
    ids = [w.raise_(d, since=down + i) for i, (d, _, _) in enumerate(region[:40])]
    w.raise_("gw-s1", since=down)
    w.raise_("gw-s2", since=down + 500)  # south: two, far apart: no incident
    w.tick()
    assert w.sent == []  # held for group_wait_s
    w.tick(10)
    ids += [w.raise_(d, since=down + 60) for d, _, _ in region[40:]]  # more join
    w.tick(25)
    assert sorted((n["type"], n["event"]) for n in w.sent) == [
        ("alert", "raised"), ("alert", "raised"), ("incident", "opened"),
    ]  # fmt: skip
    w.sent.sort(key=lambda n: n["type"] != "incident")
    inc = w.sent[0]["incident"]
    assert inc["count"] == 50
    assert inc["key"] == "north"
    assert inc["devices"][:2] == ["gw-000", "gw-001"]
    assert {n["alert"]["device"] for n in w.sent[1:]} == {"gw-s1", "gw-s2"}
    listed = w.client.get("/api/incidents?open=true", headers=w.viewer).json()["items"]
    assert [(i["count"], i["down"], i["state"]) for i in listed] == [(50, 50, "open")]
    items = w.client.get("/api/alerts", headers=w.viewer).json()["items"]
    assert {i["incident"] for i in items if i["device"].startswith("gw-0")} == {inc["id"]}

    for d, _, _ in region[:49]:
        w.close(d)
    w.tick(1)
    assert len(w.sent) == 3  # one still down
    assert w.client.get(f"/api/incidents/{inc['id']}", headers=w.viewer).json()["down"] == 1
    w.close("gw-049")
    w.tick(1)
    assert [(n["type"], n["event"]) for n in w.sent[3:]] == [("incident", "resolved")]
    assert w.sent[3]["incident"]["state"] == "resolved"
    assert len(ids) == 50


def test_an_incident_growing_later_is_notified_again_at_most_every_interval(w: World) -> None:
    w.rules = IncidentsConfig(window_s=120, min_count=3, group_wait_s=0, update_interval_s=60)
    w.engine.rules = w.rules
    w.devices(*[(f"gw-{i}", "east", []) for i in range(6)])
    for i in range(3):
        w.raise_(f"gw-{i}", since=T0 - 600)
    w.tick()
    assert [n["event"] for n in w.sent] == ["opened"]
    w.raise_("gw-3", since=T0 - 590)
    w.tick(10)
    assert [n["event"] for n in w.sent] == ["opened"]  # within update_interval_s
    w.raise_("gw-4", since=T0 - 580)
    w.tick(60)
    assert [n["event"] for n in w.sent] == ["opened", "updated"]
    assert w.sent[-1]["incident"]["count"] == 5


def test_restart_repeats_nothing(w: World) -> None:
    w.devices(("gw-1", "north", []))
    w.raise_("gw-1", "mem")
    w.tick()
    life = alerting_of(w.store, clock=w.clock)
    assert life is not None
    again = AlertEngine(life, w.rules, w.sent.append)
    again.tick(w.clock.t + 1)
    life.close()
    assert len(w.sent) == 1
    aid = f"mem/gw-1/{T0:.3f}"
    assert w.events(aid) == ["raised"]


def test_operators_transitions_are_notified_with_who(w: World) -> None:
    """What routes/actions.py records after an ack or snooze (history_hook) also goes to the
    webhook, naming the operator; not for a gateway in maintenance."""
    from central.api.routes.alerting import history_hook

    w.devices(("gw-1", "north", ["g1"]), ("gw-2", "north", ["quiet"]))
    w.life.add_window(group="quiet", start=T0, end=T0 + 3600, reason="works", who="ana")
    a1 = w.raise_("gw-1", "disk")
    a2 = w.raise_("gw-2", "disk")
    w.tick()
    w.sent.clear()
    hook = history_hook(w.store, w.sent.append, "https://ops")
    hook(a1, "acked", "budi", note="on it")
    hook(a1, "snoozed", "budi", until=T0 + 900)
    hook(a2, "acked", "budi")
    assert [(n["event"], n["who"], n["alert"]["id"]) for n in w.sent] == [
        ("acked", "budi", a1), ("snoozed", "budi", a1),
    ]  # fmt: skip
    assert w.sent[0]["alert"]["state"] == "acknowledged"
    assert w.sent[1]["until"] == T0 + 900
    assert w.sent[1]["links"]["console"] == "https://ops/alerts"
    assert w.events(a2) == ["raised", "acked"]  # recorded all the same


def test_thousands_of_loose_alerts_in_one_tick_each_once(w: World) -> None:
    """Gateways without a region form no incident: each offline alert is notified on its
    own once its group wait is over, and its resolution after; more of them than one
    statement may name (the engine reads and writes them in batches and chunks)."""
    n = ROWIDS_CHUNK * 2 + 7
    w.store.write(WriteBatch(devices=[DeviceState(f"gw-{i:04d}", online=True) for i in range(n)]))
    w.store.write(
        WriteBatch(alerts=[AlertChange("offline", f"gw-{i:04d}", w.clock.t, "x") for i in range(n)])
    )
    w.tick()
    assert w.sent == []  # within the group wait
    w.tick(31)
    raised = [m["alert"]["device"] for m in w.sent if m["event"] == "raised"]
    assert sorted(raised) == [f"gw-{i:04d}" for i in range(n)]
    w.tick(1)
    assert len(w.sent) == n  # each once
    w.store.write(
        WriteBatch(
            alerts=[AlertChange("offline", f"gw-{i:04d}", w.clock.t, close=True) for i in range(n)]
        )
    )
    w.tick(1)
    assert sorted(m["alert"]["device"] for m in w.sent[n:]) == sorted(raised)
    assert {m["event"] for m in w.sent[n:]} == {"resolved"}
    assert w.events(f"offline/gw-0000/{T0:.3f}") == ["raised", "resolved"]
