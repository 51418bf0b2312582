"""The durable outbound queue: the Ledger's bookkeeping plus the directory's files.

Records live in memory while they are expected to be acked soon; only records that stay
unacked past ``grace_s``, or that arrive while offline, are spilled, in one batched
segment file per ``flush_interval_s``. See docs/spool.md for the format and the rules.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.protocol.atomicfile import WriteFaults, describe
from agent.spool.ledger import Entry, Ledger, OnDisk
from agent.spool.record import Record
from agent.spool.segment import (
    FRAME_HEADER,
    SegmentDamage,
    Tombstone,
    decode_tombstone,
    encode_segment,
    encode_tombstone,
    record_at,
    scan_segment,
    to_ranges,
)
from agent.spool.store import MAX_SET_ASIDE_PER_LOAD, Listing, SegmentStore, prepare

# A spill is split into segment files of about this much raw data, so one long-unacked
# record pins at most this much disk, and a retry after a failed write stays small.
SEGMENT_RAW_LIMIT = 1 << 20
DROP_REPORT_INTERVAL_S = 60.0
# Read errors that say nothing about the file: retry at the next take().
_TRANSIENT = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EINTR, errno.EAGAIN})
_SEQ_LIMIT = 1 << 64


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool's gauges and counters (counters start at 0 per process)."""

    buffered: int  # records not yet acked (memory + disk)
    pending: int  # records waiting for take()
    in_flight: int  # records taken or appended in flight, not yet acked or released
    bytes: int  # data bytes of the buffered records
    memory_bytes: int  # data bytes of the buffered records held in memory
    dropped: int  # records dropped by the byte cap or the age cap
    corrupt: int  # damaged or foreign files moved aside into corrupt/
    unstored: int  # records a spill could not write (each counted once)
    lost: int  # records in spool files that went bad (a lower bound for files found damaged)
    rejected: int  # appends refused because their seq was already buffered
    persistent: bool  # False: no usable directory, memory only
    write_failing: bool  # the last spill failed; records are held in memory


