"""Console actions end to end on a real Mosquitto: prepare, sign in the "page" (cryptography,
the same bytes the browser signs), submit; what reaches the broker verifies with the
gateways' own agent.protocol.signing.Verifier, and nothing unsigned or mis-signed is sent.

Credentials and the audit log are the real ones (tests/console_rig.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import Verifier, public_key_text
from agent.protocol.topics import CMD, CONFIG_DESIRED, CONFIG_REPORTED, group_topic, gw_topic
from central.actions.publish import MqttPublisher
from central.config import CentralMqttConfig
from central.ingest.audit import Recorder, Seen
from central.store.audit import message_ref
from central.store.base import AlertChange, DeviceState, WriteBatch
from tests.broker import Broker, Subscriber, subscriber, wait_until
from tests.console_rig import PREFIX, Rig, make_rig, sign_prepared

CONFIG = {"telemetry": {"interval_s": 30}, "wifi": {"ssids": {"pub": {"ssid": "Titik Free"}}}}


@pytest.fixture
def publisher(broker: Broker) -> Iterator[MqttPublisher]:
    pub = MqttPublisher(
        CentralMqttConfig(host=broker.host, port=broker.port, client_id="central-test"),
        timeout_s=5,
    )
    pub.start()
    wait_until(pub.connected.is_set, 5, "the console's connection")
    try:
        yield pub
    finally:
        pub.stop()


@pytest.fixture
def rig(tmp_path: Path, publisher: MqttPublisher) -> Rig:
    return make_rig(tmp_path, publisher)


def prepare(
    rig: Rig,
    kind: str,
    target: dict[str, str],
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Any:
    return rig.client.post(
        "/api/actions/prepare",
        json={"kind": kind, "target": target, "body": body},
        headers=rig.ops if headers is None else headers,
    )


MARK_TOPIC = gw_topic(PREFIX, "gw-mark", CMD)


def nothing_before_a_marker(rig: Rig, sub: Subscriber) -> None:
    """Nothing was published: a genuine action sent now, on the same connection, is the
    first message the subscriber (also subscribed to MARK_TOPIC) sees. No sleep."""
    p = prepare(rig, "command", {"device": "gw-mark"}, {"name": "collect_now"}).json()
    assert _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid)).status_code == 200
    first = sub.next()
    assert first.topic == MARK_TOPIC, f"unexpected message on {first.topic}"


def test_config_prepared_signed_submitted_reaches_the_broker_and_verifies(
    broker: Broker, rig: Rig
) -> None:
    topic = gw_topic(PREFIX, "gw-1", CONFIG_DESIRED)
    with subscriber(broker, topic) as sub:
        r = prepare(rig, "config", {"device": "gw-1"}, {"config": CONFIG})
        assert r.status_code == 200, r.text
        p = r.json()
        assert p["topic"] == topic
        assert p["payload"] == {"version": 1, "config": CONFIG}
        assert "gateway gw-1" in p["summary"] and "telemetry, wifi" in p["summary"]
        s = rig.client.post(
            "/api/actions/submit",
            json={"action_id": p["action_id"], "sig": sign_prepared(rig.key, p, rig.kid)},
            headers=rig.ops,
        )
        assert s.status_code == 200, s.text
        assert s.json() == {"status": "published", "topic": topic}
        msg = sub.next(lambda m: m.topic == topic)
    doc = msg.json()
    # The gateways' own check: the trusted key, the topic bound into the signature.
    gateway = Verifier([public_key_text(rig.key.public_key())])
    assert gateway.verify(topic, doc) == rig.kid
    assert doc["config"] == CONFIG and doc["version"] == 1
    assert rig.entries()[-1] == {
        "actor": "ana",
        "action": "config.push",
        "target": "gw/gw-1",
        "key_id": rig.kid,
        "result": "published",
        "detail": {
            "action_id": p["action_id"],
            "topic": topic,
            "version": 1,
            "keys": ["telemetry", "wifi"],  # never the values (Wi-Fi passphrases)
            "digest": message_ref(topic, msg.payload).removeprefix("msg:"),
        },
        "via": "web",
    }
    # The broker audit sees the same message cross the broker: it is the web's entry
    # (same ref), not a second one under the bare key id; the gateway's answer links to it.
    recorder = Recorder(PREFIX, rig.audit)
    seen = recorder.record(Seen(topic, msg.payload))
    assert seen is not None and seen.actor == "ana" and seen.via == "web"
    report = {"version": 1, "source": "gw", "state": "applied", "versions": {"gw": 1}}
    answer = recorder.record(
        Seen(gw_topic(PREFIX, "gw-1", CONFIG_REPORTED), json.dumps(report).encode())
    )
    assert answer is not None and answer.actor == "ana" and answer.action == "config.result"
    assert answer.details["of"] == seen.seq
    assert rig.entries()[0]["action"] == "config.prepare"
    # Retained, as titik-ctl publishes desired documents: a gateway connecting later gets it.
    with subscriber(broker, topic, client_id="late") as late:
        assert late.next().retain


def test_command_to_a_group_reaches_the_group_topic_signed(broker: Broker, rig: Rig) -> None:
    topic = group_topic(PREFIX, "north", CMD)
    with subscriber(broker, topic) as sub:
        p = prepare(
            rig, "command", {"group": "north"}, {"name": "reboot", "args": {"delay_s": 30}}
        ).json()
        assert p["payload"]["name"] == "reboot" and p["payload"]["args"] == {"delay_s": 30}
        assert p["payload"]["expires_at"] == int(rig.clock[0] + 3600)
        s = rig.client.post(
            "/api/actions/submit",
            json={"action_id": p["action_id"], "sig": sign_prepared(rig.key, p, rig.kid)},
            headers=rig.ops,
        )
        assert s.status_code == 200, s.text
        msg = sub.next()
    assert not msg.retain
    assert Verifier([public_key_text(rig.key.public_key())]).verify(topic, msg.json()) == rig.kid
    assert rig.entries()[-1]["action"] == "command"
    assert rig.entries()[-1]["detail"]["name"] == "reboot"
    assert rig.entries()[-1]["target"] == "group/north"


def _submit(rig: Rig, action_id: str, sig: dict[str, str]) -> Any:
    return rig.client.post(
        "/api/actions/submit", json={"action_id": action_id, "sig": sig}, headers=rig.ops
    )


def test_a_stolen_session_can_prepare_but_never_publish(broker: Broker, rig: Rig) -> None:
    """The thief has the operator's session but not the key: whatever they sign with, and
    whatever signature they copy from an earlier action, nothing is published."""
    topic = gw_topic(PREFIX, "gw-1", CMD)
    with subscriber(broker, topic, MARK_TOPIC) as sub:
        # An earlier, genuine action's signature (seen on the network or in the audit).
        first = prepare(rig, "command", {"device": "gw-1"}, {"name": "get_config"}).json()
        old_sig = sign_prepared(rig.key, first, rig.kid)
        assert _submit(rig, first["action_id"], old_sig).status_code == 200
        sub.next()
        # The thief prepares a reboot and has no key that central trusts.
        p = prepare(rig, "command", {"device": "gw-1"}, {"name": "reboot"}).json()
        own_key = Ed25519PrivateKey.generate()
        r = _submit(rig, p["action_id"], sign_prepared(own_key, p, rig.kid))  # claims the kid
        assert r.status_code == 403 and "does not match" in r.json()["detail"]
        p = prepare(rig, "command", {"device": "gw-1"}, {"name": "reboot"}).json()
        r = _submit(rig, p["action_id"], old_sig)  # replays an old signature
        assert r.status_code == 403
        nothing_before_a_marker(rig, sub)
    refused = [e for e in rig.entries() if e["result"].startswith("refused")]
    assert [e["action"] for e in refused] == ["command", "command"]
    assert all("signature" in e["result"] for e in refused)


def test_untrusted_kid_tampered_payload_unknown_and_expired_ids_are_refused(
    broker: Broker, rig: Rig
) -> None:
    topic = gw_topic(PREFIX, "gw-1", CONFIG_DESIRED)
    with subscriber(broker, topic, MARK_TOPIC) as sub:
        p = prepare(rig, "config", {"device": "gw-1"}, {"config": CONFIG}).json()
        other = Ed25519PrivateKey.generate()
        r = _submit(rig, p["action_id"], sign_prepared(other, p, "0123456789abcdef"))
        assert r.status_code == 403 and "not trusted" in r.json()["detail"]
        assert rig.entries()[-1]["key_id"] == "0123456789abcdef"

        # Tampered: the page signs a payload other than the one central prepared.
        from agent.protocol.signing import signed_bytes

        p = prepare(rig, "config", {"device": "gw-1"}, {"config": CONFIG}).json()
        evil = dict(p["payload"], config={"mqtt": {"host": "evil.example"}})
        value = rig.key.sign(signed_bytes(p["topic"], evil))
        sig = {"alg": "ed25519", "kid": rig.kid, "value": base64.b64encode(value).decode()}
        r = _submit(rig, p["action_id"], sig)
        assert r.status_code == 403 and "does not match" in r.json()["detail"]

        # Once submitted (even refused), an action id is gone.
        r = _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid))
        assert r.status_code == 404
        r = _submit(rig, "never-prepared", sign_prepared(rig.key, p, rig.kid))
        assert r.status_code == 404 and "unknown" in r.json()["detail"]

        # Expired: signed too late.
        p = prepare(rig, "config", {"device": "gw-1"}, {"config": CONFIG}).json()
        rig.clock[0] += rig.console.ttl_s + 1
        r = _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid))
        assert r.status_code == 410 and "expired" in r.json()["detail"]
        nothing_before_a_marker(rig, sub)


def test_an_action_is_submitted_only_by_the_login_that_prepared_it(rig: Rig) -> None:
    p = prepare(rig, "command", {"device": "gw-1"}, {"name": "collect_now"}).json()
    r = rig.client.post(
        "/api/actions/submit",
        json={"action_id": p["action_id"], "sig": sign_prepared(rig.key, p, rig.kid)},
        headers=rig.as_("bob", "operator"),
    )
    assert r.status_code == 403


def test_invalid_config_and_command_are_422_naming_the_key(rig: Rig) -> None:
    r = prepare(rig, "config", {"group": "all"}, {"config": {"telemetry": {"interval_s": 1}}})
    assert r.status_code == 422
    assert r.json()["detail"].startswith("config.telemetry.interval_s:")
    r = prepare(
        rig,
        "config",
        {"group": "all"},
        {"wifi": {"ssids": {"x": {"ssid": "a", "encryption": "psk2"}}}},
    )
    assert r.status_code == 422 and "config.wifi.ssids.x" in r.json()["detail"]
    r = prepare(rig, "config", {"group": "all"}, {"nonsense": 1})
    assert r.status_code == 422 and r.json()["detail"] == "config.nonsense: unknown key"
    r = prepare(rig, "command", {"device": "gw-1"}, {"name": "reboot", "args": {"delay_s": 0}})
    assert r.status_code == 422 and r.json()["detail"].startswith("body.args.delay_s:")
    r = prepare(rig, "command", {"device": "gw-1"}, {"name": "format_disk"})
    assert r.status_code == 422 and "body.name: unknown command" in r.json()["detail"]
    r = prepare(rig, "config", {"device": "gw/../x"}, {})
    assert r.status_code == 422
    assert all(e["result"].startswith("refused") for e in rig.entries())
    assert len(rig.entries()) == 5  # the last one failed the request's own model


def test_roles(rig: Rig) -> None:
    body = {"kind": "command", "target": {"device": "gw-1"}, "body": {"name": "get_config"}}
    assert rig.client.post("/api/actions/prepare", json=body).status_code == 401
    viewer = rig.as_("vic", "viewer")
    assert rig.client.post("/api/actions/prepare", json=body, headers=viewer).status_code == 403
    sub = {"action_id": "x", "sig": {"alg": "ed25519", "kid": "k", "value": "AA=="}}
    assert rig.client.post("/api/actions/submit", json=sub, headers=viewer).status_code == 403
    assert rig.client.post("/api/alerts/a/b/1.000/ack", headers=viewer).status_code in (403, 404)
    assert rig.client.get("/api/actions/signing").status_code == 401
    r = rig.client.get("/api/actions/signing", headers=viewer)
    assert r.status_code == 200 and r.json()["key_ids"] == [rig.kid]
    assert (
        rig.client.post(
            "/api/actions/prepare", json=body, headers=rig.as_("root", "admin")
        ).status_code
        == 200
    )


def test_no_signing_keys_means_nothing_is_published(
    tmp_path: Path, publisher: MqttPublisher
) -> None:
    rig = make_rig(tmp_path, publisher, keys=[])
    p = prepare(rig, "command", {"device": "gw-1"}, {"name": "get_config"}).json()
    r = _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid))
    assert r.status_code == 403 and "signing_keys" in r.json()["detail"]


def test_config_versions_follow_the_store_and_a_stale_prepare_is_refused(
    broker: Broker, rig: Rig
) -> None:
    from central.store.base import DesiredDoc

    rig.store.write(WriteBatch(desired=[DesiredDoc("group/all", 7, "{}", 0.0)]))
    p = prepare(rig, "config", {"group": "all"}, {"config": CONFIG}).json()
    assert p["payload"]["version"] == 8
    rig.store.write(WriteBatch(desired=[DesiredDoc("group/all", 8, "{}", 0.0)]))  # titik-ctl won
    r = _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid))
    assert r.status_code == 409 and "version 8" in r.json()["detail"]
    r = prepare(rig, "config", {"group": "all"}, {"config": CONFIG, "version": 3})
    assert r.status_code == 409 and "not newer" in r.json()["detail"]


def test_alert_ack_and_snooze(rig: Rig) -> None:
    rig.store.write(
        WriteBatch(
            devices=[DeviceState("gw-1", region="north")],
            alerts=[AlertChange("temp", "gw-1", 1000.0, "hot")],
        )
    )
    aid = rig.client.get("/api/alerts", headers=rig.ops).json()["items"][0]["id"]
    assert aid == "temp/gw-1/1000.000"
    r = rig.client.post(f"/api/alerts/{aid}/ack", json={"note": "on it"}, headers=rig.ops)
    assert r.status_code == 200, r.text
    assert r.json()["acked_by"] == "ana" and r.json()["note"] == "on it"
    r = rig.client.post(f"/api/alerts/{aid}/snooze", json={"minutes": 30}, headers=rig.ops)
    assert r.status_code == 200
    item = rig.client.get("/api/alerts", headers=rig.ops).json()["items"][0]
    assert item["acked_by"] == "ana" and item["snoozed_by"] == "ana"
    assert item["snoozed_until"] == pytest.approx(rig.clock[0] + 1800)
    assert item["note"] == "on it"  # a snooze without a note keeps the last one
    bad = rig.client.post(f"/api/alerts/{aid}/snooze", json={"minutes": 0}, headers=rig.ops)
    assert bad.status_code == 422
    r = rig.client.post("/api/alerts/temp/gw-9/5.000/ack", headers=rig.ops)
    assert r.status_code == 404
    actions = [(e["action"], e["result"]) for e in rig.entries()]
    assert actions == [
        ("alert.ack", "done"),
        ("alert.snooze", "done"),
        ("alert.ack", "refused: no open alert with this id"),
    ]


def test_a_broker_that_refuses_the_publish_is_a_503_and_audited(tmp_path: Path) -> None:
    class Down:
        def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
            from central.actions.core import PublishError

            raise PublishError("not connected to broker:1883")

    rig = make_rig(tmp_path, Down())
    p = prepare(rig, "command", {"device": "gw-1"}, {"name": "get_config"}).json()
    r = _submit(rig, p["action_id"], sign_prepared(rig.key, p, rig.kid))
    assert r.status_code == 503 and "try again" in r.json()["detail"]
    published, failed = rig.entries()[-2:]
    # Appended before publishing (so the broker audit can recognise the message), then the
    # failure as an entry of its own that names it: the log is append-only.
    assert published["result"] == "published"
    assert failed["result"].startswith("failed: the broker did not take it")
    assert failed["detail"]["of"] == rig.audit.head().seq - 1  # type: ignore[union-attr]


def test_kick_client_mac_is_not_kept_in_the_audit(rig: Rig) -> None:
    mac = "02:00:00:00:00:01"
    r = prepare(rig, "command", {"device": "gw-1"}, {"name": "kick_client", "args": {"mac": mac}})
    assert r.status_code == 200
    assert r.json()["payload"]["args"]["mac"] == mac  # the gateway needs it
    assert mac not in json.dumps(rig.entries())
    assert mac not in r.json()["summary"]
