"""Agent upgrades in waves (central/rollout/upgrade.py and the engine's upgrade_step): cohorts
spread over several commands, the maintenance window in local time, the latest step of each
gateway, the failure-rate halt and the canary against its control cohort, on a fleet in
memory whose gateways answer the upgrade command as agent/remote/upgrade.py does (the real
agents are in tests/integration/test_sim_upgrade.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent.protocol.cohort import in_cohort
from central.rollout.engine import (
    RolloutStatus,
    Run,
    abort,
    from_dict,
    pause,
    progress,
    resume,
    start,
    step,
    to_dict,
)
from central.rollout.plan import Limits, Plan, PlanError, check_plan, documents
from central.rollout.upgrade import UpgradeSpec, UpgradeWindow, step_percents
from central.store.base import DeviceState
from central.store.rollouts import RolloutStore, StepRow, answer_step, merge, outcome, rollout_of

IDS = [f"gw-{n:04d}" for n in range(2000)]
MANIFEST = {"version": "0.2.0", "min_from": "0.1.0", "packages": [], "sig": {"kid": "k"}}
JKT = ZoneInfo("Asia/Jakarta")


def at(hhmm: str, day: int = 7) -> float:
    """A UNIX time at HH:MM Jakarta time on 2026-12-<day>."""
    h, m = (int(x) for x in hhmm.split(":"))
    return datetime(2026, 12, day, h, m, tzinfo=JKT).timestamp()


def upgrade_plan(
    *, window: str | None = None, steps: int = 4, spread_s: float = 600, **limits: Any
) -> Plan:
    spec = UpgradeSpec(MANIFEST, 60, steps, spread_s, window, "Asia/Jakarta", at("00:00", 13))
    lim = Limits(**{"soak_s": 120, "max_failures": 1, "max_failures_percent": True, **limits})
    return Plan("up-1", "g1", (1, 10, 50, 100), 0, {"agent": "0.2.0"}, {}, lim, spec)


def new_run(p: Plan) -> Run:
    cmds, restore = documents(p)
    assert restore == {}
    return Run(p, tuple({**c, "sig": {"kid": "k"}} for c in cmds), restore)


@dataclass
class Fleet:
    """Gateways that answer upgrade commands as the agent does: outside the cohort
    ``skipped``; the first time inside ``confirmed`` (or ``rolled_back`` if broken); later
    ``is running already`` (or, once rolled back, the agent's refusal to retry)."""

    states: dict[str, DeviceState] = field(default_factory=dict)
    steps: dict[str, StepRow] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)
    hot: set[str] = field(default_factory=set)  # run 30 points hotter once upgraded
    silent: bool = False  # the gateways never answer
    started: list[float] = field(default_factory=list)  # the cohort reached per command

    def __post_init__(self) -> None:
        for d in IDS:
            self.states[d] = DeviceState(d, groups=["g1"], online=True, cpu_pct=20.0)

    def members(self, group: str) -> list[str]:
        return sorted(d for d, s in self.states.items() if group in s.groups)

    def state(self, device: str) -> DeviceState | None:
        return self.states.get(device)

    def report(self, device: str) -> None:
        return None

    def answer(self, d: str, body: dict[str, Any]) -> None:
        step, ok, error = answer_step(body)
        kept = merge(self.steps.get(d), StepRow(d, body["id"], step, ok, error, 0.0))
        if kept is not None:
            self.steps[d] = kept

    def publish(self, cmd: dict[str, Any]) -> None:
        sel = cmd["args"]["rollout"]
        new = 0
        for d in IDS:
            cid = cmd["id"]
            if self.silent:
                continue
            if not in_cohort(sel["id"], d, sel["percent"]):
                self.answer(d, {"id": cid, "ok": True, "result": {"step": "skipped"}})
                continue
            old = self.steps.get(d)
            if old is not None and (old.step == "rolled_back" or old.failures):
                self.answer(d, {"id": cid, "ok": False, "error": "rolled back from 0.2.0 already"})
            elif old is not None and outcome(old) == "done":
                self.answer(d, {"id": cid, "ok": False, "error": "0.2.0 is running already"})
            else:
                new += 1
                self.answer(d, {"id": cid, "ok": True, "result": {"step": "verified"}})
                last = "rolled_back" if d in self.broken else "confirmed"
                self.answer(d, {"id": cid, "ok": last == "confirmed", "step": last})
                if d in self.hot:
                    self.states[d] = replace(self.states[d], cpu_pct=50.0)
        self.started.append(new)


