"""Property-based tests of every inbound parser on the agent (issue 16, point 5).

Arbitrary bytes and arbitrary JSON (NaN, Infinity, integers of any size, deep nesting,
lone surrogates, documents shaped almost like ours) on every topic the agent subscribes to:
its own and its group's ``config/desired`` and ``cmd``. After each piece of garbage:

- nothing raised (the process would have stopped);
- every refusal is named: a report ``rejected`` or a result ``ok: false`` whose error is
  ``"<key path>: <reason>"``, and no number in it the wire cannot carry;
- nothing valid is lost: a valid document or command sent next is applied or run.

The controller and the command processor are driven in-process (hooks: the pure-logic
double of test_remote_logic.py); the last test drives a whole Agent, with its real
firmware hooks, through its message inbox, recording what it publishes instead of a
broker. tests/integration/test_hostile.py sends garbage through a real Mosquitto to a real
agent process.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import MQTTMessage

from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import WIRE_INT_MAX
from agent.remote.commands import CommandProcessor
from agent.remote.desired import peek_version
from agent.state import AgentState
from tests.unit.test_remote_logic import Clock, FakeHooks, FakeHost, make

#: "<key path>: <reason>", e.g. "version: must be a whole number..." or "(document): not JSON".
NAMED = re.compile(r"^\S[^\n]*?: \S")

scalars = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: 2^70 and beyond
    | st.floats()  # NaN and infinities included
    | st.text(max_size=12)  # lone surrogates included
)
json_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=25,
)
sections = st.dictionaries(
    st.sampled_from(["wifi", "hotspot", "telemetry", "mqtt", "agent", "maintenance", "x"]),
    json_values,
    max_size=3,
)
desired_like = st.fixed_dictionaries(
    {},
    optional={
        "version": st.integers() | json_values,
        "config": sections | json_values,
        "sig": json_values,
        "extra": json_values,
    },
)
command_like = st.fixed_dictionaries(
    {},
    optional={
        "id": st.text(max_size=70) | st.from_regex(r"[a-z0-9.:-]{1,10}", fullmatch=True),
        "name": st.sampled_from(["x", "reboot", "get_config", ""]) | json_values,
        "args": st.dictionaries(st.text(max_size=8), json_values, max_size=3) | json_values,
        "expires_at": st.floats() | st.integers() | json_values,
        "sig": json_values,
    },
)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8", "surrogatepass")  # NaN, Infinity, lone surrogates


def nested(n: int) -> bytes:
    return b"[" * n + b"]" * n


def payloads(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return (
        st.binary(max_size=300)
        | json_values.map(dumps)
        | shaped.map(dumps)
        | st.integers(1, 20000).map(nested)
        | st.sampled_from([b"", b"null", b"NaN", b"{}", b"[]", b"\xff", b'"\\ud800"'])
    )


def numbers_fit(value: Any) -> bool:
    """No whole number beyond the wire's limit, anywhere in a report or result."""
    if isinstance(value, dict):
        return all(numbers_fit(v) for v in value.values())
    if isinstance(value, list):
        return all(numbers_fit(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return -WIRE_INT_MAX <= value <= WIRE_INT_MAX
    return True


def settle(c: Any, host: FakeHost) -> None:
    """Acknowledge an ``applying`` report, as the broker would."""
    if host.reports and host.reports[-1]["state"] == "applying":
        c.on_ack(host.mid)


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(garbage=st.lists(payloads(desired_like), min_size=1, max_size=4), group=st.booleans())
def test_desired_config_garbage(tmp_path: Path, garbage: list[bytes], group: bool) -> None:
    hooks, host, clock = FakeHooks(), FakeHost(), Clock()
    d = tmp_path / f"c{time.monotonic_ns()}"
    c = make(d, hooks, host, clock)
    source, topic = ("group/g1", "t/group/g1/config/desired") if group else ("gw", "t/desired")
    for payload in garbage:
        known = max(c.acted.get(source, -1), c.docs.get(source, {}).get("version", -1))
        before = len(host.reports)
        c.on_desired(source, topic, payload)
        settle(c, host)
        new = host.reports[before:]
        for r in new:
            assert numbers_fit(r), r
            if r["state"] in ("rejected", "rolled_back"):
                assert NAMED.match(r["error"]), r
        if not new:  # ignored: only a document no newer than what was dealt with
            v = peek_version(payload)
            assert v is not None and v <= max(known, c.acted.get(source, -1)), payload[:80]
    top = max([c.acted.get(source, -1), c.docs.get(source, {}).get("version", -1)])
    if top >= WIRE_INT_MAX:
        return  # a valid document took the last version there is: it was applied
    c.on_desired(source, topic, dumps({"version": top + 1, "config": {"agent": {}}}))
    settle(c, host)
    assert host.reports[-1]["state"] == "applied", host.reports[-1]
    assert host.reports[-1]["versions"][source] == top + 1


@settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(garbage=st.lists(payloads(command_like), min_size=1, max_size=4), group=st.booleans())
def test_command_garbage(tmp_path: Path, garbage: list[bytes], group: bool) -> None:
    runs: list[str] = []
    now = 1_800_000_000.0
    p = CommandProcessor(
        tmp_path / f"p{time.monotonic_ns()}",
        {"x": lambda args: runs.append("x") or {}, "reboot": lambda args: {}},
        wall=lambda: now,
        harmless=frozenset({"x"}),
    )
    topic = "t/group/g1/cmd" if group else "t/gw/cmd"
    for payload in garbage:
        res = p.handle(topic, payload)
        assert numbers_fit(res), res
        assert set(res) == {"id", "ok", "ts", "result" if res["ok"] else "error"}
        if not res["ok"]:
            assert NAMED.match(res["error"]), res
    ran = len(runs)
    valid = {"id": f"valid-{time.monotonic_ns()}", "name": "x", "expires_at": now + 60}
    assert p.handle(topic, dumps(valid))["ok"]
    assert len(runs) == ran + 1


def message(topic: str, payload: bytes) -> MQTTMessage:
    msg = MQTTMessage(topic=topic.encode())
    msg.payload = payload
    return msg


@pytest.fixture(scope="module")
def whole_agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    """One Agent with its real simulated-platform hooks; what it publishes is recorded."""
    tmp = tmp_path_factory.mktemp("agent")
    cfg = parse_config(
        {
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "device": {"id": "gw-fuzz", "groups": ["g1"]},
            "platform": {"kind": "simulated", "root": str(tmp)},
            "state": {"dir": str(tmp / "state")},
            "config": {"rollback_timeout_s": 600},
        }
    )
    agent = Agent(
        cfg, SimulatedPlatform("gw-fuzz"), AgentState(tmp / "state"), open_spool(cfg, tmp)
    )
    sent: list[tuple[str, bytes, int]] = []

    def publish(topic: str, payload: bytes, **kw: Any) -> int:
        sent.append((topic, payload, len(sent) + 1))
        return len(sent)

    agent.link.publish = publish  # type: ignore[method-assign]
    agent.sent = sent  # type: ignore[attr-defined]
    return agent


TOPICS = [
    "titik/gw/gw-fuzz/config/desired",
    "titik/group/g1/config/desired",
    "titik/gw/gw-fuzz/cmd",
    "titik/group/g1/cmd",
]


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    garbage=st.lists(
        st.tuples(st.sampled_from(TOPICS), payloads(desired_like | command_like)),
        min_size=1,
        max_size=6,
    )
)
def test_the_whole_agent_on_every_topic(
    whole_agent: Agent, garbage: list[tuple[str, bytes]]
) -> None:
    agent = whole_agent
    sent: list[tuple[str, bytes, int]] = agent.sent  # type: ignore[attr-defined]
    for topic, payload in garbage:
        agent.on_message(message(topic, payload))
    start = len(sent)
    agent.tick()
    for topic, payload, mid in sent[start:]:
        body = json.loads(payload)
        if topic.endswith("/config/reported"):
            assert numbers_fit(body)
            if body["state"] in ("rejected", "rolled_back"):
                assert NAMED.match(body["error"]), body
            if body["state"] == "applying":
                agent.on_ack(mid)
        elif topic.endswith("/cmd/result"):
            assert numbers_fit(body)
            assert body["ok"] or NAMED.match(body["error"]), body
    # Then one valid document and one valid command: both go through.
    top = max(
        [agent.remote.acted.get("gw", -1), agent.remote.docs.get("gw", {}).get("version", -1)]
    )
    if top >= WIRE_INT_MAX:
        return
    interval = 30 + top % 1000
    good = {"version": top + 1, "config": {"telemetry": {"interval_s": interval}}}
    cid = f"ok-{time.monotonic_ns()}"
    command = {"id": cid, "name": "collect_now", "expires_at": time.time() + 60}
    agent.on_message(message(TOPICS[0], dumps(good)))
    agent.on_message(message(TOPICS[2], dumps(command)))
    start = len(sent)
    agent.tick()
    out = {
        t.rsplit("/", 1)[-1]: (json.loads(p), mid)
        for t, p, mid in sent[start:]
        if "/cmd/" in t or "config/reported" in t
    }
    report, mid = out["reported"]
    if report["state"] == "applying":
        agent.on_ack(mid)
        report = json.loads(sent[-1][1])
    assert report["state"] == "applied" and report["versions"]["gw"] == top + 1, report
    assert agent.cfg.telemetry.interval_s == interval
    result, _ = out["result"]
    assert result["id"] == cid and result["ok"], result
