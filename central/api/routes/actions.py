"""Console actions: prepare and submit signed configs and commands; acknowledge and snooze alerts.

Every endpoint is ``operator`` or more (``GET /api/actions/signing``: viewer), and every call
that reaches its handler is appended to the audit log (actor = the principal's name,
``via="web"``, ``key_id`` = the signature's kid, result ``prepared``, ``published``,
``refused: <reason>``...). The router takes what it needs by injection: ``require(role)`` (a
FastAPI dependency returning the principal) and ``audit_of(request)`` (the audit log), so it
is tested with stand-ins and wired to central.api.auth in create_app. docs/central.md
("Console actions") is the contract; docs/architecture.md says why central holds no key.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.protocol.topics import TOPIC_SAFE
from central.actions.core import ActionError, Console, Prepared, Publisher, Target, b64
from central.api.queries import AlertMarks, alert_id
from central.api.routes.alerting import history_hook
from central.config import CentralConfig
from central.store.audit import message_ref
from central.store.base import AlertMark, Store
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore

NAME_RE = f"^{TOPIC_SAFE.pattern}$"
#: Longest snooze: a week; longer is a silence, which issue 19's alert windows will give.
MAX_SNOOZE_MIN = 7 * 24 * 60
MAX_NOTE = 500


class Caller(Protocol):
    """Who calls: what central.api.auth.require returns (its Principal)."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def token_id(self) -> str: ...


class Audit(Protocol):
    def append(
        self,
        actor: str,
        action: str,
        target: str,
        *,
        key_id: str | None,
        result: str,
        detail: Mapping[str, Any] | None = None,
        via: str,
        ref: str | None = None,
    ) -> Any: ...


# --- request and response models ----------------------------------------------------------

Name = Annotated[str, Field(min_length=1, max_length=64, pattern=NAME_RE)]


class TargetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device: Name | None = Field(default=None, description="One gateway's id")
    group: Name | None = Field(default=None, description="A group's name")

    @model_validator(mode="after")
    def _one(self) -> TargetIn:
        if (self.device is None) == (self.group is None):
            raise ValueError("give exactly one of device or group")
        return self


class PrepareIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["config", "command"]
    target: TargetIn
    body: dict[str, Any] = Field(
        description='config: {"config": {...}, "version"?: N} or the bare config object; '
        'command: {"name": "reboot", "args": {...}, "expires_in_s"?: 3600}'
    )


class PrepareOut(BaseModel):
    action_id: str = Field(description="Submit it with the signature within the TTL")
    topic: str
    payload: dict[str, Any] = Field(description="What will be published (without its sig)")
    signed_bytes_b64: str = Field(
        description="base64 of agent.protocol.signing.signed_bytes(topic, payload): sign these"
    )
    summary: str
    expires_at: float


class SigIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alg: Literal["ed25519"]
    kid: str = Field(min_length=1, max_length=64)
    value: str = Field(min_length=1, max_length=200, description="base64 of the signature")


class SubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action_id: str = Field(min_length=1, max_length=64)
    sig: SigIn


class SubmitOut(BaseModel):
    status: Literal["published"]
    topic: str


class SigningOut(BaseModel):
    key_ids: list[str] = Field(description="Key ids of [console] signing_keys")
    action_ttl_s: float


#: A note holds no NUL character: PostgreSQL's text refuses it (422 on both stores alike).
NOTE_PATTERN = r"^[^\x00]*$"


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(default=None, max_length=MAX_NOTE, pattern=NOTE_PATTERN)


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    minutes: int = Field(ge=1, le=MAX_SNOOZE_MIN)
    note: str | None = Field(default=None, max_length=MAX_NOTE, pattern=NOTE_PATTERN)


class MarkOut(BaseModel):
    id: str
    acked_by: str | None
    acked_at: float | None
    snoozed_until: float | None
    snoozed_by: str | None
    note: str | None


AlertId = Annotated[
    str,
    Path(
        min_length=5,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[0-9]+\.[0-9]{3}$",
        description="<kind>/<device>/<since> as GET /api/alerts gives it",
    ),
]