def drive(
    run: Run, fleet: Fleet, *, now: float = 0.0, until: float = 20_000, every: float = 30
) -> tuple[Run, float]:
    """Step the rollout every ``every`` seconds from ``now`` until it ends."""
    run, pubs = start(run, now)
    for p in pubs:
        fleet.publish(dict(p.payload))
    while not run.status.final and now < until:
        now += every
        run, pubs, _ = step(run, now, fleet, fleet.steps)
        for p in pubs:
            assert p.command
            fleet.publish(dict(p.payload))
    return run, now


def test_each_wave_is_spread_over_its_commands_and_cohorts_nest() -> None:
    assert step_percents((1, 10, 50, 100), 4) == [
        0.25, 0.5, 0.75, 1, 3.25, 5.5, 7.75, 10, 20, 30, 40, 50, 62.5, 75, 87.5, 100,
    ]  # fmt: skip
    cmds, _ = documents(upgrade_plan())
    assert [c["id"] for c in cmds[:5]] == [
        "up:up-1:1.1", "up:up-1:1.2", "up:up-1:1.3", "up:up-1:1.4", "up:up-1:2.1",
    ]  # fmt: skip
    assert {rollout_of(c["id"]) for c in cmds} == {"up-1"}
    assert all(c["name"] == "upgrade" and c["args"]["manifest"] == MANIFEST for c in cmds)
    fleet = Fleet()
    run, _ = drive(new_run(upgrade_plan()), fleet)
    assert run.status is RolloutStatus.COMPLETED, run.events
    # Every gateway started once, in 16 commands: none carried more than a quarter of a wave.
    assert sum(fleet.started) == len(IDS)
    assert max(fleet.started) <= 0.125 * len(IDS) + 30
    assert all(outcome(fleet.steps[d]) == "done" for d in IDS)
    assert progress(run) == 100


def test_commands_of_a_wave_are_spread_in_time_and_soaked_after_the_last() -> None:
    run = new_run(upgrade_plan(spread_s=600))
    fleet = Fleet()
    run, pubs = start(run, 0)
    sent_at = [0.0] * len(pubs)
    for p in pubs:
        fleet.publish(dict(p.payload))
    now = 0.0
    while run.wave < 1 and not run.status.final:
        now += 10
        run, pubs, _ = step(run, now, fleet, fleet.steps)
        sent_at += [now] * len(pubs)
        for p in pubs:
            fleet.publish(dict(p.payload))
    # wave 1: 4 commands 200 s apart, then 120 s of soak before wave 2's first command
    assert sent_at == [0, 200, 400, 600, 720]


def test_commands_wait_for_the_maintenance_window_in_jakarta_time() -> None:
    w = UpgradeWindow.parse("01:00-03:00")
    assert w.inside(at("01:00")) and w.inside(at("02:59")) and not w.inside(at("03:00"))
    assert w.next_open(at("12:00")) == at("01:00", 8)
    night = UpgradeWindow.parse("22:00-04:00", "Asia/Jakarta")
    assert night.inside(at("23:30")) and night.inside(at("03:59")) and not night.inside(at("04:00"))
    run = new_run(upgrade_plan(window="01:00-03:00", spread_s=3600))
    fleet = Fleet()
    run, pubs = start(run, at("12:00"))
    assert pubs == [] and run.next_at == at("01:00", 8)
    assert "waiting for the maintenance window 01:00-03:00" in (run.note or "")
    assert "2026-12-08 01:00 Asia/Jakarta" in run.events[-1]
    run, _ = drive(run, fleet, now=at("12:00"), until=at("12:00", 12), every=60)
    assert run.status is RolloutStatus.COMPLETED
    sent = [e for e in run.events if " command " in e]
    for e in sent:  # every command inside 01:00-03:00 Jakarta time
        local = datetime.fromtimestamp(float(e.split()[0]), JKT)
        assert 60 <= local.hour * 60 + local.minute < 180, e
    days = {datetime.fromtimestamp(float(e.split()[0]), JKT).day for e in sent}
    assert len(days) >= 2  # a window holds only so much: the rest waited for the next night


