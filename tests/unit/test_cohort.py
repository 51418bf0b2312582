"""Rollout waves: which gateways a wave reaches (agent.protocol.cohort), and what a gateway does
with a group document that carries a ``rollout`` selector (agent.remote)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.protocol.cohort import BUCKETS, check_selector, cohort, in_cohort, rank, threshold
from agent.remote.controller import ConfigController
from agent.remote.desired import Rejected, parse_document, resolve
from tests.unit.test_remote_logic import Clock, FakeHooks, FakeHost

IDS = [f"gw-{n:05d}" for n in range(9000)]
OLD = {"telemetry": {"interval_s": 60}}
NEW = {"telemetry": {"interval_s": 30}}


def wave(version: int, percent: float, rid: str = "r-1") -> bytes:
    return json.dumps(
        {
            "version": version,
            "config": NEW,
            "rollout": {"id": rid, "percent": percent, "others": OLD},
        }
    ).encode()


def test_cohorts_nest_and_have_the_size_asked_for() -> None:
    previous: set[str] = set()
    for percent in (1, 5, 25, 50, 100):
        members = set(cohort("r-1", IDS, percent))
        assert previous <= members  # a wave only adds gateways
        assert abs(len(members) - 90 * percent) <= max(30, 0.1 * 90 * percent)
        previous = members
    assert previous == set(IDS) and cohort("r-1", IDS, 0) == []


def test_cohorts_differ_between_rollouts_and_are_the_same_everywhere() -> None:
    a, b = set(cohort("r-1", IDS, 5)), set(cohort("r-2", IDS, 5))
    assert len(a & b) < len(a) / 2  # not the same canaries every time
    assert all(in_cohort("r-1", d, 5) for d in a)
    assert rank("r-1", "gw-00001") == rank("r-1", "gw-00001") < BUCKETS


def test_threshold_counts_hundredths_of_a_percent() -> None:
    assert (threshold(0), threshold(0.01), threshold(12.34), threshold(100)) == (
        0,
        1,
        1234,
        BUCKETS,
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "rollout: must be an object"),
        ({"id": "r", "percent": 5, "others": {}, "x": 1}, "rollout.x: unknown key"),
        ({"id": "r/1", "percent": 5, "others": {}}, "rollout.id: must be 1-64"),
        ({"id": "r", "percent": 101, "others": {}}, "rollout.percent: must be a number"),
        ({"id": "r", "percent": True, "others": {}}, "rollout.percent: must be a number"),
        ({"id": "r", "percent": float("nan"), "others": {}}, "rollout.percent: must be a number"),
        ({"id": "r", "percent": 5}, "rollout.others: must be an object"),
    ],
)
def test_a_bad_selector_is_refused_naming_the_key(raw: Any, message: str) -> None:
    assert (check_selector(raw) or "").startswith(message)
    if raw == [] or not isinstance(raw.get("percent"), float):  # NaN is not JSON
        with pytest.raises(Rejected, match=message.split(":")[0]):
            parse_document(json.dumps({"version": 1, "config": {}, "rollout": raw}).encode())


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
        max_leaves=10,
    )
)
def test_any_selector_is_either_valid_or_named(raw: Any) -> None:
    why = check_selector(raw)
    assert why is None or why.startswith("rollout")


def test_a_gateway_takes_config_inside_the_cohort_and_others_outside() -> None:
    inside = next(d for d in IDS if in_cohort("r-1", d, 10))
    outside = next(d for d in IDS if not in_cohort("r-1", d, 10))
    doc = parse_document(wave(3, 10))
    assert resolve(doc, inside) == (NEW, {"id": "r-1", "member": True})
    assert resolve(doc, outside) == (OLD, {"id": "r-1", "member": False})
    assert resolve(parse_document(json.dumps({"version": 1, "config": NEW}).encode()), inside) == (
        NEW,
        None,
    )


def test_the_controller_applies_by_cohort_and_reports_its_place(tmp_path: Path) -> None:
    outside = next(d for d in IDS if not in_cohort("r-1", d, 10) and in_cohort("r-1", d, 50))
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    c = ConfigController(
        tmp_path, ["g1"], hooks, host, rollback_timeout_s=10, clock=clock, device=outside
    )
    c.on_desired("group/g1", "t", wave(1, 10))  # not in the 10 % wave: keeps the old config
    c.on_ack(host.mid)
    assert c.applied["telemetry"]["interval_s"] == 60
    assert host.reports[-1]["rollout"] == {"id": "r-1", "member": False}
    c.on_desired("group/g1", "t", wave(2, 50))  # in the 50 % wave: takes the new one
    c.on_ack(host.mid)
    assert c.applied["telemetry"]["interval_s"] == 30
    assert host.reports[-1]["rollout"] == {"id": "r-1", "member": True}
    assert host.reports[-1]["versions"] == {"group/g1": 2}
