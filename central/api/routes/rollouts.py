"""Rollouts over HTTP: prepare and submit a signed plan, list and show, pause, resume, abort.

The console page (web/rollouts.js) and ``titik-ctl rollout`` both drive rollouts through
these endpoints; central's runner (central/rollout/runner.py) does the rest. Reading is
``viewer`` or more, everything else ``operator`` or more; every call that changes something
(or is refused doing so) is appended to the audit log (``rollout.prepare``,
``rollout.start``, ``rollout.pause`` ...; ``via`` is ``ctl`` for titik-ctl
(its Bearer token and User-Agent), ``web`` otherwise).
docs/rollouts.md ("The API") is the contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from agent.protocol.cohort import ROLLOUT_ID
from central.actions.core import b64
from central.api.routes.actions import Audit, Caller, SigIn, audit_of_app
from central.config import CentralConfig
from central.rollout.engine import from_dict, progress
from central.rollout.plan import DEFAULT_WAVES, GROUP_NAME
from central.rollout.service import (
    PreparedRollout,
    RolloutError,
    RolloutService,
    Spec,
    parse_failures,
)
from central.rollout.upgrade import DEFAULT_TZ, UpgradeSpec
from central.rollout.upgrade import DEFAULT_WAVES as UPGRADE_WAVES
from central.store.pg import PgStore
from central.store.rollouts import UPGRADE_ID, RolloutStore, StoredRollout
from central.store.sqlite import SqliteStore

RolloutId = Annotated[
    str,
    Path(pattern=ROLLOUT_ID.pattern, description="The rollout's id (1-64 of A-Z a-z 0-9 . _ -)"),
]


class MarginsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpu_pct: float = Field(default=15.0, ge=0, le=100, description="points of CPU %")
    mem_used_pct: float = Field(default=10.0, ge=0, le=100, description="points of memory %")
    temp_c: float = Field(default=5.0, ge=0, le=100, description="degrees Celsius")


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        pattern=ROLLOUT_ID.pattern, description="The rollout's id; it picks the cohorts"
    )
    group: str = Field(
        pattern=GROUP_NAME.pattern, description="The group to roll the config out to"
    )
    config: dict[str, Any] = Field(
        description="The new config (checked against the agent's schema)"
    )
    waves: list[float] = Field(
        default=list(DEFAULT_WAVES),
        min_length=1,
        max_length=20,
        description="Percentages of the group, each above the one before, the last 100",
    )
    soak_s: float = Field(default=600.0, ge=0, le=7 * 86400, description="Soak of each wave")
    max_failures: float | str = Field(
        default=0, description='Failures tolerated per wave: a count (3) or a share ("5%")'
    )
    margins: MarginsIn = Field(
        default_factory=MarginsIn,
        description="How much worse than the rest of the group a wave's mean may be",
    )


class UpgradePlanIn(BaseModel):
    """An agent upgrade in waves (docs/upgrades.md, "Waves")."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        pattern=UPGRADE_ID.pattern,
        description="The rollout's id (1-48 chars); it picks the cohorts",
    )
    group: str = Field(pattern=GROUP_NAME.pattern, description="The group to upgrade")
    manifest: dict[str, Any] = Field(
        description="The signed release manifest (checked against [console] signing_keys)"
    )
    waves: list[float] = Field(
        default=list(UPGRADE_WAVES),
        min_length=1,
        max_length=20,
        description="Percentages of the group, each above the one before, the last 100",
    )
    steps: int = Field(
        default=4, ge=1, le=24, description="Commands per wave: the cohort rises in this many steps"
    )
    spread_s: float = Field(
        default=3600.0, ge=0, le=86400, description="From a wave's first command to its last"
    )
    window: str | None = Field(
        default=None,
        description="Daily maintenance window HH:MM-HH:MM in tz (commands only inside it); "
        "none: any hour",
    )
    tz: str = Field(default=DEFAULT_TZ, description="The window's time zone (IANA name)")
    health_timeout_s: float = Field(
        default=300.0, ge=10, le=3600, description="The gateways' health gate (args)"
    )
    soak_s: float = Field(
        default=900.0, ge=10, le=7 * 86400,
        description="After a wave's last command, before its gate (at least health_timeout_s)",
    )  # fmt: skip
    max_failures: float | str = Field(
        default="1%",
        description='Failures tolerated per wave: a share of those that answered ("1%") or a count',
    )
    margins: MarginsIn = Field(
        default_factory=MarginsIn,
        description="How much worse than the control (the group outside the wave) the upgraded "
        "gateways' mean may be",
    )


