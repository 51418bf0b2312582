"""titik-sim with central on PostgreSQL (issue 21): real agents on one event loop, a real
Mosquitto, ``titik-central run`` on a real PostgreSQL (tests/postgres.py; the CLI's own
throwaway one in the last test), and the records counted from PostgreSQL's ``samples``."""

from __future__ import annotations

import os
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from central.sim import cli
from central.sim.fleet import SimulatedFleet, wait_connected
from central.sim.localbroker import (
    LocalBroker,
    listeners_for,
    listening,
    source_address,
    wait_until,
)
from central.sim.localpg import PREFIX
from central.sim.scenarios import steady
from central.sim.stack import Stack, expected_seqs, local_stack, missing_per_device
from central.sim.stored import PgSamples

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 50


@pytest.fixture
def pg_stack(tmp_path: Path, pg_url: str) -> Iterator[Stack]:
    with local_stack(tmp_path / "stack", store="postgresql", store_url=pg_url, gateways=N) as s:
        yield s


def test_steady_on_postgresql_stores_every_record_once(pg_stack: Stack, tmp_path: Path) -> None:
    assert pg_stack.db is None and pg_stack.store_url is not None
    assert not (tmp_path / "stack" / "central.db").exists()  # central is on PostgreSQL
    fleet = SimulatedFleet(
        N, pg_stack.host, pg_stack.ports, tmp_path / "gw", interval_s=2.0, ramp_s=2.0
    )
    samples = PgSamples(pg_stack.store_url or "")
    fleet.start()
    try:
        assert wait_connected(fleet, 60) == N
        result = steady(fleet, pg_stack, 12)  # about 7 samples a gateway with the ramp
        # What was drawn until now, stored (the fleet draws on until it stops).
        expected = expected_seqs(fleet)
        wait_until(lambda: not missing_per_device(samples, expected), 30, "every record")
    finally:
        fleet.stop()
    print(result)
    assert result["connected"] == N
    assert result["devices_stored"] == N
    assert result["records_lost"] == 0
    assert isinstance(result["ingested_per_s"], float) and result["ingested_per_s"] > 0
    # The count is PostgreSQL's own: every row the gateways drew is there once ...
    drawn = sum(r[2] for r in expected.values())
    assert drawn >= N * 5
    url = samples.url
    with psycopg.connect(url) as conn:
        row = conn.execute(
            b"SELECT count(*), count(DISTINCT (device, sid, seq)) FROM samples "
            b"WHERE device LIKE 'gw-sim-%'"
        ).fetchone()
    assert row is not None and row[0] == row[1] >= drawn
    # ... and rows taken away are counted as lost, per gateway (the counting is not vacuous).
    victim = fleet.agents[7].device_id
    with psycopg.connect(url, autocommit=True) as conn:
        gone = conn.execute(
            b"DELETE FROM samples WHERE device = %s AND seq IN "
            b"(SELECT seq FROM samples WHERE device = %s ORDER BY seq LIMIT 3)",
            (victim, victim),
        ).rowcount
    assert gone == 3
    assert missing_per_device(samples, expected) == {victim: 3}


def test_a_fleet_spreads_over_a_brokers_listeners(tmp_path: Path) -> None:
    """Past one port's share of the ephemeral range, the broker listens on more ports and
    gateway i connects to port i % k: both listeners take their half."""
    assert listeners_for(50) == 1
    assert listeners_for(50_000) >= 2
    broker = LocalBroker(tmp_path, listeners=2)
    broker.start()
    fleet = SimulatedFleet(6, broker.host, broker.ports, tmp_path / "gw", interval_s=1.0)
    fleet.start()
    try:
        assert len(set(broker.ports)) == 2
        assert wait_connected(fleet, 30) == 6
        used = [a.cfg.mqtt.port for a in fleet.agents]
        assert used == [broker.ports[i % 2] for i in range(6)]
    finally:
        fleet.stop()
        broker.stop()


