"""Issue 18, point 2: what titik-ctl does is in central's audit log, seen on a real broker.

A real Mosquitto, a real agent (simulated platform) that requires signatures, titik-ctl run
in-process with an operator key, and central's broker audit (central/ingest/audit.py) on its
own MQTT session, as ``titik-central run`` starts it. Each signed push and command is recorded
with the signing key's id as "who", via ctl, and the agent's answer is recorded against it;
an unsigned push is recorded as unsigned with the agent's refusal. The log stays whole and
``GET /api/audit`` shows the actions with their answers.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agent.protocol.signing import key_id, parse_public_key
from central.api.app import create_app
from central.config import CentralConfig, parse_config
from central.ctl import cli as ctl
from central.ingest.audit import BrokerAudit
from central.store.audit import AuditEntry, AuditLog
from central.store.sqlite import SqliteStore
from tests.broker import Broker, wait_until
from tests.central_auth import auth_headers
from tests.integration.test_central_ingest import Publisher, running_central
from tests.integration.test_ctl import ssid_config, start_agent, wait_online

pytestmark = pytest.mark.broker


def central_config(broker: Broker, tmp_path: Path) -> CentralConfig:
    return parse_config(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "c-audit"\n'
        f'[store]\npath = "{tmp_path / "central.db"}"\nbatch_interval_s = 0.05\n'
    )


@pytest.fixture
def audited(broker: Broker, tmp_path: Path) -> Iterator[AuditLog]:
    config = central_config(broker, tmp_path)
    log = AuditLog(config.store.path)
    audit = BrokerAudit(config, log)
    stop = threading.Event()
    audit.start()
    runner = threading.Thread(target=audit.run, args=(stop,), daemon=True)
    runner.start()
    assert audit.subscribed.wait(10), "the broker audit did not subscribe"
    try:
        yield log
    finally:
        stop.set()
        runner.join(5)
        audit.stop()
        log.close()


def entries(log: AuditLog, action: str) -> list[AuditEntry]:
    return list(reversed(log.page(action=action).items))


def test_ctl_actions_and_the_gateways_answers_are_audited(
    broker: Broker, audited: AuditLog, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "ops.pem"
    assert ctl.main(["keygen", "--out", str(key)]) == 0
    public = capsys.readouterr().out.strip().splitlines()[-1]
    kid = key_id(parse_public_key(public))
    extra = f'[security]\ntrusted_keys = ["{public}"]\nrequire_signature = true\n'
    agent = start_agent(broker, tmp_path / "gw", "gw-aud01", extra)
    try:
        wait_online(broker, ["gw-aud01"])
        common = ["--broker", f"{broker.host}:{broker.port}", "--timeout", "20"]
        push = ["config", "push", "--device", "gw-aud01", "--file",
                str(ssid_config(tmp_path, "Audited"))]  # fmt: skip
        assert ctl.main([*common, "--key", str(key), *push]) == 0
        assert ctl.main([*common, *push]) == 1  # unsigned: the agent refuses it
        cmd = ["cmd", "--device", "gw-aud01", "collect_now"]
        assert ctl.main([*common, "--key", str(key), *cmd]) == 0
        capsys.readouterr()

        def recorded() -> bool:
            return len(entries(audited, "config.result")) == 2 and bool(
                entries(audited, "command.result")
            )

        wait_until(recorded, 20, "the pushes, the command and their answers in the log")
    finally:
        agent.stop()

    signed_push, unsigned_push = entries(audited, "config.push")
    assert (signed_push.actor, signed_push.key_id, signed_push.via) == (f"key:{kid}", kid, "ctl")
    assert signed_push.target == "gw/gw-aud01" and signed_push.result == "published"
    assert (unsigned_push.actor, unsigned_push.key_id) == ("unsigned", None)
    applied, rejected = entries(audited, "config.result")
    assert (applied.details["of"], applied.result) == (signed_push.seq, "applied")
    assert applied.actor == f"key:{kid}"
    assert rejected.details["of"] == unsigned_push.seq
    assert rejected.result.startswith("rejected: signature: missing")
    (command,) = entries(audited, "command")
    assert (command.actor, command.via, command.details["name"]) == (
        f"key:{kid}", "ctl", "collect_now",
    )  # fmt: skip
    (answer,) = entries(audited, "command.result")
    assert (answer.details["of"], answer.result, answer.target) == (
        command.seq, "ok", "gw/gw-aud01",
    )  # fmt: skip
    assert audited.verify() == []

    store = SqliteStore(audited.path)
    client = TestClient(create_app(store), headers=auth_headers(store, "viewer"))
    items = client.get("/api/audit?action=command").json()["items"]
    assert items[0]["answers"][0]["result"] == "ok"
    store.close()


def test_the_audit_takes_nothing_away_from_the_consumer(
    broker: Broker, audited: AuditLog, tmp_path: Path
) -> None:
    """Both read desired documents through shared subscriptions (the default share group):
    in one group they would split them; the audit has its own group, so each gets all."""
    config = central_config(broker, tmp_path)
    with running_central(config) as (store, _):
        ops = Publisher(broker, "ops")
        for i in range(8):
            doc = f'{{"version": {i + 1}, "config": {{}}}}'.encode()
            ops.publish(f"titik/group/g{i}/config/desired", doc)
        ops.close(8)
        wait_until(lambda: len(store.desired_docs()) == 8, 20, "the consumer has all 8")
        wait_until(lambda: audited.page(action="config.push").total == 8, 20, "all 8 audited")
