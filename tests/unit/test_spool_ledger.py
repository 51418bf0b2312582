"""The spool's pure bookkeeping (agent.spool.ledger), without any disk."""

from __future__ import annotations

import pytest

from agent.spool.ledger import Entry, Ledger, OnDisk
from agent.spool.record import Record
from agent.spool.segment import Located


def ledger(**kw: float) -> Ledger:
    args: dict[str, float] = {
        "max_bytes": 10_000,
        "max_age_s": 1000.0,
        "grace_s": 5.0,
        "flush_interval_s": 10.0,
    }
    args.update(kw)
    return Ledger(
        max_bytes=int(args["max_bytes"]),
        max_age_s=args["max_age_s"],
        grace_s=args["grace_s"],
        flush_interval_s=args["flush_interval_s"],
    )


def rec(seq: int, size: int = 10, ts: float = 1000.0) -> Record:
    return Record(seq, ts, bytes([seq % 256]) * size)


def seqs(entries: list[Entry | OnDisk] | list[Entry]) -> list[int]:
    return [e.seq for e in entries]


def test_take_returns_oldest_pending_and_marks_them_in_flight() -> None:
    led = ledger()
    for s in (3, 1, 2, 5, 4):
        led.add(rec(s), inflight=False, now=0)
    led.add(rec(6), inflight=True, now=0)
    assert seqs(led.take(3, 10**6)) == [1, 2, 3]
    assert (led.pending, led.in_flight, led.buffered) == (2, 4, 6)
    assert seqs(led.take(10, 10**6)) == [4, 5]
    assert led.take(10, 10**6) == []


def test_take_limits_records_and_bytes_but_always_returns_one() -> None:
    led = ledger()
    led.add(rec(1, size=500), inflight=False, now=0)
    led.add(rec(2, size=10), inflight=False, now=0)
    led.add(rec(3, size=10), inflight=False, now=0)
    assert led.take(0, 10**6) == []
    assert seqs(led.take(5, 100)) == [1]  # larger than max_bytes, but it must not block
    assert seqs(led.take(5, 15)) == [2]  # stops before going over, keeps order
    assert seqs(led.take(5, 15)) == [3]


def test_release_puts_records_back_in_seq_order() -> None:
    led = ledger()
    for s in range(1, 7):
        led.add(rec(s), inflight=False, now=0)
    assert seqs(led.take(4, 10**6)) == [1, 2, 3, 4]
    led.release([3, 1, 99, 5])  # 99 unknown, 5 is pending: both ignored
    assert led.pending == 4
    assert seqs(led.take(10, 10**6)) == [1, 3, 5, 6]


def test_ack_forgets_pending_and_in_flight_and_ignores_unknown() -> None:
    led = ledger()
    for s in range(1, 5):
        led.add(rec(s), inflight=False, now=0)
    led.take(2, 10**6)
    assert led.ack([2, 3, 42]) == 2
    assert (led.buffered, led.pending, led.bytes) == (2, 1, 20)
    led.ack([2])  # twice is harmless
    assert seqs(led.take(10, 10**6)) == [4]


def test_byte_cap_drops_the_oldest_exactly() -> None:
    led = ledger(max_bytes=100)
    for s in range(1, 16):
        led.add(rec(s), inflight=False, now=0)
    assert (led.buffered, led.dropped, led.bytes) == (10, 5, 100)
    assert seqs(led.take(100, 10**6)) == list(range(6, 16))


def test_byte_cap_counts_in_flight_records_as_oldest_too() -> None:
    led = ledger(max_bytes=30)
    for s in (1, 2, 3):
        led.add(rec(s), inflight=False, now=0)
    led.take(1, 10**6)  # 1 in flight
    led.add(rec(4), inflight=True, now=0)
    assert not led.holds(1)
    assert led.dropped == 1
    led.ack([1])  # the late PUBACK of a dropped record is ignored
    assert led.buffered == 3


def test_record_larger_than_cap_is_dropped_and_counted() -> None:
    led = ledger(max_bytes=100)
    led.add(rec(1), inflight=False, now=0)
    assert not led.add(rec(2, size=101), inflight=True, now=0)
    assert (led.buffered, led.dropped, led.dropped_cap) == (1, 1, 1)


def test_age_cap_uses_the_record_ts() -> None:
    led = ledger(max_age_s=100)
    led.add(rec(1, ts=50), inflight=False, now=0)
    led.add(rec(2, ts=10), inflight=True, now=0)  # older ts, higher seq
    led.add(rec(3, ts=200), inflight=False, now=0)
    assert led.expire(110) == 0  # cutoff 10: ts 10 is exactly 100 s old, not older
    assert led.expire(151) == 2  # cutoff 51
    assert (led.buffered, led.dropped_age, led.pending) == (1, 2, 1)


