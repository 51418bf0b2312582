"""The state machine of one rollout: publish a wave, soak, gate, then the next wave or a halt.

``step(run, now, view)`` is pure: it returns the new state and what to publish. The caller
publishes (retained, QoS 1) and stores the state before the next step, so a restart of
central resumes where the rollout was: the state says which wave is out and until when it
soaks, and every document is retained on the broker with its version, so publishing one
again is harmless.

States: ``running`` (a wave is out and soaking), ``paused`` (nothing advances, the wave that
is out stays), ``halted`` (a gate failed: the restore was published), ``aborted`` (an operator
stopped it: the restore was published), ``completed`` (the last wave passed).

An upgrade rollout (``plan.upgrade``, central/rollout/upgrade.py) goes through the same
states with :func:`upgrade_step`: each wave is several commands spread in time and sent only
inside the maintenance window (``sent`` counts them, ``next_at`` says when the next one is
due), its gate reads the gateways' upgrade steps, and a halt or an abort publishes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from central.rollout.gate import FleetView, Verdict, WaveCheck, check_upgrade_wave, check_wave
from central.rollout.plan import Limits, Plan
from central.rollout.upgrade import StepRow, UpgradeCheck, UpgradeSpec, step_percents


class RolloutStatus(enum.StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    HALTED = "halted"
    ABORTED = "aborted"
    COMPLETED = "completed"

    @property
    def final(self) -> bool:
        return self in (RolloutStatus.HALTED, RolloutStatus.ABORTED, RolloutStatus.COMPLETED)


@dataclass(frozen=True, slots=True)
class Publish:
    """A retained document to publish on the group's desired topic."""

    version: int
    payload: Mapping[str, Any]
    #: An upgrade's command (the group's ``cmd`` topic, not retained), not a document.
    command: bool = False


@dataclass(frozen=True, slots=True)
class Run:
    """What central stores of a rollout between steps."""

    plan: Plan
    waves: tuple[Mapping[str, Any], ...]  # the signed documents
    restore: Mapping[str, Any]
    status: RolloutStatus = RolloutStatus.RUNNING
    wave: int = -1  # the index of the wave that is out; -1 before the first
    soak_until: float | None = None
    reason: str | None = None
    events: tuple[str, ...] = field(default_factory=tuple)
    # An upgrade's: commands published so far, when the next is due, what it waits for.
    sent: int = 0
    next_at: float | None = None
    note: str | None = None


def start(run: Run, now: float) -> tuple[Run, list[Publish]]:
    """Publish the first wave (an upgrade's first command, once inside its window)."""
    if run.plan.upgrade is not None:
        new, pubs, _ = upgrade_step(run, now, None, {})
        return new, pubs
    return _publish_wave(run, 0, now)


def _publish_wave(run: Run, index: int, now: float) -> tuple[Run, list[Publish]]:
    p = run.plan
    doc = run.waves[index]
    new = replace(
        run,
        status=RolloutStatus.RUNNING,
        wave=index,
        soak_until=now + p.limits.soak_s,
        events=(
            *run.events,
            f"{now:.0f} wave {index + 1}/{len(p.percents)} ({p.percents[index]:g}%) published",
        ),
    )
    return new, [Publish(int(doc["version"]), doc)]


def _restore(run: Run, status: RolloutStatus, reason: str, now: float) -> tuple[Run, list[Publish]]:
    if run.plan.upgrade is not None:
        return replace(
            run,
            status=status,
            reason=reason,
            soak_until=None,
            next_at=None,
            note=None,
            events=(
                *run.events,
                f"{now:.0f} {status.value}: {reason}; no further command is sent (the gateways "
                "in their health gate finish by themselves)",
            ),
        ), []
    new = replace(
        run,
        status=status,
        reason=reason,
        soak_until=None,
        events=(*run.events, f"{now:.0f} {status.value}: {reason}; restore published"),
    )
    return new, [Publish(int(run.restore["version"]), run.restore)]


