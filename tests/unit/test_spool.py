"""The Spool: what reaches flash, restarts, caps and the API (clock injected, no sleeps).

Damaged files and failing disks: tests/unit/test_spool_damage.py.
"""

from __future__ import annotations

import errno
import itertools
import logging
import math
import os
import random
import threading
import time
from pathlib import Path

import pytest

from agent.spool import Record, Spool
from tests.unit.spool_rig import MARK, WALL0, Rig, drain, messages, peek, sample

# -- kind to flash ---------------------------------------------------------------------


def test_records_acked_within_grace_write_nothing(rig: Rig) -> None:
    spool = rig.open()
    for seq in range(1, 601):  # ten minutes online, 1 s samples, acks after 0.2-4.5 s
        rec = sample(seq, rig.wall.t)
        spool.append(rec, inflight=True)
        rig.advance(spool, 0.2 + (seq % 10) * 0.45 if seq % 3 == 0 else 0.3)
        spool.ack([seq])
        rig.advance(spool, 1.0)
    spool.close()
    assert rig.writes.calls == []
    assert rig.files() == []  # no segment, no tombstone, no corrupt/
    assert spool.unstored == 0 and spool.dropped == 0


def test_acks_within_grace_write_nothing_by_kernel_count(rig: Rig) -> None:
    """The same, measured by the kernel (/proc/self/io) instead of our write seam."""
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("no /proc/self/io")

    def written() -> int:
        line = next(x for x in io.read_text().splitlines() if x.startswith("write_bytes"))
        return int(line.split()[1])

    spool = rig.open()
    before = written()
    for seq in range(1, 301):
        spool.append(sample(seq, rig.wall.t), inflight=True)
        rig.advance(spool, 2.0)
        spool.ack([seq])
    assert written() - before == 0
    spool.close()


def test_record_unacked_past_grace_is_spilled(rig: Rig) -> None:
    spool = rig.open(grace_s=5.0, flush_interval_s=10.0)
    spool.append(sample(1, rig.wall.t), inflight=True)
    rig.advance(spool, 14.5)
    assert rig.segments() == []  # due at 5 s, spilled one flush interval later
    rig.advance(spool, 1.0)
    assert len(rig.segments()) == 1
    assert spool.stats().memory_bytes == 0


def test_offline_records_spill_in_batches_at_most_once_per_interval(rig: Rig) -> None:
    spool = rig.open(flush_interval_s=10.0)
    for seq in range(1, 301):  # five minutes offline
        spool.append(sample(seq, rig.wall.t))
        rig.advance(spool, 1.0)
    times = [t for t, _ in rig.writes.calls]
    assert len(times) == len(rig.segments()) <= 300 // 10 + 1
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(times))
    assert spool.buffered == 300
    # nothing due waits longer than one interval (+ one tick)
    assert rig.clock.t - times[-1] <= 10.5


def test_offline_bytes_per_record_stay_under_one_and_a_half_times_the_data(rig: Rig) -> None:
    spool = rig.open(flush_interval_s=10.0)
    data = 0
    for seq in range(1, 601):
        rec = sample(seq, rig.wall.t, size=random.Random(seq).randint(300, 500))
        data += len(rec.data)
        spool.append(rec)
        rig.advance(spool, 1.0)
    spool.close()
    # What the file system sees is whole pages; count them as the kernel would.
    pages = sum(math.ceil(n / 4096) * 4096 for _, n in rig.writes.calls)
    assert rig.writes.bytes <= 1.5 * data
    assert pages <= 1.5 * data


def test_spilled_records_are_read_back_by_take(rig: Rig) -> None:
    spool = rig.open()
    recs = [sample(s, rig.wall.t) for s in range(1, 21)]
    for r in recs:
        spool.append(r)
    rig.advance(spool, 11)
    stats = spool.stats()
    assert (stats.memory_bytes, stats.bytes) == (0, sum(len(r.data) for r in recs))
    assert spool.take(5, 1 << 20) == recs[:5]
    spool.release([3, 1])
    assert spool.take(100, 1 << 20) == [recs[0], recs[2], *recs[5:]]


def test_a_segment_is_deleted_once_all_its_records_are_acked(rig: Rig) -> None:
    spool = rig.open()
    for s in range(1, 11):
        spool.append(sample(s, rig.wall.t))
    rig.advance(spool, 11)
    (name,) = rig.segments()
    before = os.stat(rig.directory / name)
    got = spool.take(10, 1 << 20)
    spool.ack(r.seq for r in got[:9])
    rig.advance(spool, 30)
    after = os.stat(rig.directory / name)
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
        before.st_ino,
        before.st_mtime_ns,
        before.st_size,
    )  # acks never rewrite a file
    spool.ack([got[9].seq])
    spool.tick()
    assert rig.segments() == []


