"""The Spool: its files, caps, recovery and failure handling (clock injected, no sleeps)."""

from __future__ import annotations

import errno
import itertools
import json
import logging
import math
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agent.spool.store as store_mod
from agent.spool import Record, Spool
from agent.spool.segment import BLOCK_HEADER, SEGMENT_MAGIC, segment_name

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


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Rig:
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


# -- damage ----------------------------------------------------------------------------


def spill(rig: Rig, n: int, start: int = 1) -> tuple[list[Record], Path]:
    """Write ``n`` records into one new segment and leave the spool as after kill -9."""
    spool = rig.open()
    recs = [sample(s, rig.wall.t) for s in range(start, start + n)]
    for r in recs:
        spool.append(r)
    rig.advance(spool, 11)
    (name,) = [n for n in rig.segments() if int(n[:20]) == max(int(x[:20]) for x in rig.segments())]
    return recs, rig.directory / name


def test_truncated_tail_keeps_the_whole_records_and_sets_the_file_aside(rig: Rig) -> None:
    rng = random.Random(9)
    spool = rig.open()
    recs = [Record(s, rig.wall.t, rng.randbytes(300)) for s in range(1, 11)]
    for r in recs:
        spool.append(r)
    rig.advance(spool, 11)
    (name,) = rig.segments()
    path = rig.directory / name
    os.truncate(path, path.stat().st_size - 500)
    again = rig.open()
    got = peek(again)
    assert 0 < len(got) < 10
    assert got == recs[: len(got)]
    assert again.corrupt == 1
    assert again.lost == 1  # the frame the cut went through; counted in agent.dropped
    assert rig.segments() == []
    assert rig.files("corrupt") == [f"000001-{name}"]
    rig.advance(again, 11)  # the salvaged records are written to a new segment
    assert len(rig.segments()) == 1
    del again
    assert peek(rig.open()) == got


def test_random_bytes_under_a_segment_name_are_set_aside(rig: Rig) -> None:
    recs, _ = spill(rig, 5)
    junk = rig.directory / segment_name(99)
    junk.write_bytes(random.Random(1).randbytes(3000))
    again = rig.open()
    assert peek(again) == recs
    assert again.corrupt == 1
    assert rig.files("corrupt") == [f"000001-{junk.name}"]


