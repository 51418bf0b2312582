"""The generated broker kit, proven against a real Mosquitto started with its own config.

One broker for the module (TLS on two free loopback ports: client certificates and
passwords); every identity is made with ``titik-ctl broker`` exactly as an admin would.
Each role's full topic matrix is in test_broker_roles.py, TLS and the CRL in
test_broker_tls.py.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.config import MqttConfig
from agent.mqtt import MqttLink, Will
from central.broker.kit import KitDir
from central.ctl import cli as ctl
from central.sim.localbroker import wait_until
from tests.agentproc import AgentProcess
from tests.kitbroker import (
    PREFIX,
    Client,
    RunningKit,
    cert_refused,
    connected,
    gw,
    init_kit,
    refused,
    running,
    titik_ctl,
)

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKit]:
    d, cert_port, password_port, log = init_kit(tmp_path_factory.mktemp("kit"))
    b = ["broker"]
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-a", "--group", "g1", "--cert")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-b", "--group", "g2", "--generate-password")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-c", "--generate-password")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-d", "--cert")
    titik_ctl(*b, "add-operator", "--dir", str(d), "ops", "--generate-password")
    titik_ctl(*b, "add-central", "--dir", str(d), "central", "--cert")
    with running(d, cert_port, password_port, log) as k:
        yield k


# -- tests --------------------------------------------------------------------------------


def test_gateway_cannot_touch_another_gateway_or_pose_as_operations(kit: RunningKit) -> None:
    with (
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
        connected(kit, "central", cert=True, clean=True) as central,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        assert not any(
            rc.is_failure
            for rc in b.subscribe(
                gw("gw-b", "cmd"), gw("gw-b", "config/desired"), f"{PREFIX}/group/g2/cmd"
            )
        )
        assert not central.subscribe(gw("+", "telemetry"))[0].is_failure

        # Publishing as B: Mosquitto answers PUBACK "Not authorized" (MQTT 5) and drops it.
        for topic in (
            gw("gw-b", "telemetry"),
            gw("gw-b", "cmd"),
            gw("gw-b", "config/desired"),
            gw("gw-a", "config/desired"),
            gw("gw-a", "cmd"),
            f"{PREFIX}/group/g2/cmd",
            f"{PREFIX}/group/g1/config/desired",
        ):
            assert refused(a.publish(topic, "forged")), topic
        # ...and nothing forged was delivered: the next messages are the genuine markers.
        assert not b.publish(gw("gw-b", "telemetry"), "real").is_failure
        central.expect(gw("gw-b", "telemetry"), "real")
        assert not ops.publish(gw("gw-b", "cmd"), "marker").is_failure
        b.expect(gw("gw-b", "cmd"), "marker")

        # Subscribing to B's topics: Mosquitto 2.0's acl_file does not check SUBSCRIBE (the
        # SUBACK grants QoS 1, also for wildcards and $share/), but it checks READ on every
        # delivery against the topic behind any $share/<group>/ prefix: nothing of B's arrives.
        rcs = a.subscribe(
            gw("gw-b", "cmd"),
            gw("gw-b", "config/desired"),
            gw("+", "cmd"),
            f"{PREFIX}/#",
            f"{PREFIX}/group/g2/cmd",
            f"$share/x/{PREFIX}/gw/gw-b/cmd",
            gw("gw-b", "telemetry"),
        )
        assert [rc.value for rc in rcs] == [1] * 7
        assert not ops.publish(gw("gw-b", "cmd"), "for-b").is_failure
        assert not ops.publish(f"{PREFIX}/group/g2/cmd", "for-g2").is_failure
        assert not b.publish(gw("gw-b", "telemetry"), "b-data").is_failure
        b.expect(gw("gw-b", "cmd"), "for-b")
        b.expect(f"{PREFIX}/group/g2/cmd", "for-g2")
        central.expect(gw("gw-b", "telemetry"), "b-data")
        # Its own commands do reach it (through titik/# here), and only those.
        assert not ops.publish(gw("gw-a", "cmd"), "for-a").is_failure
        a.expect(gw("gw-a", "cmd"), "for-a")
        time.sleep(0.2)
        while not a.messages.empty():
            assert a.messages.get().topic == gw("gw-a", "cmd")

        # Central may publish commands (the web console's, signed in the operator's page and
        # verified by the gateway), but never a gateway's data.
        assert refused(central.publish(gw("gw-b", "telemetry"), "forged"))
        assert refused(central.publish(gw("gw-b", "status"), "forged"))
        assert not ops.publish(gw("gw-b", "cmd"), "marker2").is_failure
        b.expect(gw("gw-b", "cmd"), "marker2")


def test_operations_configure_and_command_gateways(kit: RunningKit) -> None:
    with (
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        a.subscribe(gw("gw-a", "config/desired"), gw("gw-a", "cmd"), f"{PREFIX}/group/g1/cmd")
        doc = json.dumps({"version": 1, "config": {"telemetry": {"interval_s": 30}}})
        assert not ops.publish(gw("gw-a", "config/desired"), doc, retain=True).is_failure
        a.expect(gw("gw-a", "config/desired"), doc)
        assert not ops.publish(gw("gw-a", "cmd"), '{"name":"collect_now"}').is_failure
        a.expect(gw("gw-a", "cmd"), '{"name":"collect_now"}')
        assert not ops.publish(f"{PREFIX}/group/g1/cmd", '{"name":"restart_wifi"}').is_failure
        a.expect(f"{PREFIX}/group/g1/cmd", '{"name":"restart_wifi"}')
        # Operations read results and status, but not telemetry (central's job).
        ops.subscribe(gw("+", "telemetry"), gw("+", "cmd/result"))
        assert not a.publish(gw("gw-a", "telemetry"), "not-for-ops").is_failure
        assert not a.publish(gw("gw-a", "cmd/result"), "done").is_failure
        ops.expect(gw("gw-a", "cmd/result"), "done")
        ops.publish(gw("gw-a", "config/desired"), "", retain=True)  # clear the retained doc


def test_central_receives_every_gateway_through_a_shared_subscription(kit: RunningKit) -> None:
    share = f"$share/titik-central/{PREFIX}/gw/+/telemetry"
    with (
        connected(kit, "central", cert=True, clean=False) as central,
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
    ):
        assert not central.subscribe(share, f"$share/titik-central/{PREFIX}/gw/+/status")[
            0
        ].is_failure
        assert not a.publish(gw("gw-a", "telemetry"), "ta").is_failure
        central.expect(gw("gw-a", "telemetry"), "ta")
        assert not b.publish(gw("gw-b", "telemetry"), "tb").is_failure
        central.expect(gw("gw-b", "telemetry"), "tb")
        # A shared subscription does not widen central's rights: no operator's ctl topics
        # through it (central reads commands since issue 18, for its audit log).
        central.subscribe(f"$share/titik-central/{PREFIX}/ctl/+/#")
        with connected(kit, "ops", password=kit.password("ops")) as ops:
            assert not ops.publish(f"{PREFIX}/ctl/ops/x/sync", "not-for-central").is_failure
        assert not a.publish(gw("gw-a", "telemetry"), "ta2").is_failure
        central.expect(gw("gw-a", "telemetry"), "ta2")


def test_anonymous_wrong_password_and_wrong_ca_are_refused(kit: RunningKit, tmp_path: Path) -> None:
    anon = Client(kit, None)
    try:
        assert anon.connect().value == 0x87  # password listener: Not authorized
    finally:
        anon.close()
    wrong = Client(kit, "gw-b", password="not-the-password")  # noqa: S106
    try:
        assert wrong.connect().value == 0x87  # Mosquitto 2.0 says "Not authorized" here too
    finally:
        wrong.close()
    # The certificate listener wants a client certificate: no TLS session without one.
    assert cert_refused(Client(kit, None), kit.cert_port)
    # A CA of our own: the broker's certificate does not verify (MITM-style)...
    titik_ctl("broker", "init", "--dir", str(tmp_path / "other"), "--hostname", "localhost")
    other = KitDir(tmp_path / "other")
    rogue = Client(kit, "gw-b", password=kit.password("gw-b"), ca=other.ca_pem)
    with pytest.raises(ssl.SSLCertVerificationError):
        rogue.client.connect("localhost", kit.password_port)
    # ...and a client certificate from another CA is refused by the broker.
    titik_ctl("broker", "add-gateway", "--dir", str(other.root), "gw-a", "--cert")
    forged = Client(
        kit,
        None,
        certfile=other.bundle("gw-a") / "client.pem",
        keyfile=other.bundle("gw-a") / "client.key",
    )
    assert cert_refused(forged, kit.cert_port)


def test_agent_verifies_the_broker_hostname_by_default(kit: RunningKit) -> None:
    bundle = kit.bundle("gw-a")
    assert MqttConfig(host="x").tls.insecure is False
    cfg = MqttConfig.model_validate(
        {
            "host": "127.0.0.1",  # the broker's address, but its certificate names only localhost
            "port": kit.cert_port,
            "tls": {
                "ca": bundle / "ca.pem",
                "cert": bundle / "client.pem",
                "key": bundle / "client.key",
            },
        }
    )
    link = MqttLink(
        cfg,
        "gw-a",
        before_connect=lambda: Will(gw("gw-a", "status"), b"{}"),
        on_connected=lambda: None,
        on_ack=lambda mid: None,
    )
    for _ in range(5):
        link.step(0.2)
    assert not link.connected
    assert link.last_error is not None and "certificate" in link.last_error.lower(), link.last_error


def test_agent_end_to_end_with_a_client_certificate(kit: RunningKit, tmp_path: Path) -> None:
    titik_ctl("broker", "add-gateway", "--dir", str(kit.dir), "gw-agent", "--group", "g1", "--cert")
    kit.reload()
    bundle = kit.bundle("gw-agent")
    fragment = (bundle / "agent.toml").read_text().replace("/etc/titik", str(bundle))
    config = tmp_path / "agent.toml"
    config.write_text(
        fragment
        + f"""