def test_a_wave_whose_failure_rate_passes_the_threshold_halts_and_publishes_nothing() -> None:
    fleet = Fleet(broken=set(IDS[::50]))  # 2 %
    run, _ = drive(new_run(upgrade_plan(max_failures=1)), fleet)
    assert run.status is RolloutStatus.HALTED
    assert run.wave <= 1, run.reason  # the canary or the first wave
    assert "failed its gate" in (run.reason or "") and "rolled back" in (run.reason or "")
    assert "no further command is sent" in run.events[-1]
    # the later waves never went out: the gateways outside them never heard of the release
    assert run.sent < 16
    assert sum(1 for r in fleet.steps.values() if outcome(r) == "none") > len(IDS) // 2


def test_failures_under_the_threshold_pass() -> None:
    fleet = Fleet(broken={IDS[0]})
    run, _ = drive(new_run(upgrade_plan(max_failures=5)), fleet)
    assert run.status is RolloutStatus.COMPLETED


def test_the_canary_is_compared_with_its_control_cohort() -> None:
    fleet = Fleet(hot=set(IDS))  # every upgraded gateway runs 30 points hotter
    run, _ = drive(new_run(upgrade_plan(cpu_pct=15)), fleet)
    assert run.status is RolloutStatus.HALTED and run.wave == 0
    assert "cpu_pct: upgraded 50.0 vs control 20.0" in (run.reason or "")


def test_a_wave_nobody_answers_fails_at_the_end_of_its_soak() -> None:
    run, _ = drive(new_run(upgrade_plan()), Fleet(silent=True))
    assert run.status is RolloutStatus.HALTED and "none of its gateways answered" in (
        run.reason or ""
    )


def test_pause_resume_abort_and_the_stored_form() -> None:
    fleet = Fleet()
    run, pubs = start(new_run(upgrade_plan()), 0)
    run = pause(run, 10, "ops")
    same, pubs, _ = step(run, 1000, fleet, fleet.steps)
    assert same == run and pubs == []
    run = resume(run, 1000, "ops")
    assert run.soak_until is None and run.next_at == 1000  # wave 1 still has commands to go
    again = from_dict(to_dict(run))
    assert again == run and again.plan.upgrade == run.plan.upgrade
    run, pubs = abort(run, 1100, "ops")
    assert run.status is RolloutStatus.ABORTED and pubs == []


def test_the_latest_step_is_kept_as_the_gate_needs_it(tmp_path: Path) -> None:
    row = StepRow("gw-1", "up:r:1.1", "verified", True, None, 1.0)
    assert merge(None, row) == row and outcome(row) == "pending"
    done = StepRow("gw-1", "up:r:1.1", "confirmed", True, None, 2.0)
    assert outcome(merge(row, done)) == "done"  # type: ignore[arg-type]
    skipped = StepRow("gw-1", "up:r:1.2", "skipped", True, None, 3.0)
    assert merge(done, skipped) is None  # says nothing once it acted
    busy = StepRow("gw-1", "up:r:1.2", "refused", False, "x is still in its health gate", 3.0)
    assert merge(row, busy) is None
    already = StepRow("gw-1", "up:r:1.3", "refused", False, "0.2.0 is running already", 4.0)
    assert outcome(merge(done, already)) == "done"  # type: ignore[arg-type]
    rolled = merge(row, StepRow("gw-1", "up:r:1.1", "rolled_back", False, "health gate", 5.0))
    assert rolled is not None and outcome(rolled) == "failed" and rolled.failures == 1
    retry = merge(rolled, StepRow("gw-1", "up:r:2.1", "verified", True, None, 6.0))
    assert retry is not None and outcome(retry) == "failed"  # failed once: failed until confirmed
    assert answer_step({"id": "x", "ok": False, "error": "signature: bad"}) == (
        "refused", False, "signature: bad",
    )  # fmt: skip
    assert rollout_of("up:city-0.2.0:3.4") == "city-0.2.0"
    assert rollout_of("cmd-123") is None and rollout_of("up:a:b:c") is None
    store = RolloutStore(tmp_path / "c.db")
    try:
        # Only for a rollout that exists: a gateway cannot grow the table.
        assert store.record_steps([("nope", row)]) == 0
        store.create("r", "g1", "ops", to_dict(new_run(upgrade_plan())))
        assert store.record_steps([("r", row), ("r", done), ("r", skipped), ("nope", row)]) == 2
        assert store.steps("r") == {"gw-1": done}
        store.record_steps([("r", replace(rolled, failures=0))])
        assert store.steps("r")["gw-1"].failures == 1
    finally:
        store.close()


