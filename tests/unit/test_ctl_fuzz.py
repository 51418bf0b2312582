"""Property-based tests (hypothesis) of titik-ctl's inbound parsers.

titik-ctl reads what gateways publish (retained statuses and reports, command results) and
decides rollouts from it. A gateway may publish anything on its own topics: these parsers
must neither raise on it nor let it count where it does not belong (a ``groups`` that is a
string "jkt-1" must not make a gateway a member of group "jkt").
"""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from central.ctl import commands, rollout, session
from tests.unit.test_central_fuzz import json_values

bodies = st.dictionaries(
    st.sampled_from(["groups", "versions", "state", "version", "source", "error", "online", "id"])
    | st.text(max_size=6),
    json_values,
    max_size=6,
)
payloads = (
    st.binary(max_size=200)
    | json_values.map(lambda v: json.dumps(v, allow_nan=True).encode())
    | st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)
)
SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(payload=payloads)
def test_any_payload_is_json_or_none(payload: bytes) -> None:
    body = session.Msg("t", payload, False).json()
    assert body is None or isinstance(body, dict | list | str | int | float | bool)
    commands._show(payload)
    commands._show_doc(payload)
    assert rollout.document_version(payload) is None or isinstance(
        rollout.document_version(payload), int
    )
    assert isinstance(rollout.document_config(payload), dict)


@SETTINGS
@given(statuses=st.dictionaries(st.text(max_size=5), bodies, max_size=4), reports=st.dictionaries(st.text(max_size=5), bodies, max_size=4))  # fmt: skip
def test_group_membership_only_from_lists_and_mappings(
    statuses: dict[str, dict[str, Any]], reports: dict[str, dict[str, Any]]
) -> None:
    found = rollout.members("jkt", statuses, reports)
    for d in found:
        st_groups = statuses.get(d, {}).get("groups")
        versions = reports.get(d, {}).get("versions")
        assert (isinstance(st_groups, list) and "jkt" in st_groups) or (
            isinstance(versions, dict) and "group/jkt" in versions
        )
    fleet = session.RetainedFleet(statuses=statuses, reports=reports)
    seen = fleet.seen_version(list(reports), "group/jkt")
    assert seen is None or (isinstance(seen, int) and not isinstance(seen, bool))


def test_a_string_of_groups_is_no_membership() -> None:
    assert rollout.members("jkt", {"gw-1": {"groups": "jkt-1"}, "gw-2": {"groups": 5}}) == []


@SETTINGS
@given(report=bodies, version=st.integers(0, 2**60))
def test_outcome_of_any_report(report: dict[str, Any], version: int) -> None:
    outcome = rollout.outcome_of(report, "group/jkt", version)
    assert outcome is None or outcome.value == report.get("state")
    session.describe("gw-1", outcome or rollout.Outcome.NO_REPORT, report)


@SETTINGS
@given(body=json_values, kind=st.sampled_from(["status", "config/reported", "cmd/result", "other"]))
def test_watch_lines_from_anything(body: Any, kind: str) -> None:
    line = commands.event_line(f"titik/gw/gw-1/{kind}", body, "titik", retained=False)
    assert line is None or line.startswith(tuple("0123456789"))
    out = io.StringIO()
    out.write(line or "")