[telemetry]
interval_s = 0.2

[state]
dir = "{tmp_path / "state"}"

[platform]
kind = "simulated"
seed = 42
"""
    )
    with connected(kit, "central", cert=True) as central:
        central.subscribe(f"$share/titik-central/{PREFIX}/gw/+/telemetry")
        agent = AgentProcess(config)
        try:
            msg = central.messages.get(timeout=20)
            assert msg.topic == gw("gw-agent", "telemetry")
            assert json.loads(msg.payload)
        finally:
            agent.stop()


def test_revoked_gateways_can_no_longer_connect(kit: RunningKit) -> None:
    pw = kit.password("gw-c")
    with connected(kit, "gw-c", password=pw), connected(kit, "gw-d", cert=True):
        pass
    d_cert = kit.bundle("gw-d") / "client.pem"
    d_key = kit.bundle("gw-d") / "client.key"
    saved = d_cert.read_bytes(), d_key.read_bytes()  # the stolen gateway keeps its files
    live_c = Client(kit, "gw-c", password=pw)
    live_d = Client(kit, "gw-d", cert=True)
    assert not live_c.connect().is_failure
    assert not live_d.connect().is_failure
    titik_ctl("broker", "revoke", "--dir", str(kit.dir), "gw-c")
    titik_ctl("broker", "revoke", "--dir", str(kit.dir), "gw-d")
    kit.reload()
    # A live password session is dropped by the reload; a live certificate session is not
    # (TLS is not re-verified), but the ACL's `topic deny #` for the revoked id disarms it.
    wait_until(live_c.disconnected.is_set, 5, "the revoked password session to be dropped")
    assert refused(live_d.publish(gw("gw-d", "telemetry"), "after revocation"))
    live_c.close()
    live_d.close()
    again = Client(kit, "gw-c", password=pw)
    try:
        assert again.connect().value in (0x86, 0x87)
    finally:
        again.close()
    stolen = kit.dir.parent / "stolen"
    stolen.mkdir()
    (stolen / "client.pem").write_bytes(saved[0])
    (stolen / "client.key").write_bytes(saved[1])
    d = Client(kit, None, certfile=stolen / "client.pem", keyfile=stolen / "client.key")
    assert cert_refused(d, kit.cert_port)


def test_titik_ctl_works_with_the_operator_role(
    kit: RunningKit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TITIK_MQTT_PASSWORD", kit.password("ops"))
    base = [
        "--broker",
        f"localhost:{kit.password_port}",
        "--tls-ca",
        str(kit.dir / "ca" / "ca.pem"),
        "--username",
        "ops",
        "--timeout",
        "5",
    ]
    with connected(kit, "gw-b", password=kit.password("gw-b")) as b:
        b.subscribe(gw("gw-b", "cmd"))
        # An online gateway, as its retained status says (ctl refuses ids no gateway has
        # published under), which gets the command; nobody answers, so ctl times out (exit 1).
        status = json.dumps({"online": True, "boot": 1})
        assert not b.publish(gw("gw-b", "status"), status, retain=True).is_failure
        assert ctl.main([*base, "--timeout", "1", "cmd", "--device", "gw-b", "collect_now"]) == 1
        msg = b.messages.get(timeout=5)
        assert json.loads(msg.payload)["name"] == "collect_now"
    out = capsys.readouterr()
    assert "gw-b" in out.out + out.err, out
    assert "not authorized" not in (out.out + out.err).lower(), out
    assert ctl.main([*base, "devices"]) == 0
    assert "not authorized" not in capsys.readouterr().err.lower()
