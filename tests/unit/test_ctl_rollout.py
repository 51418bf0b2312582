"""The pure rollout logic behind ``titik-ctl config push --canary``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from central.ctl import rollout
from central.ctl.rollout import Amount, Outcome

A, R, B, N = Outcome.APPLIED, Outcome.REJECTED, Outcome.ROLLED_BACK, Outcome.NO_REPORT


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", Amount(0, False)), ("2", Amount(2, False)), ("10%", Amount(10, True))],
)
def test_thresholds_parse(text: str, expected: Amount) -> None:
    assert rollout.parse_threshold(text) == expected


@pytest.mark.parametrize(
    ("text", "why"),
    [("x", "neither a whole number"), ("-1", "at least 0"), ("150%", "between 0% and 100%")],
)
def test_bad_thresholds_say_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        rollout.parse_threshold(text)


@pytest.mark.parametrize(
    ("threshold", "failed", "total", "over"),
    [
        ("0", 0, 6, False),
        ("0", 1, 6, True),
        ("2", 2, 6, False),
        ("2", 3, 6, True),
        ("10%", 1, 10, False),  # exactly 10%: allowed
        ("10%", 2, 10, True),
        ("10%", 1, 6, True),  # 16.7%
        ("100%", 6, 6, False),
    ],
)
def test_threshold_evaluation(threshold: str, failed: int, total: int, over: bool) -> None:
    assert rollout.exceeds(rollout.parse_threshold(threshold), failed, total) is over


@pytest.mark.parametrize(
    ("text", "total", "size"),
    [("3", 6, 3), ("3", 2, 2), ("25%", 6, 2), ("25%", 4, 1), ("25%", 1, 1), ("1%", 500, 5)],
)
def test_batch_sizes(text: str, total: int, size: int) -> None:
    assert rollout.batch_size(rollout.parse_batch(text), total) == size


@pytest.mark.parametrize("text", ["0", "0%", "-2", "two"])
def test_a_canary_batch_is_at_least_one(text: str) -> None:
    with pytest.raises(ValueError, match="--canary"):
        rollout.parse_batch(text)


def test_canaries_are_the_lowest_sorted_ids() -> None:
    ids = ["gw-05", "gw-01", "gw-03", "gw-02", "gw-04", "gw-06", "gw-01"]
    canaries, rest = rollout.select_canaries(ids, rollout.parse_batch("25%"))
    assert canaries == ["gw-01", "gw-02"]
    assert rest == ["gw-03", "gw-04", "gw-05", "gw-06"]
    assert rollout.select_canaries(reversed(ids), Amount(2, False)) == (canaries, rest)


def test_outcome_of_matches_the_document() -> None:
    rep = {"version": 5, "source": "gw", "versions": {"group/g1": 2, "gw": 5}, "state": "applied"}
    assert rollout.outcome_of(rep, "gw", 5) is A
    assert rollout.outcome_of(rep, "gw", 6) is None  # not yet about this one
    assert rollout.outcome_of(rep, "group/g1", 2) is A  # via versions
    assert rollout.outcome_of(rep, "group/g1", 3) is None
    assert rollout.outcome_of({**rep, "state": "applying"}, "gw", 5) is None
    # A signature refusal names only its trigger, no versions.
    bad = {"version": 7, "source": "gw", "versions": {}, "state": "rejected", "error": "sig"}
    assert rollout.outcome_of(bad, "gw", 7) is R
    rb = {"version": 3, "source": "group/g1", "versions": {"group/g1": 3}, "state": "rolled_back"}
    assert rollout.outcome_of(rb, "group/g1", 3) is B


def test_aggregation_and_finalising() -> None:
    live = {"a": A, "b": None, "c": R, "d": None}
    assert rollout.tally(live) == rollout.Tally(applied=1, failed=1, pending=2)
    assert rollout.tally(live).line() == "applied 1, failed 1, pending 2 of 4"
    final = rollout.finalise(live)
    assert final == {"a": A, "b": N, "c": R, "d": N}
    assert rollout.tally(final) == rollout.Tally(applied=1, failed=3, pending=0)


def test_halting_rule() -> None:
    zero = rollout.parse_threshold("0")
    assert not rollout.should_halt({"a": A, "b": A}, zero)
    assert rollout.should_halt({"a": A, "b": B}, zero)
    assert rollout.should_halt({"a": A, "b": N}, zero)  # silence is a failure
    assert not rollout.should_halt({"a": A, "b": R}, rollout.parse_threshold("1"))
    assert rollout.should_halt({"a": A, "b": R}, rollout.parse_threshold("10%"))
    assert not rollout.should_halt({"a": A, "b": R}, rollout.parse_threshold("50%"))


def test_version_bump() -> None:
    doc = json.dumps({"version": 4, "config": {}}).encode()
    assert rollout.next_version(None) == 1
    assert rollout.next_version(b"") == 1
    assert rollout.next_version(b"not json") == 1
    assert rollout.next_version(doc) == 5
    assert rollout.next_version(doc, 9) == 9
    with pytest.raises(ValueError, match="not newer"):
        rollout.next_version(doc, 4)


def test_canary_document_keeps_the_devices_own_settings_on_top() -> None:
    group = {"wifi": {"ssids": {"public": {"ssid": "New", "max_clients": 60}}}}
    own = {"wifi": {"ssids": {"public": {"max_clients": 20}}}, "agent": {"log_level": "debug"}}
    assert rollout.canary_document(group, own) == {
        "wifi": {"ssids": {"public": {"ssid": "New", "max_clients": 20}}},
        "agent": {"log_level": "debug"},
    }
    assert rollout.document_config(json.dumps({"version": 1, "config": own}).encode()) == own
    assert rollout.document_config(None) == {}


def test_members_from_status_and_reports() -> None:
    statuses: dict[str, dict[str, Any]] = {
        "b": {"online": True, "groups": ["g1"]},
        "a": {"online": True, "groups": ["g2", "g1"]},
        "c": {"online": False, "boot": 3},  # a Will: no groups
        "d": {"online": True, "groups": ["g2"]},
    }
    reports = {"c": {"versions": {"group/g1": 1, "gw": 2}}}
    assert rollout.members("g1", statuses, reports) == ["a", "b", "c"]
    assert rollout.members("g3", statuses, reports) == []


def test_command_arguments() -> None:
    assert rollout.parse_args_kv(["delay_s=30", "mac=02:00:00:00:00:01", "x=true"]) == {
        "delay_s": 30,
        "mac": "02:00:00:00:00:01",
        "x": True,
    }
    with pytest.raises(ValueError, match="key=value"):
        rollout.parse_args_kv(["delay_s"])


def test_canaries_at_different_versions_all_get_their_outcome() -> None:
    """Canaries whose own documents were at different versions are awaited one version after
    another; the reports of the later ones arrive while the first are awaited. An earlier
    version waited for those again until --timeout (titik-sim, 9,000 gateways). A stand-in
    link: only the order of messages matters here."""
    import queue
    import types

    from central.ctl import commands, session

    inbox: queue.Queue[session.Msg] = queue.Queue()

    def next_msg(deadline: float) -> session.Msg | None:
        try:
            return inbox.get_nowait()
        except queue.Empty:
            return None

    link: Any = types.SimpleNamespace(settings=types.SimpleNamespace(prefix="titik"), next=next_msg)
    for dev, version in (("gw-b", 3), ("gw-a", 1), ("gw-c", 3)):
        report = {"version": version, "source": "gw", "versions": {"gw": version}}
        report["state"] = "rolled_back"
        inbox.put(
            session.Msg(f"titik/gw/{dev}/config/reported", json.dumps(report).encode(), False)
        )
    reports: dict[str, dict[str, Any]] = {}
    first = commands.await_outcomes(link, ["gw-a"], "gw", 1, 0.0, reports)
    assert first == {"gw-a": Outcome("rolled_back")}
    # gw-b's report was read while waiting for gw-a; gw-c's is still queued
    later = commands.await_outcomes(link, ["gw-b", "gw-c"], "gw", 3, 0.0, reports)
    assert later == {"gw-b": Outcome("rolled_back"), "gw-c": Outcome("rolled_back")}