# -- restart ---------------------------------------------------------------------------


def test_restart_after_kill_recovers_pending_records_in_order(rig: Rig) -> None:
    spool = rig.open()
    recs = [sample(s, rig.wall.t + s) for s in range(1, 41)]
    for r in recs[:20]:
        spool.append(r)
    for r in recs[20:]:
        spool.append(r, inflight=True)
    spool.take(5, 1 << 20)  # in flight when killed: must come back as pending
    rig.advance(spool, 20)
    del spool  # kill -9: no close()
    again = rig.open()
    assert (again.buffered, again.pending) == (40, 40)
    assert peek(again) == recs
    assert again.last_seq == 40


def test_kill_loses_only_records_not_yet_flushed(rig: Rig) -> None:
    spool = rig.open(flush_interval_s=10.0)
    for s in range(1, 96):
        spool.append(sample(s, rig.wall.t))
        rig.advance(spool, 1.0)
    last_write = rig.writes.calls[-1][0]
    del spool
    got = [r.seq for r in peek(rig.open())]
    assert got == list(range(1, len(got) + 1))
    # everything appended before the last flush survived; at most one interval is lost
    assert len(got) >= 95 - 10
    assert got[-1] >= last_write - 1000.0  # seq s was appended at clock 1000 + s - 1


def test_close_then_reopen_loses_nothing_and_resends_nothing(rig: Rig) -> None:
    spool = rig.open()
    recs = [sample(s, rig.wall.t) for s in range(1, 61)]
    for r in recs[:30]:
        spool.append(r)
    rig.advance(spool, 11)  # 1-30 on disk
    for r in recs[30:50]:
        spool.append(r)
    rig.advance(spool, 3)  # 31-50 in memory, not yet due
    for r in recs[50:]:
        spool.append(r, inflight=True)  # 51-60 live, in flight
    got = spool.take(10, 1 << 20)
    spool.ack([got[1].seq, got[4].seq, 33, 52])  # out of order, some in a segment
    spool.release(r.seq for r in got)
    spool.close()
    again = rig.open()
    gone = {2, 5, 33, 52}
    assert peek(again) == [r for r in recs if r.seq not in gone]
    assert again.buffered == 56 and again.dropped == 0
    # and a second restart without close() does not bring the acked records back
    del again
    assert [r.seq for r in peek(rig.open())] == [r.seq for r in recs if r.seq not in gone]


def test_tombstone_does_not_hide_new_records_that_reuse_old_seqs(rig: Rig) -> None:
    spool = rig.open()
    for s in range(1, 11):
        spool.append(sample(s, rig.wall.t))
    rig.advance(spool, 11)
    spool.ack([3])
    spool.close()
    again = rig.open()
    drain(again)
    again.append(sample(3, rig.wall.t))  # e.g. the agent lost its seq counter
    rig.advance(again, 11)
    del again
    assert [r.seq for r in peek(rig.open())] == [3]


def test_close_is_idempotent_and_the_spool_refuses_use_after(rig: Rig) -> None:
    spool = rig.open()
    spool.close()
    spool.close()
    spool.tick()
    with pytest.raises(RuntimeError):
        spool.append(sample(1, rig.wall.t))
    with pytest.raises(RuntimeError):
        spool.take(1, 1)


# -- caps ------------------------------------------------------------------------------


def test_byte_cap_drops_the_oldest_exactly_across_memory_and_disk(rig: Rig) -> None:
    spool = rig.open(max_bytes=10_000)
    recs = [sample(s, rig.wall.t, size=400) for s in range(1, 61)]
    for r in recs[:20]:
        spool.append(r)
    rig.advance(spool, 11)  # 1-20 on disk
    assert len(rig.segments()) == 1
    for r in recs[20:]:
        spool.append(r)
    keep: list[Record] = []
    total = 0
    for r in reversed(recs):
        if total + len(r.data) > 10_000:
            break
        keep.insert(0, r)
        total += len(r.data)
    assert spool.dropped == 60 - len(keep)
    assert spool.buffered == len(keep)
    spool.tick()
    assert rig.segments() == []  # every record of the first segment was dropped
    assert peek(spool) == keep


