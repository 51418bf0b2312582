"""The Spool against a plain in-memory model, through random operation sequences.

The model is the specification in a few lines: records by seq, which are in flight,
the byte cap dropping the lowest seq, the age cap dropping ts older than max_age at
tick() and at open, and close() + reopen bringing back exactly the unacked records as
pending. A kill -9 (reopen without close) may lose what was not yet flushed and may
resend acked records; there the spool is checked against what it had on disk.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from agent.spool import Record, Spool

MAX_BYTES = 2000
MAX_AGE = 1000.0
GRACE = 5.0
FLUSH = 10.0
WALL0 = 1_700_000_000.0


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Model:
    def __init__(self) -> None:
        self.recs: dict[int, Record] = {}
        self.inflight: set[int] = set()
        self.dropped = 0

    @property
    def bytes(self) -> int:
        return sum(len(r.data) for r in self.recs.values())

    def pending(self) -> list[Record]:
        return [self.recs[s] for s in sorted(self.recs) if s not in self.inflight]

    def append(self, rec: Record, inflight: bool) -> None:
        if rec.seq in self.recs:
            return
        if len(rec.data) > MAX_BYTES:
            self.dropped += 1
            return
        self.recs[rec.seq] = rec
        if inflight:
            self.inflight.add(rec.seq)
        while self.bytes > MAX_BYTES:
            oldest = min(self.recs)
            del self.recs[oldest]
            self.inflight.discard(oldest)
            self.dropped += 1

    def take(self, n: int, max_bytes: int) -> list[Record]:
        out: list[Record] = []
        total = 0
        for r in self.pending():
            if len(out) >= n or (out and total + len(r.data) > max_bytes):
                break
            out.append(r)
            total += len(r.data)
        self.inflight.update(r.seq for r in out)
        return out

    def ack(self, seqs: list[int]) -> None:
        for s in seqs:
            self.recs.pop(s, None)
            self.inflight.discard(s)

    def release(self, seqs: list[int]) -> None:
        self.inflight.difference_update(seqs)

    def expire(self, wall: float) -> None:
        for s in [s for s, r in self.recs.items() if r.ts < wall - MAX_AGE]:
            del self.recs[s]
            self.inflight.discard(s)
            self.dropped += 1

    def reopen(self, wall: float) -> None:
        self.inflight.clear()
        self.dropped = 0
        self.expire(wall)


def payload(seq: int, size: int) -> bytes:
    unit = f"{seq}:".encode()
    return (unit * (size // len(unit) + 1))[:size]


class SpoolMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="spool-stateful-"))
        self.clock = Clock(100.0)
        self.wall = Clock(WALL0)
        self.model = Model()
        self.appended: dict[int, Record] = {}
        self.next_seq = 1
        self.spool = self._open()

    def _open(self) -> Spool:
        return Spool(
            self.dir,
            max_bytes=MAX_BYTES,
            max_age_s=MAX_AGE,
            grace_s=GRACE,
            flush_interval_s=FLUSH,
            clock=self.clock,
            wall=self.wall,
        )

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _contents(self) -> list[Record]:
        """Every pending record, oldest first, leaving the spool as it was."""
        got = self.spool.take(1 << 30, 1 << 40)
        self.spool.release(r.seq for r in got)
        return got

    # -- operations ----------------------------------------------------------------------

    @rule(
        batch=st.lists(
            st.tuples(
                st.one_of(st.integers(0, 600), st.just(MAX_BYTES + 1)),
                st.sampled_from([0.0, 10.0, 500.0, MAX_AGE - 1, MAX_AGE + 1]),
                st.booleans(),
                st.integers(1, 3),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def append(self, batch: list[tuple[int, float, bool, int]]) -> None:
        for size, age, inflight, gap in batch:
            rec = Record(self.next_seq, self.wall.t - age, payload(self.next_seq, size))
            self.next_seq += gap
            self.appended[rec.seq] = rec
            self.spool.append(rec, inflight=inflight)
            self.model.append(rec, inflight)

    @rule(n=st.integers(0, 6), max_bytes=st.sampled_from([0, 100, 800, 5000]))
    def take(self, n: int, max_bytes: int) -> None:
        got = self.spool.take(n, max_bytes)
        assert got == self.model.take(n, max_bytes)

    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        known = sorted(self.model.recs)
        seqs = data.draw(st.lists(st.sampled_from(known), max_size=4)) if known else []
        seqs += data.draw(st.lists(st.integers(0, self.next_seq + 5), max_size=1))
        self.spool.ack(seqs)
        self.model.ack(seqs)

    @precondition(lambda self: self.model.inflight)
    @rule(data=st.data())
    def ack_in_flight(self, data: st.DataObject) -> None:
        seqs = data.draw(st.lists(st.sampled_from(sorted(self.model.inflight)), min_size=1))
        self.spool.ack(seqs)
        self.model.ack(seqs)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        pool = [*sorted(self.model.recs), self.next_seq + 1]
        seqs = data.draw(st.lists(st.sampled_from(pool), max_size=4))
        self.spool.release(seqs)
        self.model.release(seqs)

    @precondition(lambda self: self.model.inflight)
    @rule(data=st.data())
    def release_in_flight(self, data: st.DataObject) -> None:
        seqs = data.draw(st.permutations(sorted(self.model.inflight)))
        seqs = seqs[: data.draw(st.integers(1, len(seqs)))]
        self.spool.release(seqs)
        self.model.release(seqs)

    @rule()
    def tick(self) -> None:
        self.spool.tick()
        self.model.expire(self.wall.t)

    @rule(dt=st.sampled_from([0.5, 1.0, GRACE, FLUSH, 3 * FLUSH]))
    def advance(self, dt: float) -> None:
        self.clock.t += dt
        self.wall.t += dt

    @rule(dt=st.sampled_from([-3600.0, 400.0, MAX_AGE]))
    def wall_jumps(self, dt: float) -> None:
        self.wall.t += dt  # NTP steps the wall clock; the monotonic clock does not move

    @rule()
    def close_and_reopen(self) -> None:
        self.spool.close()
        self.spool = self._open()
        self.model.reopen(self.wall.t)
        assert self._contents() == self.model.pending()

    @rule()
    def kill_and_reopen(self) -> None:
        on_disk = set(self.spool._ledger.on_disk())
        self.spool = self._open()  # the old one is abandoned without close(), as by kill -9
        got = self._contents()
        for r in got:
            assert self.appended[r.seq] == r  # nothing invented, nothing altered
        seqs = [r.seq for r in got]
        assert seqs == sorted(seqs)
        if self.spool._ledger.dropped_cap == 0:
            # every unacked record that had been flushed is back, unless now too old
            must = {
                s
                for s in on_disk
                if s in self.model.recs and self.model.recs[s].ts >= self.wall.t - MAX_AGE
            }
            assert must <= set(seqs)
        self.model.recs = {r.seq: r for r in got}
        self.model.inflight.clear()
        self.model.dropped = self.spool.dropped

    # -- what must always hold -----------------------------------------------------------

    @invariant()
    def counts_match(self) -> None:
        assert self.spool.buffered == len(self.model.recs)
        assert self.spool.pending == len(self.model.pending())
        assert self.spool.dropped == self.model.dropped
        assert self.spool.stats().bytes == self.model.bytes <= MAX_BYTES
        assert self.spool.corrupt == 0 and self.spool.lost == 0


TestSpoolStateful = SpoolMachine.TestCase
TestSpoolStateful.settings = settings(
    max_examples=150, stateful_step_count=50, deadline=None, database=None
)