def test_bit_flip_in_the_middle_keeps_the_readable_records(rig: Rig) -> None:
    rng = random.Random(3)
    spool = rig.open()
    recs = [Record(s, rig.wall.t, rng.randbytes(300)) for s in range(1, 11)]  # stored raw
    for r in recs:
        spool.append(r)
    rig.advance(spool, 11)
    (name,) = rig.segments()
    path = rig.directory / name
    buf = bytearray(path.read_bytes())
    buf[len(buf) // 2] ^= 0x04
    path.write_bytes(bytes(buf))
    again = rig.open()
    got = peek(again)
    assert len(got) == 9 and set(got) <= set(recs)
    assert again.corrupt == 1


def test_foreign_files_are_set_aside(rig: Rig) -> None:
    recs, _ = spill(rig, 3)
    (rig.directory / "notes.txt").write_text("hello")
    (rig.directory / "subdir").mkdir()
    again = rig.open()
    assert peek(again) == recs
    assert again.corrupt == 1
    assert rig.files("corrupt") == ["000001-notes.txt"]
    assert "subdir" in rig.files()  # directories are left alone


def test_a_shared_directory_is_left_alone(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    rig.directory.mkdir()
    for i in range(20):
        (rig.directory / f"someone-elses-{i}.conf").write_text("x")
    spool = rig.open()
    assert spool.corrupt == 0
    assert len(rig.files()) == 20
    assert len(messages(caplog, logging.ERROR)) == 1


def test_corrupt_dir_keeps_only_the_newest_few(rig: Rig) -> None:
    rig.directory.mkdir()
    for i in range(12):
        (rig.directory / f"junk{i}").write_bytes(b"x" * 10)
        rig.open()
    assert rig.files("corrupt") == [f"{n:06d}-junk{n - 1}" for n in range(8, 13)]


def test_unfinished_temp_files_are_removed(rig: Rig) -> None:
    recs, path = spill(rig, 3)
    (rig.directory / (segment_name(7) + ".tmp")).write_bytes(SEGMENT_MAGIC + b"partial")
    again = rig.open()
    assert peek(again) == recs
    assert again.corrupt == 0
    assert rig.files() == [path.name]


def test_a_damaged_tombstone_is_set_aside(rig: Rig) -> None:
    spool = rig.open()
    for s in range(1, 6):
        spool.append(sample(s, rig.wall.t))
    rig.advance(spool, 11)
    spool.ack([2])
    spool.close()
    (rig.directory / "acked").write_bytes(b"garbage")
    again = rig.open()
    assert again.corrupt == 1
    assert [r.seq for r in peek(again)] == [1, 2, 3, 4, 5]  # at-least-once: 2 comes back


def test_a_segment_damaged_after_the_spill_is_salvaged_at_take(rig: Rig) -> None:
    rng = random.Random(5)
    spool = rig.open()
    recs = [Record(s, rig.wall.t, rng.randbytes(300)) for s in range(1, 11)]
    for r in recs:
        spool.append(r)
    rig.advance(spool, 11)
    (name,) = rig.segments()
    path = rig.directory / name
    buf = bytearray(path.read_bytes())
    buf[len(SEGMENT_MAGIC) + BLOCK_HEADER.size + 3 * 324 + 100] ^= 1  # data of seq 4
    path.write_bytes(bytes(buf))
    got = spool.take(100, 1 << 20)
    assert got == recs[:3] + recs[4:]
    s = spool.stats()
    assert (s.corrupt, s.lost, s.buffered) == (1, 1, 9)
    assert rig.files("corrupt") == [f"000001-{name}"]


def test_a_segment_deleted_behind_our_back_loses_only_its_records(rig: Rig) -> None:
    _, path = spill(rig, 5)
    spool = rig.open()
    path.unlink()
    assert spool.take(10, 1 << 20) == []
    assert (spool.lost, spool.buffered) == (5, 0)


def test_an_oversized_file_under_a_segment_name_is_set_aside_unread(rig: Rig) -> None:
    recs, _ = spill(rig, 3)
    big = rig.directory / segment_name(50)
    with big.open("wb") as f:
        f.write(SEGMENT_MAGIC)
        f.truncate(3 << 20)  # sparse: larger than any segment this spool writes
    again = rig.open(max_bytes=100_000)
    assert peek(again) == recs
    assert again.corrupt == 1 and rig.files("corrupt") == [f"000001-{big.name}"]


def test_a_large_spill_is_split_into_segments_of_about_one_mebibyte(rig: Rig) -> None:
    rng = random.Random(8)
    spool = rig.open(max_bytes=8 << 20)
    recs = [Record(s, rig.wall.t, rng.randbytes(4000)) for s in range(1, 701)]  # 2.8 MB
    for r in recs:
        spool.append(r)
    spool.close()
    sizes = [(rig.directory / n).stat().st_size for n in rig.segments()]
    assert len(sizes) == 3 and max(sizes) <= (1 << 20) + 64 * 1024
    assert peek(rig.open(max_bytes=8 << 20)) == recs


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    files=st.lists(
        st.tuples(
            st.sampled_from([segment_name(1), segment_name(2), "acked", "x.tmp", "junk"]),
            st.binary(max_size=300),
        ),
        max_size=5,
    )
)
def test_never_raises_on_garbage(tmp_path: Path, files: list[tuple[str, bytes]]) -> None:
    d = tmp_path / "garbage"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir()
    for name, content in files:
        (d / name).write_bytes(SEGMENT_MAGIC + content if content[:1] == b"\x00" else content)
    spool = Spool(d, clock=Clock(0.0), wall=Clock(WALL0))
    drain(spool)
    spool.close()


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    raw=st.booleans(),
    edits=st.lists(
        st.tuples(st.integers(0, 10**5), st.binary(max_size=24), st.integers(0, 24)),
        min_size=1,
        max_size=3,
    ),
)
def test_a_damaged_segment_is_set_aside_with_a_reason_and_its_losses_counted(
    tmp_path: Path, raw: bool, edits: list[tuple[int, bytes, int]]
) -> None:
    """Arbitrary damage to a real spilled segment: the spool opens, says which file and why,
    moves it to corrupt/, keeps only original records, and counts at most what is missing
    in ``lost`` (which the sample reports in ``agent.dropped``)."""
    d = tmp_path / "fuzz"
    shutil.rmtree(d, ignore_errors=True)
    clock, wall = Clock(0.0), Clock(WALL0)
    rng = random.Random(7)
    recs = [
        Record(
            s, WALL0, rng.randbytes(200) if raw else json.dumps({"s": s, "p": "ab" * 99}).encode()
        )
        for s in range(1, 21)
    ]
    spool = Spool(d, clock=clock, wall=wall)
    for r in recs:
        spool.append(r)
    clock.t += 11
    spool.tick()
    (seg,) = [p for p in d.iterdir() if p.suffix == ".seg"]
    buf = bytearray(seg.read_bytes())
    for at, data, delete in edits:
        pos = at % (len(buf) + 1)
        buf[pos : pos + delete] = data
    seg.write_bytes(bytes(buf))
    log = logging.getLogger(f"test.spool.fuzz.{tmp_path.name}")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    log.addHandler(handler)
    try:
        again = Spool(d, clock=clock, wall=wall, log=log)
    finally:
        log.removeHandler(handler)
    got = peek(again)
    assert set(got) <= set(recs)
    assert again.lost <= len(recs) - len(got)
    if len(got) < len(recs) or again.corrupt:
        assert again.corrupt == 1
        assert not seg.exists() and len(os.listdir(d / "corrupt")) == 1
        (warning,) = [r.getMessage() for r in seen if r.levelno == logging.WARNING]
        assert warning.startswith(f"spool: {seg.name}: ")
        assert f"at least {again.lost} lost" in warning


