"""Remote config and commands under hostile input and failing flash (issue 16).

The controller and the command processor run in-process on real directories; hooks and the
agent are the pure-logic doubles of test_remote_logic.py. Full disks are real (a small
tmpfs, tests/faultfs.py); where a failure must hit one write out of several, a stand-in
for ``write_atomic`` raises it, and the test says so.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

import agent.remote.commands as commands_mod
import agent.remote.controller as controller_mod
from agent.protocol import WIRE_INT_MAX
from agent.protocol.atomicfile import tmp_path as staging
from agent.protocol.atomicfile import write_atomic
from agent.remote.commands import (
    HORIZON_FILE,
    IDS_FILE,
    MAX_LIFETIME_S,
    CommandFailed,
    CommandProcessor,
    parse_command,
)
from agent.remote.controller import JOURNAL_FILE, STATE_FILE
from agent.remote.desired import Rejected, parse_document
from tests.faultfs import full_tmpfs
from tests.unit.test_remote_logic import WIFI, Clock, FakeHooks, FakeHost, doc, make

HUGE = 1180591620717411303424  # 2^70, the number from issue 16


# -- numbers the wire cannot carry -------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"version": 1180591620717411303424, "config": {}}', "version: a whole number beyond"),
        (b'{"version": 9007199254740992, "config": {}}', "version: a whole number beyond"),
        (b'{"version": 1.0, "config": {}}', "version: must be a whole number from 0 to"),
        (b'{"version": NaN, "config": {}}', "version: must be a finite number, not nan"),
        (
            b'{"version": 1, "config": {"telemetry": {"interval_s": Infinity}}}',
            "config.telemetry.interval_s: must be a finite number, not inf",
        ),
        (
            b'{"version": 1, "config": {"hotspot": {"download_kbps": 1e400}}}',
            "config.hotspot.download_kbps: must be a finite number",
        ),
        (
            b'{"version": 1, "config": {"x": [1, -1180591620717411303424]}}',
            "config.x[1]: a whole number beyond",
        ),
        (b"[" * 5000, "(document): nested more than 16 levels"),
        (
            b'{"version": 1, "config": ' + b'{"a":' * 20 + b"1" + b"}" * 21,
            "config.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nested more than 16",
        ),
        (b'{"version": 1, "config": {"wifi": "\\ud800"}}', "config.wifi: not valid Unicode"),
        (b'{"version": 1, "config": {"\\udfff": 1}}', "config: a key is not valid Unicode"),
        (b'{"version": "\xff"}', "(document): not JSON: not valid UTF-8"),
    ],
)
def test_desired_documents_refuse_what_the_wire_cannot_carry(payload: bytes, error: str) -> None:
    with pytest.raises(Rejected) as exc:
        parse_document(payload)
    assert str(exc.value).startswith(error)


def test_a_huge_version_is_refused_and_never_reported(tmp_path: Path) -> None:
    """Issue 16: the agent applied and reported version 2^70, which stopped central."""
    hooks, host = FakeHooks(), FakeHost()
    c = make(tmp_path, hooks, host, Clock())
    c.on_desired("gw", "t", json.dumps({"version": HUGE, "config": WIFI}).encode())
    (report,) = host.reports
    assert report["state"] == "rejected"
    assert report["version"] is None  # the number is not echoed back to central
    assert report["error"].startswith("version: a whole number beyond")
    assert hooks.calls == []
    c.on_desired("gw", "t", doc(3, WIFI))  # and the next good one is applied
    assert host.reports[-1]["state"] == "applying"


def test_remote_state_written_before_the_limit_is_cleaned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older agent accepted 2^70 and kept it: its entries are dropped, one line each."""
    (tmp_path / STATE_FILE).write_text(
        json.dumps(
            {
                "docs": {"gw": {"version": HUGE, "config": WIFI}, "group/g1": {"version": 2}},
                "acted": {"gw": HUGE, "group/g1": 2},
                "applied": WIFI,
                "report": {"version": HUGE, "state": "applied"},
            }
        )
    )
    hooks, host = FakeHooks(), FakeHost()
    c = make(tmp_path, hooks, host, Clock())
    assert c.docs == {}
    assert c.acted == {"group/g1": 2}
    assert c.applied == WIFI
    assert c.report is None
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 4
    c.on_desired("gw", "t", doc(5, {"telemetry": {"interval_s": 30}}))
    assert host.reports[-1]["state"] == "applying"


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b'{"id":"c1","name":"x","expires_at":NaN}', "expires_at: must be a finite number"),
        (b'{"id":"c1","name":"x","expires_at":Infinity}', "expires_at: must be a finite number"),
        (b'{"id":"c1","name":"x","expires_at":-1e999}', "expires_at: must be a finite number"),
        (b'{"id":"c1","name":"x","expires_at":1180591620717411303424}', "expires_at: a whole"),
        (b'{"id":"c1","name":"x","expires_at":"soon"}', "expires_at: must be a UNIX time"),
        (b'{"id":"c1","name":"x","expires_at":200,"args":{"d":NaN}}', "args.d: must be a finite"),
        (b"[" * 16000, "payload: nested more than"),
        (b'{"id":"c1","name":"x","expires_at":200,"' + b"k" * 9000 + b'":1}', "kkkk"),
    ],
)
def test_commands_refuse_what_the_wire_cannot_carry(payload: bytes, error: str) -> None:
    with pytest.raises(CommandFailed) as exc:
        parse_command(payload, now=100)
    assert str(exc.value).startswith(error)
    assert len(str(exc.value)) < 200


