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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from statistics import fmean
from typing import Protocol

from agent.protocol import ConfigReported
from agent.protocol.cohort import cohort
from central.rollout.plan import Plan
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
    wave_means = _means(view.state(d) for d in wave)
    rest_means = _means(view.state(d) for d in members if d not in inside)
    margins = {
        "cpu_pct": plan.limits.cpu_pct,
        "mem_used_pct": plan.limits.mem_used_pct,
        "temp_c": plan.limits.temp_c,
    }
    for name, margin in margins.items():
        if (
            name in wave_means
            and name in rest_means
            and wave_means[name] > rest_means[name] + margin
        ):
            check.health.append(
                f"{name}: wave {wave_means[name]:.1f} vs rest {rest_means[name]:.1f} "
                f"(margin {margin:g})"
            )
    failed = len(check.failures) > allowed or bool(check.health)
    check.verdict = Verdict.FAILED if failed else Verdict.PASSED
    return check
