"""Each role of the broker kit gets exactly its program's topics, on a real Mosquitto.

For every role (gateway, central, operator) every topic its code publishes is delivered to
the role that consumes it, every topic it subscribes to brings it the messages, and a
representative set it must not have is refused:

- a refused MQTT 5 QoS 1 publish gets PUBACK 0x87 "Not authorized" and is dropped;
- a refused subscription is *granted* (Mosquitto 2.0's acl_file does not check SUBSCRIBE:
  SUBACK 0x01), but no message on it is ever delivered (READ is checked per delivery).

"Never delivered" is checked by an observer: a test-only user whose ACL block the fixture
appends (``topic read #``, not something the kit makes), subscribed to ``#``. Publishes are
sequential and each waits for its PUBACK, so the broker has routed a message before the next
one is sent: when the next message the observer gets is the marker published after a refused
one, the refused one was delivered to nobody.

The topic lists come from the programs themselves where they have one (central's
``ingest.subscriptions``, titik-ctl's ``BrokerSession`` topics); the gateway's are in agent/protocol/topics.py
``Topics``. The titik-ctl test runs the real CLI against a real agent through the kit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from central.ctl import cli as ctl
from central.ctl import session
from central.ingest.audit import audit_subscriptions
from central.ingest.decode import subscriptions
from central.sim.localbroker import wait_until
from tests.agentproc import AgentProcess
from tests.kitbroker import (
    PREFIX,
    Client,
    RunningKit,
    connected,
    gw,
    init_kit,
    running,
    titik_ctl,
)

pytestmark = pytest.mark.broker

#: What agent/core.py publishes on its own topics, and what it subscribes to.
GW_WRITES = ("telemetry", "telemetry/batch", "status", "config/reported", "cmd/result", "service")
GW_READS = ("config/desired", "cmd")
NOT_AUTHORIZED = 0x87
GRANTED_QOS1 = 1
OBSERVER_BLOCK = """
# test instrument, not made by the kit: reads every topic, to see what gets delivered
user observer
topic read #
"""


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningKit]:
    d, cert_port, password_port, log = init_kit(tmp_path_factory.mktemp("roles"))
    b = ["broker"]
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-a", "--group", "g1", "--cert")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-b", "--group", "g2", "--generate-password")
    titik_ctl(*b, "add-operator", "--dir", str(d), "ops", "--generate-password")
    titik_ctl(*b, "add-operator", "--dir", str(d), "ops2", "--cert")
    titik_ctl(*b, "add-central", "--dir", str(d), "central", "--cert")
    titik_ctl(*b, "add-operator", "--dir", str(d), "observer", "--generate-password")
    with (d / "acl").open("a") as fh:
        fh.write(OBSERVER_BLOCK)
    with running(d, cert_port, password_port, log) as k:
        yield k


class Observer:
    """Sees every message the broker delivers; the checks below go through it."""

    def __init__(self, client: Client) -> None:
        self.c = client
        self.n = 0
        assert [rc.value for rc in client.subscribe("#")] == [GRANTED_QOS1]

    def payload(self) -> str:
        self.n += 1
        return f"m{self.n}-{time.monotonic_ns()}"

    def allowed(self, pub: Client, topic: str, *readers: Client) -> None:
        """``pub`` may publish on ``topic``: PUBACK success, and every reader gets it."""
        payload = self.payload()
        rc = pub.publish(topic, payload)
        assert rc.value == 0, f"{topic}: {rc}"
        self.c.expect(topic, payload)
        for r in readers:
            r.expect(topic, payload)

    def denied(self, pub: Client, *topics: str) -> None:
        """PUBACK 0x87 for each; whether anything was delivered is checked by the next
        ``allowed`` (the observer's next message must be that one)."""
        for topic in topics:
            rc = pub.publish(topic, "forged")
            assert rc.value == NOT_AUTHORIZED, f"{topic}: {rc}"


@pytest.fixture
def obs(kit: RunningKit) -> Iterator[Observer]:
    with connected(kit, "observer", password=kit.password("observer")) as c:
        yield Observer(c)


def granted(rcs: list[ReasonCode]) -> bool:
    return [rc.value for rc in rcs] == [GRANTED_QOS1] * len(rcs)


def ops_client(kit: RunningKit, name: str = "ops") -> Client:
    return Client(kit, name, password=kit.password(name))


# -- gateways ----------------------------------------------------------------------------


def test_gateway_publishes_its_own_topics_and_nothing_else(kit: RunningKit, obs: Observer) -> None:
    with (
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
        connected(kit, "central", cert=True) as central,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        assert granted(central.subscribe(*subscriptions(PREFIX, "titik-central")))
        assert granted(ops.subscribe(gw("+", "status"), gw("+", "config/reported")))
        assert granted(ops.subscribe(gw("+", "cmd/result")))
        assert granted(b.subscribe(*(gw("gw-b", leaf) for leaf in GW_READS)))
        consumers = {
            "telemetry": [central],
            "telemetry/batch": [central],
            "status": [central, ops],
            "config/reported": [central, ops],
            "cmd/result": [ops],
            "service": [central],  # central consumes it (issue 20, point 7)
        }
        # Its own topics, with a certificate (gw-a) and with a password (gw-b).
        for dev, client in (("gw-a", a), ("gw-b", b)):
            for leaf in GW_WRITES:
                obs.allowed(client, gw(dev, leaf), *consumers[leaf])

        # Another gateway's data, any desired document or command (its own included),
        # the operators' ctl topics, and topics of no one.
        obs.denied(a, *(gw("gw-b", leaf) for leaf in GW_WRITES))
        obs.denied(a, *(gw(dev, leaf) for dev in ("gw-a", "gw-b") for leaf in GW_READS))
        obs.denied(a, f"{PREFIX}/group/g1/config/desired", f"{PREFIX}/group/g1/cmd")
        obs.denied(a, f"{PREFIX}/ctl/ops/x/sync", f"{PREFIX}/ctl/gw-a/x/sync")
        obs.denied(a, f"{PREFIX}/gw/gw-a", gw("gw-a", "telemetry/x"), "other/topic")
        # A topic alias does not get round it: registered on a refused topic, then used.
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.TopicAlias = 1
        rc = a.publish(gw("gw-b", "telemetry"), "forged", properties=props)
        assert rc.value == NOT_AUTHORIZED
        assert a.publish("", "forged", properties=props).value == NOT_AUTHORIZED
        obs.denied(b, *(gw("gw-a", leaf) for leaf in GW_WRITES))
        # Nothing forged reached anyone: the next message of each is the genuine marker.
        obs.allowed(a, gw("gw-a", "status"), central, ops)
        obs.allowed(ops, gw("gw-b", "cmd"), b)


def test_gateway_reads_its_own_and_its_groups_topics_only(kit: RunningKit, obs: Observer) -> None:
    with (
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "gw-a", cert=True) as snoop,  # the same stolen identity, second session
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        own = [gw("gw-a", leaf) for leaf in GW_READS]
        groups = [f"{PREFIX}/group/g1/config/desired", f"{PREFIX}/group/g1/cmd"]
        assert granted(a.subscribe(*own, *groups))
        for topic in (*own, *groups):
            obs.allowed(ops, topic, a)
        # Everything else it might ask for: granted, and nothing delivered.
        sync = f"{PREFIX}/ctl/ops/x/sync"
        assert granted(
            snoop.subscribe(
                gw("gw-b", "config/desired"),
                gw("gw-b", "cmd"),
                f"{PREFIX}/group/g2/config/desired",
                f"{PREFIX}/group/g2/cmd",
                gw("+", "cmd"),
                f"$share/x/{PREFIX}/gw/gw-b/cmd",
                gw("gw-b", "telemetry"),
                gw("+", "status"),
                f"{PREFIX}/ctl/#",
                f"{PREFIX}/#",
            )
        )
        for topic in (
            gw("gw-b", "config/desired"),
            gw("gw-b", "cmd"),
            f"{PREFIX}/group/g2/config/desired",
            f"{PREFIX}/group/g2/cmd",
            sync,
        ):
            obs.allowed(ops, topic)
        for leaf in GW_WRITES:
            obs.allowed(b, gw("gw-b", leaf))
        # Its own desired document arrives once (only titik/# matches it): the first message.
        obs.allowed(ops, gw("gw-a", "config/desired"), a, snoop)


def test_a_gateway_will_on_another_gateways_topic_is_never_published(
    kit: RunningKit, obs: Observer
) -> None:
    """Mosquitto 2.0.11 accepts the CONNECT (CONNACK 0) and drops the Will when it would
    fire; a Will on its own status is delivered."""
    with_will = ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message")
    with (
        connected(kit, "central", cert=True) as central,
        connected(kit, "gw-a", cert=True) as a,
    ):
        central.subscribe(*subscriptions(PREFIX, "titik-central"))
        for will_topic, delivered in ((gw("gw-a", "status"), False), (gw("gw-b", "status"), True)):
            b = Client(kit, "gw-b", password=kit.password("gw-b"))
            b.client.will_set(will_topic, b"will", qos=1)
            assert b.connect().value == 0
            gone = f"Client {b.client_id} disconnected."
            b.client.disconnect(reasoncode=with_will)
            wait_until(lambda: kit.log_count(gone) == 1, 5, "the broker to handle the Will")  # noqa: B023
            b.client.loop_stop()
            if delivered:
                obs.c.expect(will_topic, "will")
                central.expect(will_topic, "will")
            else:
                obs.allowed(a, gw("gw-a", "telemetry"), central)


def test_mqtt_311_refused_publish_is_acked_and_dropped(kit: RunningKit, obs: Observer) -> None:
    """MQTT 3.1.1 has no reason codes: the PUBACK looks like success, the message is dropped."""
    bundle = kit.bundle("gw-a")
    acks: dict[int, bool] = {}
    v3 = paho.Client(CallbackAPIVersion.VERSION2, client_id="gw-a-v311", protocol=paho.MQTTv311)
    v3.tls_set(
        ca_certs=str(kit.dir / "ca" / "ca.pem"),
        certfile=str(bundle / "client.pem"),
        keyfile=str(bundle / "client.key"),
    )
    v3.on_publish = lambda c, u, mid, rc, p: acks.__setitem__(mid, not rc.is_failure)
    v3.connect("localhost", kit.cert_port)
    v3.loop_start()
    try:
        for topic in (gw("gw-b", "telemetry"), gw("gw-a", "telemetry")):
            info = v3.publish(topic, "v311", qos=1)
            wait_until(lambda: info.mid in acks, 5, "PUBACK")  # noqa: B023
            assert acks[info.mid] is True
        obs.c.expect(gw("gw-a", "telemetry"), "v311")  # the refused one never came
    finally:
        v3.disconnect()
        v3.loop_stop()


def test_certificate_identity_ignores_the_connect_user_name(kit: RunningKit, obs: Observer) -> None:
    """On the certificate listener the CN is the user: gw-a's key with user name "central"
    in CONNECT gets gw-a's rights, not central's."""
    with (
        connected(
            kit,
            "gw-a",
            cert=True,
            username="central",
            password="anything",  # noqa: S106 - ignored: the certificate is the credential
        ) as fake,
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        assert granted(fake.subscribe(*subscriptions(PREFIX, ""), gw("gw-a", "cmd")))
        obs.allowed(b, gw("gw-b", "telemetry"))
        obs.denied(fake, gw("gw-b", "telemetry"))
        obs.allowed(fake, gw("gw-a", "telemetry"))
        obs.allowed(ops, gw("gw-a", "cmd"), fake)  # its first message: no telemetry of gw-b


# -- central -----------------------------------------------------------------------------


@pytest.mark.parametrize("share_group", ["titik-central", ""], ids=["shared", "plain"])
def test_central_receives_everything_it_stores(
    kit: RunningKit, obs: Observer, share_group: str
) -> None:
    """Every filter of ingest.subscriptions, as central subscribes (shared by default)."""
    with (
        connected(kit, "central", cert=True) as central,
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "gw-b", password=kit.password("gw-b")) as b,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        filters = subscriptions(PREFIX, share_group)
        assert all(f.startswith(f"$share/{share_group}/") for f in filters) == bool(share_group)
        assert granted(central.subscribe(*filters))
        for dev, client in (("gw-a", a), ("gw-b", b)):
            for leaf in ("telemetry", "telemetry/batch", "status", "config/reported"):
                obs.allowed(client, gw(dev, leaf), central)
            obs.allowed(ops, gw(dev, "config/desired"), central)
        obs.allowed(ops, f"{PREFIX}/group/g1/config/desired", central)


def test_central_publishes_only_the_consoles_documents_and_commands(
    kit: RunningKit, obs: Observer
) -> None:
    """Issue 18: central publishes the web console's signed desired documents and commands
    (central/actions/publish.py, a connection of its own next to the consumer's), and nothing
    a gateway publishes, nor anything under ctl/."""
    with (
        connected(kit, "central", cert=True) as central,
        connected(kit, "central", cert=True) as console,
        connected(kit, "gw-a", cert=True) as a,
    ):
        central.subscribe(*subscriptions(PREFIX, "titik-central"))
        a.subscribe(*(gw("gw-a", leaf) for leaf in GW_READS))
        a.subscribe(f"{PREFIX}/group/g1/config/desired", f"{PREFIX}/group/g1/cmd")
        for dev in ("gw-a", "central"):  # any gateway's, or "a gateway" by its own name
            obs.denied(console, *(gw(dev, leaf) for leaf in GW_WRITES))
        obs.denied(console, f"{PREFIX}/ctl/central/x/sync", f"{PREFIX}/ctl/ops/x/sync")
        obs.allowed(console, gw("gw-a", "config/desired"), a, central)
        obs.allowed(console, gw("gw-a", "cmd"), a)
        obs.allowed(console, f"{PREFIX}/group/g1/config/desired", a, central)
        obs.allowed(console, f"{PREFIX}/group/g1/cmd", a)
        obs.allowed(a, gw("gw-a", "telemetry"), central)
        a.subscribe(f"{PREFIX}/group/g1/config/desired")
        obs.allowed(central, f"{PREFIX}/group/g1/config/desired", a)


def test_central_audit_reads_commands_and_results_but_no_ctl(
    kit: RunningKit, obs: Observer
) -> None:
    """Issue 18: central's broker audit records every command and its result, so it reads
    them (audit_subscriptions, shared as central runs it); an operator's own ctl topics stay
    private."""
    with (
        connected(kit, "central", cert=True) as central,
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "ops", password=kit.password("ops")) as ops,
    ):
        assert granted(central.subscribe(*audit_subscriptions(PREFIX, "titik-central")))
        central.subscribe(f"{PREFIX}/ctl/#", gw("+", "telemetry"))
        obs.allowed(ops, gw("gw-a", "cmd"), central)
        obs.allowed(ops, f"{PREFIX}/group/g1/cmd", central)
        obs.allowed(a, gw("gw-a", "cmd/result"), central)
        obs.allowed(ops, gw("gw-a", "config/desired"), central)
        obs.allowed(ops, f"{PREFIX}/ctl/ops/x/sync")
        obs.allowed(a, gw("gw-a", "telemetry"), central)  # its next message: no ctl one


# -- operators ---------------------------------------------------------------------------


def test_operator_configures_commands_and_reads_state(kit: RunningKit, obs: Observer) -> None:
    ops = ops_client(kit)
    try:
        assert not ops.connect().is_failure
        mine = f"{PREFIX}/ctl/ops/{ops.client_id}"  # as titik-ctl's Link.own_topic makes it
        with (
            connected(kit, "gw-a", cert=True) as a,
            connected(kit, "central", cert=True) as central,
        ):
            a.subscribe(*(gw("gw-a", leaf) for leaf in GW_READS))
            a.subscribe(f"{PREFIX}/group/g1/config/desired", f"{PREFIX}/group/g1/cmd")
            central.subscribe(*subscriptions(PREFIX, "titik-central"))
            assert granted(
                ops.subscribe(
                    gw("+", "status"),
                    gw("+", "config/reported"),
                    gw("+", "config/desired"),
                    f"{PREFIX}/group/+/config/desired",
                    gw("+", "cmd/result"),
                    f"{mine}/sync",
                    f"{mine}/reply",
                )
            )
            # What it publishes reaches the gateway (and central, for desired documents)...
            obs.allowed(ops, gw("gw-a", "config/desired"), ops, a, central)
            obs.allowed(ops, f"{PREFIX}/group/g1/config/desired", ops, a, central)
            obs.allowed(ops, gw("gw-a", "cmd"), a)
            obs.allowed(ops, f"{PREFIX}/group/g1/cmd", a)
            obs.allowed(ops, f"{mine}/sync", ops)  # the snapshot marker comes back
            obs.allowed(ops, f"{mine}/reply", ops)
            # ...and what the gateway answers reaches it.
            obs.allowed(a, gw("gw-a", "status"), ops, central)
            obs.allowed(a, gw("gw-a", "config/reported"), ops, central)
            obs.allowed(a, gw("gw-a", "cmd/result"), ops)
    finally:
        ops.close()


def test_operator_cannot_pose_as_a_gateway_or_another_operator(
    kit: RunningKit, obs: Observer
) -> None:
    with (
        connected(kit, "ops", password=kit.password("ops")) as ops,
        connected(kit, "ops2", cert=True) as ops2,  # an operator on the certificate listener
        connected(kit, "gw-a", cert=True) as a,
        connected(kit, "central", cert=True) as central,
    ):
        central.subscribe(*subscriptions(PREFIX, "titik-central"))
        ops.subscribe(gw("+", "status"))
        for op, name in ((ops, "ops"), (ops2, "ops2")):
            obs.denied(op, *(gw(d, leaf) for d in ("gw-a", name) for leaf in GW_WRITES))
            other = "ops2" if name == "ops" else "ops"
            obs.denied(op, f"{PREFIX}/ctl/{other}/x/sync", f"{PREFIX}/ctl/x/sync")
            obs.denied(op, f"{PREFIX}/group/g1/config/reported", "other/topic")
        obs.allowed(a, gw("gw-a", "status"), central, ops)
        obs.allowed(ops2, gw("gw-a", "cmd"))  # the certificate operator's rights work too


def test_operator_reads_no_telemetry_commands_or_other_operators(
    kit: RunningKit, obs: Observer
) -> None:
    with (
        connected(kit, "ops", password=kit.password("ops")) as ops,
        connected(kit, "ops2", cert=True) as ops2,
        connected(kit, "gw-a", cert=True) as a,
    ):
        assert granted(
            ops.subscribe(
                gw("+", "telemetry"),
                gw("+", "telemetry/batch"),
                gw("+", "cmd"),
                f"{PREFIX}/group/+/cmd",
                f"{PREFIX}/ctl/ops2/#",
                gw("+", "status"),
            )
        )
        obs.allowed(a, gw("gw-a", "telemetry"))
        obs.allowed(a, gw("gw-a", "telemetry/batch"))
        obs.allowed(ops2, gw("gw-a", "cmd"))
        obs.allowed(ops2, f"{PREFIX}/group/g1/cmd")
        obs.allowed(ops2, f"{PREFIX}/ctl/ops2/x/sync")
        obs.allowed(a, gw("gw-a", "status"), ops)  # its first message


# -- titik-ctl itself, as an operator, with a real agent ----------------------------------


def test_titik_ctl_runs_on_the_operator_rights_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every ctl command that touches the broker, as the kit's operator, against a real agent
    that requires signatures. The snapshot's quiet-period fallback is made longer than
    --timeout, so a swallowed sync marker (a missing ctl/ right) fails instead of slowing."""
    d, cert_port, password_port, log = init_kit(tmp_path)
    key = tmp_path / "ops.pem"
    assert ctl.main(["keygen", "--out", str(key)]) == 0
    titik_ctl("broker", "add-operator", "--dir", str(d), "ops", "--generate-password")
    titik_ctl(
        "broker", "add-gateway", "--dir", str(d), "gw-agent", "--group", "g1", "--cert",
        "--trusted-key", str(key),
    )  # fmt: skip
    monkeypatch.setattr(session, "SNAPSHOT_QUIET_S", 600.0)
    with running(d, cert_port, password_port, log) as kit:
        bundle = kit.bundle("gw-agent")
        config = tmp_path / "agent.toml"
        config.write_text(
            (bundle / "agent.toml").read_text().replace("/etc/titik", str(bundle))
            + f'\n[telemetry]\ninterval_s = 1\n\n[state]\ndir = "{tmp_path / "state"}"\n'
            + f'\n[platform]\nkind = "simulated"\nseed = 42\nroot = "{tmp_path / "root"}"\n'
        )
        monkeypatch.setenv("TITIK_MQTT_PASSWORD", kit.password("ops"))
        base = [
            "--broker", f"localhost:{kit.password_port}", "--tls-ca", str(d / "ca" / "ca.pem"),
            "--username", "ops", "--key", str(key), "--timeout", "20",
        ]  # fmt: skip
        conf = tmp_path / "conf.json"
        conf.write_text(json.dumps({"telemetry": {"interval_s": 30}}))
        with connected(kit, "ops", password=kit.password("ops")) as watcher:
            watcher.subscribe(gw("gw-agent", "status"))
            agent = AgentProcess(config)
            try:
                while not json.loads(watcher.messages.get(timeout=30).payload)["online"]:
                    pass

                def run(*argv: str) -> str:
                    capsys.readouterr()
                    code = ctl.main([*base, *argv])
                    out = capsys.readouterr()
                    assert code == 0, (argv, out)
                    assert "not authorized" not in (out.out + out.err).lower()
                    return out.out

                assert "gw-agent" in run("devices")
                assert "applied" in run(
                    "config", "push", "--device", "gw-agent", "--file", str(conf)
                )
                out = run("config", "push", "--group", "g1", "--file", str(conf), "--canary", "1")
                assert "summary:" in out and "applied 1" in out, out
                assert "desired (group/g1)" in run("config", "show", "gw-agent")
                assert "device gw-agent" in run("device", "gw-agent")
                assert "gw-agent: ok" in run("cmd", "--device", "gw-agent", "collect_now")
                assert "gw-agent: ok" in run("cmd", "--group", "g1", "collect_now")
                assert "gw-agent" in run("watch", "--count", "1")
            finally:
                agent.stop()
