"""Rollouts in waves (central.rollout): the plan's documents, each wave's health gate, and the
state machine, on a fleet held in memory (the gateways' side is tests/unit/test_cohort.py)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from agent.protocol import ConfigReported
from agent.protocol.cohort import cohort, in_cohort
from central.rollout.engine import RolloutStatus, Run, abort, pause, progress, resume, start, step
from central.rollout.gate import Verdict, check_wave
from central.rollout.plan import Limits, Plan, PlanError, check_documents, check_plan, documents
from central.store.base import DeviceState

IDS = [f"gw-{n:04d}" for n in range(1000)]
OLD = {"telemetry": {"interval_s": 60}}
NEW = {"telemetry": {"interval_s": 30}}


def plan(**limits: Any) -> Plan:
    return Plan("r-1", "g1", (1, 5, 25, 100), 7, NEW, OLD, Limits(**{"soak_s": 600, **limits}))


def signed(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**d, "sig": {"alg": "ed25519", "kid": "k", "value": "v"}} for d in docs]


def new_run(p: Plan) -> Run:
    waves, restore = documents(p)
    return Run(p, tuple(signed(waves)), signed([restore])[0])


@dataclass
class Fleet:
    """The gateways react to what is published as real ones would (their reports, health)."""

    states: dict[str, DeviceState] = field(default_factory=dict)
    reports: dict[str, ConfigReported] = field(default_factory=dict)
    broken: set[str] = field(default_factory=set)  # reject the new config
    hot: set[str] = field(default_factory=set)  # run 30 points hotter on the new config

    def __post_init__(self) -> None:
        for d in IDS:
            self.states[d] = DeviceState(d, groups=["g1"], online=True, cpu_pct=20.0)

    def members(self, group: str) -> list[str]:
        return sorted(d for d, s in self.states.items() if group in s.groups)

    def state(self, device: str) -> DeviceState | None:
        return self.states.get(device)

    def report(self, device: str) -> ConfigReported | None:
        return self.reports.get(device)

    def publish(self, doc: dict[str, Any]) -> None:
        sel = doc.get("rollout")
        for d, st in self.states.items():
            if not st.online:
                continue
            takes_new = (sel is None and doc["config"] == NEW) or (
                sel is not None and in_cohort(sel["id"], d, sel["percent"])
            )
            state = "rejected" if takes_new and d in self.broken else "applied"
            self.reports[d] = ConfigReported(
                version=doc["version"],
                source="group/g1",
                state=state,
                versions={"group/g1": doc["version"]},
            )
            cpu = 50.0 if takes_new and d in self.hot else 20.0
            self.states[d] = replace(st, cpu_pct=cpu)


def drive(run: Run, fleet: Fleet, *, until: float = 10_000) -> tuple[Run, list[int]]:
    """Run the rollout against the fleet, a step a minute; the versions published."""
    now = 0.0
    run, pubs = start(run, now)
    published = []
    while True:
        for pub in pubs:
            fleet.publish(dict(pub.payload))
            published.append(pub.version)
        if run.status.final or now > until:
            return run, published
        now += 60
        run, pubs, _ = step(run, now, fleet)


def test_the_documents_of_a_plan() -> None:
    waves, restore = documents(plan())
    assert [w["version"] for w in waves] == [8, 9, 10, 11] and restore["version"] == 12
    assert waves[0]["rollout"] == {"id": "r-1", "percent": 1, "others": OLD}
    assert "rollout" not in waves[-1] and waves[-1]["config"] == NEW
    assert restore == {"version": 12, "config": OLD}


def test_a_healthy_rollout_goes_wave_by_wave_with_its_soak() -> None:
    run, published = drive(new_run(plan()), Fleet())
    assert run.status is RolloutStatus.COMPLETED and progress(run) == 100
    assert published == [8, 9, 10, 11]  # no restore
    # each wave soaked 10 minutes before the next: 4 waves, 11 steps of a minute each
    assert [e.split()[1:3] for e in run.events][:2] == [["wave", "1/4"], ["wave", "2/4"]]
    assert run.events[1].startswith("600 ")  # wave 2 once wave 1 soaked its 600 s


def test_two_percent_failing_halts_at_the_first_wave_that_meets_them_and_restores() -> None:
    fleet = Fleet(broken=set(IDS[::50]))  # 20 of 1,000
    run, published = drive(new_run(plan(max_failures=1)), fleet)
    assert run.status is RolloutStatus.HALTED
    assert published[-1] == 12  # the restore, newer than every wave
    assert "failed its gate" in (run.reason or "") and "rejected" in (run.reason or "")
    # it stopped before everyone got the new config
    assert len(published) - 1 < 4
    assert all(r.version == 12 for r in fleet.reports.values())


def test_a_wave_worse_than_the_rest_on_health_halts() -> None:
    wave1 = cohort("r-1", IDS, 1)
    fleet = Fleet(hot=set(wave1))
    run, published = drive(new_run(plan()), fleet)
    assert run.status is RolloutStatus.HALTED and published == [8, 12]
    assert "cpu_pct: wave 50.0 vs rest 20.0 (margin 15)" in (run.reason or "")


def test_offline_gateways_fail_only_at_the_end_of_the_soak() -> None:
    fleet = Fleet()
    p = plan()
    run, _ = start(new_run(p), 0)
    wave1 = cohort("r-1", IDS, 1)
    fleet.states[wave1[0]] = replace(fleet.states[wave1[0]], online=False)
    fleet.publish(dict(run.waves[0]))
    assert check_wave(p, 0, fleet, soak_over=False).verdict is Verdict.SOAKING
    check = check_wave(p, 0, fleet, soak_over=True)
    assert check.verdict is Verdict.FAILED and check.failures == [f"{wave1[0]}: offline"]
    assert (
        check_wave(replace(p, limits=Limits(max_failures=1)), 0, fleet, soak_over=True).verdict
        is Verdict.PASSED
    )


def test_pause_resume_and_abort() -> None:
    fleet = Fleet()
    run, pubs = start(new_run(plan()), 0)
    fleet.publish(dict(pubs[0].payload))
    run = pause(run, 30, "ops@city")
    assert step(run, 10_000, fleet)[1] == []  # nothing advances while paused
    with pytest.raises(ValueError, match="only a running rollout can be paused"):
        pause(run, 31, "ops@city")
    run = resume(run, 100, "ops@city")
    assert run.soak_until == 700  # the wave soaks again in full
    run, pubs = abort(run, 120, "ops@city")
    assert run.status is RolloutStatus.ABORTED and [p.version for p in pubs] == [12]
    with pytest.raises(ValueError, match="already aborted"):
        abort(run, 121, "ops@city")


def test_signed_documents_must_be_the_plans() -> None:
    p = plan()
    waves, restore = documents(p)
    check_documents(p, signed(waves), signed([restore])[0])
    tampered = copy.deepcopy(signed(waves))
    tampered[1]["rollout"]["percent"] = 100
    with pytest.raises(PlanError, match=r"waves\[1\]: is not the document of wave 2"):
        check_documents(p, tampered, signed([restore])[0])
    with pytest.raises(PlanError, match=r"waves\[0\].sig: missing"):
        check_documents(p, waves, signed([restore])[0])
    with pytest.raises(PlanError, match="restore: is not"):
        check_documents(p, signed(waves), signed([{"version": 12, "config": NEW}])[0])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"percents": (5, 1, 100)}, "waves: each a percentage above the one before"),
        ({"percents": (1, 50)}, "waves: the last wave must be 100"),
        ({"percents": ()}, "waves: at least one"),
        ({"group": "a/b"}, "group: must be"),
        ({"id": ""}, "id: must be"),
        ({"limits": Limits(soak_s=-1)}, "soak_s"),
        ({"limits": Limits(max_failures=150, max_failures_percent=True)}, "max_failures: at most"),
    ],
)
def test_a_bad_plan_is_refused_naming_the_field(change: dict[str, Any], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        check_plan(replace(plan(), **change))


def test_every_document_must_be_signed_by_one_trusted_key() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.protocol.signing import Verifier, public_key_text, sign
    from central.rollout.plan import check_signatures

    topic = "titik/group/g1/config/desired"
    ops, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = Verifier([public_key_text(k.public_key()) for k in (ops, other)])
    p = plan()
    waves, restore = documents(p)
    good = [sign(ops, topic, w) for w in waves]
    kid = check_signatures(p, good, sign(ops, topic, restore), trusted, topic)
    assert kid == good[0]["sig"]["kid"]
    with pytest.raises(PlanError, match=r"restore\.sig: missing"):
        check_signatures(p, good, restore, trusted, topic)
    forged = [*good]
    forged[1] = {**good[1], "config": {"telemetry": {"interval_s": 5}}}
    with pytest.raises(PlanError, match=r"waves\[1\]\.sig: does not match"):
        check_signatures(p, forged, sign(ops, topic, restore), trusted, topic)
    wrong_topic = [sign(ops, "titik/group/g2/config/desired", w) for w in waves]
    with pytest.raises(PlanError, match=r"waves\[0\]\.sig: does not match"):
        check_signatures(p, wrong_topic, sign(ops, topic, restore), trusted, topic)
    with pytest.raises(PlanError, match="signed by the same key"):
        check_signatures(p, good, sign(other, topic, restore), trusted, topic)
    stranger = Ed25519PrivateKey.generate()
    with pytest.raises(PlanError, match="is not trusted"):
        check_signatures(p, [sign(stranger, topic, w) for w in waves], restore, trusted, topic)