class DocumentOut(BaseModel):
    name: str = Field(description='"wave 1 (1%)" ... or "restore"')
    payload: dict[str, Any] = Field(description="The document as it will be published, unsigned")
    signed_bytes_b64: str = Field(description="base64 of signed_bytes(topic, payload): sign these")


class WaveOut(BaseModel):
    percent: float
    size: int = Field(description="The group's members in the wave (cohorts nest)")
    version: int


class RolloutPrepareOut(BaseModel):
    prepare_id: str = Field(description="Submit the signatures with it within the TTL")
    topic: str
    documents: list[DocumentOut] = Field(description="The waves in order, then the restore")
    waves: list[WaveOut]
    members: int
    base_version: int
    restore_version: int
    summary: str
    expires_at: float


class RolloutSubmitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prepare_id: str = Field(min_length=1, max_length=64)
    sigs: list[SigIn] = Field(
        min_length=1, max_length=480, description="One per document, in the order prepare gave"
    )


class GateOut(BaseModel):
    checked: float
    verdict: str = Field(description="soaking, passed or failed")
    size: int
    applied: int
    failures: int
    failed: list[str] = Field(description="The first failures, as '<device>: <why>'")
    health: list[str] = Field(description="Health figures the wave failed on")
    wave: int | None = Field(default=None, description="An upgrade's: the wave judged (1 = first)")
    answered: int | None = Field(default=None, description="An upgrade's: done + failed")
    pending: int | None = Field(default=None, description="An upgrade's: no final step yet")
    failure_pct: float | None = Field(
        default=None, description="An upgrade's: failed / answered, in %"
    )


class RolloutOut(BaseModel):
    id: str
    kind: Literal["config", "upgrade"] = "config"
    group: str
    status: Literal["running", "paused", "halted", "aborted", "completed"]
    wave: int = Field(description="Index of the wave that is out (0 = the first); -1 before it")
    waves: list[float] = Field(description="The waves' percentages")
    wave_sizes: list[int] | None = Field(
        default=None, description="Each wave's size among the current members (one rollout only)"
    )
    progress: float = Field(description="0-1: the share of the group the wave that is out reaches")
    soak_until: float | None
    reason: str | None = Field(description="Why it halted or was aborted")
    gate: GateOut | None = Field(description="The last gate's figures")
    soak_s: float
    max_failures: float
    max_failures_percent: bool
    base_version: int
    created: float
    created_by: str
    updated: float
    events: list[str] = Field(description="'<unix time> <what happened>', oldest first")
    release: str | None = Field(default=None, description="An upgrade's agent version")
    window: str | None = Field(default=None, description="An upgrade's window, 'HH:MM-HH:MM TZ'")
    commands_sent: int | None = Field(default=None, description="An upgrade's commands so far")
    commands: int | None = Field(default=None, description="An upgrade's commands in all")
    note: str | None = Field(default=None, description="What a running upgrade waits for")


class RolloutList(BaseModel):
    items: list[RolloutOut]


class RequestOut(BaseModel):
    id: str
    requested: Literal["pause", "resume", "abort"]
    status: str = Field(description="The status when asked; the runner acts within seconds")


def rollout_out(r: StoredRollout, sizes: list[int] | None = None) -> RolloutOut:
    run = from_dict(r.state)
    lim = run.plan.limits
    return RolloutOut(
        id=r.id,
        group=r.group,
        status=run.status.value,
        wave=run.wave,
        waves=list(run.plan.percents),
        wave_sizes=sizes,
        progress=progress(run) / 100,
        soak_until=run.soak_until,
        reason=run.reason,
        gate=GateOut.model_validate(r.gate) if r.gate else None,
        soak_s=lim.soak_s,
        max_failures=lim.max_failures,
        max_failures_percent=lim.max_failures_percent,
        base_version=run.plan.base_version,
        created=r.created,
        created_by=r.created_by,
        updated=r.updated,
        events=list(run.events),
        **_upgrade_fields(run.plan.upgrade, run),
    )


def _upgrade_fields(up: UpgradeSpec | None, run: Any) -> dict[str, Any]:
    if up is None:
        return {}
    return {
        "kind": "upgrade",
        "release": up.version,
        "window": f"{up.window} {up.tz}" if up.window else None,
        "commands_sent": run.sent,
        "commands": len(run.waves),
        "note": run.note,
    }


