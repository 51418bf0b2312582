"""The consumer's writer, in-process (no broker): quarantine, the split write, store faults.

Messages go straight into :meth:`Consumer._commit` (QoS 0, so nothing is acked on the
unconnected client); the store is a real SQLite file. Through a real Mosquitto and a real
central process: tests/integration/test_central_hostile.py.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from agent.protocol import Telemetry
from central.config import CentralConfig, parse_config
from central.ingest import consumer as ingest
from central.ingest.consumer import BAD_REASONS, Consumer
from central.ingest.decode import Incoming, QuarantineLimit
from central.store.base import StoreUnavailable, WriteBatch, WriteResult
from central.store.pg import PgStore
from central.store.sqlite import SqliteStore

HUGE = 2**70


def config(tmp_path: Path, extra: str = "") -> CentralConfig:
    return parse_config(
        f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp_path / "c.db"}"\n'
        f"[ingest]\nquarantine_per_minute = 100000\n{extra}"
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def consumer(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Consumer]:
    """The ingest writer on SQLite, and on PostgreSQL (tests/postgres.py)."""
    cfg = config(tmp_path)
    store: SqliteStore | PgStore
    if request.param == "sqlite":
        store = SqliteStore(cfg.store.path)
    else:
        store = PgStore(request.getfixturevalue("pg_url"))
    c = Consumer(cfg, store)
    yield c
    store.close()


def rows(c: Consumer, sql: str) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` from the consumer's store, SQLite or PostgreSQL."""
    store = c.store
    if isinstance(store, PgStore):
        with store._conn() as conn:
            return [tuple(r.values()) for r in conn.execute(sql.encode()).fetchall()]
    assert isinstance(store, SqliteStore)
    return [tuple(r) for r in store._r().execute(sql).fetchall()]


def sample(device: str, seq: int, *, ts: float | None = None, **extra: Any) -> bytes:
    doc = {
        "v": 1,
        "device": device,
        "seq": seq,
        "boot": 1,
        "sid": "s1",
        "ts": time.time() if ts is None else ts,
        "clients": {"total": 3},
        "agent": {"version": "0.1.0"},
        **extra,
    }
    return json.dumps(doc).encode()


def msg(topic: str, payload: bytes) -> Incoming:
    return Incoming(topic, payload, mid=1, qos=0, generation=0)


def tele(device: str, seq: int, **kw: Any) -> Incoming:
    return msg(f"titik/gw/{device}/telemetry", sample(device, seq, **kw))


def stored(c: Consumer) -> set[tuple[str, int]]:
    return {(r[0], r[1]) for r in rows(c, "SELECT device, seq FROM samples")}


def commit(c: Consumer, msgs: list[Incoming]) -> None:
    c._commit(msgs, threading.Event(), flush=True)


def balanced(c: Consumer) -> bool:
    s = c.stats
    return s.received == sum(s.accepted.values()) + sum(s.bad.values())


class Unbounded(Telemetry):
    """Telemetry as it was before issue 16: whole numbers without an upper bound."""

    seq: int = Field(ge=0)


def test_poison_from_one_gateway_is_quarantined_and_the_rest_of_its_batch_stored(
    consumer: Consumer,
) -> None:
    msgs = [tele(f"gw-{d}", i) for i in range(5) for d in "abc"]
    msgs.insert(7, tele("gw-evil", HUGE))
    msgs.insert(3, msg("titik/gw/gw-evil/config/desired", f'{{"version":{HUGE}}}'.encode()))
    msgs.insert(9, msg("titik/gw/gw-evil/config/reported", f'{{"version":{HUGE},"state":"applied"}}'.encode()))  # fmt: skip
    msgs.insert(1, tele("gw-evil", 1, ts=float("nan")).__class__(
        "titik/gw/gw-evil/telemetry", sample("gw-evil", 1).replace(b'"ts": ', b'"ts": NaN, "x": '), 1, 0, 0
    ))  # fmt: skip
    commit(consumer, msgs)
    assert stored(consumer) == {(f"gw-{d}", i) for i in range(5) for d in "abc"}
    assert consumer.stats.bad["schema"] == 4
    page = consumer.store.quarantine(limit=10)
    assert page.total == 4 and page.by_reason == {"schema": 4}
    details = sorted(q.detail for q in page.items)
    assert details == [
        "seq: Input should be less than or equal to 9007199254740991",
        "ts: Input should be a finite number",
        "version: Input should be less than or equal to 9007199254740991",
        "version: Input should be less than or equal to 9007199254740991",
    ]
    assert {q.device for q in page.items} == {"gw-evil"}
    assert balanced(consumer)