# --- the router ---------------------------------------------------------------------------


def build_router(  # noqa: PLR0915 (one closure per endpoint)
    *,
    console: Console,
    store: Store,
    require: Callable[[str], Any],
    audit_of: Callable[[Request], Audit],
    clock: Callable[[], float] = time.time,
    history: Callable[..., None] | None = None,
) -> APIRouter:
    """``history``: records an acknowledgement or snooze in the alert's history
    (routes/alerting.py's ``history_hook``, the default)."""
    r = APIRouter(tags=["actions"])
    record = history if history is not None else history_hook(store)
    # Dependencies as defaults: annotations here are strings (postponed), which FastAPI
    # resolves in the module's globals, where a local alias is not.
    as_operator = Depends(require("operator"))
    as_viewer = Depends(require("viewer"))

    def audit(
        request: Request, who: Caller, action: str, target: str, result: str, **kw: Any
    ) -> Any:
        return _audit(audit_of, request, who, action, target, result, **kw)

    @r.get("/api/actions/signing")
    def get_signing(who: Caller = as_viewer) -> SigningOut:
        """The key ids central accepts signatures from, so the page can say which key it needs."""
        return SigningOut(key_ids=console.kids, action_ttl_s=console.ttl_s)

    @r.post("/api/actions/prepare", responses={422: {}, 409: {}})
    def prepare(body: PrepareIn, request: Request, who: Caller = as_operator) -> PrepareOut:
        """Validate a config (against the agent's schema) or a command and return the exact
        payload and bytes to sign; nothing is published."""
        target = Target(device=body.target.device, group=body.target.group)
        action = "config.prepare" if body.kind == "config" else "command.prepare"
        try:
            p = console.prepare(body.kind, target, body.body, actor=who.name, token_id=who.token_id)
        except ActionError as exc:
            audit(request, who, action, target.name, f"refused: {exc}")
            raise HTTPException(exc.status, str(exc)) from None
        audit(request, who, action, target.name, "prepared", detail=_detail(p))
        return PrepareOut(
            action_id=p.action_id,
            topic=p.topic,
            payload=p.payload,
            signed_bytes_b64=b64(p.signed),
            summary=p.summary,
            expires_at=p.expires,
        )

    @r.post("/api/actions/submit", responses={403: {}, 404: {}, 409: {}, 410: {}, 503: {}})
    def submit(body: SubmitIn, request: Request, who: Caller = as_operator) -> SubmitOut:
        """Publish a prepared action once its Ed25519 signature verifies against one of
        [console] signing_keys."""
        kid = body.sig.kid
        try:
            p = console.take(body.action_id, token_id=who.token_id)
        except ActionError as exc:
            audit(request, who, "action.submit", body.action_id[:64], f"refused: {exc}", key_id=kid)
            raise HTTPException(exc.status, str(exc)) from None
        try:
            signed = console.verify(p, body.sig.model_dump())
            console.check_current(p)
        except ActionError as exc:
            refused = {"action_id": p.action_id, "topic": p.topic}
            audit(
                request, who, p.action, p.target.name, f"refused: {exc}", key_id=kid, detail=refused
            )
            raise HTTPException(exc.status, str(exc)) from None
        payload = console.encode(signed)
        # Appended before publishing, with the message's ref: the broker audit then knows the
        # message when it crosses the broker and does not record it again under the key id.
        entry = audit(
            request, who, p.action, p.target.name, "published", key_id=kid,
            detail=_detail(p, payload), ref=message_ref(p.topic, payload),
        )  # fmt: skip
        try:
            console.publish(p, payload)
        except ActionError as exc:
            failed = {"of": getattr(entry, "seq", None), "action_id": p.action_id}
            audit(
                request, who, p.action, p.target.name, f"failed: {exc}", key_id=kid, detail=failed
            )
            raise HTTPException(exc.status, str(exc)) from None
        return SubmitOut(status="published", topic=p.topic)

    def _mark(alert: str, request: Request, who: Caller, action: str, mark: AlertMark) -> MarkOut:
        return mark_alert(
            store,
            mark,
            lambda result, detail: audit(request, who, action, alert, result, detail=detail),
        )

    @r.post("/api/alerts/{alert:path}/ack", responses={404: {}})
    def ack(
        alert: AlertId, request: Request, body: AckIn | None = None, who: Caller = as_operator
    ) -> MarkOut:
        """Acknowledge an open alert (who and when are kept; GET /api/alerts shows them)."""
        note = body.note if body else None
        out = _mark(
            alert,
            request,
            who,
            "alert.ack",
            AlertMark(alert, acked_by=who.name, acked_at=clock(), note=note),
        )
        record(alert, "acked", who.name, note=note)
        return out

    @r.post("/api/alerts/{alert:path}/snooze", responses={404: {}})
    def snooze(
        alert: AlertId, body: SnoozeIn, request: Request, who: Caller = as_operator
    ) -> MarkOut:
        """Snooze an open alert for ``minutes`` (at most a week)."""
        until = clock() + body.minutes * 60
        out = _mark(
            alert,
            request,
            who,
            "alert.snooze",
            AlertMark(alert, snoozed_until=until, snoozed_by=who.name, note=body.note),
        )
        record(alert, "snoozed", who.name, until=until, note=body.note)
        return out

    return r