def test_a_large_fleet_connects_from_several_loopback_addresses(tmp_path: Path) -> None:
    """paho binds before it connects, so one address holds at most the ephemeral range's
    ports in connections whatever the destination: past a third of the range per address the
    gateways leave from 127.0.1.1, 127.0.2.1, ... (here 2 per address, to see it with 6)."""
    assert source_address(0, 50) is None
    assert [source_address(i, 50_000, 9410) for i in (0, 9409, 9410, 49_999)] == [
        "127.0.1.1",
        "127.0.1.1",
        "127.0.2.1",
        "127.0.6.1",
    ]
    broker = LocalBroker(tmp_path)
    broker.start()
    fleet = SimulatedFleet(6, broker.host, broker.port, tmp_path / "gw", per_source=2)
    fleet.start()
    try:
        assert wait_connected(fleet, 30) == 6
    finally:
        fleet.stop()
        broker.stop()
    log = broker.log.read_text()
    for k in (1, 2, 3):
        assert log.count(f"New client connected from 127.0.{k}.1:") == 2, log


def test_a_broker_is_ready_when_it_listens_not_when_a_probe_gets_through(tmp_path: Path) -> None:
    """After an outage thousands of gateways fill a restarted broker's listen backlog, and a
    probe's connection attempt is dropped with theirs: readiness is the kernel's LISTEN."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert listening("127.0.0.1", port) is False
        s.listen(0)
        assert listening("127.0.0.1", port) is True
    assert listening("127.0.0.1", port) is False
    assert listening("127.0.0.1", port, tmp_path / "no-such-table") is None
    # Without ss (iproute2), the same answers from /proc/net/tcp.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        table = Path("/proc/net/tcp")
        assert listening("127.0.0.1", port, table) is False
        s.listen(0)
        assert listening("127.0.0.1", port, table) is True
        assert listening("127.0.0.2", port, table) is False
        assert listening("127.0.0.2", port) is False


def test_titik_sim_store_postgresql_starts_its_own_and_removes_it(tmp_path: Path) -> None:
    """``titik-sim --store postgresql``: its own throwaway PostgreSQL, central on it, the
    report's records lost counted from it; the cluster is gone at the end, its log kept."""
    mine = set(Path(tempfile.gettempdir()).glob(f"{PREFIX}*"))
    report = tmp_path / "sim.md"
    on_term = signal.getsignal(signal.SIGTERM)  # titik-sim sets its own
    try:
        code = cli.main(
            [
                "--gateways", "20", "--store", "postgresql", "--interval", "2", "--ramp", "1",
                "--minutes", "0.1", "--workdir", str(tmp_path / "work"), "--report", str(report),
            ]
        )  # fmt: skip
    finally:
        signal.signal(signal.SIGTERM, on_term)
    assert code == 0
    text = report.read_text()
    assert "| records_lost | 0 |" in text
    assert "| devices_stored | 20 |" in text
    (run,) = (tmp_path / "work").glob("run-*")
    assert "database system is ready" in (run / "stack" / "postgres.log").read_text()
    assert "store: PostgreSQL" in (run / "stack" / "central.log").read_text()
    assert not (run / "stack" / "central.db").exists()
    left = {
        d
        for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}*")
        if d not in mine
        and (d / "owner").exists()
        and (d / "owner").read_text() == str(os.getpid())
    }
    assert not left


def test_titik_sim_store_arguments_say_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, says in (
        (["--store", "sqlite", "--store-url", "postgresql://u@h:1/d"], "drop --store sqlite"),
        (["--store-url", "sqlite:///x.db"], "write postgresql://"),
        (["--store", "postgresql", "--broker", "127.0.0.1:1883"], "--store-url"),
        (["--store", "postgresql", "--scenario", "chaos"], "--store sqlite"),
    ):
        with pytest.raises(SystemExit) as exc:
            cli.main(argv)
        assert exc.value.code == 2
        assert says in capsys.readouterr().err
