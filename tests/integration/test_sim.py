"""The demo's simulated fleet: real agents on the simulated platform, one process, a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.protocol import Telemetry
from central.sim.fleet import REGIONS, SimulatedFleet, gateway_plan, wait_connected
from tests.broker import Broker, subscriber

pytestmark = pytest.mark.broker


def test_plan_is_deterministic_and_spread_over_jakarta() -> None:
    plan = gateway_plan(300)
    assert plan == gateway_plan(300)
    assert len({d["id"] for d in plan}) == 300
    assert {d["region"] for d in plan} == {r.name for r in REGIONS}
    for d in plan:
        assert -6.5 < float(d["lat"]) < -5.5  # type: ignore[arg-type]
        assert 106.5 < float(d["lon"]) < 107.1  # type: ignore[arg-type]


def test_fleet_connects_and_publishes(broker: Broker, tmp_path: Path) -> None:
    fleet = SimulatedFleet(5, broker.host, broker.port, tmp_path, interval_s=0.5)
    with subscriber(broker, "titik/gw/+/telemetry") as sub:
        fleet.start()
        try:
            assert wait_connected(fleet, 20) == 5
            seen = {
                Telemetry.model_validate_json(sub.next(timeout=10).payload).device
                for _ in range(15)
            }
        finally:
            fleet.stop()
    assert seen == {f"gw-sim-{i:05d}" for i in range(5)}


def test_titik_sim_refuses_more_gateways_than_it_may_open_sockets_for(tmp_path: Path) -> None:
    """Past the open-files limit every further connection fails (EMFILE), here and in the
    broker that inherits it: titik-sim says so and what to do, before starting anything."""
    import resource
    import subprocess
    import sys

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000))

    proc = subprocess.run(
        [sys.executable, "-m", "central.sim.cli", "--gateways", "2000", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=low_limit,  # sets one limit, no threads involved
        check=False,
    )
    assert proc.returncode == 2
    assert "--gateways 2000 needs about 2100 open files" in proc.stderr
    assert "ulimit -Hn" in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing started
