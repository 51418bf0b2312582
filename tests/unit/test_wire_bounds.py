"""The wire models bound every number, so both sides refuse what the store cannot hold.

One integer above 2^63 in a telemetry ``seq`` or a config ``version`` used to make central's
SQLite commit raise OverflowError for good (issue 16). Whole numbers are now 0..WIRE_INT_MAX
JSON integers, numbers are finite, and the error names the field.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from agent.protocol import (
    WIRE_INT_MAX,
    AgentInfo,
    ConfigDesired,
    ConfigReported,
    Status,
    Telemetry,
    TelemetryBatch,
)

HUGE = 1180591620717411303424  # 2^70, the number from the issue


def telemetry(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "v": 1,
        "device": "gw-1",
        "seq": 5,
        "boot": 2,
        "sid": "s",
        "ts": 1795816337.439,
        "health": {
            "cpu_pct": 23.4,
            "load1": 0.8,
            "mem_used_pct": 48.2,
            "mem_avail_b": 1000,
            "disk_used_pct": 22.3,
            "temp_c": 53.1,
            "uptime_s": 86400,
        },
        "net": {"wan_up": True, "ifaces": {"wan": {"up": True, "rx": 1, "tx": 2, "err": 0}}},
        "clients": {"total": 3, "by_iface": {"phy0-ap0": 3}, "leases": 4},
        "agent": {"version": "0.1.0", "buffered": 0, "dropped": 0},
    }
    for path, value in over.items():
        *parents, last = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        node[last] = value
    return doc


def refusal(model: type[BaseModel], raw: str) -> tuple[str, str]:
    with pytest.raises(ValidationError) as err:
        model.model_validate_json(raw)
    first = err.value.errors()[0]
    return ".".join(str(p) for p in first["loc"]), first["type"]


def test_the_honest_sample_is_valid() -> None:
    Telemetry.model_validate_json(json.dumps(telemetry()))


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("seq", "seq"),
        ("boot", "boot"),
        ("v", "v"),
        ("health__mem_avail_b", "health.mem_avail_b"),
        ("health__uptime_s", "health.uptime_s"),
        ("net__ifaces__wan__rx", "net.ifaces.wan.rx"),
        ("net__ifaces__wan__err", "net.ifaces.wan.err"),
        ("clients__total", "clients.total"),
        ("clients__leases", "clients.leases"),
        ("agent__buffered", "agent.buffered"),
        ("agent__dropped", "agent.dropped"),
    ],
)
def test_every_whole_number_is_bounded_and_named(field: str, where: str) -> None:
    for value in (HUGE, WIRE_INT_MAX + 1):
        assert refusal(Telemetry, json.dumps(telemetry(**{field: value}))) == (
            where,
            "less_than_equal",
        )
    assert refusal(Telemetry, json.dumps(telemetry(**{field: -1}))) == (where, "greater_than_equal")
    Telemetry.model_validate_json(json.dumps(telemetry(**{field: WIRE_INT_MAX})))


@pytest.mark.parametrize("value", ['"5"', "5.0", "true"])
def test_a_whole_number_must_be_a_json_integer(value: str) -> None:
    raw = json.dumps(telemetry()).replace('"seq": 5', f'"seq": {value}')
    assert refusal(Telemetry, raw) == ("seq", "int_type")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
@pytest.mark.parametrize("field", ["ts", "health.cpu_pct", "health.load1", "health.temp_c"])
def test_non_finite_numbers_are_refused(literal: str, field: str) -> None:
    doc = telemetry()
    node, key = (doc, field) if "." not in field else (doc["health"], field.split(".")[1])
    node[key] = 12345.0
    raw = json.dumps(doc).replace("12345.0", literal)
    assert refusal(Telemetry, raw) == (field, "finite_number")


def test_a_string_where_a_number_belongs_is_refused() -> None:
    assert refusal(Telemetry, json.dumps(telemetry(ts="1795816337.4"))) == ("ts", "float_type")
    assert refusal(Telemetry, json.dumps(telemetry(health__cpu_pct="12"))) == (
        "health.cpu_pct",
        "float_type",
    )


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("ts", -1.0, "greater_than_equal"),
        ("ts", 1e12, "less_than_equal"),
        ("health__cpu_pct", 100.5, "less_than_equal"),
        ("health__disk_used_pct", -0.1, "greater_than_equal"),
        ("health__load1", -1.0, "greater_than_equal"),
    ],
)
def test_ranges(field: str, value: float, kind: str) -> None:
    assert refusal(Telemetry, json.dumps(telemetry(**{field: value})))[1] == kind


def test_status_and_batch() -> None:
    assert refusal(Status, f'{{"online": false, "boot": {HUGE}}}') == ("boot", "less_than_equal")
    assert refusal(Status, '{"online": true, "boot": 1, "lat": 91}') == ("lat", "less_than_equal")
    assert refusal(Status, '{"online": true, "boot": 1, "ts": NaN}') == ("ts", "finite_number")
    batch = {"device": "gw-1", "records": [telemetry(), telemetry(seq=HUGE)]}
    assert refusal(TelemetryBatch, json.dumps(batch)) == ("records.1.seq", "less_than_equal")


def test_config_documents() -> None:
    assert refusal(ConfigDesired, f'{{"version": {HUGE}, "config": {{}}}}') == (
        "version",
        "less_than_equal",
    )
    assert refusal(ConfigDesired, '{"version": "12"}') == ("version", "int_type")
    assert refusal(ConfigDesired, '{"config": {}}') == ("version", "missing")
    assert ConfigDesired.model_validate_json('{"version": 12, "sig": {"x": 1}}').version == 12
    assert refusal(ConfigReported, f'{{"version": {HUGE}, "state": "applied"}}') == (
        "version",
        "less_than_equal",
    )
    assert refusal(ConfigReported, f'{{"state": "applied", "versions": {{"gw": {HUGE}}}}}') == (
        "versions.gw",
        "less_than_equal",
    )
    assert refusal(ConfigReported, '{"state": "applied", "ts": Infinity}') == (
        "ts",
        "finite_number",
    )


def test_the_agent_side_refuses_too() -> None:
    """The agent builds its messages from the same models: it cannot send such a number."""
    with pytest.raises(ValidationError, match="seq"):
        Telemetry(
            device="gw-1",
            seq=WIRE_INT_MAX + 1,
            boot=1,
            sid="s",
            ts=1.0,
            agent=AgentInfo(version="x"),
        )
    with pytest.raises(ValidationError, match="finite"):
        Telemetry(
            device="gw-1", seq=1, boot=1, sid="s", ts=float("nan"), agent=AgentInfo(version="x")
        )
