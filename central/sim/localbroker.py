"""A throwaway Mosquitto on a free loopback port, for the demo and the tests.

It gets its own config in its own directory and is stopped by whoever started it; it never
touches the system service or a fixed port.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from agent.protocol.topics import (
    GATEWAY_PUBLISHES,
    GATEWAY_READS,
    GROUP_LEAVES,
    ctl_filter,
    group_filter,
    gw_filter,
)


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise RuntimeError("mosquitto not installed: run scripts/setup (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; a common default)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_listen_port() -> int:
    """A free port for a server that must get it back after a restart: below the ephemeral
    range. Thousands of clients retrying against a stopped broker on an ephemeral port will,
    sooner or later, be given that port as their own local port (a TCP self-connect even),
    and the broker then cannot bind it again ("Address already in use")."""
    low, _high = ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low) if low > 2048 else free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    return free_port()


def listening(host: str, port: int, table: Path | None = None) -> bool | None:
    """Whether a TCP socket listens on ``host:port`` (IPv4), by the kernel's table of sockets;
    None where it cannot be read.

    By ``ss -ltn`` (iproute2): it asks the kernel over netlink for the listening sockets
    alone. ``/proc/net/tcp`` lists every socket, and after a city-wide outage that is 100,000
    and more (50,000 connections seen from both ends, and the attempts still in flight):
    reading and parsing it for each of 10 listeners took most of a minute of a 50,000
    gateways' recovery, which the run counted as the brokers' start. Where there is no
    ``ss``, or with ``table``, that file (local address as little-endian hex, state ``0A`` =
    LISTEN)."""
    ss = shutil.which("ss") if table is None else None
    if ss is not None:
        try:
            out = subprocess.run(  # noqa: S603 - iproute2's ss, a fixed argument list
                [ss, "-H", "-l", "-t", "-n", f"( sport = :{port} )"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            return any(
                len(f) > 3 and f[3] == f"{host}:{port}" for f in map(str.split, out.splitlines())
            )
    try:
        text = (table or Path("/proc/net/tcp")).read_text()
    except OSError:
        return None
    want = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) > 3 and parts[1] == want and parts[3] == "0A":
            return True
    return False


def wait_until(pred: Callable[[], bool], timeout: float, what: str, poll: float = 0.02) -> None:
    """Poll a condition until it holds or ``timeout`` passes (AssertionError then)."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)


