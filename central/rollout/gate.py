"""The health gate of a wave: its gateways online, the wave applied, and no worse than the rest.

A wave fails when more of its gateways than the plan allows are offline, rejected or rolled
back the wave's document, or have not applied it by the end of the soak; or when the wave's
mean CPU, memory or temperature is worse than the rest of the group's by more than the plan's
margins. Gateways outside the wave that reject or roll back its document (an agent too old
to know the ``rollout`` selector, say) count as failures too: the document broke them.
A rejection or a rollback fails the wave at once; being offline or not yet applied only at
the end of the soak (a gateway on a flaky backhaul gets the whole soak to report).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Protocol

from agent.protocol import ConfigReported
from agent.protocol.cohort import cohort
from central.rollout.plan import Limits, Plan
from central.rollout.upgrade import StepRow, UpgradeCheck, exceeds, outcome
from central.store.base import DeviceState

FAILED_STATES = ("rejected", "rolled_back")
FIGURES = ("cpu_pct", "mem_used_pct", "temp_c")


class FleetView(Protocol):
    """What the gate reads of the fleet (central's FleetState provides it)."""

    def members(self, group: str) -> list[str]: ...
    def state(self, device: str) -> DeviceState | None: ...
    def report(self, device: str) -> ConfigReported | None: ...


class Verdict(enum.StrEnum):
    SOAKING = "soaking"
    PASSED = "passed"
    FAILED = "failed"


@dataclass(slots=True)
class WaveCheck:
    verdict: Verdict
    size: int = 0  # gateways in the wave
    applied: int = 0
    failures: list[str] = field(default_factory=list)  # "<device>: <why>"
    health: list[str] = field(default_factory=list)  # "<figure>: wave X vs rest Y"


def _acted(report: ConfigReported | None, source: str, version: int) -> str | None:
    """The state of ``report`` about exactly ``version`` of ``source``, or None."""
    if report is None or report.source != source or report.version != version:
        if report is not None and (report.versions or {}).get(source, -1) >= version:
            return "applied" if report.state == "applied" else None
        return None
    return report.state


def _means(states: Iterable[DeviceState | None]) -> dict[str, float]:
    out: dict[str, float] = {}
    live = [s for s in states if s is not None and s.online]
    for name in FIGURES:
        values = [v for s in live if (v := getattr(s, name)) is not None]
        if values:
            out[name] = fmean(values)
    return out


def compare_health(
    limits: Limits,
    wave: Sequence[DeviceState | None],
    control: Sequence[DeviceState | None],
    *,
    names: tuple[str, str] = ("wave", "rest"),
) -> list[str]:
    """The figures on which the wave's online gateways are worse, on average, than the
    control's (the rest of the group) by more than the plan's margins: config and upgrade
    rollouts judge the same figures."""
    wave_means, rest_means = _means(wave), _means(control)
    margins = {
        "cpu_pct": limits.cpu_pct,
        "mem_used_pct": limits.mem_used_pct,
        "temp_c": limits.temp_c,
    }
    out = []
    for name, margin in margins.items():
        if (
            name in wave_means
            and name in rest_means
            and wave_means[name] > rest_means[name] + margin
        ):
            out.append(
                f"{name}: {names[0]} {wave_means[name]:.1f} vs {names[1]} {rest_means[name]:.1f} "
                f"(margin {margin:g})"
            )
    return out


def check_wave(plan: Plan, index: int, view: FleetView, *, soak_over: bool) -> WaveCheck:
    source, version = f"group/{plan.group}", plan.wave_version(index)
    members = view.members(plan.group)
    wave: Sequence[str] = cohort(plan.id, members, plan.percents[index])
    inside = set(wave)
    check = WaveCheck(Verdict.SOAKING, size=len(wave))
    late: list[str] = []
    for device in members:
        state = view.state(device)
        acted = _acted(view.report(device), source, version)
        if acted in FAILED_STATES:
            where = "" if device in inside else " (outside the wave)"
            check.failures.append(f"{device}: {acted.replace('_', ' ')}{where}")
        elif device not in inside:
            continue
        elif acted == "applied":
            check.applied += 1
        elif state is None or not state.online:
            late.append(f"{device}: offline")
        else:
            late.append(f"{device}: has not applied version {version}")
    allowed = plan.limits.allowed(len(wave))
    if len(check.failures) > allowed:
        check.verdict = Verdict.FAILED
        return check
    if not soak_over:
        return check
    check.failures += late
    check.health = compare_health(
        plan.limits,
        [view.state(d) for d in wave],
        [view.state(d) for d in members if d not in inside],
    )
    failed = len(check.failures) > allowed or bool(check.health)
    check.verdict = Verdict.FAILED if failed else Verdict.PASSED
    return check


def check_upgrade_wave(
    plan: Plan,
    percent: float,
    view: FleetView,
    steps: Mapping[str, StepRow],
    *,
    soak_over: bool,
) -> UpgradeCheck:
    """The gate of an upgrade wave whose cohort is ``percent`` % of the group now (the last
    command sent): central/rollout/upgrade.py says what passes and what fails."""
    members = view.members(plan.group)
    wave = cohort(plan.id, members, percent)
    inside = set(wave)
    lim = plan.limits
    check = UpgradeCheck("soaking", size=len(wave), failures=[], health=[])
    failures: list[str] = []
    done: list[str] = []
    for device in wave:
        row = steps.get(device)
        got = outcome(row)
        if got == "done":
            done.append(device)
        elif got == "failed" and row is not None:
            why = row.error or row.step.replace("_", " ")
            failures.append(f"{device}: {row.step.replace('_', ' ')}: {why}"[:300])
        else:
            check.pending += 1
    check.applied, check.failures = len(done), failures
    check.answered = len(done) + len(failures)
    pct = lim.max_failures_percent
    if exceeds(len(failures), len(wave), lim.max_failures, pct):
        check.verdict = "failed"  # whatever the others do, the rate stays above the threshold
        return check
    if not soak_over:
        return check
    if exceeds(len(failures), check.answered, lim.max_failures, pct):
        check.verdict = "failed"
        return check
    online = [d for d in wave if (st := view.state(d)) is not None and st.online]
    if online and check.answered == 0:
        check.failures = ["(wave): none of its gateways answered the upgrade command"]
        check.verdict = "failed"
        return check
    check.health = compare_health(
        lim,
        [view.state(d) for d in done],
        [view.state(d) for d in members if d not in inside],
        names=("upgraded", "control"),
    )
    check.verdict = "failed" if check.health else "passed"
    return check
