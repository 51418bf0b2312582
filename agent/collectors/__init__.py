"""Collectors: one module per kind of reading, each isolated from the others.

A collector is a function of the platform and a :class:`Context`. If it raises, the sample
still goes out, with ``errors[<name>]`` saying why (node_exporter's rule: one failing
collector never blocks the rest). Partial failures go through :meth:`Context.warn`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.runner import CommandError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from agent.platforms.base import Platform

log = logging.getLogger("titik.collectors")


@dataclass
class Context:
    """What one sampling pass shares: the clocks, partial errors, and memory between passes."""

    wall: float
    mono: float
    errors: dict[str, str] = field(default_factory=dict)
    #: Survives between samples: previous counters for rates, keyed by collector.
    memo: dict[str, Any] = field(default_factory=dict)

    def warn(self, key: str, reason: str) -> None:
        self.errors[key] = reason[:200]


Collector = Callable[["Platform", Context], "BaseModel"]

#: name -> (collector, on by default). ``telemetry.collectors`` picks among these names.
REGISTRY: dict[str, tuple[Collector, bool]] = {
    "health": (lambda p, c: p.health(c), True),
    "network": (lambda p, c: p.network(c), True),
    "clients": (lambda p, c: p.clients(c), True),
}


def run_collectors(
    platform: Platform, names: list[str], ctx: Context
) -> dict[str, BaseModel | None]:
    out: dict[str, BaseModel | None] = {}
    for name in names:
        fn, _ = REGISTRY[name]
        try:
            out[name] = fn(platform, ctx)
        except (CommandError, OSError, ValueError) as exc:
            out[name] = None
            ctx.warn(name, str(exc))
        except Exception as exc:  # a bug in one collector must not stop the sample
            out[name] = None
            ctx.warn(name, f"internal error: {type(exc).__name__}: {exc}")
            log.exception("collector %s failed", name)
    return out
