"""Issue 20, points 7 and 9: titik-sim's gateways send service reports, with faults planted on
a few (a saturated channel, an exhausted DHCP pool, a dead portal); real Mosquitto, real
``titik-central run`` (central.sim.stack.local_stack), real agents on the simulated platform.
Central's worst-APs list must be exactly the faulty gateways, each with its fault's reason,
and their alerts must be open."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from central.sim.cli import main as titik_sim
from central.sim.fleet import SimulatedFleet, plant_faults, wait_connected
from central.sim.scenarios import FAULT_REASONS, service_faults
from central.sim.stack import local_stack

pytestmark = pytest.mark.broker

#: The reason each planted fault must show in the worst-APs list.
REASON = FAULT_REASONS


def test_faults_are_planted_deterministically() -> None:
    faults = plant_faults(30, 2, seed=4)
    assert faults == plant_faults(30, 2, seed=4)
    assert sorted(faults.values()) == sorted(list(REASON) * 2)
    assert plant_faults(30, 0) == {}
    with pytest.raises(ValueError, match="only 5"):
        plant_faults(5, 2)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--service-faults", "1"], "needs --service-interval"),
        (["--service-interval", "10"], "at least 30 seconds"),
        (["--gateways", "5", "--service-interval", "60", "--service-faults", "2"], "need 6"),
        (["--scenario", "service"], "service scenario needs"),
        (
            ["--scenario", "service", "--service-interval", "60", "--broker", "h:1"],
            "without --broker",
        ),
    ],
)
def test_titik_sim_refuses_service_options_that_cannot_work(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        titik_sim(argv)
    assert exc.value.code == 2
    assert says in capsys.readouterr().err


def get(api: str, path: str, headers: dict[str, str]) -> Any:
    req = urllib.request.Request(api + path, headers=headers)  # noqa: S310 - our loopback URL
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        return json.loads(resp.read())


def test_the_worst_aps_are_the_faulty_ones_with_their_reasons(tmp_path: Path) -> None:
    n, each = 12, 1
    with local_stack(tmp_path / "stack") as stack:
        assert stack.api is not None
        fleet = SimulatedFleet(
            n,
            stack.host,
            stack.port,
            tmp_path / "gw",
            interval_s=30.0,
            service_interval_s=30.0,  # jitter 3 s: the first reports come within seconds
            service_faults=each,
        )
        assert len(fleet.faults) == 3 * each
        fleet.start()
        try:
            assert wait_connected(fleet, 30) == n
            # What `titik-sim --scenario service` reports: it waits for every report.
            result = service_faults(fleet, stack, timeout=60)
            assert result["all_reported"] and result["reports_stored"] == n, result
            assert result["planted"] == result["planted_at_the_head"] == 3 * each, result
            assert result["with_their_reason"] == 3 * each, result
            assert result["best_faulty_score"] < result["worst_healthy_score"], result
            worst = get(stack.api, f"/api/service/worst?limit={n}", stack.api_headers)["items"]
            alerts = get(stack.api, "/api/alerts?open=true", stack.api_headers)["items"]
        finally:
            fleet.stop()
    faulty = [w for w in worst[: 3 * each]]
    assert {w["device"] for w in faulty} == set(fleet.faults), (
        f"worst: {[(w['device'], w['score']) for w in worst]}; planted: {fleet.faults}"
    )
    for w in faulty:
        names = [d["name"] for d in w["deductions"]]
        assert REASON[fleet.faults[w["device"]]] in names, (w["device"], names)
    healthy = worst[3 * each :]
    assert max(w["score"] for w in faulty) < min(w["score"] for w in healthy)
    assert all(w["region"] for w in worst)  # joined with the gateways' status
    # The dead portal opens a service_probe alert; the busy channel and the exhausted pool
    # score under the default threshold only if deep enough, so only the probe is asserted.
    dead = next(d for d, f in fleet.faults.items() if f == "dead_portal")
    assert any(a["device"] == dead and a["kind"] == "service_probe" for a in alerts), alerts