def test_a_plan_the_gateways_could_not_follow_is_refused() -> None:
    with pytest.raises(PlanError, match="soak_s: at least the health gate"):
        check_plan(upgrade_plan(soak_s=30))
    with pytest.raises(PlanError, match="longer than the window"):
        check_plan(upgrade_plan(window="01:00-01:30", spread_s=3600))
    with pytest.raises(PlanError, match="steps"):
        check_plan(upgrade_plan(steps=0))
    with pytest.raises(Exception, match="not HH:MM-HH:MM"):
        UpgradeWindow.parse("1-5")
    with pytest.raises(Exception, match="not a time zone"):
        UpgradeWindow.parse("01:00-05:00", "Asia/Nowhere")
    long_id = replace(upgrade_plan(), id="x" * 49)
    with pytest.raises(PlanError, match="1-48"):
        check_plan(long_id)


def test_commands_that_would_expire_stop_the_rollout() -> None:
    p = upgrade_plan()
    p = replace(p, upgrade=replace(p.upgrade, expires_at=500))  # type: ignore[type-var]
    run, _ = drive(new_run(p), Fleet())
    assert run.status is RolloutStatus.HALTED and "expire" in (run.reason or "")


def test_the_runner_sends_commands_not_retained_and_none_again_after_a_restart(
    tmp_path: Path,
) -> None:
    """central/rollout/runner.py with an upgrade: each command on the group's cmd topic, not
    retained (a gateway gets it from its session); a new runner (central restarted) sends no
    command again, and the next one when it is due; the gate reads the stored steps."""
    from central.rollout.runner import RolloutRunner

    store = RolloutStore(tmp_path / "c.db")
    fleet = Fleet()
    sent: list[tuple[str, dict[str, Any], bool]] = []

    def runner() -> RolloutRunner:
        import json

        def publish(topic: str, payload: bytes, retain: bool) -> None:
            body = json.loads(payload)
            sent.append((topic, body, retain))
            fleet.publish(body)
            store.record_steps([("up-1", row) for row in fleet.steps.values()])

        return RolloutRunner(store, prefix="titik", states=lambda: fleet.states,
                             reports=dict, publish=publish, every_s=0)  # fmt: skip

    try:
        run = new_run(upgrade_plan(spread_s=600))
        store.create("up-1", "g1", "ops", to_dict(run))
        r = runner()
        r.tick(1000.0)
        assert [(t, b["id"], retain) for t, b, retain in sent] == [
            ("titik/group/g1/cmd", "up:up-1:1.1", False)
        ]
        r.tick(1100.0)  # not due yet (200 s apart)
        assert len(sent) == 1
        again = runner()  # central restarted
        again.tick(1150.0)
        assert len(sent) == 1  # nothing sent again
        again.tick(1200.0)
        assert [b["id"] for _, b, _ in sent] == ["up:up-1:1.1", "up:up-1:1.2"]
        stored = store.get("up-1")
        assert stored is not None and stored.gate is not None
        assert stored.gate["wave"] == 1 and stored.gate["verdict"] == "soaking"
        assert stored.gate["applied"] == stored.gate["answered"] > 0
    finally:
        store.close()
