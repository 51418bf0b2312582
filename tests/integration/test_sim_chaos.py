"""titik-sim's chaos scenario at CI size: 100 real agents, a real Mosquitto and central as a
subprocess, and everything at once: full state disks (a real tmpfs per gateway, filled to
ENOSPC), clocks a day off, poison messages from extra clients, the broker restarted and
central killed with SIGKILL. Every count comes from central's SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from central.sim.chaos import chaos, chaos_plan, small_disks
from central.sim.fleet import SimulatedFleet, gateway_plan, wait_connected
from central.sim.stack import Stack, local_stack

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 100


@pytest.fixture
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with local_stack(tmp_path_factory.mktemp("stack")) as s:
        yield s


def test_chaos_loses_and_duplicates_nothing_for_any_honest_gateway(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> None:
    if os.geteuid() != 0:
        pytest.skip("full disks are a small tmpfs per gateway: mounting needs root")
    state = tmp_path_factory.mktemp("gateways")
    ids = [str(d["id"]) for d in gateway_plan(N)]
    with small_disks(chaos_plan(N), [state / i for i in ids]) as plan:
        assert len(plan.disks) == N // 20
        fleet = SimulatedFleet(
            N,
            stack.host,
            stack.port,
            state,
            interval_s=2.0,
            ramp_s=2.0,
            reconnect_max_s=5.0,
            replay_jitter_s=2.0,
        )
        fleet.start()
        try:
            assert wait_connected(fleet, 60) == N
            result = chaos(fleet, stack, 60, plan, down_s=12, drain_timeout=120)
        finally:
            fleet.stop()
    print(result)
    assert result["drain_s"] is not None
    assert result["records_lost"] == 0
    assert result["gateways_with_loss"] == 0
    assert result["records_duplicated"] == 0
    assert result["foreign_rows_under_honest_names"] == 0
    assert result["honest_quarantined"] == 0
    assert result["offline_at_end"] == 0
    assert isinstance(result["backlog_at_broker_restart"], int)
    assert result["backlog_at_broker_restart"] >= N  # everyone buffered while it was down
    # the disks really were full: every one of those gateways had writes refused
    assert result["full_disk_gateways_that_saw_enospc"] == N // 20
    assert result["clock_alerts_opened"] == (N // 20 + 1) // 2  # those whose clock ran ahead
    assert isinstance(result["poison_sent"], int)
    assert result["poison_sent"] > 100
    # every poison message the broker took was refused by central with a named reason (the
    # quarantine keeps at most 10 rows per gateway per minute, so compare with the cap)
    assert isinstance(result["poison_quarantined"], int)
    assert result["poison_quarantined"] > 0
    assert "internal" not in str(result["poison_quarantined_by_reason"])
    assert "store" not in str(result["poison_quarantined_by_reason"])
