"""The spool's bookkeeping: no I/O and no clock reads, so it is tested without a disk.

The ledger knows every record that is not yet acked: whether it waits for ``take()``
(pending) or is being published (in flight), whether its bytes are in memory or in a
segment file, when it becomes due for a spill, and the byte and age caps. The Spool
(``spool.py``) passes it the time and does the file I/O it asks for.

A record in memory is an :class:`Entry`. A spilled record is not an object at all: it is
a row in its segment's columns (typed arrays: seq, ts, size, block, frame, state), plus
one ``seq -> segment`` dict item, so a long outage costs about 130 bytes of index per
record instead of the record (docs/spool.md, "Memory").

Orders are heaps and deques cleaned lazily: an item is stale when its record is no
longer where, or in the state, the structure expects. Stale items are skipped when they
reach the front, and everything is rebuilt when stale items outnumber live ones (or dropped
at once when nothing is buffered), so each operation is O(log n) amortized and ``add`` is
O(1) in the common in-order case.
"""

from __future__ import annotations

import bisect
import heapq
from array import array
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agent.spool.record import Record
from agent.spool.segment import Located

MEMORY = -1  # Entry.seg: bytes only in memory; spilled when due
UNSTORABLE = -2  # Entry.seg: bytes only in memory, and there is no disk to spill to
SPILLED = -3  # Entry.seg: a dead Entry, its record now lives in a segment's columns

# Segment row states
PENDING = 0
INFLIGHT = 1
GONE = 2  # acked, dropped, skipped on load: the file still holds it, the spool does not

_RETRY_MAX_S = 300.0
_COMPACT_SLACK = 256


class Entry:
    """A record whose bytes are in memory: appended, not yet spilled (or no disk)."""

    __slots__ = ("due", "inflight", "rec", "seg", "seq", "size", "ts", "unstored")

    def __init__(
        self, rec: Record, due: float, *, inflight: bool = False, seg: int = MEMORY
    ) -> None:
        self.seq = rec.seq
        self.ts = rec.ts
        self.size = len(rec.data)
        self.rec: Record | None = rec
        self.due = due
        self.inflight = inflight
        self.seg = seg
        self.unstored = False

    def __lt__(self, other: Entry) -> bool:
        # Order of the age heap: oldest measurement first, seq breaks ties.
        if self.ts != other.ts:
            return self.ts < other.ts
        return self.seq < other.seq


@dataclass(frozen=True, slots=True)
class OnDisk:
    """A taken record whose bytes must be read back from segment ``seg``."""

    seq: int
    seg: int
    block: int
    frame: int


class _Segment:
    """The rows of one segment file, sorted by seq."""

    __slots__ = ("blocks", "frames", "live", "seqs", "sizes", "state", "ts")

    def __init__(self) -> None:
        self.seqs = array("Q")
        self.ts = array("d")
        self.sizes = array("I")
        self.blocks = array("I")
        self.frames = array("I")
        self.state = bytearray()
        self.live = 0

    def append(self, seq: int, ts: float, size: int, block: int, frame: int, state: int) -> None:
        self.seqs.append(seq)
        self.ts.append(ts)
        self.sizes.append(size)
        self.blocks.append(block)
        self.frames.append(frame)
        self.state.append(state)
        if state != GONE:
            self.live += 1

    def index(self, seq: int) -> int:
        i = bisect.bisect_left(self.seqs, seq)
        if i < len(self.seqs) and self.seqs[i] == seq:
            return i
        raise KeyError(seq)

    def min_live_ts(self) -> float:
        return min(
            (t for t, s in zip(self.ts, self.state, strict=True) if s != GONE),
            default=float("inf"),
        )