def _prepare_out(p: PreparedRollout) -> RolloutPrepareOut:
    n = len(p.plan.percents)
    names = [f"wave {i + 1} ({pct:g}%)" for i, pct in enumerate(p.plan.percents)] + ["restore"]
    if p.plan.upgrade is not None:
        k = p.plan.upgrade.steps
        names = [
            f"wave {i // k + 1} ({p.plan.percents[i // k]:g}%) command {i % k + 1}/{k}: "
            f"cohort {d['args']['rollout']['percent']:g}%"
            for i, d in enumerate(p.waves)
        ]
    return RolloutPrepareOut(
        prepare_id=p.prepare_id,
        topic=p.topic,
        documents=[
            DocumentOut(name=name, payload=doc, signed_bytes_b64=b64(raw))
            for name, doc, raw in zip(names, p.documents, p.signed(), strict=True)
        ],
        waves=[
            WaveOut(percent=pct, size=size, version=p.plan.wave_version(i))
            for i, (pct, size) in enumerate(zip(p.plan.percents, p.sizes, strict=True))
        ],
        members=p.members,
        base_version=p.plan.base_version,
        restore_version=p.plan.base_version + n + 1,
        summary=p.summary,
        expires_at=p.expires,
    )


def spec_of(body: PlanIn) -> Spec:
    failures, percent = parse_failures(body.max_failures)
    m = body.margins
    return Spec(
        body.id, body.group, body.config, tuple(body.waves), body.soak_s, failures, percent,
        m.cpu_pct, m.mem_used_pct, m.temp_c,
    )  # fmt: skip


