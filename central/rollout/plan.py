"""A rollout plan: the documents of every wave, signed ahead by the operator, and its rules.

Central never holds a signing key (docs/architecture.md). So the operator's tool (titik-ctl,
or the console page with the key loaded in memory) builds the plan's documents with
:func:`documents`, signs each one, and hands central the signed plan; central checks that the
documents are the ones the plan says (:func:`check_documents`) and that every signature is by a
trusted key, then publishes them one wave at a time. The documents of a group ``G``:

- wave ``i`` of ``n`` (``i < n``): ``{"version": base + i, "config": NEW, "rollout": {"id": R,
  "percent": p_i, "others": OLD}}``: the cohort of ``p_i`` % takes NEW (agent.protocol.cohort);
- the last wave: ``{"version": base + n, "config": NEW}``: every member, no selector;
- the restore: ``{"version": base + n + 1, "config": OLD}``: published on a halt or an abort,
  newer than any wave, so it wins whichever wave was out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.protocol.cohort import ROLLOUT_ID
from agent.protocol.signing import SignatureError, Verifier
from central.rollout.upgrade import UpgradePlanError, UpgradeSpec, check_spec, commands

#: Default waves: a 1 % canary, then 5 %, 25 % and everyone.
DEFAULT_WAVES = (1.0, 5.0, 25.0, 100.0)
GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PlanError(ValueError):
    """A plan that cannot run; the message names the field and says why."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The health gate of every wave."""

    soak_s: float = 600.0
    #: Failures tolerated per wave: a count, or a share of the wave when ``percent``.
    max_failures: float = 0.0
    max_failures_percent: bool = False
    #: How much worse than the rest of the group a wave's mean may be before it fails.
    cpu_pct: float = 15.0
    mem_used_pct: float = 10.0
    temp_c: float = 5.0

    def allowed(self, wave_size: int) -> int:
        if self.max_failures_percent:
            return math.floor(wave_size * self.max_failures / 100)
        return int(self.max_failures)


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    group: str
    percents: tuple[float, ...]
    base_version: int
    new: Mapping[str, Any]
    old: Mapping[str, Any]
    limits: Limits = field(default_factory=Limits)
    #: An agent upgrade (central/rollout/upgrade.py) instead of a config: its waves are
    #: ``upgrade`` commands on the group's command topic, and it has no restore.
    upgrade: UpgradeSpec | None = None

    @property
    def kind(self) -> str:
        return "config" if self.upgrade is None else "upgrade"

    @property
    def restore_version(self) -> int:
        return self.base_version + len(self.percents) + 1

    def wave_version(self, index: int) -> int:
        return self.base_version + index + 1


def check_plan(plan: Plan) -> None:
    """PlanError naming the field, or None."""
    if not ROLLOUT_ID.match(plan.id):
        raise PlanError("id: must be 1-64 letters, digits, '.', '_' or '-'")
    if not GROUP_NAME.match(plan.group):
        raise PlanError("group: must be 1-64 letters, digits, '.', '_' or '-'")
    if not plan.percents:
        raise PlanError("waves: at least one")
    last = 0.0
    for p in plan.percents:
        if not (isinstance(p, int | float) and math.isfinite(p) and last < p <= 100):
            raise PlanError("waves: each a percentage above the one before, up to 100")
        last = p
    if plan.percents[-1] != 100:
        raise PlanError("waves: the last wave must be 100 (every member)")
    if plan.base_version < 0:
        raise PlanError("base_version: must be 0 or more")
    lim = plan.limits
    _check_upgrade(plan)
    if not (math.isfinite(lim.soak_s) and 0 <= lim.soak_s <= 7 * 86400):
        raise PlanError("soak_s: from 0 to 604800 seconds")
    if not (math.isfinite(lim.max_failures) and lim.max_failures >= 0):
        raise PlanError("max_failures: 0 or more")
    if lim.max_failures_percent and lim.max_failures > 100:
        raise PlanError("max_failures: at most 100%")
    for name in ("cpu_pct", "mem_used_pct", "temp_c"):
        if not (math.isfinite(getattr(lim, name)) and getattr(lim, name) >= 0):
            raise PlanError(f"{name}: 0 or more")


def _check_upgrade(plan: Plan) -> None:
    if plan.upgrade is not None:
        try:
            check_spec(plan.id, plan.upgrade, plan.limits.soak_s)
        except UpgradePlanError as exc:
            raise PlanError(str(exc)) from None


def documents(plan: Plan) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The unsigned documents of every wave, and of the restore, in publishing order. An
    upgrade's are its commands (``steps`` per wave), and its restore is empty (none exists)."""
    check_plan(plan)
    if plan.upgrade is not None:
        return commands(plan.id, plan.percents, plan.upgrade), {}
    waves: list[dict[str, Any]] = []
    for i, p in enumerate(plan.percents):
        doc: dict[str, Any] = {"version": plan.wave_version(i), "config": dict(plan.new)}
        if i < len(plan.percents) - 1:
            doc["rollout"] = {"id": plan.id, "percent": p, "others": dict(plan.old)}
        waves.append(doc)
    return waves, {"version": plan.restore_version, "config": dict(plan.old)}


def check_documents(
    plan: Plan, waves: Sequence[Mapping[str, Any]], restore: Mapping[str, Any]
) -> None:
    """The signed documents are exactly the plan's (their ``sig`` aside): PlanError if not."""
    want_waves, want_restore = documents(plan)
    if len(waves) != len(want_waves):
        raise PlanError(f"waves: {len(want_waves)} documents expected, {len(waves)} given")
    for i, (got, want) in enumerate(zip(waves, want_waves, strict=True)):
        if {k: v for k, v in got.items() if k != "sig"} != want:
            raise PlanError(f"waves[{i}]: is not the document of wave {i + 1} of this plan")
        if "sig" not in got:
            raise PlanError(f"waves[{i}].sig: missing (every document is signed)")
    if plan.upgrade is not None:
        if restore:
            raise PlanError("restore: an upgrade has none (no downgrade is published)")
        return
    if {k: v for k, v in restore.items() if k != "sig"} != want_restore:
        raise PlanError("restore: is not the restore document of this plan")
    if "sig" not in restore:
        raise PlanError("restore.sig: missing (every document is signed)")


def check_signatures(
    plan: Plan,
    waves: Sequence[Mapping[str, Any]],
    restore: Mapping[str, Any],
    verifier: Verifier,
    topic: str,
) -> str:
    """Every document signed, for the group's topic, by one trusted key: its id; PlanError
    naming the document otherwise. (Central publishes only what an operator signed.)"""
    kids = set()
    named = [*((f"waves[{i}]", d) for i, d in enumerate(waves)), ("restore", restore)]
    for name, doc in named if plan.upgrade is None else named[:-1]:
        try:
            kids.add(verifier.verify(topic, doc))
        except SignatureError as exc:
            raise PlanError(f"{name}.sig: {str(exc).removeprefix('signature: ')}") from None
    if len(kids) != 1:
        raise PlanError("sig: every document of a plan is signed by the same key")
    return kids.pop()