def mark_alert(
    store: Store, mark: AlertMark, audit: Callable[[str, dict[str, Any] | None], None]
) -> MarkOut:
    """Set an operator's mark on an open alert; 404 (audited as refused) if it is not open."""
    alert = mark.alert_id
    if not isinstance(store, AlertMarks):
        raise HTTPException(501, "this store keeps no alert marks")
    if alert not in {alert_id(a) for a in store.alerts(open_only=True)}:
        audit("refused: no open alert with this id", None)
        raise HTTPException(404, f"no open alert {alert}; list them with GET /api/alerts?open=true")
    store.mark_alert(mark)
    m = store.alert_marks()[alert]
    detail: dict[str, Any] = {"note": mark.note} if mark.note else {}
    if mark.snoozed_until is not None:
        detail["snoozed_until"] = mark.snoozed_until
    audit("done", detail or None)
    return MarkOut(
        id=alert,
        acked_by=m.acked_by,
        acked_at=m.acked_at,
        snoozed_until=m.snoozed_until,
        snoozed_by=m.snoozed_by,
        note=m.note,
    )


def _audit(
    audit_of: Callable[[Request], Audit],
    request: Request,
    who: Caller,
    action: str,
    target: str,
    result: str,
    *,
    key_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    ref: str | None = None,
) -> Any:
    extra = {"ref": ref} if ref is not None else {}
    return audit_of(request).append(
        who.name, action, target, key_id=key_id, result=result, detail=detail, via="web", **extra
    )


def _detail(p: Prepared, payload: bytes | None = None) -> dict[str, Any]:
    out = {"action_id": p.action_id, "topic": p.topic, **p.detail}
    if payload is not None:
        out["digest"] = message_ref(p.topic, payload).removeprefix("msg:")
    return out


def audit_of_app(request: Request) -> Audit:
    """The app's audit log (``app.state.audit``, set by create_app)."""
    log: Audit = request.app.state.audit
    return log


def console_router(
    config: CentralConfig,
    store: SqliteStore | PgStore,
    publisher: Publisher | None,
    notify: Callable[[dict[str, Any]], object] | None = None,
) -> APIRouter:
    """The router as ``titik-central run`` serves it: central.api.auth's roles, the app's
    audit log, ``[console]`` and ``[mqtt] topic_prefix`` of central.toml."""
    from central.api.auth import require

    console = Console(
        prefix=config.mqtt.topic_prefix,
        signing_keys=config.console.signing_keys,
        publisher=publisher,
        docs=store,
        members=lambda g: store.devices(group=g, limit=0).total,
        ttl_s=config.console.action_ttl_s,
    )
    return build_router(
        console=console,
        store=store,
        require=require,
        audit_of=audit_of_app,
        history=history_hook(store, notify, config.alerts.console_url),
    )