def test_a_nan_expiry_cannot_replay_a_command(tmp_path: Path) -> None:
    """Issue 16: expires_at NaN passed both expiry checks and its id was forgotten at the
    next command, so the same bytes ran again."""
    runs: list[str] = []
    p = CommandProcessor(tmp_path, {"x": lambda a: runs.append("x") or {}}, wall=lambda: 100.0)
    nan = b'{"id":"n1","name":"x","args":{},"expires_at":NaN}'
    first = p.handle("t", nan)
    p.handle("t", b'{"id":"c2","name":"x","args":{},"expires_at":200}')
    again = p.handle("t", nan)
    assert runs == ["x"]  # only c2
    for res in (first, again):
        assert res == {
            "id": "n1",
            "ok": False,
            "ts": 100.0,
            "error": "expires_at: must be a finite number, not nan",
        }


# -- the command id memory fails closed --------------------------------------------------


def runner(tmp_path: Path, now: list[float], runs: list[str]) -> CommandProcessor:
    def reboot(args: dict[str, Any]) -> dict[str, Any]:
        runs.append("reboot")
        return {}

    def get_config(args: dict[str, Any]) -> dict[str, Any]:
        runs.append("get_config")
        return {}

    return CommandProcessor(
        tmp_path,
        {"reboot": reboot, "get_config": get_config},
        wall=lambda: now[0],
        harmless=frozenset({"get_config"}),
    )


def cmd(cid: str, name: str, expires_at: float) -> bytes:
    return json.dumps({"id": cid, "name": name, "args": {}, "expires_at": expires_at}).encode()


@pytest.mark.parametrize("damage", [b"", b"{not json", b"[]", b'{"r1": NaN}', b'{"r/1": 5}'])
def test_a_damaged_id_memory_refuses_what_might_have_run(tmp_path: Path, damage: bytes) -> None:
    """Issue 16: a corrupt command-ids.json made an already-run, unexpired command run again."""
    now, runs = [1_000_000.0], []
    p = runner(tmp_path, now, runs)
    assert p.handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
    (tmp_path / IDS_FILE).write_bytes(damage)
    now[0] += 60
    q = runner(tmp_path, now, runs)
    replay = q.handle("t", cmd("r1", "reboot", 1_000_600.0))
    assert not replay["ok"]
    assert replay["error"].startswith("expires_at: this gateway lost its memory of command ids")
    assert runs == ["reboot"]
    # What cannot have run before: a command expiring after the horizon, a harmless one.
    assert q.handle("t", cmd("r2", "reboot", now[0] + 2 * 3600))["ok"]
    assert q.handle("t", cmd("g1", "get_config", now[0] + 60))["ok"]
    assert runs == ["reboot", "reboot", "get_config"]
    # A restart keeps the rule (the ids file is whole again, the horizon too).
    r = runner(tmp_path, now, runs)
    assert not r.handle("t", cmd("r1", "reboot", 1_000_600.0))["ok"]