def test_a_row_the_models_let_through_but_the_store_refuses_is_set_aside(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: without the wire bound, SQLite raises OverflowError on 2^70 (and
    PostgreSQL "bigint out of range"). The batch is written again in halves; only that
    message is quarantined (reason ``store``)."""
    monkeypatch.setattr(ingest, "Telemetry", Unbounded)
    calls: list[int] = []
    write = consumer.store.write

    def counting(batch: WriteBatch) -> WriteResult:
        calls.append(len(batch.samples))
        return write(batch)

    monkeypatch.setattr(consumer.store, "write", counting)
    honest = [tele(f"gw-{i % 7}", i) for i in range(200)]
    poison = tele("gw-evil", HUGE)
    commit(consumer, [*honest[:123], poison, *honest[123:]])
    assert stored(consumer) == {(f"gw-{i % 7}", i) for i in range(200)}
    # The message, and the device row it made (seq 2^70), which is put back, not retried.
    row, message = consumer.store.quarantine().items
    assert (message.reason, message.device) == ("store", "gw-evil")
    assert message.topic == "titik/gw/gw-evil/telemetry"
    assert message.payload == poison.payload and message.size == len(poison.payload)
    if isinstance(consumer.store, PgStore):
        assert message.detail.startswith("NumericValueOutOfRange: bigint out of range")
    else:
        assert message.detail.startswith("OverflowError: Python int too large")
    assert (row.reason, row.device, row.topic) == ("store", "gw-evil", "")
    assert consumer.store.device("gw-evil") is None and "gw-evil" not in consumer.fleet.states
    s = consumer.stats
    assert (s.bad["store"], s.split_batches, s.stored, s.commit_errors) == (2, 1, 200, 0)
    assert s.accepted["telemetry"] == 200
    # Halving, not one transaction per message: 1 + 2 log2(n) writes of samples for one
    # bad row among 201 messages.
    assert len([n for n in calls if n]) <= 1 + 2 * 8, calls
    commit(consumer, [tele("gw-a", 1000)])
    assert ("gw-a", 1000) in stored(consumer)


def test_a_good_batch_is_one_write(consumer: Consumer, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[WriteBatch] = []
    write = consumer.store.write

    def counting(batch: WriteBatch) -> WriteResult:
        calls.append(batch)
        return write(batch)

    monkeypatch.setattr(consumer.store, "write", counting)
    commit(consumer, [tele("gw-a", i) for i in range(50)] + [msg("titik/gw/gw-a/telemetry", b"{")])
    assert len(calls) == 1 and len(calls[0].samples) == 50 and len(calls[0].quarantined) == 1


def test_a_store_that_cannot_write_is_waited_for_nothing_quarantined(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = consumer.store.write
    failures = [StoreUnavailable("OperationalError: database or disk is full")] * 3

    def flaky(batch: WriteBatch) -> WriteResult:
        if failures:
            raise failures.pop()
        return write(batch)

    monkeypatch.setattr(consumer.store, "write", flaky)
    monkeypatch.setattr(ingest, "RETRY_S", 0.01)
    commit(consumer, [tele("gw-a", i) for i in range(10)])
    assert len(stored(consumer)) == 10
    assert consumer.stats.commit_errors == 3 and consumer.stats.bad["store"] == 0
    assert consumer.store.quarantine().total == 0


def test_stop_while_the_store_is_down_acks_nothing(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(batch: WriteBatch) -> WriteResult:
        raise StoreUnavailable("disk I/O error")

    monkeypatch.setattr(consumer.store, "write", down)
    acks: list[int] = []
    monkeypatch.setattr(consumer.client, "ack", lambda mid, qos: acks.append(mid))
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    consumer._commit([Incoming("titik/gw/gw-a/telemetry", sample("gw-a", 1), 7, 1, 0)], stop)
    assert acks == [] and consumer.stats.acked == 0


def test_sqlite_errors_are_classified(tmp_path: Path) -> None:
    """Disk full / I/O / locked mean the store is down; a value it cannot bind is the row's."""
    st = SqliteStore(tmp_path / "x.db")
    other = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    st._w.execute("PRAGMA busy_timeout=10")
    with pytest.raises(StoreUnavailable, match="locked"):
        st.write(WriteBatch(quarantined=[]))  # BEGIN IMMEDIATE cannot get the lock
    with pytest.raises(StoreUnavailable, match="known-good"):
        st.probe()
    other.execute("ROLLBACK")
    other.close()
    st.probe()
    from central.store.base import Sample

    poison = Sample("d", "s", HUGE, 1.0, False, 1, None, None, None, None, None, "0", "{}")
    with pytest.raises(OverflowError):
        st.write(WriteBatch(samples=[poison]))
    st.close()


def test_a_device_row_the_store_refuses_is_put_back_and_ingest_goes_on(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit(consumer, [tele("gw-a", 1), tele("gw-b", 1)])
    real = consumer.store.write

    def refuse_gw_b_rows(batch: WriteBatch) -> WriteResult:
        if any(d.device == "gw-b" for d in batch.devices):
            raise ValueError("a device row the store cannot hold")
        return real(batch)

    monkeypatch.setattr(consumer.store, "write", refuse_gw_b_rows)
    commit(consumer, [tele("gw-a", 2), tele("gw-b", 2)])
    assert {("gw-a", 2), ("gw-b", 2)} <= stored(consumer)
    (q,) = consumer.store.quarantine().items
    assert (q.reason, q.device, q.topic) == ("store", "gw-b", "")
    assert json.loads(q.payload)["device"] == "gw-b"
    a, b = consumer.store.device("gw-a"), consumer.store.device("gw-b")
    assert a is not None and a.seq == 2
    assert b is not None and b.seq == 1  # what was stored before
    assert consumer.fleet.states["gw-b"].seq == 1  # and the fleet's memory follows it
    monkeypatch.setattr(consumer.store, "write", real)
    commit(consumer, [tele("gw-b", 3)])
    b = consumer.store.device("gw-b")
    assert b is not None and b.seq == 3


def test_an_exception_no_rule_names_is_quarantined_as_internal(
    consumer: Consumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object) -> str:
        raise KeyError("a bug")

    monkeypatch.setattr(consumer.fleet, "apply_live", boom)
    commit(consumer, [tele("gw-a", 1), msg("titik/gw/gw-a/status", b'{"online":true,"boot":1}')])
    assert stored(consumer) == set()  # the sample's row went with its message
    (q,) = consumer.store.quarantine().items
    assert (q.reason, q.detail) == ("internal", "KeyError: 'a bug'")
    assert consumer.stats.accepted["status"] == 1 and balanced(consumer)


def test_every_refusal_has_a_named_reason(consumer: Consumer) -> None:
    cases = {
        "topic": msg("titik/gw/bad id!/telemetry", sample("x", 1)),
        "oversized": msg("titik/gw/gw-a/telemetry", b" " * 300_000),
        "json": msg("titik/gw/gw-a/status", b"\xff"),
        "schema": msg("titik/group/g1/config/desired", b'{"version": -1}'),
        "device_mismatch": msg("titik/gw/gw-a/telemetry", sample("gw-b", 1)),
    }
    commit(consumer, list(cases.values()))
    assert {r: n for r, n in consumer.stats.bad.items() if n} == dict.fromkeys(cases, 1)
    assert set(consumer.stats.bad) == set(BAD_REASONS)
    assert balanced(consumer)


def test_empty_retained_payloads_are_taken_as_cleared(consumer: Consumer) -> None:
    commit(
        consumer,
        [
            msg("titik/gw/gw-a/status", b""),
            msg("titik/gw/gw-a/config/reported", b""),
            msg("titik/gw/gw-a/config/desired", b""),
            msg("titik/group/g1/config/desired", b'{"version": 3, "config": {}}'),
        ],
    )
    assert consumer.stats.accepted["cleared"] == 3
    assert consumer.stats.accepted["group_desired"] == 1
    docs = consumer.store.desired_docs()  # type: ignore[attr-defined]
    assert docs["gw/gw-a"].version is None and docs["group/g1"].version == 3


def test_the_quarantine_is_rate_limited_per_source_and_in_all(tmp_path: Path) -> None:
    lim = QuarantineLimit(per_minute=25)
    assert sum(lim.allow("gw-a", 60.0) for _ in range(50)) == 10
    assert sum(lim.allow(f"gw-{i}", 61.0) for i in range(50)) == 15
    assert lim.allow("gw-a", 120.0)  # a new minute
    cfg = config(tmp_path, "").model_copy(deep=True)
    store = SqliteStore(tmp_path / "l.db")
    c = Consumer(cfg, store)
    commit(c, [msg("titik/gw/gw-flood/telemetry", b"{") for _ in range(100)])
    assert c.stats.bad["json"] == 100
    assert (c.stats.quarantined, c.stats.quarantine_skipped) == (10, 90)
    assert store.quarantine().total == 10
    store.close()


def test_future_samples_are_stored_but_not_current(consumer: Consumer) -> None:
    now = time.time()
    commit(consumer, [tele("gw-a", 1, ts=now), tele("gw-a", 10**9, ts=now + 86400 * 365)])
    commit(consumer, [tele("gw-a", 2, ts=now + 1)])
    assert stored(consumer) == {("gw-a", 1), ("gw-a", 10**9), ("gw-a", 2)}
    d = consumer.store.device("gw-a")
    assert d is not None and d.seq == 2 and d.online
    assert consumer.stats.live == {"current": 2, "new_session": 0, "late": 0, "future": 1}
    assert [a.kind for a in consumer.store.alerts(open_only=False)] == ["clock"]
    assert sum(consumer.stats.lag_counts) == 2  # the future one is not a lag


def test_the_tolerance_comes_from_central_toml(tmp_path: Path) -> None:
    cfg = config(tmp_path, "future_tolerance_s = 5")
    assert cfg.ingest.future_tolerance_s == 5
    store = SqliteStore(cfg.store.path)
    c = Consumer(cfg, store)
    commit(c, [tele("gw-a", 1, ts=time.time() + 60)])
    assert c.stats.live["future"] == 1
    store.close()


def test_a_record_is_stored_the_same_live_or_replayed(consumer: Consumer) -> None:
    # One path (issue 17): both are encoded again by the wire's encoder, so a record sent live
    # with spaces and an unknown key reads the same as that record replayed in a batch.
    live = sample("gw-a", 1, ts=1_795_800_000.0, extra_key="kept")
    replayed = json.dumps(
        {"v": 1, "device": "gw-b", "historical": True,
         "records": [json.loads(sample("gw-b", 1, ts=1_795_800_000.0, extra_key="kept"))]},
        indent=2,
    ).encode()  # fmt: skip
    assert b", " in live  # json.dumps' default separators: not compact
    commit(consumer, [tele("gw-a", 0), msg("titik/gw/gw-a/telemetry", live)])
    commit(consumer, [msg("titik/gw/gw-b/telemetry/batch", replayed)])
    got = rows(
        consumer, "SELECT device, historical, raw FROM samples WHERE seq = 1 ORDER BY device"
    )
    (a_hist, a_raw), (b_hist, b_raw) = [(r[1], r[2]) for r in got]
    assert (a_hist, b_hist) == (0, 1)
    assert a_raw == b_raw.replace('"gw-b"', '"gw-a"')
    assert json.loads(a_raw)["extra_key"] == "kept" and ", " not in a_raw