def step(  # noqa: PLR0911 (one return per outcome)
    run: Run, now: float, view: FleetView, steps: Mapping[str, StepRow] | None = None
) -> tuple[Run, list[Publish], WaveCheck | UpgradeCheck | None]:
    """Advance a running rollout: gate the wave that is out, and move on or halt. ``steps``:
    an upgrade's latest step per gateway (central/store/rollouts.py ``steps``)."""
    if run.plan.upgrade is not None:
        if run.status is not RolloutStatus.RUNNING:
            return run, [], None
        return upgrade_step(run, now, view, steps or {})
    if run.status is not RolloutStatus.RUNNING or run.wave < 0:
        return run, [], None
    soak_over = run.soak_until is not None and now >= run.soak_until
    check = check_wave(run.plan, run.wave, view, soak_over=soak_over)
    if check.verdict is Verdict.SOAKING:
        return run, [], check
    if check.verdict is Verdict.FAILED:
        shown = (check.failures + check.health)[:5]
        more = len(check.failures) + len(check.health) - len(shown)
        why = (
            f"wave {run.wave + 1} failed its gate: "
            + "; ".join(shown)
            + (f"; and {more} more" if more else "")
        )
        new, pubs = _restore(run, RolloutStatus.HALTED, why, now)
        return new, pubs, check
    if run.wave == len(run.plan.percents) - 1:
        done = replace(
            run,
            status=RolloutStatus.COMPLETED,
            soak_until=None,
            events=(*run.events, f"{now:.0f} completed: wave {run.wave + 1} passed"),
        )
        return done, [], check
    new, pubs = _publish_wave(run, run.wave + 1, now)
    return new, pubs, check


def pause(run: Run, now: float, who: str) -> Run:
    if run.status is not RolloutStatus.RUNNING:
        raise ValueError(f"only a running rollout can be paused; this one is {run.status}")
    return replace(
        run, status=RolloutStatus.PAUSED, events=(*run.events, f"{now:.0f} paused by {who}")
    )


def resume(run: Run, now: float, who: str) -> Run:
    """Back to running; the wave that is out soaks again in full (it was not watched)."""
    if run.status is not RolloutStatus.PAUSED:
        raise ValueError(f"only a paused rollout can be resumed; this one is {run.status}")
    soak_until: float | None = now + run.plan.limits.soak_s
    if run.plan.upgrade is not None and run.sent < (run.wave + 1) * run.plan.upgrade.steps:
        soak_until = None  # the wave's commands go on first; its soak starts after the last
    return replace(
        run,
        status=RolloutStatus.RUNNING,
        soak_until=soak_until,
        next_at=now if run.plan.upgrade is not None else run.next_at,
        events=(*run.events, f"{now:.0f} resumed by {who}"),
    )


def abort(run: Run, now: float, who: str) -> tuple[Run, list[Publish]]:
    if run.status.final:
        raise ValueError(f"this rollout is already {run.status}")
    return _restore(run, RolloutStatus.ABORTED, f"aborted by {who}", now)


def progress(run: Run) -> float:
    """0-100 for a progress bar: the share of the group the wave that is out reaches."""
    if run.status is RolloutStatus.COMPLETED:
        return 100.0
    if run.wave < 0:
        return 0.0
    if run.plan.upgrade is not None:
        if run.sent <= 0:
            return 0.0
        return float(step_percents(run.plan.percents, run.plan.upgrade.steps)[run.sent - 1])
    return float(run.plan.percents[run.wave])


# -- upgrades ------------------------------------------------------------------------------


def _when(t: float, spec: UpgradeSpec) -> str:
    w = spec.window_of()
    tz = w.tz if w is not None else "UTC"
    return datetime.fromtimestamp(t, ZoneInfo(tz)).strftime(f"%Y-%m-%d %H:%M {tz}")