class Ledger:
    """Pending / in-flight / spilled bookkeeping with the byte and age caps.

    Args:
        max_bytes: Cap on the data bytes of all unacked records, memory and disk.
        max_age_s: Records whose ``ts`` is older than this are dropped by ``expire``.
        grace_s: A record appended in flight is due for a spill this long after it
            was appended, if it has not been acked by then.
        flush_interval_s: Spills are batched: the first due record waits this long,
            and two spills are at least this far apart.
    """

    def __init__(
        self, *, max_bytes: int, max_age_s: float, grace_s: float, flush_interval_s: float
    ) -> None:
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self.grace_s = grace_s
        self.flush_interval_s = flush_interval_s

        self.pending = 0
        self.bytes = 0
        self.memory_bytes = 0
        self.dropped_cap = 0
        self.dropped_age = 0
        self.rejected = 0
        self.lost = 0
        self.unstored = 0
        self.last_seq: int | None = None

        self._mem: dict[int, Entry] = {}
        self._disk: dict[int, int] = {}  # seq -> segment id
        self._segments: dict[int, _Segment] = {}
        self._by_seq: list[int] = []  # every record; byte-cap eviction order
        self._pending: list[int] = []  # pending records; take() order
        self._by_age: list[Entry] = []  # records in memory; age-cap order
        self._seg_age: list[tuple[float, int]] = []  # (oldest live ts, segment id)
        self._due_offline: deque[Entry] = deque()  # due order == append order
        self._due_live: deque[Entry] = deque()
        self._freed: list[int] = []

        self._last_flush = float("-inf")
        self._retry_at = float("-inf")
        self._failures = 0

    # -- read-only views -------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return len(self._mem) + len(self._disk)

    @property
    def dropped(self) -> int:
        return self.dropped_cap + self.dropped_age

    @property
    def in_flight(self) -> int:
        return self.buffered - self.pending

    def holds(self, seq: int) -> bool:
        return seq in self._mem or seq in self._disk

    def is_in_flight(self, seq: int) -> bool:
        e = self._mem.get(seq)
        if e is not None:
            return e.inflight
        sid = self._disk.get(seq)
        if sid is None:
            return False
        sg = self._segments[sid]
        return sg.state[sg.index(seq)] == INFLIGHT

    def memory_record(self, seq: int) -> Record | None:
        e = self._mem.get(seq)
        return e.rec if e is not None else None

    def on_disk(self) -> list[int]:
        """Seqs whose bytes are in a segment file, in seq order."""
        return sorted(self._disk)

    # -- records in and out ----------------------------------------------------------

    def add(self, rec: Record, *, inflight: bool, now: float) -> bool:
        """Buffer a new record; False if it was rejected (duplicate seq) or too big."""
        seq = rec.seq
        if seq in self._mem or seq in self._disk:
            self.rejected += 1
            return False
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq
        size = len(rec.data)
        if size > self.max_bytes:
            self.dropped_cap += 1
            return False
        e = Entry(rec, now + self.grace_s if inflight else now, inflight=inflight)
        self._mem[seq] = e
        heapq.heappush(self._by_seq, seq)
        heapq.heappush(self._by_age, e)
        if inflight:
            self._due_live.append(e)
        else:
            self.pending += 1
            heapq.heappush(self._pending, seq)
            self._due_offline.append(e)
        self.bytes += size
        self.memory_bytes += size
        if self.bytes > self.max_bytes:
            self.enforce_cap()
        self._maybe_compact()
        return True

    def take(self, max_records: int, max_bytes: int) -> list[Entry | OnDisk]:
        """Mark the oldest pending records in flight and return them in seq order.

        Stops at ``max_records`` or before the data would exceed ``max_bytes``; the first
        record is returned even when it alone is larger, so it cannot block the queue.
        """
        out: list[Entry | OnDisk] = []
        total = 0
        heap = self._pending
        while heap and len(out) < max_records:
            seq = heap[0]
            e = self._mem.get(seq)
            if e is not None:
                if e.inflight:
                    heapq.heappop(heap)
                    continue
                if out and total + e.size > max_bytes:
                    break
                e.inflight = True
                total += e.size
                out.append(e)
            else:
                sid = self._disk.get(seq)
                if sid is None:
                    heapq.heappop(heap)
                    continue
                sg = self._segments[sid]
                i = sg.index(seq)
                if sg.state[i] != PENDING:
                    heapq.heappop(heap)
                    continue
                if out and total + sg.sizes[i] > max_bytes:
                    break
                sg.state[i] = INFLIGHT
                total += sg.sizes[i]
                out.append(OnDisk(seq, sid, sg.blocks[i], sg.frames[i]))
            heapq.heappop(heap)
            self.pending -= 1
        return out

    def ack(self, seqs: Iterable[int]) -> int:
        """Forget acked records; unknown seqs are ignored. Returns how many were known."""
        n = sum(1 for seq in seqs if self._remove(seq))
        if n and not self._mem and not self._disk:
            self._clear_orders()
        return n

    def release(self, seqs: Iterable[int]) -> int:
        """Put in-flight records back to pending; others are ignored."""
        n = 0
        for seq in seqs:
            e = self._mem.get(seq)
            if e is not None:
                if not e.inflight:
                    continue
                e.inflight = False
            else:
                sid = self._disk.get(seq)
                if sid is None:
                    continue
                sg = self._segments[sid]
                i = sg.index(seq)
                if sg.state[i] != INFLIGHT:
                    continue
                sg.state[i] = PENDING
            self.pending += 1
            heapq.heappush(self._pending, seq)
            n += 1
        if n:
            self._maybe_compact()
        return n

    # -- caps ------------------------------------------------------------------------

    def enforce_cap(self) -> int:
        """Drop the oldest records (lowest seq, pending or in flight) until under max_bytes."""
        n = 0
        heap = self._by_seq
        while self.bytes > self.max_bytes and heap:
            if self._remove(heapq.heappop(heap)):
                n += 1
        self.dropped_cap += n
        return n

    def expire(self, wall_now: float) -> int:
        """Drop every record whose ts is more than max_age_s before ``wall_now``."""
        cutoff = wall_now - self.max_age_s
        n = 0
        heap = self._by_age
        while heap:
            e = heap[0]
            if self._mem.get(e.seq) is not e:
                heapq.heappop(heap)
            elif e.ts < cutoff:
                heapq.heappop(heap)
                self._remove(e.seq)
                n += 1
            else:
                break
        ages = self._seg_age
        while ages and ages[0][0] < cutoff:
            _, sid = heapq.heappop(ages)
            sg = self._segments.get(sid)
            if sg is None:
                continue
            for i, seq in enumerate(sg.seqs):
                if sg.state[i] != GONE and sg.ts[i] < cutoff:
                    self._remove(seq)
                    n += 1
            if sid in self._segments:
                heapq.heappush(ages, (sg.min_live_ts(), sid))
        self.dropped_age += n
        return n

    # -- spilling --------------------------------------------------------------------

    def flush_due(self, now: float) -> bool:
        """Is a spill due: has the first due record waited a flush interval, the last
        spill been an interval ago, and any failure back-off passed?"""
        first = self._first_due()
        if first is None:
            return False
        step = self.flush_interval_s
        return now >= max(first + step, self._last_flush + step, self._retry_at)

    def due(self, now: float) -> list[Entry]:
        """Records whose bytes are only in memory and are due by ``now``, in seq order."""
        mem = self._mem
        out: dict[int, Entry] = {}  # an entry can sit in a deque twice
        for dq in (self._due_offline, self._due_live):
            for e in dq:
                if e.due > now:
                    break
                if e.seg == MEMORY and mem.get(e.seq) is e:
                    out[e.seq] = e
        return sorted(out.values(), key=_seq_of)

    def unspilled(self) -> list[Entry]:
        """Every record whose bytes are only in memory (for close()), in seq order."""
        return sorted((e for e in self._mem.values() if e.seg == MEMORY), key=_seq_of)

    def spilled(self, entries: Sequence[Entry], seg: int, where: Sequence[tuple[int, int]]) -> None:
        """``entries`` are now in segment ``seg`` at ``where`` (block offset, frame
        offset): they become rows of its columns and their bytes leave memory."""
        sg = _Segment()
        rows = sorted(zip(entries, where, strict=True), key=lambda p: p[0].seq)
        for e, (block, frame) in rows:
            del self._mem[e.seq]
            self._disk[e.seq] = seg
            sg.append(e.seq, e.ts, e.size, block, frame, INFLIGHT if e.inflight else PENDING)
            self.memory_bytes -= e.size
            # The heaps and deques may still hold this Entry: drop its bytes now.
            e.rec = None
            e.seg = SPILLED
        self._segments[seg] = sg
        heapq.heappush(self._seg_age, (sg.min_live_ts(), seg))

    def flush_done(self, now: float, *, ok: bool) -> None:
        self._last_flush = now
        if ok:
            self._failures = 0
            self._retry_at = float("-inf")
        else:
            # Retrying a failing disk every interval would re-encode a growing batch;
            # back off exponentially, up to five minutes.
            self._failures += 1
            backoff = self.flush_interval_s * 2 ** min(self._failures, 16)
            self._retry_at = now + min(backoff, max(self.flush_interval_s, _RETRY_MAX_S))

    def count_unstored(self, entries: Iterable[Entry], *, give_up: bool) -> int:
        """Count records a spill could not write (each once); ``give_up``: never retry."""
        n = 0
        for e in entries:
            if not e.unstored:
                e.unstored = True
                n += 1
            if give_up:
                e.seg = UNSTORABLE
        self.unstored += n
        return n

    def unspill(self, seg: int, recovered: dict[int, Record], now: float) -> list[int]:
        """Segment ``seg`` went bad: its records found in ``recovered`` move back to
        memory (due for a new spill now); the rest are forgotten and counted as lost."""
        sg = self._segments.pop(seg, None)
        if seg in self._freed:
            self._freed.remove(seg)
        if sg is None:
            return []
        lost: list[int] = []
        for i, seq in enumerate(sg.seqs):
            state = sg.state[i]
            if state == GONE:
                continue
            del self._disk[seq]
            r = recovered.get(seq)
            if r is not None and r.ts == sg.ts[i] and len(r.data) == sg.sizes[i]:
                e = Entry(r, now, inflight=state == INFLIGHT)
                self._mem[seq] = e
                heapq.heappush(self._by_age, e)
                self._due_offline.append(e)
                self.memory_bytes += e.size
            else:
                self.bytes -= sg.sizes[i]
                if state == PENDING:
                    self.pending -= 1
                lost.append(seq)
        self.lost += len(lost)
        return lost

    def take_freed(self) -> list[int]:
        """Segments that no longer hold an unacked record; the caller deletes them."""
        freed, self._freed = self._freed, []
        return freed

    def tombstones(self) -> list[int]:
        """Seqs still in live segment files whose records are acked or dropped."""
        return [
            seq
            for sg in self._segments.values()
            for seq, state in zip(sg.seqs, sg.state, strict=True)
            if state == GONE
        ]

    # -- loading ---------------------------------------------------------------------

    def saw(self, seq: int) -> None:
        """A seq was found on disk (even one that is not restored)."""
        if self.last_seq is None or seq > self.last_seq:
            self.last_seq = seq

    def load_segment(self, seg: int, found: Sequence[Located], skip: set[int]) -> int:
        """Index an intact segment file; its records come back pending, bytes on disk.

        Seqs in ``skip`` (acked before a clean shutdown) and seqs already held are kept
        as GONE rows, so that close() tombstones them again. Caps are not applied here;
        call settle() and enforce_cap() once every segment is in. Returns rows restored.
        """
        sg = _Segment()
        for loc in sorted(found, key=lambda f: f.record.seq):
            r = loc.record
            size = len(r.data)
            self.saw(r.seq)
            keep = r.seq not in skip and not self.holds(r.seq)
            if keep and size > self.max_bytes:
                self.dropped_cap += 1
                keep = False
            sg.append(
                r.seq, r.ts, size, loc.block_offset, loc.frame_offset, PENDING if keep else GONE
            )
            if keep:
                self._disk[r.seq] = seg
                heapq.heappush(self._by_seq, r.seq)
                heapq.heappush(self._pending, r.seq)
                self.pending += 1
                self.bytes += size
        self._segments[seg] = sg
        heapq.heappush(self._seg_age, (sg.min_live_ts(), seg))
        return sg.live

    def salvage(self, rec: Record, now: float) -> bool:
        """Take in a record read from a damaged file: pending, in memory, due now."""
        self.saw(rec.seq)
        if self.holds(rec.seq):
            return False
        if len(rec.data) > self.max_bytes:
            self.dropped_cap += 1
            return False
        e = Entry(rec, now)
        self._mem[rec.seq] = e
        heapq.heappush(self._by_seq, e.seq)
        heapq.heappush(self._by_age, e)
        heapq.heappush(self._pending, e.seq)
        self._due_offline.append(e)
        self.pending += 1
        self.bytes += e.size
        self.memory_bytes += e.size
        return True

    def settle(self) -> None:
        """After a load: segments left with no live record are freed."""
        for seg in [s for s, sg in self._segments.items() if sg.live == 0]:
            del self._segments[seg]
            self._freed.append(seg)

    # -- internals -------------------------------------------------------------------

    def _remove(self, seq: int) -> bool:
        e = self._mem.pop(seq, None)
        if e is not None:
            # The heaps still point at this Entry until they are compacted: let go of the
            # record's bytes now, so dead entries cost ~100 B, not the sample's size.
            e.rec = None
            self.bytes -= e.size
            self.memory_bytes -= e.size
            if not e.inflight:
                self.pending -= 1
            return True
        sid = self._disk.pop(seq, None)
        if sid is None:
            return False
        sg = self._segments[sid]
        i = sg.index(seq)
        if sg.state[i] == PENDING:
            self.pending -= 1
        sg.state[i] = GONE
        sg.live -= 1
        self.bytes -= sg.sizes[i]
        if sg.live == 0:
            del self._segments[sid]
            self._freed.append(sid)
        return True

    def _first_due(self) -> float | None:
        first: float | None = None
        mem = self._mem
        for dq in (self._due_offline, self._due_live):
            while dq:
                e = dq[0]
                if e.seg == MEMORY and mem.get(e.seq) is e:
                    if first is None or e.due < first:
                        first = e.due
                    break
                dq.popleft()
        return first

    def _clear_orders(self) -> None:
        # Nothing is buffered, so every item left in the heaps and deques is stale. Online,
        # each sample is acked within milliseconds and this runs every sample, so nothing
        # the ledger allocates for a sample outlives it. Left to _maybe_compact(), the seq
        # heap kept ~256 acked seq ints for minutes (at 1 s) among each sample's short-lived
        # objects, and a cycle of that now and then spread onto a fresh pymalloc page: RSS
        # grew 4 KiB at a time (docs/benchmarks.md, agent section).
        self._by_seq.clear()
        self._pending.clear()
        self._by_age.clear()
        self._due_offline.clear()
        self._due_live.clear()
        if not self._segments:
            self._seg_age.clear()

    def _maybe_compact(self) -> None:
        # The memory-side structures are sized by the records in memory, so that the
        # dead Entry objects of spilled records cannot pile up during a long outage.
        mem_limit = 2 * len(self._mem) + _COMPACT_SLACK
        if (
            len(self._by_age) > mem_limit
            or len(self._due_offline) > mem_limit
            or len(self._due_live) > mem_limit
        ):
            self._compact_memory()
        limit = 2 * self.buffered + _COMPACT_SLACK
        if len(self._by_seq) > limit or len(self._pending) > limit:
            self._compact_seqs()

    def _compact_memory(self) -> None:
        mem = self._mem
        self._by_age = list(mem.values())
        heapq.heapify(self._by_age)

        def live(dq: deque[Entry]) -> deque[Entry]:
            return deque(e for e in dq if e.seg == MEMORY and mem.get(e.seq) is e)

        self._due_offline = live(self._due_offline)
        self._due_live = live(self._due_live)

    def _compact_seqs(self) -> None:
        mem = self._mem
        self._by_seq = [*mem, *self._disk]
        heapq.heapify(self._by_seq)
        self._pending = [s for s, e in mem.items() if not e.inflight]
        for sg in self._segments.values():
            self._pending.extend(
                s for s, st in zip(sg.seqs, sg.state, strict=True) if st == PENDING
            )
        heapq.heapify(self._pending)


def _seq_of(e: Entry) -> int:
    return e.seq