def test_a_deleted_id_memory_is_lost_too(tmp_path: Path) -> None:
    now, runs = [1_000_000.0], []
    assert runner(tmp_path, now, runs).handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
    (tmp_path / IDS_FILE).unlink()
    assert not runner(tmp_path, now, runs).handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
    now[0] += 2 * 3600  # past the horizon: every id it could have held has expired
    assert runner(tmp_path, now, runs).handle("t", cmd("r3", "reboot", now[0] + 600))["ok"]
    assert runs == ["reboot", "reboot"]


def test_without_a_horizon_the_bound_is_the_last_write_plus_the_longest_lifetime(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now, runs = [1_000_000.0], []
    assert runner(tmp_path, now, runs).handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
    (tmp_path / HORIZON_FILE).write_bytes(b"garbage")
    (tmp_path / IDS_FILE).write_bytes(b"garbage")
    os.utime(tmp_path / IDS_FILE, (now[0], now[0]))
    q = runner(tmp_path, now, runs)
    assert q.refuse_until == now[0] + MAX_LIFETIME_S
    assert not q.handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
    assert q.handle("t", cmd("r2", "reboot", now[0] + MAX_LIFETIME_S + 1))["ok"] is False  # > 7 d
    now[0] += 3600
    assert q.handle("t", cmd("r2", "reboot", now[0] + MAX_LIFETIME_S))["ok"]
    assert any("lost" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)


def test_ids_that_cannot_be_saved_are_not_run(tmp_path: Path) -> None:
    """A real full tmpfs: a command that changes something is not run when its id cannot
    be put on flash, and runs once there is room again (its id was not kept as 'ran')."""
    with full_tmpfs(tmp_path / "flash") as fs:
        now, runs = [1_000_000.0], []
        p = runner(fs.mnt, now, runs)
        fs.fill()
        res = p.handle("t", cmd("r1", "reboot", now[0] + 600))
        assert not res["ok"]
        assert res["error"].startswith("(state): cannot save the command id")
        assert "ENOSPC" in res["error"]
        assert runs == []
        assert p.handle("t", cmd("g1", "get_config", now[0] + 600))["ok"]  # harmless: runs
        assert [n for n in os.listdir(fs.mnt) if n.endswith(".tmp")] == []
        assert "still failing" in p.faults.entries["write.commands"]
        fs.free()
        assert p.handle("t", cmd("r1", "reboot", now[0] + 600))["ok"]
        assert runs == ["get_config", "reboot"]
        assert "writing again" in p.faults.entries["write.commands"]
        assert "r1" in json.loads((fs.mnt / IDS_FILE).read_text())


def test_the_id_memory_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commands_mod, "MAX_IDS", 3)
    now, runs = [1_000_000.0], []
    p = runner(tmp_path, now, runs)
    for i in range(3):
        assert p.handle("t", cmd(f"r{i}", "reboot", now[0] + 60))["ok"]
    full = p.handle("t", cmd("r9", "reboot", now[0] + 60))
    assert full["error"].startswith("id: 3 unexpired command ids remembered already")
    now[0] += 61  # they expire: room again, nothing forgotten early
    assert p.handle("t", cmd("r9", "reboot", now[0] + 60))["ok"]


# -- the config controller and a full or failing disk -----------------------------------


