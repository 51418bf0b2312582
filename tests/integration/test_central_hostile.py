"""Hostile input through a real Mosquitto into a real central process (issue 16).

- Poison messages from one gateway among honest ones from several: everything honest is
  stored, the poison is quarantined (the API lists it, /metrics counts it) and acked, so a
  restarted central does not get it again.
- A seq jump with a far-future ``ts`` does not freeze the gateway.
- Hypothesis publishes arbitrary bytes, arbitrary JSON and changed valid documents on every
  topic central subscribes to: the process stays up, the honest sample published after each
  one is stored, and every refusal has a named reason.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings

from central.config import load_config
from tests.broker import Broker, wait_until
from tests.central_auth import auth_headers
from tests.centralproc import stop_central
from tests.integration.test_central_ingest import Publisher, central_toml, rows, telemetry
from tests.unit.test_central_fuzz import NAMED, messages

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
HUGE = 1180591620717411303424  # 2^70, the number from the issue
PROBES_FROM = "SELECT 1 FROM samples WHERE device = 'gw-probe' AND seq >= {}"


class Central:
    """``titik-central run`` as a subprocess, with its HTTP API."""

    def __init__(self, conf: Path, log: Path) -> None:
        self.conf = conf
        self.log = log
        cfg = load_config(conf)
        self.db = cfg.store.path
        #: PostgreSQL's url when central.toml sets ``[store] url`` (then ``db`` is unused).
        self.url = cfg.store.url
        self.http = f"http://127.0.0.1:{cfg.http.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.probes = 0
        # The quarantine needs the operator role.
        self.headers = auth_headers(cfg.store if self.url else self.db, "operator")

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        """``sql``'s rows in central's database, SQLite or PostgreSQL ([] before the tables
        exist)."""
        if not self.url:
            return rows(self.db, sql)
        try:
            with psycopg.connect(self.url) as conn:
                return [tuple(r) for r in conn.execute(sql.encode())]
        except psycopg.errors.UndefinedTable:
            return []

    def start(self, broker: Broker) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "central.cli", "run", "--config", str(self.conf)],
            cwd=ROOT,
            stderr=self.log.open("ab"),
        )
        # Up when a probe published now is stored (lost until central has subscribed).
        probe = Publisher(broker, f"probe-{self.probes}")
        first = self.probes
        sent = 0

        def stored() -> bool:
            nonlocal sent
            if self.rows(PROBES_FROM.format(first)):
                return True
            probe.publish("titik/gw/gw-probe/telemetry", telemetry("gw-probe", self.probes))
            self.probes += 1
            sent += 1
            time.sleep(0.1)  # pacing the probes, not synchronising
            return False

        wait_until(stored, 20, "central up and storing")
        probe.close(sent)

    def get(self, path: str) -> Any:
        req = urllib.request.Request(self.http + path, headers=self.headers)  # noqa: S310 - loopback
        with urllib.request.urlopen(req, timeout=10) as r:  # noqa: S310 - loopback
            body = r.read()
        return body.decode() if path == "/metrics" else json.loads(body)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int:
        assert self.proc is not None
        return stop_central(self.proc, self.log, 15)

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def central(broker: Broker, tmp_path: Path) -> Iterator[Central]:
    conf = central_toml(
        tmp_path / "central.toml", broker, client_id="c-hostile", db=tmp_path / "c.db"
    )
    c = Central(conf, tmp_path / "central.log")
    c.start(broker)
    yield c
    c.kill()


def metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in /metrics")


def test_poison_among_honest_gateways_is_quarantined_acked_and_not_redelivered(
    broker: Broker, central: Central
) -> None:
    honest = [f"gw-honest{i}" for i in range(4)]
    pubs = {d: Publisher(broker, d) for d in honest}
    evil = Publisher(broker, "gw-evil")
    base = json.loads(telemetry("gw-evil", 0))
    poison: list[tuple[str, bytes, bool]] = [
        (
            "titik/gw/gw-evil/telemetry",
            telemetry("gw-evil", 0).replace(b'"seq":0', f'"seq":{HUGE}'.encode()),
            False,
        ),
        (
            "titik/gw/gw-evil/telemetry",
            json.dumps({**base, "ts": "NaN"}).replace('"NaN"', "NaN").encode(),
            False,
        ),
        ("titik/gw/gw-evil/telemetry", json.dumps({**base, "seq": "12"}).encode(), False),
        (
            "titik/gw/gw-evil/telemetry/batch",
            json.dumps({"device": "gw-evil", "records": [base, {**base, "boot": HUGE}]}).encode(),
            False,
        ),
        ("titik/gw/gw-evil/status", f'{{"online": true, "boot": {HUGE}}}'.encode(), True),
        (
            "titik/gw/gw-evil/config/desired",
            f'{{"version": {HUGE}, "config": {{}}}}'.encode(),
            True,
        ),
        (
            "titik/gw/gw-evil/config/reported",
            f'{{"version": {HUGE}, "state": "applied"}}'.encode(),
            True,
        ),
    ]
    per_device = 30
    for i in range(per_device):
        for d in honest:
            pubs[d].publish(f"titik/gw/{d}/telemetry", telemetry(d, i))
        if i % 4 == 1 and poison:
            topic, payload, retain = poison.pop(0)
            evil.client.publish(topic, payload, qos=1, retain=retain)
    assert not poison
    for p in pubs.values():
        p.close(per_device)
    evil.close(7)

    want = {(d, "s1", i) for d in honest for i in range(per_device)}
    honest_rows = "SELECT device, sid, seq FROM samples WHERE device LIKE 'gw-honest%'"
    wait_until(lambda: set(rows(central.db, honest_rows)) == want, 20, "every honest sample")
    wait_until(lambda: central.get("/api/quarantine")["total"] == 7, 10, "7 quarantined")

    q = central.get("/api/quarantine")
    assert q["by_reason"] == {"schema": 7}
    assert {i["device"] for i in q["items"]} == {"gw-evil"}
    assert sorted(i["detail"] for i in q["items"]) == [
        "boot: Input should be less than or equal to 9007199254740991",
        "records.1.boot: Input should be less than or equal to 9007199254740991",
        "seq: Input should be a valid integer",
        "seq: Input should be less than or equal to 9007199254740991",
        "ts: Input should be a finite number",
        "version: Input should be less than or equal to 9007199254740991",
        "version: Input should be less than or equal to 9007199254740991",
    ]
    m = central.get("/metrics")
    assert metric(m, 'titik_ingest_bad_total{reason="schema"}') == 7
    assert metric(m, 'titik_quarantine_rows{reason="schema"}') == 7
    assert metric(m, 'titik_ingest_bad_total{reason="store"}') == 0
    health = central.get("/healthz")["ingest"]
    assert health["acked"] == health["received"]
    assert health["commit_errors"] == 0 and health["split_batches"] == 0
    for d in honest:
        dev = central.get(f"/api/devices/{d}")
        assert dev["online"] and dev["clients"] == 3
    assert rows(central.db, "SELECT 1 FROM samples WHERE device = 'gw-evil'") == []

    # Restart: the quarantined messages were acked, so the broker has nothing to send again
    # (and retained messages do not come on shared subscriptions).
    assert central.stop() == 0
    central.start(broker)
    ingest = central.get("/healthz")["ingest"]
    assert sum(ingest["bad"].values()) == 0
    assert ingest["received"] == ingest["accepted"]["telemetry"]  # only the new probes
    assert central.get("/api/quarantine")["total"] == 7
    # And ingest goes on.
    pubs["gw-honest0"] = Publisher(broker, "gw-honest0b")
    pubs["gw-honest0"].publish("titik/gw/gw-honest0/telemetry", telemetry("gw-honest0", 999))
    pubs["gw-honest0"].close(1)
    wait_until(
        lambda: rows(central.db, "SELECT 1 FROM samples WHERE seq = 999"),
        10,
        "ingest after restart",
    )


def test_a_sample_from_the_future_does_not_freeze_its_gateway(
    broker: Broker, central: Central
) -> None:
    pub = Publisher(broker, "gw-clock")
    now = time.time()

    def at(seq: int, ts: float) -> bytes:
        return telemetry("gw-clock", seq).replace(b'"ts":', f'"ts":{ts:.3f},"x":'.encode())

    pub.publish("titik/gw/gw-clock/telemetry", at(1, now))
    pub.publish("titik/gw/gw-clock/telemetry", at(10**12, now + 10 * 365 * 86400))
    for seq in range(2, 6):
        pub.publish("titik/gw/gw-clock/telemetry", at(seq, now + seq))
    pub.close(6)
    wait_until(lambda: len(rows(central.db, "SELECT 1 FROM samples WHERE device = 'gw-clock'")) == 6, 10, "6 stored")  # fmt: skip
    wait_until(lambda: central.get("/api/devices/gw-clock")["online"], 10, "gw-clock online")
    dev = central.get("/api/devices/gw-clock")
    assert dev["last_seen"] is not None
    alerts = central.get("/api/alerts")["items"]
    assert [(a["kind"], a["until"] is not None) for a in alerts if a["device"] == "gw-clock"] == [
        ("clock", True)
    ]
    m = central.get("/metrics")
    assert metric(m, 'titik_ingest_live_samples_total{outcome="future"}') == 1
    assert metric(m, 'titik_ingest_live_samples_total{outcome="late"}') == 0
    window = f"since={now - 10:.0f}&until={now + 100:.0f}"
    history = central.get(f"/api/devices/gw-clock/history?{window}")["points"]
    assert len(history) == 5  # the future one is stored too, years ahead


@pytest.fixture
def fuzz_pub(broker: Broker) -> Iterator[Publisher]:
    pub = Publisher(broker, "fuzz")
    yield pub
    pub.close(pub.acked)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(msg=messages())
def test_fuzz_through_mosquitto_into_a_central_process(
    central: Central, fuzz_pub: Publisher, msg: tuple[str, str, bytes]
) -> None:
    _, topic, payload = msg
    seq = central.probes = central.probes + 1
    acked = fuzz_pub.acked
    fuzz_pub.publish(topic, payload)
    # Same client, same session: the broker delivers in order, so once this honest sample is
    # stored, the fuzzed message before it has been handled.
    fuzz_pub.publish("titik/gw/gw-probe/telemetry", telemetry("gw-probe", seq))
    wait_until(lambda: fuzz_pub.acked >= acked + 2, 10, "PUBACKs")
    wait_until(lambda: rows(central.db, PROBES_FROM.format(seq)), 10, "the honest sample after it")
    assert central.alive()
    ingest = central.get("/healthz")["ingest"]
    assert ingest["received"] == sum(ingest["accepted"].values()) + sum(ingest["bad"].values())
    assert {r for r, n in ingest["bad"].items() if n} <= NAMED
    wait_until(lambda: central.get("/healthz")["ingest"]["acked"] >= ingest["received"], 5, "acks")
