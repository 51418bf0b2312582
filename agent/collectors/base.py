"""What every collector shares: the :class:`Context` of one sampling pass, the
:class:`Collector` a module declares, and the ports it reads the gateway through.

A collector module never imports :mod:`agent.platforms`: it asks a platform only what
:class:`LinuxHost` (or, on the simulated platform, :class:`SimHost`) lists, so platforms may use
the collectors' readers (for identity and diagnostics) without an import going both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import random

    from agent.runner import CommandRunner

#: How long what was discovered (AP interfaces, lease files, temperature sensors) is reused
#: before it is looked up again.
DISCOVERY_TTL_S = 300.0

T = TypeVar("T")


@dataclass
class Context:
    """What one sampling pass shares: the clocks, partial errors, and memory between passes."""

    wall: float
    mono: float
    errors: dict[str, str] = field(default_factory=dict)
    #: Survives between samples: previous counters for rates, paths built once, discoveries;
    #: keyed by collector (``"net"``, ``"health.paths"`` ...).
    memo: dict[str, Any] = field(default_factory=dict)

    def warn(self, key: str, reason: str) -> None:
        self.errors[key] = reason[:200]


def recalled(ctx: Context, key: str) -> Any:
    """What :func:`remember` kept under ``key``, or None once it is DISCOVERY_TTL_S old."""
    expires, found = ctx.memo.get(key, (0.0, None))
    return found if ctx.mono < expires else None


def remember(ctx: Context, key: str, found: T) -> T:
    """Keep what a discovery ``found`` (radios, sensors, lease files) for DISCOVERY_TTL_S."""
    ctx.memo[key] = (ctx.mono + DISCOVERY_TTL_S, found)
    return found


def paths_under(ctx: Context, key: str, root: Path, *parts: str) -> tuple[str, ...]:
    """``root / part`` for each part, as ``str``, built on the first sample and kept in the
    memo under ``key``. pathlib interns every part of a new Path, and a part that dies with
    its Path is interned again on the next sample; that churn grew CPython's table of
    interned strings, +0.5 MiB of RSS after ~1,300 samples (docs/architecture.md)."""
    paths: tuple[str, ...] | None = ctx.memo.get(key)
    if paths is None:
        paths = ctx.memo[key] = tuple(str(root / part) for part in parts)
    return paths


class LinuxHost(Protocol):
    """What a collector may read through on a real gateway (the Linux family of platforms)."""

    @property
    def name(self) -> str: ...
    @property
    def root(self) -> Path: ...
    @property
    def runner(self) -> CommandRunner: ...
    @property
    def interfaces(self) -> list[str]:
        """Interfaces to report (``telemetry.interfaces``); empty: all but loopback."""

    @property
    def wifi_sources(self) -> tuple[str, ...]:
        """Client-count tools to try, in order (``agent.collectors.wifi.WIFI_SOURCES``)."""

    @property
    def lease_files(self) -> tuple[str, ...]: ...

    def wifi_ifaces(self) -> list[str]:
        """The access-point interfaces (discovery: collectors cache it, see :func:`recalled`)."""

    def disk_path(self) -> str:
        """The filesystem that fills up (the overlay on OpenWrt)."""


class SimHost(Protocol):
    """What a collector reads on the simulated platform: seeded randomness, no I/O."""

    @property
    def rng(self) -> random.Random: ...
    @property
    def capacity(self) -> int:
        """Peak clients of this simulated site."""

    @property
    def boot_wall(self) -> float: ...
    @property
    def radios(self) -> tuple[str, ...]:
        """The simulated access-point interfaces."""

    def busy(self, wall: float) -> float:
        """How busy the site is at ``wall`` (0.05 at night to about 1.0)."""

    @property
    def service_fault(self) -> str | None:
        """A fault the service report shows (agent.service.simulated.FAULTS), or None."""

    def count_bytes(self, rx: float, tx: float) -> tuple[int, int]:
        """Add to the simulated WAN byte counters; returns them (received, sent)."""


#: One platform family's way to take a collector's reading: a wire model (or a mapping of
#: them, by interface) for the Telemetry field.
Reading = Callable[[Any, Context], Any]


@dataclass(frozen=True)
class Collector:
    """What a collector module declares as ``COLLECTOR``.

    ``field`` is the :class:`agent.protocol.Telemetry` field it fills. ``by_platform`` maps a
    platform kind to the function taking the reading there; a platform without an entry of
    its own uses its parent's (``openwrt`` and ``raspberrypi`` fall back to ``linux``), as
    node_exporter's per-OS collector files do.
    """

    field: str
    by_platform: Mapping[str, Reading]

    def for_platform(self, kinds: Sequence[str]) -> Reading | None:
        """The reading for a platform whose kind, then parents' kinds, are ``kinds``."""
        for kind in kinds:
            fn = self.by_platform.get(kind)
            if fn is not None:
                return fn
        return None
