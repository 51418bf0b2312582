"""The generated broker kit, proven against a real Mosquitto started with its own config.

One broker for the module (TLS on two free loopback ports: client certificates and
passwords); every identity is made with ``titik-ctl broker`` exactly as an admin would.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttConfig
from agent.mqtt import MqttLink, Will
from central import ctl
from central.brokerkit import KitDir
from central.localbroker import find_mosquitto, free_port, wait_until
from tests.agentproc import AgentProcess

pytestmark = pytest.mark.broker

PREFIX = "titik"


@dataclass
class Kit:
    dir: Path
    cert_port: int
    password_port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def bundle(self, ident: str) -> Path:
        return self.dir / "bundles" / ident

    def password(self, ident: str) -> str:
        line = (self.bundle(ident) / "mqtt.env").read_text().strip()
        return line.split("=", 1)[1]

    def reload(self) -> None:
        """SIGHUP, then wait for Mosquitto to log the reload (next connects see new files)."""
        before = self.log.read_text(errors="replace").count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: self.log.read_text(errors="replace").count("Reloading config") > before,
            5,
            "mosquitto to reload",
        )


def titik_ctl(*argv: str) -> None:
    assert ctl.main(list(argv)) == 0, argv


def _accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    root = tmp_path_factory.mktemp("kit")
    d = root / "kit"
    cert_port, password_port = free_port(), free_port()
    log = root / "mosquitto.log"
    # As root, Mosquitto drops to `user`; "root" keeps it able to read the temp dir.
    # As anyone else `user` is ignored.
    run_as = "root" if os.geteuid() == 0 else getpass.getuser()
    titik_ctl(
        "broker",
        "init",
        "--dir",
        str(d),
        "--hostname",
        "localhost",
        "--port",
        str(cert_port),
        "--password-port",
        str(password_port),
        "--bind",
        "127.0.0.1",
        "--run-as",
        run_as,
        "--log-file",
        str(log),
        "--persistence-dir",
        str(root / "persist"),
    )
    (root / "persist").mkdir()
    b = ["broker"]
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-a", "--group", "g1", "--cert")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-b", "--group", "g2", "--generate-password")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-c", "--generate-password")
    titik_ctl(*b, "add-gateway", "--dir", str(d), "gw-d", "--cert")
    titik_ctl(*b, "add-operator", "--dir", str(d), "ops", "--generate-password")
    titik_ctl(*b, "add-central", "--dir", str(d), "central", "--cert")
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(d / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {proc.returncode}: {log.read_text()}")
            return _accepting(cert_port) and _accepting(password_port)

        wait_until(up, 10, "mosquitto with the generated config")
        yield Kit(d, cert_port, password_port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- a small recording client ------------------------------------------------------------


class Client:
    """A paho MQTT 5 client over TLS that records CONNACK, SUBACK, PUBACK and messages."""

    def __init__(
        self,
        kit: Kit,
        ident: str | None,
        *,
        cert: bool = False,
        password: str | None = None,
        ca: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        clean: bool = True,
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.acks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        c = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{ident or 'anon'}-{time.monotonic_ns()}",
            protocol=paho.MQTTv5,
        )
        bundle = kit.bundle(ident) if ident else None
        if cert and bundle is not None:
            certfile, keyfile = bundle / "client.pem", bundle / "client.key"
        c.tls_set(
            ca_certs=str(ca or kit.dir / "ca" / "ca.pem"),
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if password is not None and ident:
            c.username_pw_set(ident, password)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_publish = self._on_publish
        c.on_message = lambda cl, u, m: self.messages.put(m)
        c.on_disconnect = lambda *a: self.disconnected.set()
        self.client = c
        self.port = kit.cert_port if (cert or certfile) else kit.password_port
        self._clean = clean

    def _on_connect(self, c: paho.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connack = rc
        self.connected.set()

    def _on_subscribe(
        self, c: paho.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Any
    ) -> None:
        with self._lock:
            self.acks[mid] = rcs

    def _on_publish(self, c: paho.Client, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        with self._lock:
            self.pubacks[mid] = rc

    def connect(self) -> ReasonCode:
        self.client.connect("localhost", self.port, keepalive=30, clean_start=self._clean)
        self.client.loop_start()
        wait_until(lambda: self.connected.is_set() or self.disconnected.is_set(), 5, "CONNACK")
        assert self.connack is not None, "connection dropped before CONNACK"
        return self.connack

    def subscribe(self, *topics: str) -> list[ReasonCode]:
        _, mid = self.client.subscribe([(t, 1) for t in topics])
        wait_until(lambda: mid in self.acks, 5, "SUBACK")
        return self.acks[mid]

    def publish(self, topic: str, payload: str, retain: bool = False) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.pubacks, 5, "PUBACK")
        return self.pubacks[info.mid]

    def expect(self, topic: str, payload: str, timeout: float = 5) -> None:
        """Wait for ``payload`` on ``topic``; anything else that arrives first fails."""
        msg = self.messages.get(timeout=timeout)
        assert (msg.topic, msg.payload.decode()) == (topic, payload)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def connected(kit: Kit, ident: str, **kw: Any) -> Iterator[Client]:
    c = Client(kit, ident, **kw)
    try:
        rc = c.connect()
        assert not rc.is_failure, f"{ident}: {rc}"
        yield c
    finally:
        c.close()


def gw(device: str, leaf: str) -> str:
    return f"{PREFIX}/gw/{device}/{leaf}"


def cert_refused(c: Client, port: int) -> bool:
    """The broker refuses this client certificate: during the handshake (TLS 1.2) or, as
    TLS 1.3 reports it, with an alert right after it; either way there is no CONNACK."""
    try:
        c.client.connect("localhost", port)
    except (ssl.SSLError, OSError):
        return True
    c.client.loop_start()
    try:
        wait_until(lambda: c.connected.is_set() or c.disconnected.is_set(), 5, "an outcome")
    finally:
        c.client.loop_stop()
    return c.connack is None or c.connack.is_failure


def refused(rc: ReasonCode) -> bool:
    return rc.value in (0x80, 0x87)  # unspecified error / not authorized


# -- tests --------------------------------------------------------------------------------


def test_gateway_cannot_touch_another_gateway_or_pose_as_operations(kit: Kit) -> None:
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

        # Central only reads: it cannot command a gateway either.
        assert refused(central.publish(gw("gw-b", "cmd"), "forged"))
        assert not ops.publish(gw("gw-b", "cmd"), "marker2").is_failure
        b.expect(gw("gw-b", "cmd"), "marker2")


def test_operations_configure_and_command_gateways(kit: Kit) -> None:
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


def test_central_receives_every_gateway_through_a_shared_subscription(kit: Kit) -> None:
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
        # A shared subscription does not widen central's rights: no commands through it.
        central.subscribe(f"$share/titik-central/{PREFIX}/gw/+/cmd")
        with connected(kit, "ops", password=kit.password("ops")) as ops:
            assert not ops.publish(gw("gw-a", "cmd"), "not-for-central").is_failure
        assert not a.publish(gw("gw-a", "telemetry"), "ta2").is_failure
        central.expect(gw("gw-a", "telemetry"), "ta2")


def test_anonymous_wrong_password_and_wrong_ca_are_refused(kit: Kit, tmp_path: Path) -> None:
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


def test_agent_verifies_the_broker_hostname_by_default(kit: Kit) -> None:
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


def test_agent_end_to_end_with_a_client_certificate(kit: Kit, tmp_path: Path) -> None:
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


def test_revoked_gateways_can_no_longer_connect(kit: Kit) -> None:
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
    kit: Kit, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
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
        # The gateway gets the command; nobody answers, so titik-ctl times out (exit 1).
        assert ctl.main([*base, "--timeout", "1", "cmd", "--device", "gw-b", "collect_now"]) == 1
        msg = b.messages.get(timeout=5)
        assert json.loads(msg.payload)["name"] == "collect_now"
    out = capsys.readouterr()
    assert "gw-b" in out.out + out.err, out
    assert "not authorized" not in (out.out + out.err).lower(), out
    assert ctl.main([*base, "devices"]) == 0
    assert "not authorized" not in capsys.readouterr().err.lower()