def build_router(  # noqa: PLR0915 (one closure per endpoint)
    *,
    service: RolloutService,
    require: Callable[[str], Any],
    audit_of: Callable[[Request], Audit],
) -> APIRouter:
    r = APIRouter(tags=["rollouts"])
    as_operator = Depends(require("operator"))
    as_viewer = Depends(require("viewer"))

    def audit(
        request: Request, who: Caller, action: str, target: str, result: str, **kw: Any
    ) -> None:
        # titik-ctl says who it is; anything else (the page, a script) is the web API.
        ctl = request.headers.get("user-agent", "").startswith("titik-ctl/")
        via = "ctl" if ctl and request.headers.get("authorization") else "web"
        audit_of(request).append(who.name, action, target, result=result, via=via, **kw)

    def refused(
        request: Request, who: Caller, action: str, target: str, exc: RolloutError, **kw: Any
    ) -> HTTPException:
        audit(request, who, action, target, f"refused: {exc}", **{"key_id": None, **kw})
        return HTTPException(exc.status, str(exc))

    @r.post("/api/rollouts/prepare", responses={403: {}, 404: {}, 409: {}, 422: {}})
    def prepare(body: PlanIn, request: Request, who: Caller = as_operator) -> RolloutPrepareOut:
        """Check a plan and its config (against the agent's schema) and return each document
        with the exact bytes to sign; nothing is started."""
        target = f"group/{body.group}"
        try:
            spec = spec_of(body)
            p = service.prepare(spec, actor=who.name, token_id=who.token_id)
        except RolloutError as exc:
            raise refused(request, who, "rollout.prepare", target, exc) from None
        detail = {"rollout": body.id, "waves": body.waves, "keys": sorted(body.config)}
        audit(request, who, "rollout.prepare", target, "prepared", key_id=None, detail=detail)
        return _prepare_out(p)

    @r.post("/api/rollouts/upgrade/prepare", responses={403: {}, 404: {}, 409: {}, 422: {}})
    def prepare_upgrade(
        body: UpgradePlanIn, request: Request, who: Caller = as_operator
    ) -> RolloutPrepareOut:
        """Check an agent upgrade in waves (the manifest's signature against [console]
        signing_keys, the window, the spreading) and return every command with the exact
        bytes to sign; nothing is started. Submit with POST /api/rollouts/submit."""
        target = f"group/{body.group}"
        try:
            failures, percent = parse_failures(body.max_failures)
            m = body.margins
            spec = Spec(
                body.id, body.group, {}, tuple(body.waves), body.soak_s, failures, percent,
                m.cpu_pct, m.mem_used_pct, m.temp_c,
            )  # fmt: skip
            up = UpgradeSpec(
                body.manifest, body.health_timeout_s, body.steps, body.spread_s, body.window,
                body.tz,
            )  # fmt: skip
            p = service.prepare_upgrade(spec, up, actor=who.name, token_id=who.token_id)
        except RolloutError as exc:
            raise refused(request, who, "rollout.prepare", target, exc) from None
        detail = {
            "rollout": body.id,
            "waves": body.waves,
            "upgrade": p.plan.upgrade.version if p.plan.upgrade else None,
        }
        audit(request, who, "rollout.prepare", target, "prepared", key_id=None, detail=detail)
        return _prepare_out(p)

    @r.post("/api/rollouts/submit", status_code=201, responses={403: {}, 404: {}, 409: {}})
    def submit(body: RolloutSubmitIn, request: Request, who: Caller = as_operator) -> RolloutOut:
        """Start a prepared rollout once every document's signature verifies against one of
        [console] signing_keys; central's runner publishes its first wave within seconds."""
        kid = body.sigs[0].kid
        sigs = [s.model_dump() for s in body.sigs]
        try:
            p, kid = service.submit(body.prepare_id, sigs, actor=who.name, token_id=who.token_id)
        except RolloutError as exc:
            raise refused(request, who, "rollout.start", "rollout", exc, key_id=kid) from None
        detail = {
            "rollout": p.plan.id,
            "waves": list(p.plan.percents),
            "base_version": p.plan.base_version,
            "keys": sorted(p.plan.new),
            **({"upgrade": p.plan.upgrade.version} if p.plan.upgrade is not None else {}),
        }
        audit(
            request,
            who,
            "rollout.start",
            f"group/{p.plan.group}",
            "started",
            key_id=kid,
            detail=detail,
        )
        return rollout_out(service.get(p.plan.id), p.sizes)

    @r.get("/api/rollouts")
    def listing(
        who: Caller = as_viewer,
        active: Annotated[bool, Query(description="only running or paused ones")] = False,
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
    ) -> RolloutList:
        """Rollouts, newest first."""
        rows = service.store.listing(active_only=active, limit=limit)
        return RolloutList(items=[rollout_out(x) for x in rows])

    @r.get("/api/rollouts/{rid}", responses={404: {}})
    def get_one(rid: RolloutId, who: Caller = as_viewer) -> RolloutOut:
        """One rollout: status, wave, progress, the gate's figures, why it halted."""
        try:
            got = service.get(rid)
        except RolloutError as exc:
            raise HTTPException(exc.status, str(exc)) from None
        return rollout_out(got, service.wave_sizes(got))

    def ask(rid: str, action: str, request: Request, who: Caller) -> RequestOut:
        try:
            got = service.request(rid, action, who.name)
        except RolloutError as exc:
            raise refused(request, who, f"rollout.{action}", f"rollout/{rid}", exc) from None
        audit(request, who, f"rollout.{action}", f"group/{got.group}", "requested", key_id=None,
              detail={"rollout": rid, "status": got.status})  # fmt: skip
        return RequestOut(id=rid, requested=action, status=got.status)

    @r.post("/api/rollouts/{rid}/pause", status_code=202, responses={404: {}, 409: {}})
    def pause(rid: RolloutId, request: Request, who: Caller = as_operator) -> RequestOut:
        """Pause a running rollout: nothing advances; the wave that is out stays."""
        return ask(rid, "pause", request, who)

    @r.post("/api/rollouts/{rid}/resume", status_code=202, responses={404: {}, 409: {}})
    def resume(rid: RolloutId, request: Request, who: Caller = as_operator) -> RequestOut:
        """Resume a paused rollout; the wave that is out soaks again in full."""
        return ask(rid, "resume", request, who)

    @r.post("/api/rollouts/{rid}/abort", status_code=202, responses={404: {}, 409: {}})
    def abort(rid: RolloutId, request: Request, who: Caller = as_operator) -> RequestOut:
        """Abort a running or paused rollout: central publishes the restore (the old config)."""
        return ask(rid, "abort", request, who)

    return r


def rollouts_router(
    config: CentralConfig, store: SqliteStore | PgStore, rollouts: RolloutStore | None = None
) -> APIRouter:
    """The router as ``titik-central run`` serves it; ``rollouts`` (where the runner looks:
    central.cli.open_rollouts) defaults to the tables in the SQLite store's own file."""
    from central.api.auth import require

    service = RolloutService(
        prefix=config.mqtt.topic_prefix,
        signing_keys=config.console.signing_keys,
        docs=store,
        members=lambda g: [d.device for d in store.devices(group=g, limit=1_000_000).items],
        store=rollouts if rollouts is not None else _own_rollouts(store),
        ttl_s=config.console.action_ttl_s,
    )
    return build_router(service=service, require=require, audit_of=audit_of_app)


def _own_rollouts(store: SqliteStore | PgStore) -> RolloutStore:
    if not isinstance(store, SqliteStore):
        raise TypeError(
            "rollouts_router: pass rollouts= (central.cli.open_rollouts) for PostgreSQL"
        )
    return RolloutStore(store.path)


__all__ = ["build_router", "rollouts_router"]