# -- failing disks ---------------------------------------------------------------------


def test_full_disk_keeps_records_in_memory_and_warns_once(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """ENOSPC through a stand-in: the spool's write path raises OSError(ENOSPC)."""
    caplog.set_level(logging.INFO)
    spool = rig.open(max_bytes=40_000)
    rig.writes.fail_with = errno.ENOSPC
    recs = [sample(s, rig.wall.t) for s in range(1, 151)]
    for r in recs[:120]:
        spool.append(r)
        rig.advance(spool, 1.0)
    rig.advance(spool, 900)  # many retries, all failing
    s = spool.stats()
    assert s.write_failing and s.memory_bytes == s.bytes
    assert (s.buffered, s.dropped) == (100, 20)  # still capped by max_bytes
    assert 0 < s.unstored <= 120  # each record counted once, however many retries
    assert rig.files() == []  # the temp file of each failed write was removed
    warnings = [m for m in messages(caplog, logging.WARNING) if "cannot write" in m]
    assert len(warnings) == 1 and "ENOSPC" in warnings[0]

    rig.writes.fail_with = None
    for r in recs[120:]:
        spool.append(r)
        rig.advance(spool, 1.0)
    rig.advance(spool, 300)
    infos = [m for m in messages(caplog, logging.INFO) if "recovered" in m]
    assert len(infos) == 1
    assert spool.stats().memory_bytes == 0 and not spool.stats().write_failing
    expected = peek(spool)
    del spool
    assert peek(rig.open(max_bytes=40_000)) == expected


def test_full_disk_at_close_is_reported(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    """ENOSPC through a stand-in, hit by close()."""
    spool = rig.open()
    spool.append(sample(1, rig.wall.t))
    rig.writes.fail_with = errno.ENOSPC
    spool.close()
    assert spool.unstored == 1
    assert rig.files() == []
    assert any("could not be saved" in m for m in messages(caplog, logging.ERROR))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 64 KiB tmpfs, when this process may mount one (root, no container block)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small filesystem needs root")
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_filesystem(small_fs: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock, wall = Clock(0.0), Clock(WALL0)
    rng = random.Random(1)
    spool = Spool(small_fs, clock=clock, wall=wall, max_bytes=1 << 20)
    for s in range(1, 401):  # 400 x 1 KiB of incompressible data into 64 KiB
        spool.append(Record(s, wall.t, rng.randbytes(1024)))
        clock.t += 1
        spool.tick()
    assert spool.unstored > 0 and spool.buffered == 400
    assert not [n for n in os.listdir(small_fs) if n.endswith(".tmp")]
    assert len([m for m in messages(caplog, logging.WARNING) if "ENOSPC" in m]) == 1
    drain(spool)
    for _ in range(40):
        clock.t += 10
        spool.tick()
    assert spool.buffered == 0
    assert len([m for m in messages(caplog, logging.INFO) if "recovered" in m]) <= 1


def test_unusable_directory_falls_back_to_memory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    clock = Clock(0.0)
    spool = Spool(blocker / "spool", clock=clock, wall=Clock(WALL0))
    errors = messages(caplog, logging.ERROR)
    assert len(errors) == 1 and "memory only" in errors[0]
    assert not spool.stats().persistent
    for s in range(1, 31):
        spool.append(sample(s, WALL0))
        clock.t += 1
        spool.tick()
    assert spool.unstored == 30  # each counted once, however many ticks
    assert [r.seq for r in drain(spool)] == list(range(1, 31))
    spool.close()
    assert len(messages(caplog, logging.ERROR)) == 1


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
