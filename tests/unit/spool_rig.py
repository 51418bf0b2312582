"""The spool's test rig: an injected clock, the kernel writes counted, records with a mark.

Shared by tests/unit/test_spool.py (flash wear, restart, caps, API) and
tests/unit/test_spool_damage.py (damaged files, failing disks); the ``rig`` fixture is in
tests/unit/conftest.py.
"""

from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import agent.spool.store as store_mod
from agent.spool import Record, Spool

WALL0 = 1_700_000_000.0
MARK = b"SECRET-PAYLOAD"  # every record carries it; no log line may


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@dataclass
class Writes:
    """Counts what reaches the kernel through the spool's single write path."""

    calls: list[tuple[float, int]] = field(default_factory=list)
    fail_with: int | None = None

    @property
    def bytes(self) -> int:
        return sum(n for _, n in self.calls)


@dataclass
class Rig:
    directory: Path
    clock: Clock
    wall: Clock
    writes: Writes
    log: logging.Logger

    def open(self, **kw: float) -> Spool:
        return Spool(
            self.directory,
            clock=self.clock,
            wall=self.wall,
            log=self.log,
            **kw,  # type: ignore[arg-type]
        )

    def advance(self, spool: Spool | None, seconds: float, step: float = 0.5) -> None:
        """Let time pass, ticking every ``step`` like the agent's main loop."""
        end = self.clock.t + seconds
        while self.clock.t < end - 1e-9:
            dt = min(step, end - self.clock.t)
            self.clock.t += dt
            self.wall.t += dt
            if spool is not None:
                spool.tick()

    def files(self, sub: str = "") -> list[str]:
        d = self.directory / sub
        return sorted(os.listdir(d)) if d.is_dir() else []

    def segments(self) -> list[str]:
        return [n for n in self.files() if n.endswith(".seg")]


def make_rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
    writes = Writes()
    clock = Clock(1000.0)
    real = store_mod.write_all

    def counting(fd: int, data: bytes) -> None:
        if writes.fail_with is not None:
            raise OSError(writes.fail_with, os.strerror(writes.fail_with))
        writes.calls.append((clock.t, len(data)))
        real(fd, data)

    monkeypatch.setattr(store_mod, "write_all", counting)
    log = logging.getLogger(f"test.spool.{tmp_path.name}")
    return Rig(tmp_path / "spool", clock, Clock(WALL0), writes, log)


def sample(seq: int, ts: float, size: int = 400) -> Record:
    rng = random.Random(seq)
    body = {
        "seq": seq,
        "mark": MARK.decode(),
        "load1": round(rng.random() * 2, 2),
        "clients": [rng.randint(0, 40) for _ in range(8)],
        "pad": "",
    }
    raw = json.dumps(body, separators=(",", ":"))
    body["pad"] = "x" * max(0, size - len(raw))
    return Record(seq, ts, json.dumps(body, separators=(",", ":")).encode())


def drain(spool: Spool) -> list[Record]:
    """Everything pending, oldest first, acked."""
    out: list[Record] = []
    while got := spool.take(50, 1 << 30):
        out += got
        spool.ack(r.seq for r in got)
    return out


def peek(spool: Spool) -> list[Record]:
    """Everything pending, oldest first, left pending."""
    got = spool.take(1 << 30, 1 << 40)
    spool.release(r.seq for r in got)
    return got


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level]
