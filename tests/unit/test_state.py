from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.state import STATE_FILE, AgentState


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
    s = AgentState(tmp_path)
    assert [s.next_boot(), s.next_boot()] == [1, 2]
    assert AgentState(tmp_path).next_boot() == 3


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


def test_no_directory_means_memory_only() -> None:
    s = AgentState(None)
    assert s.next_seq() == 0
    assert s.next_boot() == 1
