"""Delivery: every sample through the spool, live ones at once, the backlog replayed.

A live sample is appended to the spool "in flight" and published; it leaves the spool when
its PUBACK comes. After a reconnect the backlog goes out oldest first in batches, rate-limited
by a token bucket and started after a jitter (docs/architecture.md, "Replay"). What the
connection took with it when it dropped goes back to the spool.

The connection is a :class:`agent.link.Link`: this module never names paho.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.protocol import Telemetry, Topics, batch_payload, encode
from agent.spool import Record, Spool

if TYPE_CHECKING:
    from agent.config import AgentConfig, BufferConfig
    from agent.link import Link

log = logging.getLogger("titik.agent")

#: Longest one step of the loop blocks, so signals and schedules are served promptly.
MAX_STEP_S = 0.5
#: Replay batches awaiting PUBACK at once; bounds paho's queue and the broker's inflight window.
MAX_INFLIGHT_BATCHES = 4
#: Most bytes of records in one replay message (Mosquitto's default limit is far above).
BATCH_MAX_BYTES = 256 * 1024


@dataclass
class Counts:
    samples: int = 0
    published: int = 0  # live samples handed to the broker
    replayed: int = 0  # buffered records sent in batches
    acked: int = 0  # records acknowledged by the broker


def open_spool(
    cfg: AgentConfig,
    state_dir: Path,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> Spool:
    b = cfg.buffer
    return Spool(
        b.path or state_dir / "buffer",
        max_bytes=b.max_bytes,
        max_age_s=b.max_age_s,
        flush_interval_s=b.flush_interval_s,
        grace_s=b.grace_s,
        clock=clock,
        wall=wall,
        log=logging.getLogger("titik.spool"),
    )


class Delivery:
    """The outbound side of one gateway: samples and replay over ``link``, acks to the spool.

    ``buffer`` is read on every call, so a remote config that changes it takes effect at once.
    """

    def __init__(
        self,
        spool: Spool,
        link: Link,
        topics: Topics,
        buffer: Callable[[], BufferConfig],
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.spool = spool
        self.link = link
        self.topics = topics
        self._buffer = buffer
        self.clock = clock
        self.rng = rng or random.Random()
        self.counts = Counts()
        self._mids: dict[int, list[int]] = {}  # in-flight publish -> the seqs it carries
        self._batch_mids: set[int] = set()
        self._replay_at: float | None = None  # None: not connected, or not yet scheduled
        self._kicked = False
        self._tokens = 0.0
        self._tokens_at = clock()

    def publish_sample(self, sample: Telemetry) -> None:
        """Every sample goes through the spool; live ones are published at once as well."""
        self.counts.samples += 1
        rec = Record(sample.seq, sample.ts, encode(sample))
        if not self.link.connected:
            self.spool.append(rec)
            return
        self.spool.append(rec, inflight=True)
        mid = self.link.publish(self.topics.telemetry, rec.data, qos=1)
        if mid is None:
            self.spool.release([rec.seq])
            return
        self.counts.published += 1
        self._mids[mid] = [rec.seq]

    def replay(self, now: float) -> float:
        """Send buffered records, oldest first, rate-limited; returns the wait until more."""
        b = self._buffer()
        if self._replay_at is None or not self.link.connected or not self.spool.pending:
            return float("inf")
        if now < self._replay_at:
            return self._replay_at - now
        # Token bucket: replay_rate records/s, bursts of at most one batch.
        burst = max(float(b.batch_records), b.replay_rate * MAX_STEP_S)
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * b.replay_rate)
        self._tokens_at = now
        while self.spool.pending and len(self._batch_mids) < MAX_INFLIGHT_BATCHES:
            n = min(b.batch_records, int(self._tokens))
            if n < 1:
                return (1 - self._tokens) / b.replay_rate
            records = self.spool.take(n, BATCH_MAX_BYTES)
            if not records:
                break
            seqs = [r.seq for r in records]
            mid = self.link.publish(
                self.topics.telemetry_batch,
                batch_payload(self.topics.device, [r.data for r in records]),
                qos=1,
            )
            if mid is None:
                self.spool.release(seqs)
                break
            self._tokens -= len(records)
            self._mids[mid] = seqs
            self._batch_mids.add(mid)
            self.counts.replayed += len(records)
        return float("inf")  # the next PUBACK or the next tick brings more

    def kick(self) -> None:
        """Replay at once (no jitter): now if connected, else right after the next CONNACK."""
        self._kicked = True
        if self.link.connected:
            self._replay_at = self.clock()

    def on_connected(self) -> None:
        now = self.clock()
        # Jitter the replay start so a city's gateways reconnecting together don't replay
        # together; a kick (the WAN just came up on this gateway) starts at once.
        jitter = 0.0 if self._kicked else self.rng.uniform(0, self._buffer().replay_jitter_s)
        self._kicked = False
        self._replay_at = now + jitter
        self._tokens, self._tokens_at = 0.0, now
        if self.spool.pending:
            log.info("%d buffered samples to replay, starting in %.1fs", self.spool.pending, jitter)

    def on_ack(self, mid: int) -> None:
        self._batch_mids.discard(mid)
        seqs = self._mids.pop(mid, None)
        if seqs:
            self.spool.ack(seqs)
            self.counts.acked += len(seqs)

    def on_nack(self, mid: int) -> None:
        self._batch_mids.discard(mid)
        seqs = self._mids.pop(mid, None)
        if seqs:
            self.spool.release(seqs)  # kept, and tried again on the next replay

    def on_disconnected(self) -> None:
        # The connection took its unacked publishes with it: back to the spool, to replay.
        for seqs in self._mids.values():
            self.spool.release(seqs)
        self._mids.clear()
        self._batch_mids.clear()
        self._replay_at = None
