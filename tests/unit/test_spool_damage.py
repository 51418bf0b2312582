"""The Spool with damaged files and failing disks: what is kept, set aside, counted and said."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.spool import Record, Spool
from agent.spool.segment import BLOCK_HEADER, SEGMENT_MAGIC, segment_name
from tests.unit.spool_rig import WALL0, Clock, Rig, drain, messages, peek, sample

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