class Spool:
    """The durable outbound queue of telemetry records (thread-safe).

    Args:
        directory: Where segment files go; created if missing. If it cannot be created
            or written, the spool runs in memory only and logs one error.
        max_bytes: Cap on the data bytes of all unacked records (memory + disk); the
            oldest records are dropped to stay under it.
        max_age_s: Records whose ``ts`` is older than this (by ``wall``) are dropped.
        flush_interval_s: At most one spill (one segment file) per interval.
        grace_s: A record appended in flight is spilled only if still unacked this
            long after it was appended.
        clock: Monotonic seconds, for grace and flush timing.
        wall: UNIX seconds, for the age cap.
        log: Where events go (one line each; record contents are never logged).
        faults: Where failed writes are counted (``write.spool``), for the agent's sample.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int = 16 * 2**20,
        max_age_s: float = 7 * 86400,
        flush_interval_s: float = 10.0,
        grace_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        log: logging.Logger | None = None,
        faults: WriteFaults | None = None,
    ) -> None:
        if max_bytes <= 0 or max_age_s <= 0 or flush_interval_s < 0 or grace_s < 0:
            raise ValueError("spool: max_bytes and max_age_s must be > 0, intervals >= 0")
        self._dir = Path(directory)
        self._clock = clock
        self._wall = wall
        self._log = log or logging.getLogger(__name__)
        self.faults = faults or WriteFaults()
        self._lock = threading.Lock()
        self._ledger = Ledger(
            max_bytes=max_bytes,
            max_age_s=max_age_s,
            grace_s=grace_s,
            flush_interval_s=flush_interval_s,
        )
        self._corrupt = 0
        self._next_seg = 1
        self._closed = False
        self._failing: OSError | None = None
        self._warned_duplicate = False
        self._next_drop_report = float("-inf")
        self._reported_cap = 0
        self._reported_age = 0
        # A segment holds at most SEGMENT_RAW_LIMIT of frames, or one record of up to
        # max_bytes; anything larger under a segment's name is not ours.
        self._read_limit = max(SEGMENT_RAW_LIMIT, max_bytes) + (1 << 16)

        why = prepare(self._dir)
        self._store: SegmentStore | None = None
        if why is not None:
            self._log.error(
                "spool: directory %s is unusable (%s); keeping records in memory only, "
                "they will not survive a restart",
                self._dir,
                why,
            )
        else:
            self._store = SegmentStore(self._dir)
            try:
                self._load(self._store)
            except Exception:
                # A bug here must not become a crash loop; the files stay for a later try.
                self._log.exception("spool: could not load %s; starting empty", self._dir)
        self._ledger.expire(self._wall())
        self._delete_freed()

    # -- the queue -------------------------------------------------------------------

    def append(self, rec: Record, *, inflight: bool = False) -> None:
        """Buffer a record. ``inflight=True``: the caller is publishing it right now.

        Raises ValueError for a seq outside 0..2**64-1 or a ts that is not finite. A seq
        that is already buffered is not stored; it is counted in ``rejected``.
        """
        if not 0 <= rec.seq < _SEQ_LIMIT or not math.isfinite(rec.ts):
            raise ValueError(f"spool: bad record seq={rec.seq!r} ts={rec.ts!r}")
        with self._lock:
            self._check_open()
            ledger = self._ledger
            rejected = ledger.rejected
            ledger.add(rec, inflight=inflight, now=self._clock())
            if ledger.rejected != rejected and not self._warned_duplicate:
                self._warned_duplicate = True
                self._log.error(
                    "spool: seq %d is already buffered, record not stored; seqs must keep "
                    "increasing across restarts (continue after Spool.last_seq)",
                    rec.seq,
                )

    def take(self, max_records: int, max_bytes: int) -> list[Record]:
        """Mark the oldest pending records in flight and return them, oldest first.

        At most ``max_records``, and no more data than ``max_bytes`` except that the
        first record is always returned. Spilled records are read back from disk.
        """
        with self._lock:
            self._check_open()
            ledger = self._ledger
            taken = ledger.take(max_records, max_bytes)
            from_disk = self._read_back([t for t in taken if isinstance(t, OnDisk)])
            out: list[Record] = []
            for t in taken:
                if isinstance(t, Entry):
                    rec = t.rec
                elif t.seq in from_disk:
                    rec = from_disk[t.seq]
                elif ledger.is_in_flight(t.seq):
                    rec = ledger.memory_record(t.seq)  # salvaged from a damaged file
                else:
                    rec = None  # lost with its file, or released after a read error
                if rec is not None:
                    out.append(rec)
            return out

    def ack(self, seqs: Iterable[int]) -> None:
        """The broker has the records: forget them. Unknown seqs are ignored."""
        with self._lock:
            self._ledger.ack(seqs)

    def release(self, seqs: Iterable[int]) -> None:
        """Publishing failed: in-flight records go back to pending, in seq order."""
        with self._lock:
            self._ledger.release(seqs)

    def tick(self) -> None:
        """Apply the age cap, delete emptied segments and spill when due. Call often."""
        with self._lock:
            if self._closed:
                return
            now = self._clock()
            self._ledger.expire(self._wall())
            self._delete_freed()
            if self._ledger.flush_due(now):
                self._spill(self._ledger.due(now), now)
            self._report_drops(now)

    def close(self) -> None:
        """Write every unacked record to disk and fsync; the spool is unusable after."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            ledger = self._ledger
            if self._store is None:
                if ledger.buffered:
                    self._log.warning(
                        "spool: %d unacked records are lost at close: no usable directory",
                        ledger.buffered,
                    )
                return
            self._delete_freed()
            rest = ledger.unspilled()
            if rest and not self._write(self._store, rest):
                self._log.error("spool: %d unacked records could not be saved at close", len(rest))
            self._write_tombstone(self._store)
            self._report_drops(float("inf"))
            self._log.info("spool: closed with %d unacked records on disk", len(ledger.on_disk()))

    # -- stats -----------------------------------------------------------------------

    @property
    def buffered(self) -> int:
        return self._ledger.buffered

    @property
    def pending(self) -> int:
        return self._ledger.pending

    @property
    def dropped(self) -> int:
        return self._ledger.dropped

    @property
    def corrupt(self) -> int:
        return self._corrupt

    @property
    def unstored(self) -> int:
        return self._ledger.unstored

    @property
    def lost(self) -> int:
        return self._ledger.lost

    @property
    def rejected(self) -> int:
        return self._ledger.rejected

    @property
    def last_seq(self) -> int | None:
        """The highest seq appended or found on disk, so seqs can continue after it."""
        return self._ledger.last_seq

    def stats(self) -> SpoolStats:
        with self._lock:
            led = self._ledger
            return SpoolStats(
                buffered=led.buffered,
                pending=led.pending,
                in_flight=led.in_flight,
                bytes=led.bytes,
                memory_bytes=led.memory_bytes,
                dropped=led.dropped,
                corrupt=self._corrupt,
                unstored=led.unstored,
                lost=led.lost,
                rejected=led.rejected,
                persistent=self._store is not None,
                write_failing=self._failing is not None,
            )

    # -- loading ---------------------------------------------------------------------

    def _load(self, store: SegmentStore) -> None:
        listing = store.listing()
        tomb = self._tidy(store, listing)
        ledger = self._ledger
        now = self._clock()
        max_id = tomb.max_segment
        skipped = 0
        segments = 0
        salvaged: list[Record] = []
        for seg, path in listing.segments:
            max_id = max(max_id, seg)
            try:
                buf = store.read(path, self._read_limit)
            except OSError as exc:
                ledger.lost += 1  # we wrote it, so it held at least one record
                self._set_aside(
                    store, path, f"unreadable ({describe(exc)}), at least 1 record lost"
                )
                continue
            if buf is None:
                self._set_aside(store, path, "too large to be a spool segment")
                continue
            scan = scan_segment(buf)
            acked = {f.record.seq for f in scan.found if tomb.covers(seg, f.record.seq)}
            skipped += len(acked)
            if scan.damaged:
                keep = [f.record for f in scan.found if f.record.seq not in acked]
                salvaged.extend(keep)
                # A file under our name held at least one record, even if none can be read.
                lost = scan.unreadable or (0 if scan.found else 1)
                ledger.lost += lost
                self._set_aside(
                    store,
                    path,
                    f"{scan.problems[0]} ({len(scan.problems)} problems), "
                    f"{len(keep)} readable records kept, at least {lost} lost",
                )
                continue
            segments += 1
            ledger.load_segment(seg, scan.found, acked)
        for rec in salvaged:
            ledger.salvage(rec, now)
        ledger.settle()
        ledger.enforce_cap()
        self._next_seg = max_id + 1
        if ledger.buffered or skipped:
            self._log.info(
                "spool: recovered %d records (%d bytes) from %d segments in %s%s",
                ledger.buffered,
                ledger.bytes,
                segments,
                self._dir,
                f"; skipped {skipped} acked before the last shutdown" if skipped else "",
            )

    def _tidy(self, store: SegmentStore, listing: Listing) -> Tombstone:
        """Remove unfinished writes, set foreign files aside, read the tombstone."""
        for path in listing.unfinished:
            # A temp file is a write that never reached its rename: never committed.
            with contextlib.suppress(OSError):
                store.delete(path)
        if listing.unfinished:
            self._log.info(
                "spool: removed %d unfinished writes from %s", len(listing.unfinished), self._dir
            )
        if listing.ignored:
            self._log.info(
                "spool: ignoring %d non-file entries in %s", len(listing.ignored), self._dir
            )
        if len(listing.foreign) > MAX_SET_ASIDE_PER_LOAD:
            # Probably a misconfigured, shared directory: do not move other people's files.
            self._log.error(
                "spool: %s holds %d files that are not spool files; leaving them alone. "
                "Is the spool directory shared with something else?",
                self._dir,
                len(listing.foreign),
            )
        else:
            for path in listing.foreign:
                self._set_aside(store, path, "not a spool file")
        if listing.tombstone is not None:
            try:
                return decode_tombstone(store.read(listing.tombstone, 1 << 24) or b"")
            except (OSError, SegmentDamage) as exc:
                self._set_aside(store, listing.tombstone, _reason(exc))
        return Tombstone(0)

    # -- I/O helpers (called with the lock held) -------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("spool: used after close()")

    def _spill(self, entries: list[Entry], now: float) -> None:
        if self._store is None:
            self._ledger.count_unstored(entries, give_up=True)
            self._ledger.flush_done(now, ok=True)
            return
        self._ledger.flush_done(now, ok=self._write(self._store, entries))

    def _write(self, store: SegmentStore, entries: list[Entry]) -> bool:
        """Write ``entries`` as new segment files; False if any write failed."""
        chunks = _chunks(entries, SEGMENT_RAW_LIMIT)
        written = 0
        for i, chunk in enumerate(chunks):
            data, where = encode_segment([e.rec for e in chunk if e.rec is not None])
            try:
                store.write_segment(self._next_seg, data)
            except OSError as exc:
                self.faults.failed("spool", store.path(self._next_seg).name, exc)
                self._write_failed(exc, [e for c in chunks[i:] for e in c])
                break
            self._ledger.spilled(chunk, self._next_seg, where)
            self._next_seg += 1
            written += len(chunk)
        else:
            self.faults.ok("spool")
            if self._failing is not None:
                self._log.info(
                    "spool: writes to %s recovered; %d records written", self._dir, written
                )
                self._failing = None
        if written:
            try:
                store.sync_dir()
            except OSError as exc:
                self.faults.failed("spool", self._dir.name, exc)
                self._log.warning(
                    "spool: fsync of %s failed (%s); the last spill may not survive a power cut",
                    self._dir,
                    describe(exc),
                )
        return self._failing is None

    def _write_failed(self, exc: OSError, entries: list[Entry]) -> None:
        self._ledger.count_unstored(entries, give_up=False)
        if self._failing is None:
            self._log.warning(
                "spool: cannot write to %s (%s); keeping %d records in memory (capped at "
                "%d bytes) and retrying with back-off",
                self._dir,
                describe(exc),
                len(entries),
                self._ledger.max_bytes,
            )
        self._failing = exc

    def _read_back(self, refs: list[OnDisk]) -> dict[int, Record]:
        store = self._store
        out: dict[int, Record] = {}
        if not refs or store is None:
            return out
        by_seg: dict[int, list[OnDisk]] = {}
        for ref in refs:
            by_seg.setdefault(ref.seg, []).append(ref)
        for seg, es in by_seg.items():
            try:
                blocks = store.read_blocks(seg, {e.block for e in es})
                got = {e.seq: record_at(blocks[e.block], e.frame, e.seq) for e in es}
            except OSError as exc:
                if exc.errno in _TRANSIENT:
                    self._ledger.release(e.seq for e in es)
                    self._log.warning(
                        "spool: reading %s failed (%s); will retry",
                        store.path(seg).name,
                        describe(exc),
                    )
                    continue
                self._salvage(store, seg, _reason(exc))
                continue
            except SegmentDamage as exc:
                self._salvage(store, seg, str(exc))
                continue
            out.update(got)
        return out

    def _salvage(self, store: SegmentStore, seg: int, why: str) -> None:
        """A spilled segment went bad: keep what still reads, set the file aside."""
        path = store.path(seg)
        recovered: dict[int, Record] = {}
        try:
            buf = store.read(path, self._read_limit)
        except OSError:
            buf = None
        if buf is not None:
            for f in scan_segment(buf).found:
                recovered.setdefault(f.record.seq, f.record)
        lost = self._ledger.unspill(seg, recovered, self._clock())
        self._set_aside(store, path, f"{why}; {len(lost)} records lost")

    def _set_aside(self, store: SegmentStore, path: Path, why: str) -> None:
        self._corrupt += 1
        self._log.warning("spool: %s: %s; moving it to corrupt/", path.name, why)
        store.set_aside(path, self._log)

    def _delete_freed(self) -> None:
        freed = self._ledger.take_freed()
        if self._store is None:
            return
        for seg in freed:
            try:
                self._store.delete(self._store.path(seg))
            except OSError as exc:
                # Harmless: its records may be sent again after a restart.
                self._log.debug("spool: could not delete segment %d: %s", seg, describe(exc))

    def _write_tombstone(self, store: SegmentStore) -> None:
        """Record acks that hit segments still holding unacked records (close() only)."""
        acked = self._ledger.tombstones()
        if not acked:
            return
        t = Tombstone(self._next_seg - 1, to_ranges(acked))
        try:
            store.write_tombstone(encode_tombstone(t))
            store.sync_dir()
        except OSError as exc:
            self.faults.failed("spool", "acked", exc)
            self._log.warning(
                "spool: could not save acks (%s); %d acked records may be sent again",
                describe(exc),
                len(acked),
            )

    def _report_drops(self, now: float) -> None:
        led = self._ledger
        cap = led.dropped_cap - self._reported_cap
        age = led.dropped_age - self._reported_age
        if (cap or age) and now >= self._next_drop_report:
            self._log.warning(
                "spool: dropped %d records (%d oldest over the %d-byte cap, %d older than "
                "%gs); %d dropped since start",
                cap + age,
                cap,
                led.max_bytes,
                age,
                led.max_age_s,
                led.dropped,
            )
            self._reported_cap = led.dropped_cap
            self._reported_age = led.dropped_age
            self._next_drop_report = now + DROP_REPORT_INTERVAL_S


def _chunks(entries: list[Entry], limit: int) -> list[list[Entry]]:
    out: list[list[Entry]] = []
    size = 0
    for e in entries:
        if not out or size + e.size + FRAME_HEADER.size > limit:
            out.append([])
            size = 0
        out[-1].append(e)
        size += e.size + FRAME_HEADER.size
    return out


def _reason(exc: BaseException) -> str:
    return describe(exc) if isinstance(exc, OSError) else str(exc)
