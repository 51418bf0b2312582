"""Agent upgrades in waves (issue 22 point 4): the upgrade side of a rollout.

An upgrade rollout is a rollout (central/rollout/engine.py, the same store, runner, requests
and API) whose plan carries an :class:`UpgradeSpec`: its waves send the ``upgrade`` command
(docs/upgrades.md) to the group's command topic instead of a desired config, and its gate
reads the gateways' upgrade step reports instead of their config reports.

- **Cohorts and spreading.** Wave ``i`` raises the cohort from the previous wave's percentage
  to its own in ``steps`` commands ``spread_s / (steps - 1)`` seconds apart, each
  ``{"rollout": {"id": R, "percent": p}}``: so a wave's gateways do not all start at once
  (each fetches the package and restarts its agent). Cohorts nest (agent/protocol/cohort.py):
  a gateway upgraded by an earlier command answers ``... is running already``, which counts as
  done; one in its health gate answers ``still in its health gate``, which changes nothing.
- **Maintenance window.** A command is published only inside the window (local time of
  ``tz``, Asia/Jakarta by default; it may cross midnight); the rest wait for the next one.
  The soak and the gate run at any hour (the gateways finish what they started by themselves).
- **Gate.** Per gateway of the wave, its latest step for this rollout (kept by the broker
  audit, :func:`merge`): done (``confirmed``, or already running the release), failed
  (``rolled_back``, ``failed``, a failed pre-flight or any other refusal) or pending. The wave
  fails at once when its failures pass the threshold even if every other gateway succeeds,
  and at the end of the soak when the failure rate among those that answered passes it, or
  when the upgraded gateways' health (CPU, memory, temperature means: the figures of the
  config gate, central/rollout/gate.py) is worse than the **control** (the group's gateways
  outside the wave's cohort) by more than the plan's margins.
- **Halt.** Nothing is published: no downgrade exists, and none is needed (a gateway that
  fails its health gate rolls itself back). The later waves are simply never sent.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.protocol.commands import MAX_LIFETIME_S
from agent.protocol.upgrade import HEALTH_TIMEOUT_MAX_S, HEALTH_TIMEOUT_MIN_S
from central.store.rollouts import UPGRADE_ID, StepRow, command_id, merge, outcome, rollout_of

DEFAULT_TZ = "Asia/Jakarta"
#: Default waves of an upgrade: a 1 % canary, then 10 %, 50 % and everyone.
DEFAULT_WAVES = (1.0, 10.0, 50.0, 100.0)
WINDOW = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")
MAX_STEPS = 24


class UpgradePlanError(ValueError):
    """An upgrade plan that cannot run; the message names the field."""


@dataclass(frozen=True, slots=True)
class UpgradeWindow:
    """A daily maintenance window in a time zone: ``start`` and ``end`` in minutes after
    local midnight; ``end <= start`` crosses midnight (22:00-04:00)."""

    start: int
    end: int
    tz: str = DEFAULT_TZ

    @classmethod
    def parse(cls, text: str, tz: str = DEFAULT_TZ) -> UpgradeWindow:
        m = WINDOW.match(text.strip())
        if m is None:
            raise UpgradePlanError(f"window: {text!r} is not HH:MM-HH:MM (e.g. 01:00-05:00)")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise UpgradePlanError(
                f"tz: {tz!r} is not a time zone name (e.g. Asia/Jakarta, Asia/Makassar, UTC)"
            ) from None
        a, b = int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])
        if a == b:
            raise UpgradePlanError("window: its start and end are the same minute")
        return cls(a, b, tz)

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )

    def _local(self, now: float) -> datetime:
        return datetime.fromtimestamp(now, ZoneInfo(self.tz))

    def inside(self, now: float) -> bool:
        t = self._local(now)
        minute = t.hour * 60 + t.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def next_open(self, now: float) -> float:
        """``now`` inside the window, else when it next opens (UNIX time)."""
        if self.inside(now):
            return now
        t = self._local(now)
        opens = t.replace(hour=self.start // 60, minute=self.start % 60, second=0, microsecond=0)
        if opens <= t:
            opens += timedelta(days=1)
        return opens.timestamp()

    def length_s(self) -> float:
        return float(((self.end - self.start) % 1440) * 60)


@dataclass(frozen=True, slots=True)
class UpgradeSpec:
    """What an upgrade rollout sends: the signed manifest, the health gate, spreading, window."""

    manifest: Mapping[str, Any]
    health_timeout_s: float = 300.0
    steps: int = 4
    spread_s: float = 3600.0
    window: str | None = None
    tz: str = DEFAULT_TZ
    expires_at: float = 0.0  # every command's expires_at (signed, so fixed at prepare)

    @property
    def version(self) -> str:
        return str(self.manifest.get("version", "?"))

    def window_of(self) -> UpgradeWindow | None:
        return UpgradeWindow.parse(self.window, self.tz) if self.window else None

    @property
    def interval_s(self) -> float:
        return self.spread_s / (self.steps - 1) if self.steps > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "manifest": dict(self.manifest),
            "health_timeout_s": self.health_timeout_s,
            "steps": self.steps,
            "spread_s": self.spread_s,
            "window": self.window,
            "tz": self.tz,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> UpgradeSpec:
        return cls(
            d["manifest"], d["health_timeout_s"], d["steps"], d["spread_s"], d.get("window"),
            d.get("tz", DEFAULT_TZ), d["expires_at"],
        )  # fmt: skip


def check_spec(rid: str, spec: UpgradeSpec, soak_s: float) -> None:
    """UpgradePlanError naming the field, or None."""
    if not UPGRADE_ID.match(rid):
        raise UpgradePlanError("id: an upgrade's id is 1-48 letters, digits, '.', '_' or '-'")
    if not isinstance(spec.manifest, Mapping) or not isinstance(spec.manifest.get("sig"), Mapping):
        raise UpgradePlanError("manifest: a signed release manifest (docs/upgrades.md)")
    h = spec.health_timeout_s
    if not (math.isfinite(h) and HEALTH_TIMEOUT_MIN_S <= h <= HEALTH_TIMEOUT_MAX_S):
        raise UpgradePlanError(
            f"health_timeout_s: from {HEALTH_TIMEOUT_MIN_S:g} to {HEALTH_TIMEOUT_MAX_S:g} seconds"
        )
    if not (isinstance(spec.steps, int) and 1 <= spec.steps <= MAX_STEPS):
        raise UpgradePlanError(f"steps: commands per wave, 1 to {MAX_STEPS}")
    if not (math.isfinite(spec.spread_s) and 0 <= spec.spread_s <= 86400):
        raise UpgradePlanError("spread_s: from 0 to 86400 seconds")
    if soak_s < h:
        raise UpgradePlanError(
            f"soak_s: at least the health gate ({h:g} s): a wave is judged once its "
            "gateways have confirmed or rolled back"
        )
    window = spec.window_of()
    if window is not None and spec.spread_s > window.length_s():
        raise UpgradePlanError(
            f"spread_s: {spec.spread_s:g} s is longer than the window {window} "
            f"({window.length_s():g} s): a wave would straddle two nights"
        )


def step_percents(percents: Sequence[float], steps: int) -> list[float]:
    """The cohort percentage of every command, wave by wave: wave ``i`` goes from the previous
    wave's percentage to its own in ``steps`` equal rises (hundredths of a percent, as the
    cohort rule counts them)."""
    out: list[float] = []
    last = 0.0
    for p in percents:
        for k in range(1, steps + 1):
            out.append(round(last + (p - last) * k / steps, 2) if k < steps else p)
        last = p
    return out


def commands(rid: str, percents: Sequence[float], spec: UpgradeSpec) -> list[dict[str, Any]]:
    """The unsigned commands of every wave, in publishing order."""
    out = []
    pcts = step_percents(percents, spec.steps)
    for n, pct in enumerate(pcts):
        out.append(
            {
                "id": command_id(rid, n // spec.steps, n % spec.steps),
                "name": "upgrade",
                "expires_at": int(spec.expires_at),
                "args": {
                    "manifest": dict(spec.manifest),
                    "health_timeout_s": spec.health_timeout_s,
                    "rollout": {"id": rid, "percent": pct},
                },
            }
        )
    return out


def expiry(now: float) -> int:
    """The commands' expires_at: as late as a gateway accepts (7 days), less an hour of slack
    for clocks that run ahead."""
    return int(now + MAX_LIFETIME_S - 3600)


@dataclass(slots=True)
class UpgradeCheck:
    """The gate's figures for one wave (the runner stores them as the rollout's gate)."""

    verdict: str  # soaking, passed, failed
    wave: int = 0  # the index of the wave judged
    size: int = 0
    applied: int = 0  # done
    answered: int = 0  # done + failed
    pending: int = 0
    failures: list[str] | None = None
    health: list[str] | None = None

    @property
    def rate(self) -> float | None:
        n = len(self.failures or [])
        return round(100.0 * n / self.answered, 2) if self.answered else None


def exceeds(failed: int, total: int, max_failures: float, percent: bool) -> bool:
    if failed <= 0:
        return False
    if percent:
        return total > 0 and failed * 100 > max_failures * total
    return failed > max_failures


__all__ = [
    "StepRow", "UpgradeCheck", "UpgradeSpec", "UpgradeWindow", "command_id", "commands", "merge",
    "outcome", "rollout_of", "step_percents",
]  # fmt: skip
