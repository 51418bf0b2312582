from __future__ import annotations

import json
from pathlib import Path

import pytest

import agent.state as state_mod
from agent.protocol.atomicfile import tmp_path as staging
from agent.state import STATE_FILE, AgentState, parse_counters
from tests.faultfs import failing_ext4, full_tmpfs


def test_seq_survives_restart_and_costs_one_write_per_block(tmp_path: Path) -> None:
    s = AgentState(tmp_path, block=10)
    first = [s.next_seq() for _ in range(25)]
    assert first == list(range(25))
    reserved = json.loads((tmp_path / STATE_FILE).read_text())["seq_reserved"]
    assert reserved == 30  # three blocks of ten were reserved, one write each
    again = AgentState(tmp_path, block=10)
    assert again.sid == s.sid
    assert again.next_seq() == 30  # skips the rest of the block: never repeats


def test_no_write_within_a_block(tmp_path: Path) -> None:
    s = AgentState(tmp_path, block=100)
    s.next_seq()
    mtime = (tmp_path / STATE_FILE).stat().st_mtime_ns
    for _ in range(50):
        s.next_seq()
    assert (tmp_path / STATE_FILE).stat().st_mtime_ns == mtime


def test_boot_grows_per_connect_and_persists(tmp_path: Path) -> None:
    s = AgentState(tmp_path, boot_block=10)
    used = [s.next_boot() for _ in range(15)]
    assert used == list(range(1, 16))
    again = AgentState(tmp_path, boot_block=10)
    assert again.boot >= max(used)  # the Will of a new connection never reuses a number
    assert again.next_boot() == 21  # after the reserved block: a gap, never a repeat


def test_connect_attempts_cost_one_write_per_boot_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 16: counters.json was written and fsynced on every reconnect attempt."""
    writes: list[bytes] = []
    real = state_mod.write_atomic

    def spy(path: Path, data: bytes) -> None:
        writes.append(data)
        real(path, data)

    monkeypatch.setattr(state_mod, "write_atomic", spy)
    s = AgentState(tmp_path)
    for _ in range(250):
        s.next_boot()
    assert s.boot == 250
    assert len(writes) == 3  # blocks of BOOT_BLOCK = 100
    assert json.loads(writes[-1])["boot"] == 300
    assert state_mod.BOOT_BLOCK == 100


@pytest.mark.parametrize(
    "content", [b"", b"{not json", b'{"sid": 1}', b'{"sid":"a","seq_reserved":-1,"boot":0}']
)
def test_corrupt_state_starts_a_new_lifetime(tmp_path: Path, content: bytes) -> None:
    (tmp_path / STATE_FILE).write_bytes(content)
    s = AgentState(tmp_path)
    assert s.next_seq() == 0
    assert len(s.sid) == 16


def test_unwritable_state_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for a read-only flash (the tests run as root, who may write anywhere)."""
    s = AgentState(tmp_path, block=2)
    s.next_seq()
    old_sid = s.sid

    def refuse(path: Path, data: bytes) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr("agent.state.write_atomic", refuse)
    s.next_seq()
    s.next_seq()
    assert s.sid != old_sid  # a later run reloads the old file, with the old sid
    assert s.next_seq() == 3
    assert s.faults.entries["write.state"].startswith("1 failed since start, still failing")


@pytest.mark.parametrize(
    "content",
    [
        b'{"sid":"a","seq_reserved":1180591620717411303424,"boot":0}',
        b'{"sid":"a","seq_reserved":9007199254740991,"boot":0}',
        b'{"sid":"a","seq_reserved":1,"boot":true}',
        b'{"sid":"a","seq_reserved":1.5,"boot":1}',
        b"[1, 2]",
        b"[" * 5000,
    ],
)
def test_counters_the_wire_cannot_carry_start_a_new_lifetime(
    tmp_path: Path, content: bytes
) -> None:
    with pytest.raises((ValueError, TypeError)):
        parse_counters(content)
    (tmp_path / STATE_FILE).write_bytes(content)
    s = AgentState(tmp_path)
    assert (s.next_seq(), s.next_boot()) == (0, 1)


def test_a_leftover_temp_file_is_swept_at_start(tmp_path: Path) -> None:
    AgentState(tmp_path).next_seq()
    staging(tmp_path / STATE_FILE).write_bytes(b'{"sid": "half a wri')
    again = AgentState(tmp_path)
    assert not staging(tmp_path / STATE_FILE).exists()
    assert again.next_seq() == state_mod.SEQ_BLOCK


def draw(s: AgentState) -> tuple[str, int]:
    seq = s.next_seq()  # as Agent.sample does: the seq first, then the sid it belongs to
    return s.sid, seq


def test_full_disk_new_sid_no_crash_then_recovers(tmp_path: Path) -> None:
    """A real tmpfs filled up: reservations fail with ENOSPC, numbers keep coming under a new
    sid, no temp file is left, and once space is back the state is written again and a
    restart neither repeats a (sid, seq) nor goes back on boot."""
    with full_tmpfs(tmp_path / "flash") as fs:
        d = fs.mnt / "state"
        s = AgentState(d, block=5, boot_block=3)
        first = [draw(s) for _ in range(6)]  # seqs 0-9 reserved on disk
        boots = [s.next_boot() for _ in range(3)]
        fs.fill()
        during = [draw(s) for _ in range(12)]
        boots += [s.next_boot() for _ in range(4)]  # past the reservation: memory only
        assert s.unsaved
        old_sid = first[0][0]
        assert [seq for sid, seq in during if sid == old_sid] == [6, 7, 8, 9]
        assert len({sid for sid, _ in during[4:]}) == 1  # one new sid from seq 10 on
        assert not [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
        entry = s.faults.entries["write.state"]
        assert "ENOSPC" in entry and "still failing" in entry
        s.retry(100.0)  # schedules the first retry
        s.retry(100.0 + state_mod.RETRY_MIN_S)  # still full
        assert s.unsaved
        fs.free()
        s.retry(100.0 + 3 * state_mod.RETRY_MIN_S)
        assert not s.unsaved
        assert "writing again" in s.faults.entries["write.state"]
        after = [draw(s) for _ in range(3)]
        again = AgentState(d, block=5, boot_block=3)
        later = [draw(again) for _ in range(3)]
        issued = first + during + after + later
        assert len(set(issued)) == len(issued), "a (sid, seq) was issued twice"
        assert again.next_boot() > max(boots)


def test_eio_keeps_numbers_unique(tmp_path: Path) -> None:
    """A real EIO: the state's ext4 loses its device's tail (see tests/faultfs.py)."""
    with failing_ext4(tmp_path / "flash", tmp_path / "flash.img") as fs:
        s = AgentState(fs.mnt, block=4)
        before = [draw(s) for _ in range(4)]
        fs.fail()
        during = [draw(s) for _ in range(6)]
        assert "EIO" in s.faults.entries["write.state"]
        assert len(set(before + during)) == 10
        assert {sid for sid, _ in during} == {during[0][0]} != {before[0][0]}


def test_no_directory_means_memory_only() -> None:
    s = AgentState(None)
    assert s.next_seq() == 0
    assert s.next_boot() == 1
