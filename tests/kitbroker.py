"""A real Mosquitto started with a ``titik-ctl broker`` kit, and an MQTT 5 client that
records every CONNACK, SUBACK, PUBACK and message, for the broker-kit tests.

Every identity is made with ``titik-ctl broker`` exactly as an admin would; Mosquitto runs
the generated ``mosquitto.conf`` (two TLS listeners on free loopback ports).
"""

from __future__ import annotations

import contextlib
import getpass
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
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from central.ctl import cli as ctl
from central.sim.localbroker import find_mosquitto, free_port, wait_until

PREFIX = "titik"


@dataclass
class RunningKit:
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

    def log_count(self, text: str) -> int:
        return self.log.read_text(errors="replace").count(text)

    def reload(self) -> None:
        """SIGHUP, then wait for Mosquitto to log the reload (next connects see new files)."""
        before = self.log_count("Reloading config")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self.log_count("Reloading config") > before, 5, "mosquitto to reload")


def titik_ctl(*argv: str) -> None:
    assert ctl.main(list(argv)) == 0, argv


def accepting(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def init_kit(root: Path) -> tuple[Path, int, int, Path]:
    """``titik-ctl broker init`` for a broker on two free loopback ports under ``root``:
    returns (kit dir, certificate port, password port, log file)."""
    d = root / "kit"
    cert_port, password_port = free_port(), free_port()
    log = root / "mosquitto.log"
    # As root, Mosquitto drops to `user`; "root" keeps it able to read the temp dir.
    # As anyone else `user` is ignored.
    run_as = "root" if os.geteuid() == 0 else getpass.getuser()
    (root / "persist").mkdir()
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
    return d, cert_port, password_port, log


@contextlib.contextmanager
def running(d: Path, cert_port: int, password_port: int, log: Path) -> Iterator[RunningKit]:
    """Mosquitto with the kit's generated mosquitto.conf, until the block ends."""
    proc = subprocess.Popen(
        [find_mosquitto(), "-c", str(d / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited {proc.returncode}: {log.read_text()}")
            return accepting(cert_port) and accepting(password_port)

        wait_until(up, 10, "mosquitto with the generated config")
        yield RunningKit(d, cert_port, password_port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Client:
    """A paho MQTT 5 client over TLS that records CONNACK, SUBACK, PUBACK and messages."""

    def __init__(
        self,
        kit: RunningKit,
        ident: str | None,
        *,
        cert: bool = False,
        password: str | None = None,
        username: str | None = None,
        ca: Path | None = None,
        certfile: Path | None = None,
        keyfile: Path | None = None,
        clean: bool = True,
        client_id: str | None = None,
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self.connack: ReasonCode | None = None
        self.disconnected = threading.Event()
        self.acks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.client_id = client_id or f"{ident or 'anon'}-{time.monotonic_ns()}"
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv5)
        bundle = kit.bundle(ident) if ident else None
        if cert and bundle is not None:
            certfile, keyfile = bundle / "client.pem", bundle / "client.key"
        c.tls_set(
            ca_certs=str(ca or kit.dir / "ca" / "ca.pem"),
            certfile=str(certfile) if certfile else None,
            keyfile=str(keyfile) if keyfile else None,
            cert_reqs=ssl.CERT_REQUIRED,
        )
        if password is not None and (username or ident):
            c.username_pw_set(username or ident, password)
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
        assert mid is not None
        wait_until(lambda: mid in self.acks, 5, "SUBACK")
        return self.acks[mid]

    def publish(
        self,
        topic: str,
        payload: str,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
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
def connected(kit: RunningKit, ident: str, **kw: Any) -> Iterator[Client]:
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