def test_duplicate_seq_is_rejected_not_replaced() -> None:
    led = ledger()
    assert led.add(rec(1, size=5), inflight=False, now=0)
    assert not led.add(rec(1, size=7), inflight=False, now=0)
    assert (led.rejected, led.bytes, led.dropped) == (1, 5, 0)
    led.ack([1])
    assert led.add(rec(1, size=7), inflight=False, now=0)  # acked: the seq is free again


def test_offline_record_is_due_at_once_and_flushed_one_interval_later() -> None:
    led = ledger()
    led.add(rec(1), inflight=False, now=100)
    assert seqs(led.due(100)) == [1]
    assert not led.flush_due(109.9)
    assert led.flush_due(110)


def test_live_record_is_due_only_after_grace() -> None:
    led = ledger()
    led.add(rec(1), inflight=True, now=100)
    assert led.due(104.9) == []
    assert seqs(led.due(105)) == [1]
    assert not led.flush_due(114.9)
    assert led.flush_due(115)


def test_acked_record_is_never_due() -> None:
    led = ledger()
    led.add(rec(1), inflight=True, now=100)
    led.ack([1])
    assert not led.flush_due(10**6)
    assert led.due(10**6) == []


def test_spills_are_at_least_one_interval_apart() -> None:
    led = ledger()
    led.add(rec(1), inflight=False, now=0)
    assert led.flush_due(10)
    led.spilled(led.due(10), 1, [(8, 0)])
    led.flush_done(10, ok=True)
    led.add(rec(2), inflight=False, now=11)
    led.add(rec(3), inflight=False, now=15)
    assert not led.flush_due(20.9)
    assert led.flush_due(21)
    assert seqs(led.due(21)) == [2, 3]


def test_failed_spill_backs_off() -> None:
    led = ledger()
    led.add(rec(1), inflight=False, now=0)
    led.flush_done(10, ok=False)
    assert not led.flush_due(20)  # back-off 2 intervals
    assert led.flush_due(30)
    led.flush_done(30, ok=False)
    assert not led.flush_due(60)
    assert led.flush_due(70)
    led.flush_done(70, ok=True)
    assert led.flush_due(80)


def test_spilled_records_keep_no_bytes_in_memory() -> None:
    led = ledger()
    for s in (1, 2):
        led.add(rec(s), inflight=False, now=0)
    assert led.memory_bytes == 20
    batch = led.due(0)
    led.spilled(batch, 7, [(8, 0), (8, 34)])
    assert (led.memory_bytes, led.bytes) == (0, 20)
    assert all(e.rec is None for e in batch)  # even a stale heap item holds no bytes
    assert led.memory_record(1) is None
    assert led.on_disk() == [1, 2]
    assert led.take(5, 10**6) == [OnDisk(1, 7, 8, 0), OnDisk(2, 7, 8, 34)]


def test_segment_is_freed_when_its_last_record_goes() -> None:
    led = ledger(max_bytes=20)
    for s in (1, 2):
        led.add(rec(s), inflight=False, now=0)
    led.spilled(led.due(0), 1, [(8, 0), (8, 34)])
    led.ack([1])
    assert led.take_freed() == []
    assert led.tombstones() == [1]
    led.add(rec(3), inflight=False, now=0)
    led.add(rec(4), inflight=False, now=0)  # byte cap drops 2, the last one in segment 1
    assert led.take_freed() == [1]
    assert led.tombstones() == []


def test_count_unstored_counts_each_record_once() -> None:
    led = ledger()
    for s in (1, 2):
        led.add(rec(s), inflight=False, now=0)
    assert led.count_unstored(led.due(0), give_up=False) == 2
    assert led.count_unstored(led.due(0), give_up=False) == 0
    assert led.unstored == 2
    led.count_unstored(led.due(0), give_up=True)
    assert led.due(0) == [] and not led.flush_due(10**6) and led.unspilled() == []
    assert led.memory_record(1) == rec(1)


def test_unspill_keeps_recovered_records_and_counts_the_rest_lost() -> None:
    led = ledger()
    for s in (1, 2, 3):
        led.add(rec(s), inflight=False, now=0)
    led.spilled(led.due(0), 4, [(8, 0), (8, 34), (8, 68)])
    led.take(1, 10**6)  # 1 in flight when its file goes bad
    lost = led.unspill(4, {1: rec(1), 3: Record(3, 1000.0, b"different size")}, now=50)
    assert lost == [2, 3]
    assert (led.buffered, led.lost, led.memory_bytes, led.pending) == (1, 2, 10, 0)
    assert led.memory_record(1) == rec(1) and led.is_in_flight(1)
    assert seqs(led.due(50)) == [1]
    assert led.take_freed() == []  # the file is set aside, not deleted


def located(seq: int, size: int = 10, ts: float = 1000.0) -> Located:
    return Located(rec(seq, size, ts), 8, seq * 34)


