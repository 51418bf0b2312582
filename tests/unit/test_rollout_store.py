"""The rollouts' tables (central/store/rollouts.py) against SQLite and PostgreSQL
(central/store/pg/tables.py): one rollout under way per group, state saved and read back,
operators' intents taken once, in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from central.store.pg.tables import PgRolloutStore
from central.store.rollouts import RolloutStore, RolloutStoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def rollouts(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RolloutStore]:
    now = [100.0]
    st: RolloutStore
    if request.param == "sqlite":
        st = RolloutStore(tmp_path / "r.db", clock=lambda: now[0])
    else:
        st = PgRolloutStore(request.getfixturevalue("pg_url"), clock=lambda: now[0])
    yield st
    st.close()


def test_one_rollout_under_way_per_group(rollouts: RolloutStore) -> None:
    rollouts.create("r1", "jkt", "ann", {"status": "running", "wave": 0})
    with pytest.raises(RolloutStoreError, match="'r1' under way"):
        rollouts.create("r2", "jkt", "bob", {"status": "running"})
    with pytest.raises(RolloutStoreError, match="exists already"):
        rollouts.create("r1", "other", "bob", {"status": "running"})
    rollouts.save("r1", {"status": "done", "wave": 3}, {"failed": 0})
    rollouts.create("r2", "jkt", "bob", {"status": "paused"})
    got = rollouts.get("r1")
    assert got is not None
    assert (got.group, got.status, got.created_by, got.state, got.gate) == (
        "jkt", "done", "ann", {"status": "done", "wave": 3}, {"failed": 0},
    )  # fmt: skip
    assert rollouts.get("nope") is None
    assert [r.id for r in rollouts.listing(active_only=True)] == ["r2"]
    assert sorted(r.id for r in rollouts.listing()) == ["r1", "r2"]


def test_intents_are_taken_once_in_order(rollouts: RolloutStore) -> None:
    rollouts.create("r1", "jkt", "ann", {"status": "running"})
    with pytest.raises(RolloutStoreError, match="action"):
        rollouts.request("r1", "explode", "ann")
    with pytest.raises(RolloutStoreError, match="no rollout"):
        rollouts.request("r9", "pause", "ann")
    rollouts.request("r1", "pause", "ann")
    rollouts.request("r1", "abort", "bob")
    assert [(i.action, i.who) for i in rollouts.take_intents("r1")] == [
        ("pause", "ann"), ("abort", "bob"),
    ]  # fmt: skip
    assert rollouts.take_intents("r1") == []


def test_two_creates_at_once_make_one_rollout(rollouts: RolloutStore) -> None:
    """Create checks and inserts in one serialised transaction (SQLite's write lock; an
    advisory lock on PostgreSQL), so two operators starting a rollout of one group at the
    same moment get one rollout and one clear refusal."""
    results: list[str] = []
    gate = threading.Barrier(2)

    def start(rid: str) -> None:
        gate.wait(10)
        try:
            rollouts.create(rid, "jkt", rid, {"status": "running"})
            results.append("made")
        except RolloutStoreError:
            results.append("refused")

    threads = [threading.Thread(target=start, args=(f"r{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert sorted(results) == ["made", "refused"]
    assert len(rollouts.listing(active_only=True)) == 1


def test_an_upgrades_latest_step_per_gateway_on_both_stores(rollouts: RolloutStore) -> None:
    """upgrade_steps (SQLite, and PostgreSQL's migration V_UPGRADE_STEPS): one row per
    rollout and gateway, the latest step as merge() keeps it, none for an unknown rollout."""
    from central.store.rollouts import StepRow

    rollouts.create("up-1", "g1", "ana", {"status": "running"})
    rows = [
        ("up-1", StepRow("gw-1", "up:up-1:1.1", "verified", True, None, 1.0)),
        ("up-1", StepRow("gw-1", "up:up-1:1.1", "rolled_back", False, "health gate", 2.0)),
        ("up-1", StepRow("gw-2", "up:up-1:1.1", "skipped", True, None, 2.0)),
        ("up-1", StepRow("gw-2", "up:up-1:1.2", "confirmed", True, None, 3.0)),
        ("up-1", StepRow("gw-2", "up:up-1:1.3", "skipped", True, None, 4.0)),
        ("other", StepRow("gw-3", "up:other:1.1", "confirmed", True, None, 3.0)),
    ]
    assert rollouts.record_steps(rows) == 4
    got = rollouts.steps("up-1")
    assert got["gw-1"] == StepRow(
        "gw-1", "up:up-1:1.1", "rolled_back", False, "health gate", 2.0, 1
    )
    assert got["gw-2"] == StepRow("gw-2", "up:up-1:1.2", "confirmed", True, None, 3.0, 0)
    assert rollouts.steps("other") == {}
