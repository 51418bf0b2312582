"""The alert lifecycle's endpoints: one alert's history, reopening, maintenance windows,
incidents and the webhook's delivery status (docs/alerts.md).

Reading is ``viewer``; changing (reopen, add or delete a window) is ``operator`` and goes to
the audit log (actor = the token's name, ``via = "web"``). ``GET /api/alerts?state=`` (the
list by state) is routes/fleet.py's; acknowledging and snoozing are routes/actions.py's, which
record their history here through :func:`history_hook`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field

from central.alerting.engine import Notify, operator_event
from central.alerting.webhook import WebhookNotifier
from central.alerting.windows import check_span, parse_time
from central.config import CentralConfig
from central.store.alerting import AlertingError, AlertingStore, Incident, Window
from central.store.base import Store
from central.store.beside import alerting_of

AlertPath = Annotated[
    str,
    Path(
        min_length=5,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[0-9]+\.[0-9]{3}$",
        description="<kind>/<device>/<since> as GET /api/alerts gives it",
    ),
]
NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class EventOut(BaseModel):
    at: float
    event: str = Field(description="raised, acked, snoozed, unsnoozed, reopened, resolved")
    who: str = Field(description="The operator's token name, or 'central'")
    until: float | None = Field(description="For 'snoozed': until when")
    note: str | None


class AlertHistoryOut(BaseModel):
    id: str
    state: str = Field(description="open, acknowledged, snoozed or resolved")
    maintenance: int | None = Field(description="The window it was raised under")
    incident: int | None
    events: list[EventOut]


class WindowIn(BaseModel):
    group: str | None = Field(default=None, pattern=NAME)
    device: str | None = Field(default=None, pattern=NAME)
    region: str | None = Field(default=None, min_length=1, max_length=128)
    start: float | str = Field(default="now", description="now, ISO 8601 with zone, Unix time")
    end: float | str = Field(description="a time as start, or +2h / +90m / +1d after it")
    reason: str = Field(min_length=1, max_length=500)


class WindowOut(BaseModel):
    id: int
    target: str = Field(description="group/<g>, gw/<device> or region/<r>")
    group: str | None
    device: str | None
    region: str | None
    start: float
    end: float
    reason: str
    who: str
    created: float
    deleted: float | None
    deleted_by: str | None
    active: bool


class WindowsOut(BaseModel):
    items: list[WindowOut]


class IncidentOut(BaseModel):
    id: int
    scope: str = Field(description="region or site")
    key: str = Field(description="The region's (or site's) name")
    state: str = Field(description="open or resolved")
    opened: float
    first_down: float
    last_down: float
    resolved: float | None
    count: int = Field(description="Gateways in it")
    down: int = Field(description="Of them, still down")
    devices: list[str]


class IncidentsOut(BaseModel):
    items: list[IncidentOut]


class NotificationsOut(BaseModel):
    enabled: bool
    stats: dict[str, Any] = Field(description="queued, delivered, failed, dropped, retries ...")
    recent: list[dict[str, Any]] = Field(description="The newest deliveries and how they ended")


def _window_out(w: Window, now: float) -> WindowOut:
    return WindowOut(
        id=w.id, target=w.target, group=w.group, device=w.device, region=w.region,
        start=w.start, end=w.end, reason=w.reason, who=w.who, created=w.created,
        deleted=w.deleted, deleted_by=w.deleted_by, active=w.active(now),
    )  # fmt: skip


def _incident_out(i: Incident) -> IncidentOut:
    return IncidentOut(
        id=i.id, scope=i.scope, key=i.key, state="resolved" if i.resolved else "open",
        opened=i.opened, first_down=i.first_down, last_down=i.last_down, resolved=i.resolved,
        count=len(i.members), down=i.down, devices=list(i.members),
    )  # fmt: skip


def lifecycle_of(store: Store) -> AlertingStore | None:
    """The lifecycle tables of the store's database, SQLite or PostgreSQL (None for a store
    with neither a file nor a url)."""
    return alerting_of(store)


def history_hook(
    store: Store, notify: Notify | None = None, console_url: str = ""
) -> Callable[..., None]:
    """What routes/actions.py calls after an acknowledgement or a snooze."""
    life = lifecycle_of(store)

    def hook(alert_id: str, event: str, who: str, *, until: float | None = None,
             note: str | None = None) -> None:  # fmt: skip
        if life is not None:
            operator_event(life, notify, alert_id, event, who, until=until, note=note,
                           console_url=console_url)  # fmt: skip

    return hook


def build_router(  # noqa: PLR0915 (one closure per endpoint)
    store: Store,
    *,
    require: Callable[[str], Any],
    notifier: WebhookNotifier | None = None,
    console_url: str = "",
    clock: Callable[[], float] = time.time,
) -> APIRouter:
    r = APIRouter(tags=["alerts"])
    life = lifecycle_of(store)
    as_operator = Depends(require("operator"))
    as_viewer = Depends(require("viewer"))
    notify = notifier.submit if notifier is not None and notifier.enabled else None

    def lc() -> AlertingStore:
        if life is None:
            raise HTTPException(501, "this store keeps no alert lifecycle")
        return life

    def audit(request: Request, who: Any, action: str, target: str, result: str,
              detail: dict[str, Any] | None = None) -> None:  # fmt: skip
        request.app.state.audit.append(
            who.name, action, target, key_id=None, result=result, detail=detail, via="web"
        )

    @r.get("/api/alerts/{alert:path}/history", responses={404: {}})
    def get_history(alert: AlertPath, who: Any = as_viewer) -> AlertHistoryOut:
        """One alert's transitions, oldest first: who raised, acknowledged, snoozed, reopened
        or resolved it, and when."""
        a = lc().find(alert)
        if a is None:
            raise HTTPException(404, f"no alert {alert}; list them with GET /api/alerts")
        return AlertHistoryOut(
            id=a.id,
            state=a.state,
            maintenance=a.maintenance,
            incident=a.incident,
            events=[
                EventOut(at=e.at, event=e.event, who=e.who, until=e.until, note=e.note)
                for e in lc().history(a.rowid)
            ],
        )

    @r.post("/api/alerts/{alert:path}/reopen", responses={404: {}, 409: {}})
    def reopen(alert: AlertPath, request: Request, who: Any = as_operator) -> AlertHistoryOut:
        """Take back an acknowledgement or a snooze: the alert is open (and notifies) again."""
        a = lc().find(alert)
        if a is None or a.closed is not None:
            audit(request, who, "alert.reopen", alert, "refused: no open alert with this id")
            raise HTTPException(404, f"no open alert {alert}; list them with GET /api/alerts")
        if a.state == "open":
            audit(request, who, "alert.reopen", alert, "refused: it is open already")
            raise HTTPException(409, "state: the alert is open already")
        operator_event(lc(), notify, alert, "reopened", who.name, console_url=console_url)
        audit(request, who, "alert.reopen", alert, "done")
        return get_history(alert, who)

    @r.get("/api/maintenance")
    def get_windows(
        include_ended: Annotated[bool, Query(alias="all")] = False, who: Any = as_viewer
    ) -> WindowsOut:
        """Maintenance windows now and to come (``all=true``: ended and deleted ones too)."""
        now = clock()
        return WindowsOut(
            items=[_window_out(w, now) for w in lc().windows(include_ended=include_ended)]
        )

    @r.post("/api/maintenance", status_code=201, responses={422: {}})
    def add_window(body: WindowIn, request: Request, who: Any = as_operator) -> WindowOut:
        """A window over one group, device or region: its alerts are raised, marked in
        maintenance, and notify nobody."""
        now = clock()
        # As audited when refused: a NUL escaped (PostgreSQL's text refuses it, and the refusal
        # must be audited all the same, alike on both stores).
        target = (body.group or body.device or body.region or "?").replace("\x00", "\\x00")
        try:
            start = parse_time(body.start, "start", now=now)
            end = parse_time(body.end, "end", now=now, start=start)
            check_span(start, end)
            w = lc().add_window(
                group=body.group, device=body.device, region=body.region,
                start=start, end=end, reason=body.reason, who=who.name,
            )  # fmt: skip
        except AlertingError as exc:
            audit(request, who, "maintenance.add", target, f"refused: {exc}")
            raise HTTPException(422, str(exc)) from None
        audit(request, who, "maintenance.add", w.target, "created",
              {"id": w.id, "start": w.start, "end": w.end, "reason": w.reason})  # fmt: skip
        return _window_out(w, now)

    @r.delete("/api/maintenance/{wid}", responses={404: {}})
    def delete_window(
        wid: Annotated[int, Path(ge=1, le=2**53)], request: Request, who: Any = as_operator
    ) -> WindowOut:
        """End a window now (it stays listed with ``all=true``)."""
        try:
            w = lc().delete_window(wid, who.name)
        except AlertingError as exc:
            audit(request, who, "maintenance.delete", f"maintenance/{wid}", f"refused: {exc}")
            raise HTTPException(404, str(exc)) from None
        audit(request, who, "maintenance.delete", w.target, "deleted", {"id": w.id})
        return _window_out(w, clock())

    @r.get("/api/incidents")
    def get_incidents(
        open_: Annotated[bool, Query(alias="open")] = False, who: Any = as_viewer
    ) -> IncidentsOut:
        """Gateways that went down together, newest first (``open=true``: open ones only)."""
        return IncidentsOut(items=[_incident_out(i) for i in lc().incidents(open_only=open_)])

    @r.get("/api/incidents/{iid}", responses={404: {}})
    def get_incident(
        iid: Annotated[int, Path(ge=1, le=2**53)], who: Any = as_viewer
    ) -> IncidentOut:
        i = lc().incident(iid)
        if i is None:
            raise HTTPException(404, f"no incident {iid}")
        return _incident_out(i)

    @r.get("/api/notifications")
    def get_notifications(who: Any = as_viewer) -> NotificationsOut:
        """The webhook: whether one is set, its counters and the newest deliveries."""
        return NotificationsOut(
            enabled=notifier is not None and notifier.enabled,
            stats=notifier.stats.as_dict() if notifier is not None else {},
            recent=lc().deliveries(),
        )

    return r


class WebhookCollector(Collector):
    """``titik_alert_notifications_total{result}`` (delivered, failed, dropped),
    ``titik_alert_notification_retries_total`` and ``titik_alert_notifications_waiting``."""

    def __init__(self, notifier: WebhookNotifier) -> None:
        self.notifier = notifier

    def collect(self) -> Iterator[Metric]:
        st = self.notifier.stats
        sent = CounterMetricFamily(
            "titik_alert_notifications",
            "Webhook notifications: delivered, failed (given up after retries), dropped "
            "(queue full)",
            labels=["result"],
        )
        for result, n in (("delivered", st.delivered), ("failed", st.failed),
                          ("dropped", st.dropped)):  # fmt: skip
            sent.add_metric([result], n)
        yield sent
        yield CounterMetricFamily(
            "titik_alert_notification_retries", "Webhook attempts after a failed one", st.retries
        )
        yield GaugeMetricFamily(
            "titik_alert_notifications_waiting",
            "Webhook notifications queued and not yet delivered or given up",
            st.queued - st.delivered - st.failed,
        )


def alerting_router(
    config: CentralConfig, store: Store, notifier: WebhookNotifier | None
) -> APIRouter:
    """The router as ``titik-central run`` serves it (central.api.auth's roles)."""
    from central.api.auth import require

    return build_router(
        store, require=require, notifier=notifier, console_url=config.alerts.console_url
    )
