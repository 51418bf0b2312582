"""Property-based tests (hypothesis) of every inbound parser on central, in-process.

Every topic central subscribes to gets arbitrary bytes, arbitrary JSON and valid documents
with one part changed into anything JSON can say (huge and negative integers, NaN and
Infinity, strings, nulls, nesting, a key removed). Each fuzzed message sits in a batch
between two honest samples, goes through the consumer's real writer path
(``Consumer._commit``) into a real SQLite store, and:

- nothing raises (the writer thread would die),
- both honest samples are stored,
- the fuzzed message is either taken (and then what it says is in the store) or refused with
  a reason the wire models name (``json``, ``schema``, ``device_mismatch``, ``topic``,
  ``oversized``): never ``store`` (the store refused what the models let through) nor
  ``internal`` (central failed on it),
- every message is accounted for: ``received == sum(accepted) + sum(bad)``.

The same through a real Mosquitto and a real central process:
tests/integration/test_central_hostile.py.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocol import WIRE_INT_MAX
from agent.protocol.score import score
from agent.protocol.service import ServiceReport
from central.config import parse_config
from central.ingest.consumer import Consumer
from central.ingest.decode import Incoming
from central.store.service import ServiceStore
from central.store.sqlite import SqliteStore
from tests.service_reports import report

NAMED = {"json", "schema", "device_mismatch", "topic", "oversized"}
SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Numbers that stress a store: around 2^53, 2^63 and 2^64, and floats JSON cannot spell.
edgy_ints = (
    st.sampled_from(
        [-1, 0, WIRE_INT_MAX, WIRE_INT_MAX + 1, 2**63 - 1, 2**63, 2**64, 2**70, -(2**63) - 1]
    )
    | st.integers()
)
edgy_floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [math.nan, math.inf, -math.inf, 1e308, -0.0, 5e-324, 253402300799.0, 253402300800.0]
)
scalars = (
    st.none()
    | st.booleans()
    | edgy_ints
    | edgy_floats
    | st.text(max_size=20)
    | st.sampled_from(["", "5", "1e400", "NaN", "\x00", "gw-1", "applied"])
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def telemetry(device: str, seq: int, *, ts: float | None = None) -> dict[str, Any]:
    return {
        "v": 1,
        "device": device,
        "seq": seq,
        "boot": 3,
        "sid": "s1",
        "ts": time.time() if ts is None else ts,
        "health": {
            "cpu_pct": 23.4,
            "load1": 0.82,
            "load5": 0.74,
            "load15": 0.66,
            "mem_used_pct": 48.2,
            "mem_avail_b": 118234726,
            "disk_used_pct": 22.3,
            "temp_c": 53.1,
            "uptime_s": 864211,
        },
        "net": {
            "wan_up": True,
            "wan": "wan",
            "ifaces": {
                "wan": {
                    "up": True,
                    "rx": 291223841,
                    "tx": 48812233,
                    "rx_bps": 1,
                    "tx_bps": 2,
                    "err": 0,
                }
            },
        },
        "clients": {"total": 37, "by_iface": {"phy0-ap0": 15, "phy1-ap0": 22}, "leases": 39},
        "agent": {"version": "0.1.0", "buffered": 0, "dropped": 0},
        "errors": {"clients.leases": "no lease file"},
    }


def valid(kind: str, name: str) -> Any:
    """A valid document for each topic kind (``name``: the device or group of the topic)."""
    if kind == "telemetry":
        return telemetry(name, 100)
    if kind == "batch":
        return {
            "v": 1,
            "device": name,
            "historical": True,
            "records": [telemetry(name, 7, ts=1.7e9), telemetry(name, 8, ts=1.7e9 + 60)],
        }
    if kind == "status":
        return {
            "online": True,
            "boot": 3,
            "v": 1,
            "ts": 1.7e9,
            "version": "0.1.0",
            "platform": "openwrt",
            "site": "Taman",
            "region": "Pusat",
            "lat": -6.2,
            "lon": 106.8,
            "groups": ["jkt"],
            "reason": None,
        }
    if kind == "reported":
        return {
            "version": 12,
            "source": "gw",
            "versions": {"group/jkt": 3, "gw": 12},
            "state": "applied",
            "ts": 1.7e9,
            "hash": "576d07b0e45d1c21",
            "error": None,
        }
    if kind == "service":
        return report(ts=1.7e9)
    return {"version": 12, "config": {"telemetry": {"interval_s": 60}}}


TOPICS = {
    "telemetry": "titik/gw/{}/telemetry",
    "batch": "titik/gw/{}/telemetry/batch",
    "status": "titik/gw/{}/status",
    "reported": "titik/gw/{}/config/reported",
    "desired": "titik/gw/{}/config/desired",
    "group_desired": "titik/group/{}/config/desired",
    "service": "titik/gw/{}/service",
}
names = st.sampled_from(["gw-fuzz", "gw-x.y_z", "g1"]) | st.from_regex(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,70}", fullmatch=True
)


def paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += paths(v, (*prefix, i))
    return out


def same_kind(value: Any) -> st.SearchStrategy[Any]:
    """Values of the same JSON type as ``value``, at the edges the models allow (or not)."""
    if isinstance(value, bool):
        return st.booleans()
    if isinstance(value, int):
        return st.sampled_from([0, 1, WIRE_INT_MAX, WIRE_INT_MAX + 1, -1]) | st.integers(0, 2**60)
    if isinstance(value, float):
        return st.sampled_from([0.0, 100.0, 100.01, 5e-324, 253402300799.0, 1e15]) | st.floats(
            allow_nan=False, allow_infinity=False
        )
    if isinstance(value, str):
        return st.text(max_size=100)  # any Unicode, including what SQLite must hold as text
    return json_values


@st.composite
def mutated(
    draw: st.DrawFn,
    kind: str,
    name: str,
    hows: tuple[str, ...] = ("any", "edge", "edge", "remove", "extra", "extra"),
) -> bytes:
    """A valid document with one to three changes: a part replaced by anything JSON can say,
    by a value of its own type at an edge, removed, or an unknown key added anywhere."""
    doc = copy.deepcopy(valid(kind, name))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(paths(doc)))
        node = doc
        for step in where[:-1]:
            node = node[step]
        how = draw(st.sampled_from(hows))
        if how == "remove" and isinstance(node, dict):
            del node[where[-1]]
        elif how == "extra" and isinstance(node, dict):
            node[draw(st.text(max_size=10))] = draw(json_values)
        elif how == "edge":
            node[where[-1]] = draw(same_kind(node[where[-1]]))
        else:
            node[where[-1]] = draw(json_values)
        if not paths(doc):
            break
    return json.dumps(doc, allow_nan=True).encode()


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, str, bytes]:
    kind = draw(st.sampled_from(sorted(TOPICS)))
    name = draw(names)
    how = draw(st.sampled_from(["bytes", "json", "mutated", "mutated", "mutated", "valid"]))
    if how == "bytes":
        payload = draw(st.binary(max_size=300))
    elif how == "json":
        payload = json.dumps(draw(json_values), allow_nan=True).encode()
    elif how == "valid":
        payload = json.dumps(valid(kind, name)).encode()
    else:
        payload = draw(mutated(kind, name))
    return kind, TOPICS[kind].format(name), payload


class Harness:
    def __init__(self, tmp: Path) -> None:
        cfg = parse_config(
            f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp / "fuzz.db"}"\n'
            "[ingest]\nmax_payload_bytes = 4096\nquarantine_per_minute = 1000000\n"
        )
        self.store = SqliteStore(cfg.store.path)
        self.consumer = Consumer(cfg, self.store)
        self.seq = 0
        self.kept = False

    def honest(self) -> tuple[Incoming, int]:
        self.seq += 1
        payload = json.dumps(telemetry("gw-honest", self.seq)).encode()
        return Incoming("titik/gw/gw-honest/telemetry", payload, 0, 0, 0), self.seq

    def run(self, topic: str, payload: bytes) -> tuple[dict[str, int], dict[str, int]]:
        """Commit honest, fuzzed, honest; return what the fuzzed one changed in ``accepted``
        and ``bad``."""
        s = self.consumer.stats
        accepted, bad, kept = dict(s.accepted), dict(s.bad), s.quarantined
        accepted["telemetry"] += 2  # the honest ones
        (h1, seq1), (h2, seq2) = self.honest(), self.honest()
        self.consumer._commit(
            [h1, Incoming(topic, payload, 0, 0, 0), h2], threading.Event(), flush=True
        )
        have = {
            r[0]
            for r in self.store._r().execute(
                "SELECT seq FROM samples WHERE device = 'gw-honest' AND seq IN (?, ?)",
                (seq1, seq2),
            )
        }
        assert have == {seq1, seq2}, "an honest sample next to the fuzzed one was lost"
        assert s.received == sum(s.accepted.values()) + sum(s.bad.values())
        assert s.quarantined + s.quarantine_skipped == sum(s.bad.values())
        self.kept = s.quarantined > kept
        return (
            {k: n - accepted[k] for k, n in s.accepted.items() if n != accepted[k]},
            {k: n - bad[k] for k, n in s.bad.items() if n != bad[k]},
        )

    def check_taken(self, kind: str, topic: str, payload: bytes) -> None:
        """A message that was taken is in the store: nothing valid is lost."""
        name = topic.split("/")[2]
        conn = self.store._r()
        doc: Any = json.loads(payload) if payload else None
        if kind == "telemetry":
            row = conn.execute(
                "SELECT raw FROM samples WHERE device = ? AND sid = ? AND seq = ?",
                (name, doc["sid"], doc["seq"]),
            ).fetchone()
            assert row is not None
        elif kind == "batch":
            for rec in doc["records"]:
                row = conn.execute(
                    "SELECT 1 FROM samples WHERE device = ? AND sid = ? AND seq = ?",
                    (name, rec["sid"], rec["seq"]),
                ).fetchone()
                assert row is not None
        elif kind == "status" and doc is not None:
            assert self.store.device(name) is not None
        elif kind == "reported" and doc is not None:
            assert self.store.reported_docs()[name].doc == payload.decode()
        elif kind == "service":
            # The newest report by its ts is the latest (examples share the store).
            got = ServiceStore(self.store.path).latest(name)
            assert got is not None and got.ts >= doc["ts"]
            if got.ts == doc["ts"]:
                assert got.score == score(ServiceReport.model_validate_json(payload)).score
        elif kind in ("desired", "group_desired"):
            target = f"gw/{name}" if kind == "desired" else f"group/{name}"
            got = self.store.desired_docs()[target]
            assert got.version == (doc["version"] if doc is not None else None)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path)
    yield h
    h.close()


@SETTINGS
@given(msg=messages())
def test_every_topic_any_payload(harness: Harness, msg: tuple[str, str, bytes]) -> None:
    kind, topic, payload = msg
    accepted, bad = harness.run(topic, payload)
    assert len(accepted) + len(bad) == 1
    if bad:
        (reason,) = bad
        assert reason in NAMED, f"{reason}: the models let through what central could not take"
        if harness.kept:  # else over the per-source rate limit: counted, not kept
            (row,) = harness.store.quarantine(limit=1).items
            assert (row.reason, row.topic, row.size) == (reason, topic, len(payload))
    else:
        harness.check_taken(kind, topic, payload)


@SETTINGS
@given(
    kind=st.sampled_from(sorted(TOPICS)),
    name=names,
    payload=st.binary(max_size=5000) | st.text(max_size=2000).map(str.encode),
)
def test_arbitrary_bytes_on_every_topic(
    harness: Harness, kind: str, name: str, payload: bytes
) -> None:
    _, bad = harness.run(TOPICS[kind].format(name), payload)
    assert set(bad) <= NAMED
    if not bad:
        harness.check_taken(kind, TOPICS[kind].format(name), payload)


@SETTINGS
@given(
    topic=st.text(min_size=1, max_size=80).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=200),
)
def test_any_topic_name(harness: Harness, topic: str, payload: bytes) -> None:
    """Topics central does not take (or whose device id is not one) are refused as ``topic``."""
    _, bad = harness.run(topic, payload)
    if not topic.startswith("titik/"):
        assert bad == {"topic": 1}
    assert set(bad) <= NAMED


@SETTINGS
@given(data=st.data(), kind=st.sampled_from(["telemetry", "batch", "service"]), name=names)
def test_samples_with_unknown_keys_and_edge_values(
    harness: Harness, data: st.DataObject, kind: str, name: str
) -> None:
    """What the models let through (unknown keys holding NaN or 2^70, values at their bounds,
    any Unicode) is stored: the raw record keeps it and the store must hold it."""
    payload = data.draw(mutated(kind, name, hows=("edge", "extra", "extra")))
    accepted, bad = harness.run(TOPICS[kind].format(name), payload)
    assert set(bad) <= NAMED
    if accepted:
        harness.check_taken(kind, TOPICS[kind].format(name), payload)