def test_record_larger_than_the_cap_is_dropped_and_counted(rig: Rig) -> None:
    spool = rig.open(max_bytes=1000)
    spool.append(sample(1, rig.wall.t, size=300))
    spool.append(Record(2, rig.wall.t, b"x" * 1001), inflight=True)
    assert (spool.buffered, spool.dropped) == (1, 1)
    spool.ack([2])  # its PUBACK is then ignored
    assert spool.buffered == 1


def test_age_cap_drops_records_older_than_max_age_by_wall_clock(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    spool = rig.open(max_age_s=3600)
    spool.append(sample(1, rig.wall.t - 7200))  # measured two hours ago
    spool.append(sample(2, rig.wall.t - 1800))
    spool.append(sample(3, rig.wall.t))
    rig.advance(spool, 11)
    assert spool.dropped == 1
    rig.wall.t += 1801  # wall jumps (NTP); the monotonic clock does not
    spool.tick()
    assert spool.dropped == 2
    spool.close()
    rig.wall.t += 3600
    again = rig.open(max_age_s=3600)  # the cap also applies to what is loaded
    assert (again.buffered, again.dropped) == (0, 1)
    warnings = messages(caplog, logging.WARNING)
    assert len([m for m in warnings if "dropped" in m]) == 2  # one per burst, not per record


# -- API details -----------------------------------------------------------------------


def test_take_limits(rig: Rig) -> None:
    spool = rig.open()
    for s in range(1, 6):
        spool.append(sample(s, rig.wall.t, size=400))
    assert spool.take(0, 1 << 20) == []
    assert [r.seq for r in spool.take(2, 1 << 20)] == [1, 2]
    assert [r.seq for r in spool.take(10, 100)] == [3]  # one, even if larger than asked
    assert [r.seq for r in spool.take(10, 900)] == [4, 5]
    assert spool.pending == 0 and spool.buffered == 5


def test_duplicate_seq_is_counted_not_raised(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    spool = rig.open()
    first = sample(1, rig.wall.t)
    spool.append(first)
    for _ in range(3):
        spool.append(sample(1, rig.wall.t + 1))
    assert (spool.buffered, spool.rejected) == (1, 3)
    assert peek(spool) == [first]
    assert len(messages(caplog, logging.ERROR)) == 1


def test_bad_records_raise_value_error(rig: Rig) -> None:
    spool = rig.open()
    for bad in (Record(-1, 0.0, b""), Record(2**64, 0.0, b""), Record(1, math.nan, b"")):
        with pytest.raises(ValueError, match="bad record"):
            spool.append(bad)


def test_logs_never_contain_record_contents(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    spool = rig.open(max_bytes=5000, max_age_s=100)
    for s in range(1, 40):
        spool.append(sample(s, rig.wall.t - (200 if s % 7 == 0 else 0)))
        rig.advance(spool, 1.0)
    rig.writes.fail_with = errno.EIO
    spool.append(sample(1, rig.wall.t))
    rig.advance(spool, 30)
    rig.writes.fail_with = None
    rig.advance(spool, 300)
    spool.close()
    for seg in rig.segments():
        (rig.directory / seg).write_bytes((rig.directory / seg).read_bytes()[:-10])
    (rig.directory / "junk").write_bytes(MARK)
    rig.open()
    assert caplog.records
    for r in caplog.records:
        assert MARK.decode() not in r.getMessage()


def test_concurrent_appends_and_acks_keep_the_counts(rig: Rig) -> None:
    spool = rig.open(max_bytes=1 << 30)
    n = 20_000

    def publish() -> None:
        acked = 0
        while acked < n:
            got = spool.take(100, 1 << 20)
            spool.ack(r.seq for r in got)
            acked += len(got)

    t = threading.Thread(target=publish)
    t.start()
    for s in range(n):
        spool.append(Record(s, WALL0, b"x" * 50))
    t.join(timeout=30)
    assert not t.is_alive()
    assert (spool.buffered, spool.pending) == (0, 0)


def test_append_is_fast_enough(rig: Rig) -> None:
    """The acceptance bar is 50,000 appends/s; best of three to ride out CI noise."""
    data = sample(1, WALL0).data
    best = 0.0
    for attempt in range(3):
        spool = Spool(rig.directory / str(attempt), clock=rig.clock, wall=rig.wall)
        recs = [Record(s, WALL0 + s, data) for s in range(50_000)]  # reaches the 16 MiB cap
        t0 = time.perf_counter()
        for r in recs:
            spool.append(r)
        best = max(best, len(recs) / (time.perf_counter() - t0))
    assert best >= 50_000
