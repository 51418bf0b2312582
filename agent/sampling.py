"""Sampling: run the collectors that are turned on and make one :class:`Telemetry`.

Which module takes which reading on which platform is the collectors' business
(:mod:`agent.collectors`); this module only runs them, isolated from each other, and adds
what the agent knows itself (sequence numbers, the buffer's figures, failed writes).
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.collectors import REGISTRY
from agent.collectors.base import Collector, Context, Reading
from agent.protocol import AgentInfo, Telemetry
from agent.runner import CommandError

if TYPE_CHECKING:
    from agent.platforms import Platform
    from agent.protocol.atomicfile import WriteFaults
    from agent.spool import Spool
    from agent.state import AgentState

log = logging.getLogger("titik.collectors")


def load_collector(name: str) -> Collector:
    """The ``COLLECTOR`` of ``agent.collectors.<name>`` (imported on first use)."""
    if name not in REGISTRY:
        raise ValueError(f"telemetry.collectors: unknown collector {name!r}")
    collector: Collector = importlib.import_module(f"agent.collectors.{name}").COLLECTOR
    return collector


def run_collectors(
    platform: Platform,
    names: Sequence[str],
    ctx: Context,
    collectors: Mapping[str, Collector] | None = None,
) -> dict[str, Any]:
    """Each named collector's reading (None where it failed, with ``ctx.errors[name]``
    saying why). ``collectors`` replaces the registry (tests)."""
    out: dict[str, Any] = {}
    for name in names:
        c = collectors[name] if collectors is not None else load_collector(name)
        out[name] = _run(name, c.for_platform(platform.kinds), platform, ctx)
    return out


def _run(name: str, fn: Reading | None, platform: Platform, ctx: Context) -> Any:
    if fn is None:
        ctx.warn(name, f"not available on platform {platform.name}")
        return None
    try:
        return fn(platform, ctx)
    except (CommandError, OSError, ValueError) as exc:
        ctx.warn(name, str(exc))
    except Exception as exc:  # a bug in one collector must not stop the sample
        ctx.warn(name, f"internal error: {type(exc).__name__}: {exc}")
        log.exception("collector %s failed", name)
    return None


class Sampler:
    """One gateway's samples. ``faults`` are the write failures the sample reports besides
    the state's and the spool's own (``errors["write.<kind>"]``)."""

    def __init__(
        self,
        device_id: str,
        platform: Platform,
        state: AgentState,
        spool: Spool,
        faults: WriteFaults,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.platform = platform
        self.state = state
        self.spool = spool
        self.faults = faults
        self.clock = clock
        self.wall = wall
        self._memo: dict[str, Any] = {}
        self._names: tuple[str, ...] = ()
        self._plan: list[tuple[str, str, Reading | None]] = []

    def _plan_for(self, names: Sequence[str]) -> list[tuple[str, str, Reading | None]]:
        """(name, Telemetry field, reading) per collector, worked out once per config."""
        if tuple(names) != self._names:
            kinds = self.platform.kinds
            plan = []
            for name in names:
                c = load_collector(name)
                plan.append((name, c.field, c.for_platform(kinds)))
            self._names, self._plan = tuple(names), plan
        return self._plan

    def sample(self, names: Sequence[str], seq: int | None = None) -> Telemetry:
        """Run the ``names`` collectors. ``seq`` None draws the next persistent number."""
        ctx = Context(wall=self.wall(), mono=self.clock(), memo=self._memo)
        sections: dict[str, Any] = {}
        for name, field, fn in self._plan_for(names):
            sections[field] = _run(name, fn, self.platform, ctx)
        sp, state = self.spool, self.state
        if self.faults.entries or state.faults.entries or sp.faults.entries:
            for faults in (state.faults, sp.faults, self.faults):
                ctx.errors.update(faults.entries)
        dropped = sp.dropped
        if sp.lost:  # records lost with a damaged buffer file count as dropped too
            dropped += sp.lost
        return Telemetry(
            device=self.device_id,
            seq=state.next_seq() if seq is None else seq,
            boot=state.boot,
            sid=state.sid,
            ts=round(ctx.wall, 3),
            agent=AgentInfo(version=__version__, buffered=sp.buffered, dropped=dropped),
            errors=ctx.errors or None,
            **sections,
        )
