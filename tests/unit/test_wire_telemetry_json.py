"""``telemetry_json(t)`` is ``t.model_dump_json()`` byte for byte (issue 21, point 5).

Central stores every record's ``raw`` with ``telemetry_json`` (central/ingest/decode.py's
``to_sample``), which leaves ``Telemetry._omit_absent`` out of the encoding to save ~10 us a
record. These tests hold it to the wire's own encoder for records as the agent builds them
(every section, unknown keys, nulls, errors and radio present or absent, any number the
models take) and for whatever hostile JSON the models let through (escapes, NUL, lone
surrogates, duplicate keys, spaces, numbers spelt oddly, unknown keys anywhere).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agent.protocol import WIRE_INT_MAX, WIRE_TS_MAX, Telemetry, encode
from agent.protocol.wire import Health, TelemetryFields, telemetry_json
from central.ingest.decode import to_sample

SETTINGS = settings(max_examples=400, deadline=None)

counts = st.integers(0, WIRE_INT_MAX) | st.sampled_from([0, 1, WIRE_INT_MAX])
percents = st.floats(0, 100) | st.sampled_from([0.0, -0.0, 100.0, 1e-300, 33.333333333333336])
numbers = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(
    [-0.0, 1e16, 1e-7, 5e-324, 1.7976931348623157e308, 1.0, 123456789.0]
)
names = st.text(min_size=1, max_size=12)
#: Keys the models do not know; a model keeps them (``extra="allow"``), after its own.
unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in Telemetry.model_fields)
#: The same inside the health section: not one of Health's own keys (a CI run drew
#: "temp_c" as an unknown key, and its value, a list, replaced the drawn temperature).
health_unknown = st.text(min_size=1, max_size=8).filter(lambda k: k not in Health.model_fields)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | numbers
    | st.text(max_size=12)
    | st.sampled_from(["\x00", "é", "\u2028", '"', "\\", "\ud7ff", "\U0001f4a9"]),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
extras = st.dictionaries(unknown, json_values, max_size=3)


def optional(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | s


@st.composite
def health(draw: st.DrawFn) -> dict[str, Any]:
    load = optional(st.floats(0, 1e6))
    return {
        "cpu_pct": draw(optional(percents)),
        "load1": draw(load),
        "load5": draw(load),
        "load15": draw(load),
        "mem_used_pct": draw(optional(percents)),
        "mem_avail_b": draw(optional(counts)),
        "disk_used_pct": draw(optional(percents)),
        "temp_c": draw(optional(numbers)),
        "uptime_s": draw(optional(counts)),
        **draw(st.dictionaries(health_unknown, json_values, max_size=3)),
    }


iface = st.fixed_dictionaries(
    {"up": optional(st.booleans()), "rx": counts, "tx": counts},
    optional={"rx_bps": optional(counts), "tx_bps": optional(counts), "err": counts},
)
net = st.fixed_dictionaries(
    {"wan_up": optional(st.booleans())},
    optional={"wan": optional(names), "ifaces": st.dictionaries(names, iface, max_size=3)},
)
clients = st.fixed_dictionaries(
    {"total": counts},
    optional={"by_iface": st.dictionaries(names, counts, max_size=3), "leases": optional(counts)},
)
radio = st.fixed_dictionaries(
    {
        "channel": optional(counts),
        "width_mhz": optional(counts),
        "txpower_dbm": optional(numbers),
        "noise_dbm": optional(st.integers(-200, 0)),
        "busy_pct": optional(percents),
    }
)
agent_info = st.fixed_dictionaries(
    {"version": st.text(max_size=12)}, optional={"buffered": counts, "dropped": counts}
)


@st.composite
def records(draw: st.DrawFn) -> dict[str, Any]:
    """A record as the agent's sampler fills it in (agent/sampling.py): every section may be
    missing or null, ``errors`` and ``radio`` absent, null or filled, unknown keys anywhere."""
    doc: dict[str, Any] = {
        "v": draw(st.sampled_from([1, 2])),
        "device": draw(names),
        "seq": draw(counts),
        "boot": draw(counts),
        "sid": draw(names),
        "ts": draw(st.floats(0, WIRE_TS_MAX) | st.sampled_from([0.0, WIRE_TS_MAX, 1.7e9])),
        "agent": draw(agent_info),
    }
    for key, s in (("health", health()), ("net", net), ("clients", clients)):
        if draw(st.booleans()):
            doc[key] = draw(optional(s))
    if draw(st.booleans()):
        doc["radio"] = draw(optional(st.dictionaries(names, radio, max_size=2)))
    if draw(st.booleans()):
        doc["errors"] = draw(optional(st.dictionaries(names, st.text(max_size=20), max_size=3)))
    doc.update(draw(extras))
    return doc


def same(t: Telemetry) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pydantic-core warns when it falls back to guessing
        assert telemetry_json(t) == t.model_dump_json()
        assert encode(t) == telemetry_json(t).encode()  # the agent's encoder


@SETTINGS
@given(records())
def test_a_record_built_as_the_agent_builds_it(doc: dict[str, Any]) -> None:
    t = Telemetry(**doc)  # the sampler's way: the constructor, then encode()
    same(t)
    assert Telemetry.model_validate_json(encode(t)) == t  # what central receives
    same(Telemetry.model_validate_json(encode(t)))


@SETTINGS
@given(records(), st.sampled_from([None, 0, 2]), st.booleans())
def test_a_record_as_received_spelt_any_way(
    doc: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    # Spaces, \\u escapes of every non-ASCII character, keys in another order.
    text = json.dumps(dict(reversed(doc.items())), indent=indent, ensure_ascii=ascii_only)
    same(Telemetry.model_validate_json(text))


HOSTILE = [
    # duplicate keys (the last one wins, in pydantic as in PostgreSQL's jsonb)
    '"health":null,"health":{"cpu_pct":5,"load1":null,"mem_used_pct":null,'
    '"disk_used_pct":null,"temp_c":null,"uptime_s":null}',
    # escapes, NUL, U+2028, a quote and a backslash in unknown keys and values
    '"x\\u0000":"\\u0000","s":"\\u2028\\"\\\\\\/","\\ud83d\\udca9":"\\u00e9"',
    # numbers spelt oddly: exponents, a float field given an integer, -0, huge integers
    '"health":{"cpu_pct":1E1,"load1":0,"mem_used_pct":-0,"disk_used_pct":1e-400,'
    '"temp_c":-0.0,"uptime_s":0},"big":123456789012345678901234567890,"e":1.5e300',
    # what JSON cannot spell, in an unknown key: both write null
    '"nan":NaN,"inf":-Infinity,"over":1e400,"under":1e-400',
    # errors and radio null, defaults absent, unknown keys between known ones
    '"errors":null,"radio":null,"zz":[1,{"a":null}],"net":{"wan_up":null}',
    ' "pad" : [ 1 , 2 ] ',
]


HEAD = '{"v":1,"device":"gw-a","seq":1,"boot":1,"sid":"s","ts":1.0,"agent":{"version":"1"},'


@pytest.mark.parametrize("fragment", ['"\\ud800":1', '"x":"\\udfff"', '"x":"a\\ud800b"'])
def test_a_lone_surrogate_never_reaches_the_encoder(fragment: str) -> None:
    # The models refuse it (central quarantines the message, reason json): no text to write.
    with pytest.raises(ValidationError, match="Invalid JSON"):
        Telemetry.model_validate_json(HEAD + fragment + "}")


@pytest.mark.parametrize("fragment", HOSTILE)
def test_hostile_payloads_encode_the_same(fragment: str) -> None:
    text = HEAD + fragment + "}"
    try:
        t = Telemetry.model_validate_json(text)
    except ValidationError:  # refused: central quarantines it, nothing is encoded
        pytest.fail(f"the models refuse {text!r}; the case tests nothing")
    try:
        expected: str | type[Exception] = t.model_dump_json()
    except Exception as exc:  # if one day one cannot be written: both must fail alike
        expected = type(exc)
    try:
        got: str | type[Exception] = telemetry_json(t)
    except Exception as exc:
        got = type(exc)
    assert got == expected


def test_what_json_cannot_spell_is_null() -> None:
    t = Telemetry.model_validate_json(HEAD + '"nan":NaN,"big":1180591620717411303424}')
    assert telemetry_json(t).endswith(',"nan":null,"big":1180591620717411303424}')


def test_nulls_left_out_and_kept() -> None:
    # errors and radio go when null (OMITTED_WHEN_NULL); every other null stays.
    doc = {"v": 1, "device": "d", "seq": 1, "boot": 1, "sid": "s", "ts": 1.0}
    t = Telemetry(**doc, agent={"version": "1"}, health=None, errors=None, radio=None)
    out = json.loads(telemetry_json(t))
    assert "errors" not in out and "radio" not in out and out["health"] is None
    t = Telemetry(**doc, agent={"version": "1"}, errors={"a": "b"}, radio={})
    assert json.loads(telemetry_json(t))["errors"] == {"a": "b"}
    assert json.loads(telemetry_json(t))["radio"] == {}


def test_to_sample_stores_the_wire_encoding() -> None:
    t = Telemetry.model_validate_json(
        '{ "zz": 1, "v": 1, "device": "d", "seq": 1, "boot": 1, "sid": "s", "ts": 1,'
        ' "agent": {"version": "1"}, "errors": null, "health": {"cpu_pct": 1e1, "load1": null,'
        ' "mem_used_pct": null, "disk_used_pct": null, "temp_c": null, "uptime_s": null} }'
    )
    raw = to_sample(t, historical=False).raw
    assert raw == t.model_dump_json()
    assert raw.startswith('{"v":1,"device":"d"') and raw.endswith(',"zz":1}')
    assert '"cpu_pct":10.0' in raw and '"ts":1.0' in raw and "errors" not in raw


def test_fields_are_one_list() -> None:
    # Telemetry adds no field of its own: a field added to one is in the other.
    assert Telemetry.model_fields.keys() == TelemetryFields.model_fields.keys()