def test_load_then_caps_apply_once_every_segment_is_in() -> None:
    led = ledger(max_bytes=25)
    led.load_segment(1, [located(3), located(1)], skip=set())
    led.load_segment(2, [located(2)], skip=set())
    led.settle()
    assert led.take_freed() == []
    assert led.enforce_cap() == 1  # seq 1 goes; segment 1 still holds 3
    assert led.take_freed() == []
    assert seqs(led.take(10, 10**6)) == [2, 3]
    assert led.take(1, 10**6) == []


def test_load_skips_acked_and_duplicate_seqs_but_remembers_them() -> None:
    led = ledger()
    assert led.load_segment(1, [located(1), located(2), located(3)], skip={2}) == 2
    assert led.load_segment(2, [located(3), located(4)], skip=set()) == 1
    assert led.on_disk() == [1, 3, 4]
    assert sorted(led.tombstones()) == [2, 3]  # close() must tombstone them again
    assert led.last_seq == 4


def test_settle_frees_segments_whose_records_were_all_skipped() -> None:
    led = ledger()
    led.load_segment(1, [located(1), located(2)], skip={1, 2})
    led.settle()
    assert led.take_freed() == [1]


def test_spilled_records_can_be_taken_released_and_acked() -> None:
    led = ledger()
    led.load_segment(5, [located(s) for s in (1, 2, 3, 4)], skip=set())
    led.add(rec(6), inflight=False, now=0)
    assert seqs(led.take(3, 10**6)) == [1, 2, 3]
    assert led.is_in_flight(2) and not led.is_in_flight(4)
    led.release([3, 2, 4])  # 4 is pending: ignored
    assert seqs(led.take(2, 10**6)) == [2, 3]
    led.ack([1, 2, 3, 4])
    assert led.take_freed() == [5]
    assert (led.buffered, led.pending, led.bytes) == (1, 1, 10)


def test_age_cap_reaches_spilled_records() -> None:
    led = ledger(max_age_s=100)
    led.load_segment(1, [located(1, ts=10), located(2, ts=500), located(3, ts=20)], skip=set())
    led.add(rec(4, ts=15), inflight=False, now=0)
    assert led.expire(115) == 1  # cutoff 15: ts 10 (disk); ts 15 is not older
    assert led.expire(121) == 2  # cutoff 21: ts 15 (memory) and ts 20 (disk)
    assert led.on_disk() == [2] and led.dropped_age == 3
    assert led.expire(10**6) == 1
    assert led.take_freed() == [1]


def test_spilled_record_index_is_small() -> None:
    """Spilled records cost an index row, not their bytes (docs/spool.md, "Memory")."""
    import gc
    import tracemalloc

    led = ledger(max_bytes=10**9)
    n = 5000
    tracemalloc.start()
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for s in range(1, n + 1):
        led.add(Record(s, 1000.0 + s, b"x" * 400), inflight=False, now=s)
        if s % 10 == 0:
            batch = led.due(s)
            led.spilled(batch, s, [(8, 24 * i) for i in range(len(batch))])
    gc.collect()
    per_record = (tracemalloc.get_traced_memory()[0] - before) / n
    tracemalloc.stop()
    assert led.memory_bytes == 0
    assert per_record < 250  # about 220 here; the data alone would be 400


@pytest.mark.parametrize("inflight", [False, True])
def test_stale_index_items_do_not_grow_without_bound(inflight: bool) -> None:
    led = ledger(max_bytes=10**9)
    for s in range(10_000):
        led.add(rec(s), inflight=inflight, now=s)
        if not inflight:
            led.take(1, 10**6)
        led.ack([s])
    assert led.buffered == 0
    sizes = [len(led._by_seq), len(led._by_age), len(led._pending)]
    sizes += [len(led._due_live), len(led._due_offline)]
    assert max(sizes) <= 2 * 1024 + 1


def test_online_steady_state_holds_nothing_between_samples() -> None:
    # Each sample is appended in flight and acked within milliseconds. The ledger then holds
    # no stale heap or deque items at all, so nothing it allocated for one sample outlives
    # that sample (medium-lived leftovers are what spread pymalloc's pages: RSS creep).
    led = ledger(max_bytes=10**9)
    for s in range(1000):
        led.add(rec(s), inflight=True, now=s)
        led.ack([s])
        sizes = [len(led._by_seq), len(led._by_age), len(led._pending)]
        sizes += [len(led._due_live), len(led._due_offline), len(led._seg_age)]
        assert sizes == [0] * 6
    # Something still buffered keeps its items: the stale ones go at compaction as before.
    led.add(rec(2000), inflight=True, now=2000)
    led.add(rec(2001), inflight=True, now=2000)
    led.ack([2000])
    assert led.buffered == 1
    assert len(led._by_seq) == 2
    assert seqs(led.due(2000 + 5.0)) == [2001]


def test_last_seq_is_the_highest_seen() -> None:
    led = ledger()
    assert led.last_seq is None
    led.add(rec(5), inflight=False, now=0)
    led.add(rec(3), inflight=False, now=0)
    led.saw(9)
    assert led.last_seq == 9