def test_a_desired_config_on_a_full_disk_is_postponed_not_a_crash(tmp_path: Path) -> None:
    """Issue 16: the journal write raised ENOSPC out of the controller and the agent died."""
    with full_tmpfs(tmp_path / "flash") as fs:
        hooks, host, clock = FakeHooks(), FakeHost(), Clock()
        c = make(fs.mnt / "remote", hooks, host, clock)
        fs.fill()
        c.on_desired("gw", "t", doc(1, WIFI))
        (report,) = host.reports
        assert report["state"] == "rejected"
        assert report["version"] == 1
        assert report["error"].startswith("(state): cannot write applying.json (ENOSPC")
        assert hooks.calls == ["wifi validate"]  # nothing snapshotted, nothing applied
        assert "acted" not in c.__dict__ or c.acted.get("gw") is None
        assert "still failing" in c.faults.entries["write.remote"]
        assert [n for n in os.listdir(fs.mnt / "remote") if n.endswith(".tmp")] == []
        clock.t += controller_mod.RETRY_MIN_S
        c.tick()  # still full: tried again, reported once more
        assert host.reports[-1]["state"] == "rejected"
        fs.free()
        clock.t += 2 * controller_mod.RETRY_MIN_S
        c.tick()
        assert host.reports[-1]["state"] == "applying"
        c.on_ack(host.mid)
        assert host.reports[-1]["state"] == "applied"
        assert c.acted["gw"] == 1
        assert "writing again" in c.faults.entries["write.remote"]
        saved = json.loads((fs.mnt / "remote" / STATE_FILE).read_text())
        assert saved["acted"] == {"gw": 1}


def test_the_journal_failing_between_sections_undoes_the_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in: the second journal write (after the first snapshot) fails with EIO."""
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    journal_writes = []

    def flaky(path: Path, data: bytes) -> None:
        if path.name == JOURNAL_FILE:
            journal_writes.append(data)
            if len(journal_writes) == 2:
                raise OSError(errno.EIO, os.strerror(errno.EIO))
        write_atomic(path, data)

    monkeypatch.setattr(controller_mod, "write_atomic", flaky)
    c.on_desired("gw", "t", doc(1, WIFI))
    assert hooks.calls == ["wifi validate", "wifi snapshot", "wifi restore"]
    assert host.reports[-1]["state"] == "rejected"
    assert "EIO" in host.reports[-1]["error"]
    assert not (tmp_path / JOURNAL_FILE).exists()
    clock.t += controller_mod.RETRY_MIN_S
    c.tick()
    assert hooks.calls[-1] == "wifi apply"


def test_remote_state_that_cannot_be_saved_lives_in_memory_and_is_saved_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stand-in: remote.json alone refuses (EROFS) while the journal works."""
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    refuse = [True]

    def no_state(path: Path, data: bytes) -> None:
        if path.name == STATE_FILE and refuse[0]:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        write_atomic(path, data)

    monkeypatch.setattr(controller_mod, "write_atomic", no_state)
    c.on_desired("gw", "t", doc(1, WIFI))
    c.on_ack(host.mid)
    assert host.reports[-1]["state"] == "applied"
    assert not (tmp_path / STATE_FILE).exists()
    refuse[0] = False
    clock.t += controller_mod.RETRY_MIN_S
    c.tick()
    assert json.loads((tmp_path / STATE_FILE).read_text())["acted"] == {"gw": 1}


def test_a_journal_left_by_a_committed_apply_is_not_rolled_back(tmp_path: Path) -> None:
    """The journal could not be removed after the commit (EIO): the next start sees from
    remote.json that its target is the applied config, and restores nothing."""
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    c.on_desired("gw", "t", doc(1, WIFI))
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    c.on_ack(host.mid)
    (tmp_path / JOURNAL_FILE).write_bytes(journal)  # as if its unlink had failed
    hooks2, host2 = FakeHooks(), FakeHost()
    again = make(tmp_path, hooks2, host2, clock)
    assert hooks2.calls == []
    assert host2.reports == []
    assert again.applied == c.applied
    assert not (tmp_path / JOURNAL_FILE).exists()


