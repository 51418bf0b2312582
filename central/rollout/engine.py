"""The state machine of one rollout: publish a wave, soak, gate, then the next wave or a halt.

``step(run, now, view)`` is pure: it returns the new state and what to publish. The caller
publishes (retained, QoS 1) and stores the state before the next step, so a restart of
central resumes where the rollout was: the state says which wave is out and until when it
soaks, and every document is retained on the broker with its version, so publishing one
again is harmless.

States: ``running`` (a wave is out and soaking), ``paused`` (nothing advances, the wave that
is out stays), ``halted`` (a gate failed: the restore was published), ``aborted`` (an operator
stopped it: the restore was published), ``completed`` (the last wave passed).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from central.rollout.gate import FleetView, Verdict, WaveCheck, check_wave
from central.rollout.plan import Limits, Plan


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


def start(run: Run, now: float) -> tuple[Run, list[Publish]]:
    """Publish the first wave."""
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
    new = replace(
        run,
        status=status,
        reason=reason,
        soak_until=None,
        events=(*run.events, f"{now:.0f} {status.value}: {reason}; restore published"),
    )
    return new, [Publish(int(run.restore["version"]), run.restore)]


def step(run: Run, now: float, view: FleetView) -> tuple[Run, list[Publish], WaveCheck | None]:
    """Advance a running rollout: gate the wave that is out, and move on or halt."""
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
    return replace(
        run,
        status=RolloutStatus.RUNNING,
        soak_until=now + run.plan.limits.soak_s,
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
    return float(run.plan.percents[run.wave])


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
        },
        "waves": list(run.waves),
        "restore": run.restore,
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
    )
