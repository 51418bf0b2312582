"""The rollout API (central/api/routes/rollouts.py) over a real SQLite store, the real
credentials check and audit log: prepare, sign (as titik-ctl or the page would), submit, then
pause, resume and abort as requests for the runner. The runner itself is
tests/integration/test_rollout_runner.py; here nothing publishes."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from agent.protocol.cohort import cohort
from agent.protocol.signing import public_key_text
from central.api.app import create_app
from central.api.routes.rollouts import rollouts_router
from central.config import CentralConfig
from central.rollout.plan import check_signatures
from central.store.base import DesiredDoc, DeviceState, WriteBatch
from central.store.rollouts import RolloutStore
from central.store.sqlite import SqliteStore
from tests.central_auth import auth_headers

IDS = [f"gw-{i:02d}" for i in range(20)]
OLD = {"telemetry": {"interval_s": 60}}
NEW = {"telemetry": {"interval_s": 120}}


class World:
    def __init__(self, tmp: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.store = SqliteStore(tmp / "central.db")
        now = time.time()
        self.store.write(
            WriteBatch(
                devices=[
                    DeviceState(d, groups=["g1"], online=True, last_seen=now, boot=1) for d in IDS
                ],
                desired=[DesiredDoc("group/g1", 7, json.dumps({"version": 7, "config": OLD}), now)],
            )
        )
        config = CentralConfig.model_validate(
            {
                "mqtt": {"host": "localhost"},
                "console": {"signing_keys": [public_key_text(self.key.public_key())]},
            }
        )
        self.rollouts = RolloutStore(self.store.path)
        self.app = create_app(
            self.store, routers=[rollouts_router(config, self.store, self.rollouts)]
        )
        self.client = TestClient(self.app)
        self.ops = auth_headers(self.store, "operator", "ana")
        self.viewer = auth_headers(self.store, "viewer", "vic")

    def prepare(self, **plan: Any) -> Any:
        body = {"id": "r1", "group": "g1", "config": NEW, "waves": [25, 100], "soak_s": 5, **plan}
        return self.client.post("/api/rollouts/prepare", json=body, headers=self.ops)

    def sigs(self, prepared: dict[str, Any], key: Ed25519PrivateKey | None = None) -> list[Any]:
        key = key or self.key
        from tests.console_rig import sign_prepared

        kid = _kid(key)
        return [sign_prepared(key, d, kid) for d in prepared["documents"]]

    def start(self, **plan: Any) -> dict[str, Any]:
        p = self.prepare(**plan)
        assert p.status_code == 200, p.text
        body = {"prepare_id": p.json()["prepare_id"], "sigs": self.sigs(p.json())}
        r = self.client.post("/api/rollouts/submit", json=body, headers=self.ops)
        assert r.status_code == 201, r.text
        out: dict[str, Any] = r.json()
        return out

    def audit(self) -> list[tuple[str, str, str]]:
        log = self.app.state.audit
        return [(e.actor, e.action, e.result) for e in reversed(log.page(limit=1000).items)]

    def close(self) -> None:
        """Every SQLite connection the app and the test opened (a module of tests must not
        leave hundreds of descriptors to the next: paho's select() fails past 1023)."""
        self.client.close()
        self.rollouts.close()
        self.app.state.audit.close()
        self.app.state.auth.tokens.close()
        self.store.close()


def _kid(key: Ed25519PrivateKey) -> str:
    from cryptography.hazmat.primitives import serialization

    from agent.protocol.signing import key_id

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key_id(raw)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.close()


def test_prepare_numbers_the_waves_and_gives_the_bytes_to_sign(world: World) -> None:
    r = world.prepare()
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["base_version"] == 7 and p["restore_version"] == 10
    assert [d["name"] for d in p["documents"]] == ["wave 1 (25%)", "wave 2 (100%)", "restore"]
    first = p["documents"][0]["payload"]
    assert first == {
        "version": 8,
        "config": NEW,
        "rollout": {"id": "r1", "percent": 25.0, "others": OLD},
    }
    assert p["documents"][2]["payload"] == {"version": 10, "config": OLD}
    raw = base64.b64decode(p["documents"][0]["signed_bytes_b64"])
    assert raw.startswith(b"titik-sig-v1\ntitik/group/g1/config/desired\n")
    assert p["waves"] == [
        {"percent": 25.0, "size": len(cohort("r1", IDS, 25)), "version": 8},
        {"percent": 100.0, "size": 20, "version": 9},
    ]
    assert p["members"] == 20


def test_submit_creates_the_rollout_for_the_runner_and_audits_it(world: World) -> None:
    out = world.start()
    assert out["status"] == "running" and out["wave"] == -1 and out["progress"] == 0
    assert out["created_by"] == "ana"
    stored = world.rollouts.get("r1")
    assert stored is not None and stored.status == "running"
    # What the runner will publish is signed by the operator's key for the group's topic.
    from central.rollout.engine import from_dict

    run = from_dict(stored.state)
    from agent.protocol.signing import Verifier

    verifier = Verifier([public_key_text(world.key.public_key())])
    topic = "titik/group/g1/config/desired"
    assert check_signatures(run.plan, run.waves, run.restore, verifier, topic) == _kid(world.key)
    assert ("ana", "rollout.start", "started") in world.audit()
    listing = world.client.get("/api/rollouts", headers=world.viewer).json()["items"]
    assert [x["id"] for x in listing] == ["r1"]
    one = world.client.get("/api/rollouts/r1", headers=world.viewer).json()
    assert one["wave_sizes"] == [len(cohort("r1", IDS, 25)), 20]


def test_a_bad_config_or_plan_is_refused_before_signing(world: World) -> None:
    r = world.prepare(config={"telemetry": {"interval_s": -5}})
    assert r.status_code == 422 and "interval_s" in r.json()["detail"]
    r = world.prepare(waves=[50, 40])
    assert r.status_code == 422 and "waves" in r.json()["detail"]
    r = world.prepare(waves=[10, 50])
    assert r.status_code == 422 and "last wave must be 100" in r.json()["detail"]
    r = world.prepare(group="nobody")
    assert r.status_code == 404 and "no gateway known to central" in r.json()["detail"]
    r = world.prepare(max_failures="lots")
    assert r.status_code == 422 and "max_failures" in r.json()["detail"]
    assert (
        "ana",
        "rollout.prepare",
        "refused: waves: the last wave must be 100 (every member)",
    ) in world.audit()


def test_a_signature_by_an_untrusted_key_starts_nothing(world: World) -> None:
    p = world.prepare().json()
    body = {"prepare_id": p["prepare_id"], "sigs": world.sigs(p, Ed25519PrivateKey.generate())}
    r = world.client.post("/api/rollouts/submit", json=body, headers=world.ops)
    assert r.status_code == 403 and "not trusted" in r.json()["detail"]
    assert world.rollouts.get("r1") is None
    # A document signed, but a signature swapped: refused too (each is checked).
    p = world.prepare().json()
    sigs = world.sigs(p)
    body = {"prepare_id": p["prepare_id"], "sigs": [sigs[1], sigs[0], sigs[2]]}
    r = world.client.post("/api/rollouts/submit", json=body, headers=world.ops)
    assert r.status_code == 403, r.text
    # Once submitted, a prepare id is gone.
    r = world.client.post("/api/rollouts/submit", json=body, headers=world.ops)
    assert r.status_code == 404


def test_one_rollout_per_group_and_ids_are_unique(world: World) -> None:
    world.start()
    r = world.prepare(id="r2")
    assert r.status_code == 409 and "'r1' under way" in r.json()["detail"]
    r = world.prepare()
    assert r.status_code == 409 and "exists already" in r.json()["detail"]


def test_pause_resume_abort_are_requests_with_clear_refusals(world: World) -> None:
    world.start()
    c, ops = world.client, world.ops
    r = c.post("/api/rollouts/r1/resume", headers=ops)
    assert r.status_code == 409 and "only a paused one" in r.json()["detail"]
    r = c.post("/api/rollouts/r1/pause", headers=ops)
    assert r.status_code == 202 and r.json() == {
        "id": "r1",
        "requested": "pause",
        "status": "running",
    }
    intents = world.rollouts.take_intents("r1")
    assert [(i.action, i.who) for i in intents] == [("pause", "ana")]
    assert c.post("/api/rollouts/nope/abort", headers=ops).status_code == 404
    # A final rollout refuses everything with 409.
    store = world.rollouts
    got = store.get("r1")
    assert got is not None
    store.save("r1", {**got.state, "status": "completed"}, None)
    r = c.post("/api/rollouts/r1/abort", headers=ops)
    assert r.status_code == 409 and "it has ended" in r.json()["detail"]
    assert c.post("/api/rollouts/r1/abort", headers=world.viewer).status_code == 403
    actions = [(a, res[:8]) for _, a, res in world.audit()]
    assert ("rollout.pause", "requeste") in actions
    assert ("rollout.abort", "refused:") in actions


def test_a_step_that_judges_nothing_keeps_the_last_gate(world: World) -> None:
    world.start()
    store = world.rollouts
    got = store.get("r1")
    assert got is not None
    gate = {"checked": 1.0, "verdict": "soaking", "size": 5, "applied": 4, "failures": 0,
            "failed": [], "health": []}  # fmt: skip
    store.save("r1", got.state, gate)
    store.save("r1", {**got.state, "status": "paused"}, None)  # the runner after a pause
    one = world.client.get("/api/rollouts/r1", headers=world.viewer).json()
    assert one["status"] == "paused" and one["gate"]["applied"] == 4


def test_a_wave_too_small_to_reach_anyone_is_said_in_the_summary(world: World) -> None:
    r = world.prepare(waves=[1, 100])  # 1 % of 20 gateways
    assert r.status_code == 200
    assert [w["size"] for w in r.json()["waves"]] == [len(cohort("r1", IDS, 1)), 20] == [0, 20]
    assert "note: wave 1 reaches no gateway of this group" in r.json()["summary"]
    r = world.prepare(waves=[50, 100])
    assert "reaches no gateway" not in r.json()["summary"]


def _manifest(key: Ed25519PrivateKey) -> dict[str, Any]:
    from agent.protocol.signing import sign
    from agent.protocol.upgrade import MANIFEST_CONTEXT

    body = {
        "version": "0.2.0",
        "min_from": "0.1.0",
        "packages": [
            {"format": "sim", "arch": "all", "url": "http://127.0.0.1:9/p.sim", "size": 10,
             "sha256": "0" * 64}
        ],
    }  # fmt: skip
    return sign(key, MANIFEST_CONTEXT, body)


def test_an_upgrade_is_prepared_as_spread_commands_and_started_like_a_rollout(
    world: World,
) -> None:
    body = {
        "id": "up1", "group": "g1", "manifest": _manifest(world.key), "waves": [10, 100],
        "steps": 3, "spread_s": 600, "window": "01:00-05:00", "health_timeout_s": 60,
        "soak_s": 120, "max_failures": "1%",
    }  # fmt: skip
    r = world.client.post("/api/rollouts/upgrade/prepare", json=body, headers=world.ops)
    assert r.status_code == 200, r.text
    p = r.json()
    assert p["topic"] == "titik/group/g1/cmd"
    assert [d["name"] for d in p["documents"]][:2] == [
        "wave 1 (10%) command 1/3: cohort 3.33%",
        "wave 1 (10%) command 2/3: cohort 6.67%",
    ]
    cmd = p["documents"][5]["payload"]
    assert cmd["id"] == "up:up1:2.3" and cmd["name"] == "upgrade"
    assert cmd["args"]["rollout"] == {"id": "up1", "percent": 100}
    assert time.time() + 6 * 86400 < cmd["expires_at"] <= time.time() + 7 * 86400
    raw = base64.b64decode(p["documents"][0]["signed_bytes_b64"])
    assert raw.startswith(b"titik-sig-v1\ntitik/group/g1/cmd\n")
    assert "upgrade the agent to 0.2.0" in p["summary"] and "01:00-05:00" in p["summary"]
    sigs = world.sigs(p)
    r = world.client.post(
        "/api/rollouts/submit", json={"prepare_id": p["prepare_id"], "sigs": sigs},
        headers=world.ops,
    )  # fmt: skip
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["kind"] == "upgrade" and out["release"] == "0.2.0" and out["commands"] == 6
    assert out["window"] == "01:00-05:00 Asia/Jakarta" and out["commands_sent"] == 0
    stored = world.rollouts.get("up1")
    assert stored is not None and stored.state["plan"]["upgrade"]["steps"] == 3
    assert ("ana", "rollout.start", "started") in world.audit()


def test_an_upgrade_with_a_manifest_central_does_not_trust_is_refused(world: World) -> None:
    other = Ed25519PrivateKey.generate()
    body = {"id": "up2", "group": "g1", "manifest": _manifest(other), "soak_s": 600}
    r = world.client.post("/api/rollouts/upgrade/prepare", json=body, headers=world.ops)
    assert r.status_code == 422 and "not trusted" in r.json()["detail"], r.text
    unsigned = {k: v for k, v in _manifest(world.key).items() if k != "sig"}
    r = world.client.post(
        "/api/rollouts/upgrade/prepare", json={**body, "manifest": unsigned}, headers=world.ops
    )
    assert r.status_code == 422 and "manifest" in r.json()["detail"], r.text
    r = world.client.post(
        "/api/rollouts/upgrade/prepare",
        json={**body, "manifest": _manifest(world.key), "window": "25:00-01:00"},
        headers=world.ops,
    )
    assert r.status_code == 422 and "HH:MM-HH:MM" in r.json()["detail"], r.text