@pytest.mark.parametrize(
    "journal",
    [b"", b"[]", b"{", b'{"hooked": "wifi"}', b'{"hooked": ["wifi"], "versions": {"gw": NaN}}'],
)
def test_a_damaged_journal_restores_every_section(tmp_path: Path, journal: bytes) -> None:
    (tmp_path / JOURNAL_FILE).write_bytes(journal)
    hooks, host = FakeHooks(), FakeHost()
    make(tmp_path, hooks, host, Clock())
    assert hooks.calls == ["hotspot restore", "wifi restore"]
    assert host.reports[-1]["state"] == "rolled_back"
    assert not (tmp_path / JOURNAL_FILE).exists()


def test_leftover_temp_files_are_swept_at_start(tmp_path: Path) -> None:
    names = (STATE_FILE, JOURNAL_FILE, IDS_FILE, HORIZON_FILE)
    for name in names:
        staging(tmp_path / name).write_bytes(b"half")
    make(tmp_path, FakeHooks(), FakeHost(), Clock())
    CommandProcessor(tmp_path, {}, wall=time.time)
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []


def test_wire_limit_is_the_protocols() -> None:
    assert WIRE_INT_MAX == 2**53 - 1
    assert math.isfinite(float(WIRE_INT_MAX))


def test_a_stored_report_of_a_refused_document_survives_a_restart(tmp_path: Path) -> None:
    hooks, host = FakeHooks(), FakeHost()
    c = make(tmp_path, hooks, host, Clock())
    c.on_desired("gw", "t", b"{not json")
    assert c.report is not None and c.report["version"] is None
    again = make(tmp_path, FakeHooks(), FakeHost(), Clock())
    assert again.report == c.report


def test_a_committed_apply_that_cleared_every_section_is_not_rolled_back(tmp_path: Path) -> None:
    """The journal of a committed apply whose target is {} (every section removed)."""
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    c.on_desired("gw", "t", doc(1, WIFI))
    c.on_ack(host.mid)
    c.on_desired("gw", "t", doc(2, {}))
    journal = (tmp_path / JOURNAL_FILE).read_bytes()
    c.on_ack(host.mid)
    assert c.applied == {}
    (tmp_path / JOURNAL_FILE).write_bytes(journal)
    hooks2 = FakeHooks()
    make(tmp_path, hooks2, FakeHost(), clock)
    assert hooks2.calls == []


def test_a_snapshot_that_fails_postpones_the_version_instead_of_dropping_it(
    tmp_path: Path,
) -> None:
    """A snapshot hook that cannot write (a full disk: the journal fitted, the snapshot did
    not) used to roll the version back for good (``rolled_back`` is never retried), though
    nothing had changed. Now the sections before it are restored and the same version is
    tried again with back-off until it applies."""
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = make(tmp_path, hooks, host, clock)
    hooks.fail["wifi snapshot"] = "cp: error writing '/x': No space left on device"
    c.on_desired("gw", "t", doc(1, {**WIFI, "hotspot": {"download_kbps": 512}}))
    assert hooks.calls == [
        "hotspot validate",
        "wifi validate",
        "hotspot snapshot",
        "hotspot apply",
        "wifi snapshot",
        "hotspot restore",  # the section applied before it is put back
    ]
    report = host.reports[-1]
    assert report["state"] == "rejected"
    assert "No space left on device" in report["error"]
    assert report["error"].endswith("nothing was changed, and the agent tries again by itself")
    assert c.acted.get("gw") is None
    assert not (tmp_path / JOURNAL_FILE).exists()
    del hooks.fail["wifi snapshot"]
    clock.t += controller_mod.RETRY_MIN_S
    c.tick()
    assert host.reports[-1]["state"] == "applying"
    c.on_ack(host.mid)
    assert host.reports[-1]["state"] == "applied"
    assert c.acted["gw"] == 1