def listeners_for(clients: int) -> int:
    """How many loopback listener ports the broker opens for ``clients`` connections: one per
    two thirds of the ephemeral range (three at 50,000), so that a reconnect storm finds
    several accept queues (Mosquitto listens with a backlog of 100 on each).

    More ports do not give more connections from one address: paho binds its socket before
    it connects, and a port bound so is the address's whatever the destination. That limit
    is :func:`source_address`'s."""
    low, high = ephemeral_range()
    per = max(1000, (high - low + 1) * 2 // 3)
    return max(1, -(-clients // per))


def per_source(low_high: tuple[int, int] | None = None) -> int:
    """The most simulated gateways connecting from one loopback address: a third of the
    ephemeral range (9,410 by Linux's default 32768-60999)."""
    low, high = low_high or ephemeral_range()
    return max(1000, (high - low + 1) // 3)


def source_address(i: int, gateways: int, per: int | None = None) -> str | None:
    """The loopback address gateway ``i`` of ``gateways`` connects from; None (the kernel
    chooses, 127.0.0.1) while the fleet fits one address.

    paho binds its socket (``bind(("", 0))``) before it connects, and a port bound so is
    taken on that address for every destination: one address holds at most the ephemeral
    range's ports in connections (28,232 by default), fewer with sockets in TIME_WAIT after a
    reconnect storm, and every client that binds to the wildcard (central's own paho, the
    simulator's probes) needs a port free on all addresses. A run of 50,000 stopped at 28,200
    connected ("Address already in use" for everyone after). Linux treats all of 127.0.0.0/8
    as this machine's (the ``local 127.0.0.0/8 dev lo`` route), so gateway ``i`` leaves from
    127.0.k.1, k = 1 + i // :func:`per_source`, each with a third of the range."""
    n = per if per is not None else per_source()
    if gateways <= n:
        return None
    return f"127.0.{1 + i // n}.1"


#: The most gateways one simulated edge broker (or one fleet worker process) takes: under
#: this machine's hard open-files limit (20,000 here, which the sandbox cannot raise), with
#: room for the bridge, the logs and the listeners.
PER_EDGE = 17_000


def edges_for(gateways: int, per: int = PER_EDGE) -> int:
    """How many edge brokers ``gateways`` need (0: one broker takes them all)."""
    return 0 if gateways <= per else -(-gateways // per)


def bridge_topics(prefix: str = "titik") -> list[tuple[str, str]]:
    """An edge's bridge topics, (filter, direction), from agent/protocol/topics.py.

    Out (edge to core): what a gateway publishes (telemetry, batches, status, config
    reported, command results, service reports) and titik-ctl's reply topics (a gateway
    answers a command there, MQTT 5 response topic). In (core to edge): what a gateway reads,
    its own and its groups' desired documents and commands, retained ones included. The two
    sets are disjoint, so nothing comes back the way it went (no loop)."""
    out = [gw_filter(prefix, leaf) for leaf in GATEWAY_PUBLISHES] + [ctl_filter(prefix, "+")]
    into = [gw_filter(prefix, leaf) for leaf in GATEWAY_READS] + [
        group_filter(prefix, leaf) for leaf in GROUP_LEAVES
    ]
    return [(t, "out") for t in out] + [(t, "in") for t in into]


#: QoS 1 messages a bridge may have unacknowledged on its way to the core (and the core from
#: a bridge): Mosquitto's ``max_inflight_messages``, 20 by default, is every connection's
#: window (eclipse/mosquitto ``src/context.c``, ``context__init``: ``msgs_in`` and
#: ``msgs_out.inflight_maximum`` from it) and the Receive Maximum the core tells the bridge.
#: With 20, a bridge forwards 20 messages per round trip through two busy brokers: after a
#: 50,000-gateway outage the gateways' 578,000 buffered records reached the edges in 5
#: minutes, and the core 500-2,000 a second behind them. Gateways and central are not
#: held to it (central asks for its own Receive Maximum).
BRIDGE_INFLIGHT = 1000
#: The line for the core's and each edge's mosquitto.conf (a general option: before any
#: ``connection`` section).
INFLIGHT_CONF = f"max_inflight_messages {BRIDGE_INFLIGHT}\n"


def bridge_conf(name: str, core_host: str, core_port: int, prefix: str = "titik") -> str:
    """An edge Mosquitto's bridge to the core (mosquitto.conf(5), "Bridges").

    ``cleansession false``: the core keeps the bridge's subscriptions and QoS 1 messages for
    it while the bridge is down, and the edge keeps what it could not forward yet; QoS 1 on
    every topic, so a record is acknowledged hop by hop. MQTT 5 (``bridge_protocol_version
    mqttv50``) so a command's response topic and correlation data cross the bridge;
    ``try_private`` marks the connection as a bridge, so retained documents arrive retained.
    ``restart_timeout 1 10``: after an outage of the core, the bridge is back within seconds.
    Begins with :data:`INFLIGHT_CONF`, the edge's window toward the core."""
    lines = [
        INFLIGHT_CONF.strip(),
        f"connection {name}",
        f"address {core_host}:{core_port}",
        f"remote_clientid {name}",
        f"local_clientid {name}.local",
        "cleansession false",
        "bridge_protocol_version mqttv50",
        "try_private true",
        "notifications false",
        "start_type automatic",
        "restart_timeout 1 10",
        *(f"topic {t} {way} 1" for t, way in bridge_topics(prefix)),
    ]
    return "\n".join(lines) + "\n"


class LocalBroker:
    """Mosquitto on a free loopback port. ``persistence=True`` keeps sessions and queued
    messages across :meth:`restart` (saved on a clean stop), as a production broker would.
    ``listeners``: how many ports it listens on (:attr:`ports`, the first is :attr:`port`),
    for more clients than one port can take from loopback (:func:`listeners_for`)."""

    def __init__(
        self,
        workdir: Path,
        extra_conf: str = "",
        *,
        persistence: bool = False,
        listeners: int = 1,
    ) -> None:
        self.workdir = workdir
        self.host = "127.0.0.1"
        self.ports = [free_listen_port()]
        while len(self.ports) < listeners:
            port = free_listen_port()
            if port not in self.ports:
                self.ports.append(port)
        self.port = self.ports[0]
        self.conf = workdir / "mosquitto.conf"
        self.log = workdir / "mosquitto.log"
        # Each listener takes any number of clients (max_connections is per listener; -1 is
        # Mosquitto's default, spelt out for the reader).
        lines = [
            line
            for port in self.ports
            for line in (f"listener {port} {self.host}", "max_connections -1")
        ] + [
            "allow_anonymous true",
            "max_queued_messages 0",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append(
                "user root"
            )  # as root, Mosquitto drops to "mosquitto", who can't write here
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/"]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join(lines) + "\n" + extra_conf)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.spawn()
        self.wait_accepting()

    def spawn(self) -> None:
        """Start Mosquitto without waiting for it (:meth:`wait_accepting`): brokers that load
        thousands of persisted sessions each start side by side."""
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv
            [find_mosquitto(), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_accepting(self) -> None:
        for port in self.ports:
            wait_until(functools.partial(self._accepting, port), 60, f"mosquitto on port {port}")

    def _accepting(self, port: int) -> bool:
        """Listening on ``port``: by the kernel's table of sockets where there is one. A
        connection attempt is no test after an outage: thousands of gateways retrying fill
        the listen backlog the moment it opens, and the probe's SYN is dropped with theirs
        (a 50,000 run's restart "timed out waiting for mosquitto" that way)."""
        if self.proc is None:
            return False
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited {self.proc.returncode}; see {self.log}")
        known = listening(self.host, port)
        if known is not None:
            return known
        with contextlib.suppress(OSError), socket.create_connection((self.host, port), 0.2):
            return True
        return False

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, as a service manager stops it. With persistence Mosquitto saves its
        sessions and queues on the way out, which takes a while with thousands of
        clients: it is killed (losing that) only after ``timeout``."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