def upgrade_step(  # noqa: PLR0911 (one return per outcome)
    run: Run, now: float, view: FleetView | None, steps: Mapping[str, StepRow]
) -> tuple[Run, list[Publish], UpgradeCheck | None]:
    """One step of a running upgrade rollout: judge the wave that is out, then send the next
    command if it is due, inside the window, and the wave before it has passed."""
    p = run.plan
    spec = p.upgrade
    assert spec is not None  # noqa: S101 - the caller checked
    pcts = step_percents(p.percents, spec.steps)
    total = len(pcts)
    check: UpgradeCheck | None = None
    if run.wave >= 0 and run.sent > 0 and view is not None:
        sending_done = run.sent >= (run.wave + 1) * spec.steps
        soak_over = sending_done and run.soak_until is not None and now >= run.soak_until
        check = check_upgrade_wave(p, pcts[run.sent - 1], view, steps, soak_over=soak_over)
        check.wave = run.wave
        if check.verdict == "failed":
            fails = check.failures or []
            shown = (fails + (check.health or []))[:5]
            more = len(fails) + len(check.health or []) - len(shown)
            rate = f"{check.rate:g}%" if check.rate is not None else "-"
            why = (
                f"wave {run.wave + 1} failed its gate ({len(fails)} failed of {check.answered} "
                f"that answered, {rate}; {check.size} in the wave): "
                + "; ".join(shown)
                + (f"; and {more} more" if more else "")
            )
            new, pubs = _restore(run, RolloutStatus.HALTED, why, now)
            return new, pubs, check
        if not sending_done and check.verdict == "soaking":
            pass  # the wave's next command may go
        elif check.verdict == "soaking":
            return run, [], check
        elif run.sent >= total:
            done = replace(
                run,
                status=RolloutStatus.COMPLETED,
                soak_until=None,
                next_at=None,
                note=None,
                events=(*run.events, f"{now:.0f} completed: wave {run.wave + 1} passed"),
            )
            return done, [], check
    if run.sent >= total:
        return run, [], check
    if run.next_at is not None and now < run.next_at:
        return run, [], check
    if now >= spec.expires_at - spec.health_timeout_s:
        new, pubs = _restore(
            run,
            RolloutStatus.HALTED,
            "its signed commands expire before another one could finish; start a new "
            "upgrade rollout for the rest",
            now,
        )
        return new, pubs, check
    window = spec.window_of()
    if window is not None and not window.inside(now):
        opens = window.next_open(now)
        note = f"waiting for the maintenance window {window} (opens {_when(opens, spec)})"
        if note != run.note:
            run = replace(run, note=note, events=(*run.events, f"{now:.0f} {note}"))
        return replace(run, next_at=opens), [], check
    index = run.sent
    wave, k = divmod(index, spec.steps)
    cmd = run.waves[index]
    last_of_wave = k == spec.steps - 1
    label = f"wave {wave + 1}/{len(p.percents)} ({p.percents[wave]:g}%)"
    what = f"command {k + 1}/{spec.steps} of {label} sent: cohort {pcts[index]:g}%"
    new = replace(
        run,
        status=RolloutStatus.RUNNING,
        wave=wave,
        sent=index + 1,
        # the next wave's first command goes once this one's gate passes
        next_at=None if last_of_wave else now + spec.interval_s,
        soak_until=now + p.limits.soak_s if last_of_wave else None,
        note=None,
        events=(*run.events, f"{now:.0f} {what}"),
    )
    return new, [Publish(index, cmd, command=True)], check


# -- stored form ---------------------------------------------------------------------------


def to_dict(run: Run) -> dict[str, Any]:
    p, lim = run.plan, run.plan.limits
    return {
        "plan": {
            "id": p.id,
            "group": p.group,
            "percents": list(p.percents),
            "base_version": p.base_version,
            "new": p.new,
            "old": p.old,
            "limits": {
                "soak_s": lim.soak_s,
                "max_failures": lim.max_failures,
                "max_failures_percent": lim.max_failures_percent,
                "cpu_pct": lim.cpu_pct,
                "mem_used_pct": lim.mem_used_pct,
                "temp_c": lim.temp_c,
            },
            **({"upgrade": p.upgrade.to_dict()} if p.upgrade is not None else {}),
        },
        "waves": list(run.waves),
        "restore": run.restore,
        "sent": run.sent,
        "next_at": run.next_at,
        "note": run.note,
        "status": run.status.value,
        "wave": run.wave,
        "soak_until": run.soak_until,
        "reason": run.reason,
        "events": list(run.events),
    }


def from_dict(data: Mapping[str, Any]) -> Run:
    p = data["plan"]
    plan = Plan(
        p["id"],
        p["group"],
        tuple(p["percents"]),
        p["base_version"],
        p["new"],
        p["old"],
        Limits(**p["limits"]),
        UpgradeSpec.from_dict(p["upgrade"]) if p.get("upgrade") else None,
    )
    return Run(
        plan,
        tuple(data["waves"]),
        data["restore"],
        RolloutStatus(data["status"]),
        data["wave"],
        data["soak_until"],
        data["reason"],
        tuple(data["events"]),
        data.get("sent", 0),
        data.get("next_at"),
        data.get("note"),
    )
