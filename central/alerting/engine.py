"""The alert lifecycle engine: takes in the alerts the fleet rules raised and closed, records
their history, applies maintenance windows, groups gateways that went down together into
incidents, and decides what to notify.

It runs on a thread of its own beside central's writer (``Consumer.aside``), on the fleet's
evaluator only, on its own connection: it reads the alerts as ingest committed them, and
ingest never waits for it (when a city goes down, 50,000 alerts are taken in and grouped
while the gateways' telemetry goes on being stored). It hands payloads to the notifier's
queue (``submit`` never blocks). A failure is logged and the tick runs again; every step is
idempotent on the tables (a watermark for new alerts, ``alert_info.resolved`` for closed
ones), so a crash or restart repeats nothing and loses nothing.

A tick costs statements per new or closed alert, not per open one: the active maintenance
windows are read once a tick, events and flags are written in batches, the open incidents
are counted in SQL (their members are loaded only for the one being notified), and pending
alerts still in their group wait are left in the database.

Rules (docs/alerts.md):

- a new alert gets a ``raised`` event; a gateway under an active maintenance window (its
  group, itself or its region) has it marked with the window and notifies nobody;
- an ``offline`` alert joins the open incident of its region (or site) when it went down
  within ``window_s`` of that incident's last member; or, with at least ``min_count - 1``
  other loose offline alerts of the same region down within ``window_s`` of it, it opens an
  incident with them. An incident is notified once, ``group_wait_s`` after it opened (so the
  others falling with it are in it), again when more joined (at most every
  ``update_interval_s``) and when its last member is back;
- an alert in no incident and no window is notified ``group_wait_s`` after it was taken in
  (offline alerts; others at once), and its resolution if its raise was notified;
- a snooze that ended gives ``unsnoozed`` (and a notification: it is back).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from central.config import IncidentsConfig
from central.store.alerting import CENTRAL, AlertingStore, Incident, Window, covering

log = logging.getLogger("titik.central.alerting")

Notify = Callable[[dict[str, Any]], object]


class AlertEngine:
    def __init__(
        self,
        store: AlertingStore,
        rules: IncidentsConfig,
        notify: Notify,
        *,
        console_url: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.rules = rules
        self.notify = notify
        self.console_url = console_url.rstrip("/")
        self.clock = clock
        #: The maintenance windows active this tick (read once at its start).
        self._windows: list[Window] = []

    def tick(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        # One transaction: when a whole region goes down, thousands of rows in one commit.
        # A notification handed over before a failed commit may be sent again next tick
        # (at least once, never lost).
        with self.store.transaction():
            self._windows = [w for w in self.store.windows() if w.active(now)]
            self._take_new(now)
            self._resolve(now)
            self._unsnooze(now)
            self._notify_pending(now)
            self._notify_incidents(now)

    # --- steps --------------------------------------------------------------------------------

    def _take_new(self, now: float) -> None:
        s = self.store
        after = int(s.meta("last_alert"))
        rows = s.new_alerts(after)
        raised: list[tuple[int, str, float, str | None]] = []
        for r in rows:
            groups = json.loads(r["groups"]) if r["groups"] else []
            window = covering(self._windows, r["device"], groups, r["region"], now)
            note = r["detail"]
            if window is not None:
                note += f" · in maintenance (window {window.id}: {window.reason})"
            raised.append((r["id"], "raised", r["since"], note))
            s.take_in(r["id"], now, r["region"], r["site"], window.id if window else None)
            if r["closed"] is None and window is None and r["kind"] == "offline":
                self._group(r["id"], r["since"], r["region"], r["site"], now)
        s.record_many(raised, CENTRAL)
        if rows:  # the same transaction: the watermark moves with what it took in
            s.set_meta("last_alert", rows[-1]["id"])

    def _group(
        self, alert: int, since: float, region: str | None, site: str | None, now: float
    ) -> None:
        r = self.rules
        key = region if r.by == "region" else site
        if not key:
            return
        s = self.store
        inc = s.active_incident(r.by, key)
        if inc is not None and inc[1] - r.window_s <= since <= inc[2] + r.window_s:
            iid, first, last = inc
            s.set_info(alert, incident=iid)
            if since < first or since > last:
                s.update_incident(iid, first_down=min(first, since), last_down=max(last, since))
            return
        loose = s.loose_offline(r.by, key, since - r.window_s, since + r.window_s)
        if len(loose) < r.min_count:
            return
        sinces = [row["since"] for row in loose]
        iid = s.open_incident(r.by, key, now, min(sinces), max(sinces))
        for row in loose:
            s.set_info(row["id"], incident=iid)
        log.info("incident %d: %d gateways of %s %s down together", iid, len(loose), r.by, key)

    def _resolve(self, now: float) -> None:
        s = self.store
        touched: set[int] = set()
        closed = s.newly_closed()
        s.record_many(((r["id"], "resolved", r["closed"], None) for r in closed), CENTRAL)
        s.set_many("resolved", ((r["closed"], r["id"]) for r in closed))
        tell: list[int] = []
        for r in closed:
            if r["incident"] is not None:
                touched.add(r["incident"])
            elif r["notified"] and not self._silenced(r["device"], now):
                tell.append(r["id"])
        for a in sorted(s.rows(rowids=tell), key=lambda a: (a.closed or now, a.rowid)):
            self.notify(self._alert_payload(a, "resolved", CENTRAL, a.closed or now))
        for iid in sorted(touched):
            inc = s.incident(iid)
            if inc is not None and inc.resolved is None and inc.down == 0:
                s.update_incident(iid, resolved=now)
                if inc.notified_at is not None:
                    done = s.incident(iid)
                    if done is not None:
                        self.notify(self._incident_payload(done, "resolved"))

    def _unsnooze(self, now: float) -> None:
        s = self.store
        for aid in s.snoozes_ended(now):
            s.record(aid, "unsnoozed", CENTRAL, at=now, note="the snooze ended")
            a = s.rows(rowids=[aid])
            if a and a[0].maintenance is None and not self._silenced(a[0].device, now):
                self.notify(self._alert_payload(a[0], "unsnoozed", CENTRAL, now))

    def _notify_pending(self, now: float) -> None:
        s = self.store
        due = [r["id"] for r in s.pending(now - self.rules.group_wait_s)]
        s.set_many("notified", ((1, aid) for aid in due))
        for a in s.rows(rowids=due):
            if a.state not in ("snoozed", "resolved") and not self._silenced(a.device, now):
                self.notify(self._alert_payload(a, "raised", CENTRAL, a.since))

    def _notify_incidents(self, now: float) -> None:
        r, s = self.rules, self.store
        for c in s.open_counts():
            if c.notified_at is None:
                if now < c.opened + r.group_wait_s:
                    continue
                event = "opened"
            elif c.count > c.notified_count and now >= c.notified_at + r.update_interval_s:
                event = "updated"
            else:
                continue
            inc = s.incident(c.id)
            if inc is not None:
                s.update_incident(inc.id, notified_at=now, notified_count=len(inc.members))
                self.notify(self._incident_payload(inc, event))

    def _silenced(self, device: str, now: float) -> bool:
        """Under a maintenance window now (one created after the alert was raised too)."""
        if not self._windows:
            return False
        groups, region = self.store.placement(device)
        return covering(self._windows, device, groups, region, now) is not None

    # --- payloads -----------------------------------------------------------------------------

    def _links(self, path: str) -> str | None:
        return f"{self.console_url}{path}" if self.console_url else None

    def _alert_payload(self, a: Any, event: str, who: str, at: float) -> dict[str, Any]:
        return {
            "type": "alert",
            "subject": f"alert/{a.id}",
            "event": event,
            "at": at,
            "who": who,
            "alert": {
                "id": a.id, "kind": a.kind, "device": a.device, "since": a.since,
                "detail": a.detail, "state": a.state, "region": a.region, "site": a.site,
                "closed": a.closed,
            },
            "links": {
                "console": self._links("/alerts"),
                "history": self._links(f"/api/alerts/{a.id}/history"),
                "device": self._links(f"/history?device={a.device}"),
            },
        }  # fmt: skip

    def _incident_payload(self, inc: Incident, event: str) -> dict[str, Any]:
        return {
            "type": "incident",
            "subject": f"incident/{inc.id}",
            "event": event,
            "at": self.clock(),
            "who": CENTRAL,
            "incident": {
                "id": inc.id, "scope": inc.scope, "key": inc.key, "opened": inc.opened,
                "first_down": inc.first_down, "last_down": inc.last_down,
                "resolved": inc.resolved, "count": len(inc.members), "down": inc.down,
                "devices": list(inc.members),
                "state": "resolved" if inc.resolved is not None else "open",
            },
            "links": {"console": self._links("/alerts"),
                      "api": self._links(f"/api/incidents/{inc.id}")},
        }  # fmt: skip


def operator_event(
    store: AlertingStore,
    notify: Notify | None,
    alert_id: str,
    event: str,
    who: str,
    *,
    until: float | None = None,
    note: str | None = None,
    console_url: str = "",
) -> None:
    """Record an operator's transition (acked, snoozed, reopened) and, with ``notify``, tell
    the webhook (not for a gateway in maintenance)."""
    a = store.find(alert_id)
    if a is None:
        return
    store.record(a.rowid, event, who, until=until, note=note)
    if notify is not None and a.maintenance is None:
        engine = AlertEngine(store, IncidentsConfig(), notify, console_url=console_url)
        fresh = store.rows(rowids=[a.rowid])
        if fresh:
            payload = engine._alert_payload(fresh[0], event, who, store.clock())
            if until is not None:
                payload["until"] = until
            notify(payload)
