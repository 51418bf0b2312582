"""titik-sim's light gateways: the agent's traffic on the wire, without the agent's CPU.

:class:`central.sim.fleet.SimulatedFleet` runs a real :class:`agent.core.Agent` per gateway,
which is what makes it a test of the agent; but each of them spends, on this machine, the
CPU a real gateway spends on its own: sampling through pydantic, the spool's files, paho's
packet objects. At 50,000 gateways recovering from a city-wide outage that is 3.3 ms each,
more than half of the two cores here (docs/benchmarks.md, "50,000 gateways on PostgreSQL"),
and the brokers and central under test get what is left. :class:`LightFleet` sends what the
agents send and paces it as they do, for a fifth to a quarter of that, so the brokers, central and
PostgreSQL can be measured at a city's scale on one machine:

- the same MQTT 5 session: client id, persistent session (clean start off, the agent's
  session expiry), keepalive, the offline :class:`~agent.protocol.Status` as a retained QoS 1
  Will, the online status on every CONNACK, topic aliases as the broker allows them, the
  same subscriptions (the gateway's config and command topics and its groups'), made only
  when the broker did not resume the session;
- the same telemetry: one :class:`~agent.protocol.Telemetry` per ``interval_s`` (a real
  sample of the simulated platform, with its own seq, boot and ts), QoS 1, live while
  connected; buffered while not, and replayed oldest first in
  :class:`~agent.protocol.TelemetryBatch` messages after a jitter, rate-limited by the same
  token bucket (:mod:`agent.delivery`); what a dropped connection had in flight is sent
  again;
- the same reconnects: :class:`agent.mqtt.Backoff` (exponential, full jitter) with the
  agent's defaults, and paho's 5 s connect timeout.

What they leave out: the spool on flash (buffered records are kept in memory), collecting
a sample (the platform is read once, and each sample is that one with a new seq, boot and
ts), and everything that acts on what arrives (remote config and commands are acked and
dropped, there is no service report). So only the steady and outage scenarios run on
them, and their CPU is not a gateway's: the simulator with real agents is what measures
that. The MQTT packets are built and parsed here (the six kinds above; paho builds an
object per packet, which is the cost this module exists to avoid): tests/integration/
test_sim_light.py has a real Mosquitto and central check every kind of them.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import json
import os
import random
import selectors
import socket
import struct
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import __version__
from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.delivery import BATCH_MAX_BYTES, MAX_INFLIGHT_BATCHES, MAX_STEP_S
from agent.mqtt import Backoff
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import Status, Topics, batch_payload, encode
from agent.protocol.wire import telemetry_json
from agent.state import AgentState
from central.sim.fleet import MAX_WAIT_S, Drawn, LoopFleet, gateway_plan
from central.sim.localbroker import source_address

#: paho's default connect timeout: how long a TCP connect may take before the attempt fails.
CONNECT_TIMEOUT_S = 5.0

# -- MQTT 5 packets (OASIS MQTT 5.0, section 3) ----------------------------------------------

CONNACK, PUBLISH, PUBACK, SUBACK, PINGRESP, DISCONNECT = 2, 3, 4, 9, 13, 14
PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"
#: Property identifier -> how its value is encoded (section 2.2.2.2), to skip the ones
#: not read: 1, 2 and 4 bytes, a variable byte integer, a string or binary data (both a
#: 2-byte length and the bytes), a string pair.
_PROPERTY_KIND = {
    **dict.fromkeys((0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A), "1"),
    **dict.fromkeys((0x13, 0x21, 0x22, 0x23), "2"),
    **dict.fromkeys((0x02, 0x11, 0x18, 0x27), "4"),
    0x0B: "v",
    **dict.fromkeys((0x03, 0x08, 0x09, 0x12, 0x15, 0x16, 0x1A, 0x1C, 0x1F), "s"),
    0x26: "p",
}
TOPIC_ALIAS_MAXIMUM = 0x22


class ProtocolError(ValueError):
    """The broker sent something this client cannot read."""


def varint(n: int) -> bytes:
    """A variable byte integer (section 1.5.5)."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_varint(buf: bytes | bytearray, at: int) -> tuple[int, int] | None:
    """(value, the offset after it), or None if ``buf`` ends before it does."""
    value, shift = 0, 0
    for k in range(4):
        if at + k >= len(buf):
            return None
        b = buf[at + k]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, at + k + 1
        shift += 7
    raise ProtocolError("a variable byte integer longer than 4 bytes")


def _str(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    keepalive_s: int,
    session_expiry_s: int,
    will_topic: str,
    will_payload: bytes,
) -> bytes:
    """CONNECT with a retained QoS 1 Will; clean start only without a persistent session."""
    flags = 0x04 | 0x08 | 0x20  # Will, Will QoS 1, Will retain
    props = b""
    if session_expiry_s:
        props = b"\x11" + struct.pack(">I", session_expiry_s)
    else:
        flags |= 0x02
    head = _str(b"MQTT") + bytes((5, flags)) + struct.pack(">H", keepalive_s)
    body = head + varint(len(props)) + props
    body += _str(client_id.encode()) + b"\x00" + _str(will_topic.encode()) + _str(will_payload)
    return _packet(0x10, body)


def publish_packet(
    topic: bytes, packet_id: int, payload: bytes, *, retain: bool = False, alias: int = 0
) -> bytes:
    """PUBLISH at QoS 1; with ``alias`` and an empty ``topic``, the alias names the topic."""
    props = b"\x23" + struct.pack(">H", alias) if alias else b""
    body = _str(topic) + struct.pack(">H", packet_id) + varint(len(props)) + props + payload
    return _packet(0x32 | retain, body)


def subscribe_packet(packet_id: int, topics: Sequence[str]) -> bytes:
    """SUBSCRIBE to every topic at QoS 1."""
    body = struct.pack(">H", packet_id) + b"\x00"
    body += b"".join(_str(t.encode()) + b"\x01" for t in topics)
    return _packet(0x82, body)


def read_properties(body: bytes, at: int) -> tuple[dict[int, int], int]:
    """The integer properties at ``at`` (the others skipped), and the offset after them."""
    got = read_varint(body, at)
    if got is None:
        raise ProtocolError("properties cut short")
    length, at = got
    end = at + length
    if end > len(body):
        raise ProtocolError("properties longer than their packet")
    out: dict[int, int] = {}
    while at < end:
        ident = body[at]
        kind = _PROPERTY_KIND.get(ident)
        at += 1
        if kind in ("1", "2", "4"):
            size = int(kind)
            out[ident] = int.from_bytes(body[at : at + size], "big")
            at += size
        elif kind == "v":
            got = read_varint(body, at)
            if got is None:
                raise ProtocolError("a property cut short")
            out[ident], at = got
        elif kind == "s":
            at += 2 + int.from_bytes(body[at : at + 2], "big")
        elif kind == "p":
            at += 2 + int.from_bytes(body[at : at + 2], "big")
            at += 2 + int.from_bytes(body[at : at + 2], "big")
        else:
            raise ProtocolError(f"unknown property 0x{ident:02x}")
    if at != end:
        raise ProtocolError("properties overran their length")
    return out, end


def split_packets(buf: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete packets off the front of ``buf``: (first byte, body) each."""
    out = []
    at = 0
    while len(buf) - at >= 2:
        got = read_varint(buf, at + 1)
        if got is None:
            break
        length, start = got
        if start + length > len(buf):
            break
        out.append((buf[at], bytes(buf[start : start + length])))
        at = start + length
    del buf[:at]
    return out


# -- one gateway -----------------------------------------------------------------------------

DOWN, TCP, WAIT, UP = range(4)  # no socket; TCP connecting; CONNECT sent; connected


class LightGateway:
    """One gateway's connection and buffer (the loop's thread only)."""

    __slots__ = (
        "alias",
        "alias_max",
        "backoff",
        "batch_ids",
        "boot",
        "deadline",
        "device",
        "drawn",
        "fd",
        "inbuf",
        "index",
        "inflight",
        "last_error",
        "last_out",
        "mask",
        "next_attempt",
        "next_id",
        "next_sample",
        "outbuf",
        "pending",
        "ping_sent",
        "port",
        "replay_at",
        "sample_parts",
        "seq",
        "sock",
        "source",
        "state",
        "status_parts",
        "subscribed",
        "subscriptions",
        "tokens",
        "tokens_at",
        "topics",
        "will_parts",
    )

    def __init__(
        self,
        index: int,
        device: str,
        topics: Topics,
        port: int,
        source: str | None,
        backoff: Backoff,
        subscriptions: list[str],
        parts: tuple[list[bytes], list[bytes], list[bytes]],
    ) -> None:
        self.index = index
        self.device = device
        self.topics = topics
        self.port = port
        self.source = source
        self.backoff = backoff
        self.subscriptions = subscriptions
        # JSON templates (_template): the Will, the online status, a sample
        self.will_parts, self.status_parts, self.sample_parts = parts
        self.sock: socket.socket | None = None
        self.fd = -1
        self.mask = 0
        self.state = DOWN
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.pending: deque[tuple[int, bytes]] = deque()  # (seq, record), not yet sent
        self.inflight: dict[int, list[tuple[int, bytes]]] = {}  # packet id -> its records
        self.batch_ids: set[int] = set()
        self.alias: dict[bytes, int] = {}
        self.alias_max = 0
        self.next_id = 1
        self.subscribed = False
        self.ping_sent = False
        self.replay_at: float | None = None
        self.tokens = 0.0
        self.tokens_at = 0.0
        self.last_out = 0.0
        self.deadline = 0.0
        self.next_attempt = 0.0
        self.next_sample = 0.0
        self.last_error: str | None = None
        self.boot = 0
        self.seq = 0
        self.drawn: list[int] | None = None  # [first seq, last seq, count]


def _template(data: dict[str, object], sentinels: dict[str, object]) -> list[bytes]:
    """``data`` as compact JSON split around the values of ``sentinels`` (in that order), so a
    message is ``parts[0] + value0 + parts[1] + value1 ...`` with no encoder on the way."""
    text = json.dumps({**data, **sentinels}, separators=(",", ":"))
    parts = []
    for value in sentinels.values():
        head, text = text.split(json.dumps(value), 1)
        parts.append(head.encode())
    parts.append(text.encode())
    return parts


_SEQ, _BOOT, _TS = 987654321987, 876543219876, 1765432198.765


def _fill(parts: list[bytes], *values: object) -> bytes:
    out = [parts[0]]
    for value, part in zip(values, parts[1:], strict=True):
        out.append(str(value).encode())
        out.append(part)
    return b"".join(out)


class LightFleet(LoopFleet):
    """``n`` light gateways in one event-loop thread (:class:`central.sim.fleet.SimFleet`);
    the arguments are :class:`~central.sim.fleet.SimulatedFleet`'s, and the gateways' ids,
    places, groups, ports and source addresses are the same."""

    thread_name = "titik-sim-light"

    def __init__(
        self,
        n: int,
        host: str,
        port: int | Sequence[int],
        workdir: Path,
        *,
        interval_s: float = 10.0,
        ramp_s: float = 0.0,
        reconnect_max_s: float | None = None,
        replay_jitter_s: float | None = None,
        seed: int = 1,
        service_interval_s: float | None = None,
        service_faults: int = 0,
        part: tuple[int, int] | None = None,
        per_source: int | None = None,
    ) -> None:
        if service_interval_s or service_faults:
            raise ValueError("light gateways send no service report: run real agents for it")
        super().__init__()
        first, end = part if part is not None else (0, n)
        ports = [port] if isinstance(port, int) else list(port)
        self.host = host
        self.interval_s = interval_s
        self.faults: dict[str, str] = {}
        mqtt: dict[str, object] = {"host": host}
        if reconnect_max_s is not None:
            mqtt["reconnect_max_s"] = reconnect_max_s
        buffer = {} if replay_jitter_s is None else {"replay_jitter_s": replay_jitter_s}
        plan = gateway_plan(n, seed)[first:end]
        # The agent's defaults, read from its config as a gateway's would be.
        cfg = parse_config(
            {"device": {"id": str(plan[0]["id"])}, "mqtt": mqtt, "buffer": buffer}, {}
        )
        self.mqtt = cfg.mqtt
        self.buffer = cfg.buffer
        sample = self._sample_of(plan[0], workdir / "light-template", interval_s)
        platform = SimulatedPlatform(str(plan[0]["id"]))
        sid = uuid.uuid4().hex[:16]  # this run's state lifetime, as an agent's state dir's
        rng = random.Random(seed)
        self.rng = rng
        now = time.monotonic()
        self.gateways: list[LightGateway] = []
        for k, device in enumerate(plan):
            g = self._gateway(k, device, platform, sample, sid)
            g.port = ports[(first + k) % len(ports)]
            g.source = source_address(first + k, n, per_source)
            g.next_attempt = now + rng.uniform(0, ramp_s)
            g.next_sample = g.next_attempt + rng.uniform(0, interval_s)
            self.gateways.append(g)
        self.sid = sid
        self.published = 0  # live samples handed to the broker
        self.replayed = 0  # buffered records sent in batches
        self.subscribes = 0  # SUBSCRIBE packets sent (on a new session only)
        self.received = 0  # messages the broker delivered to a gateway (acked, not acted on)
        self._up = 0
        self._heap: list[tuple[float, int]] = []
        self._next_at: list[float] = []
        self._sel: selectors.BaseSelector | None = None

    def _gateway(
        self,
        k: int,
        device: dict[str, object],
        platform: SimulatedPlatform,
        sample: dict[str, object],
        sid: str,
    ) -> LightGateway:
        did = str(device["id"])
        t = Topics(self.mqtt.topic_prefix, did)
        groups = [str(x) for x in device["groups"]]  # type: ignore[attr-defined]
        # As Agent.__init__ makes them (agent/core.py)
        desired = [t.config_desired, *(t.group_config_desired(x) for x in groups)]
        subscriptions = [*desired, *sorted({t.cmd, *(t.group_cmd(x) for x in groups)})]
        place: dict[str, Any] = {
            "site": device["site"] or None,
            "region": device["region"] or None,
            "lat": device["lat"],
            "lon": device["lon"],
            "groups": groups,
        }
        offline = json.loads(encode(Status(online=False, boot=0, **place)))
        online = Status(
            online=True,
            boot=0,
            ts=0.0,
            version=__version__,
            platform=platform.name,
            model=platform.model(),
            boot_id=platform.boot_id(),
            **place,
        )
        parts = (
            _template(offline, {"boot": _BOOT}),
            _template(json.loads(encode(online)), {"boot": _BOOT, "ts": _TS}),
            _template(
                {**sample, "device": did, "sid": sid}, {"seq": _SEQ, "boot": _BOOT, "ts": _TS}
            ),
        )
        backoff = Backoff(self.mqtt.reconnect_min_s, self.mqtt.reconnect_max_s)
        return LightGateway(k, did, t, 0, None, backoff, subscriptions, parts)

    @staticmethod
    def _sample_of(device: dict[str, object], where: Path, interval_s: float) -> dict[str, object]:
        """One real sample of the simulated platform, as a real agent takes it."""
        where.mkdir(parents=True, exist_ok=True)
        cfg = parse_config(
            {
                "device": device,
                "mqtt": {"host": "localhost"},
                "telemetry": {"interval_s": interval_s},
                "state": {"dir": str(where)},
                "platform": {"kind": "simulated", "root": str(where / "root")},
            },
            {},
        )
        agent = Agent(
            cfg, SimulatedPlatform(str(device["id"])), AgentState(where), open_spool(cfg, where)
        )
        try:
            data: dict[str, object] = json.loads(telemetry_json(agent.sample()))
        finally:
            agent.spool.close()
        return data

    # -- the event loop
    def run(self) -> None:
        sel = selectors.DefaultSelector()
        self._sel = sel
        self._next_at = [g.next_attempt for g in self.gateways]
        self._heap = [(t, i) for i, t in enumerate(self._next_at)]
        heapq.heapify(self._heap)
        heap = self._heap
        try:
            while not self._stop.is_set():
                self.stats.passes += 1
                while not self._calls.empty():
                    self._calls.get()()
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    t, i = heapq.heappop(heap)
                    if t == self._next_at[i]:
                        self._timer(i, now)
                wait = min(MAX_WAIT_S, max(0.0, heap[0][0] - time.monotonic())) if heap else 0.2
                for key, mask in sel.select(wait):
                    i = key.data
                    now = time.monotonic()
                    if mask & selectors.EVENT_WRITE:
                        self._writable(i, now)
                    if mask & selectors.EVENT_READ and self.gateways[i].sock is not None:
                        self._readable(i, now)
        finally:
            for i, g in enumerate(self.gateways):
                if g.state == UP:  # goodbye, as Agent.shutdown: offline status, DISCONNECT
                    with contextlib.suppress(OSError):
                        g.sock.setblocking(True)  # type: ignore[union-attr]
                        g.sock.settimeout(0.2)  # type: ignore[union-attr]
                        g.sock.sendall(  # type: ignore[union-attr]
                            bytes(g.outbuf)
                            + self._publish_bytes(
                                g, g.topics.status, _fill(g.will_parts, g.boot), True
                            )
                            + DISCONNECT_PACKET
                        )
                self._close(i)
            sel.close()

    def _timer(self, i: int, now: float) -> None:
        g = self.gateways[i]
        if now >= g.next_sample:
            self._sample(g, now)
        if g.state == DOWN and now >= g.next_attempt:
            self._attempt(i, now)
        elif g.state in (TCP, WAIT) and now >= g.deadline:
            self._lost(i, now, "timed out" if g.state == TCP else "no CONNACK")
        elif g.state == UP:
            if g.replay_at is not None and now >= g.replay_at:
                self._replay(g, now)
            if g.state == UP and now - g.last_out >= self.mqtt.keepalive_s:
                if g.ping_sent:
                    self._lost(i, now, "no PINGRESP")
                else:
                    g.ping_sent = True
                    self._send(i, PINGREQ_PACKET, now)
        self._schedule(i, now)

    def _schedule(self, i: int, now: float) -> None:
        g = self.gateways[i]
        nxt = g.next_sample
        if g.state == DOWN:
            nxt = min(nxt, g.next_attempt)
        elif g.state != UP:
            nxt = min(nxt, g.deadline)
        else:
            nxt = min(nxt, g.last_out + self.mqtt.keepalive_s)
            if g.replay_at is not None and g.replay_at > now and g.pending:
                nxt = min(nxt, g.replay_at)  # else the next PUBACK brings more
        nxt = max(nxt, now + 0.001)
        if nxt != self._next_at[i]:
            self._next_at[i] = nxt
            heapq.heappush(self._heap, (nxt, i))

    # -- connecting
    def _attempt(self, i: int, now: float) -> None:
        g = self.gateways[i]
        g.boot += 1  # as AgentState.next_boot before every attempt
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as paho
            if g.source:
                sock.bind((g.source, 0))
            err = sock.connect_ex((self.host, g.port))
        except OSError as exc:
            sock.close()
            self._retry(g, now, f"cannot reach broker {self.host}:{g.port}: {exc}")
            return
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self._retry(g, now, f"cannot reach broker {self.host}:{g.port}: {os.strerror(err)}")
            return
        g.sock, g.fd, g.state = sock, sock.fileno(), TCP
        g.deadline = now + CONNECT_TIMEOUT_S
        g.inbuf.clear()
        g.outbuf.clear()
        self._register(i, selectors.EVENT_WRITE)

    def _connected_tcp(self, i: int, now: float) -> None:
        g = self.gateways[i]
        assert g.sock is not None  # noqa: S101 - in state TCP
        err = g.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._lost(i, now, f"cannot reach broker {self.host}:{g.port}: {os.strerror(err)}")
            return
        g.state = WAIT
        g.deadline = now + self.mqtt.keepalive_s
        will = _fill(g.will_parts, g.boot)
        packet = connect_packet(
            g.device, self.mqtt.keepalive_s, self.mqtt.session_expiry_s, g.topics.status, will
        )
        self._register(i, selectors.EVENT_READ)
        self._send(i, packet, now)

    def _retry(self, g: LightGateway, now: float, reason: str) -> None:
        g.next_attempt = now + g.backoff.next_delay()
        g.last_error = reason

    def _lost(self, i: int, now: float, reason: str) -> None:
        g = self.gateways[i]
        if g.state == UP:
            self._up -= 1
            # What the connection took with it goes back to the buffer, in seq order.
            back = [r for recs in g.inflight.values() for r in recs]
            if back:
                g.pending = deque(heapq.merge(sorted(back), g.pending))
        g.inflight.clear()
        g.batch_ids.clear()
        g.replay_at = None
        self._close(i)
        g.state = DOWN
        self._retry(g, now, reason)
        self._schedule(i, now)

    def _close(self, i: int) -> None:
        g = self.gateways[i]
        if g.sock is not None:
            if g.mask and self._sel is not None:
                self._sel.unregister(g.fd)
            g.sock.close()
        g.sock, g.fd, g.mask = None, -1, 0

    def _register(self, i: int, mask: int) -> None:
        g = self.gateways[i]
        assert self._sel is not None  # noqa: S101 - on the loop's thread
        if g.mask == mask:
            return
        if g.mask:
            self._sel.modify(g.fd, mask, i)
        else:
            self._sel.register(g.fd, mask, i)
        g.mask = mask

    # -- I/O
    def _send(self, i: int, data: bytes, now: float) -> None:
        g = self.gateways[i]
        if g.sock is None:
            return  # lost meanwhile; what it carried is back in the buffer
        g.last_out = now
        if g.outbuf:
            g.outbuf += data
            return
        try:
            sent = g.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._lost(i, now, f"connection lost ({exc})")
            return
        if sent < len(data):
            g.outbuf += data[sent:]
            self._register(i, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _writable(self, i: int, now: float) -> None:
        g = self.gateways[i]
        if g.state == TCP:
            self._connected_tcp(i, now)
            self._schedule(i, now)
            return
        if g.sock is None:
            return
        try:
            sent = g.sock.send(g.outbuf)
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(i, now, f"connection lost ({exc})")
            return
        del g.outbuf[:sent]
        if not g.outbuf:
            self._register(i, selectors.EVENT_READ)

    def _readable(self, i: int, now: float) -> None:
        g = self.gateways[i]
        try:
            data = g.sock.recv(65536)  # type: ignore[union-attr]
        except BlockingIOError:
            return
        except OSError as exc:
            self._lost(i, now, f"connection lost ({exc})")
            return
        if not data:
            self._lost(i, now, "the broker closed the connection")
            return
        g.inbuf += data
        try:
            for first, body in split_packets(g.inbuf):
                self._packet(i, first, body, now)
                if g.sock is None:
                    return
        except (ProtocolError, IndexError, struct.error) as exc:
            self._lost(i, now, f"unreadable packet from the broker ({exc})")
            return
        self._schedule(i, now)

    def _packet(self, i: int, first: int, body: bytes, now: float) -> None:
        g = self.gateways[i]
        kind = first >> 4
        if kind == PUBACK:
            pid = int.from_bytes(body[:2], "big")
            recs = g.inflight.pop(pid, None)
            g.batch_ids.discard(pid)
            if recs and len(body) > 2 and body[2] >= 0x80:
                g.pending = deque(heapq.merge(recs, g.pending))  # refused: kept, sent again
            if g.replay_at is not None and g.pending:
                self._replay(g, now)
        elif kind == CONNACK:
            if body[1] >= 0x80:
                self._lost(i, now, f"broker refused connection (reason 0x{body[1]:02x})")
                return
            props, _ = read_properties(body, 2)
            self._on_connack(i, bool(body[0] & 1), props.get(TOPIC_ALIAS_MAXIMUM, 0), now)
        elif kind == PUBLISH:
            qos = (first >> 1) & 3
            self.received += 1
            if qos:
                at = 2 + int.from_bytes(body[:2], "big")
                self._send(i, b"\x40\x02" + body[at : at + 2], now)  # acked, not acted on
        elif kind == SUBACK:
            _, at = read_properties(body, 2)
            codes = body[at:]  # one per topic asked for, each granted (< 0x80) or refused
            g.subscribed = len(codes) == len(g.subscriptions) and all(r < 0x80 for r in codes)
        elif kind == PINGRESP:
            g.ping_sent = False
        elif kind == DISCONNECT:
            self._lost(i, now, "the broker sent DISCONNECT")

    def _on_connack(self, i: int, session_present: bool, alias_max: int, now: float) -> None:
        g = self.gateways[i]
        g.state = UP
        self._up += 1
        self.stats.connects.append(time.time())
        g.backoff.reset()
        g.last_error = None
        g.alias.clear()
        g.alias_max = alias_max
        g.ping_sent = False
        if not (session_present and g.subscribed):  # as MqttLink._handle_connect
            g.subscribed = False
            self.subscribes += 1
            self._send(i, subscribe_packet(self._packet_id(g), g.subscriptions), now)
        status = _fill(g.status_parts, g.boot, round(time.time(), 3))
        self._send(i, self._publish_bytes(g, g.topics.status, status, True), now)
        if g.state != UP:
            return
        # As Delivery.on_connected: the replay starts after a jitter, with an empty bucket.
        g.replay_at = now + self.rng.uniform(0, self.buffer.replay_jitter_s)
        g.tokens, g.tokens_at = 0.0, now

    def _packet_id(self, g: LightGateway) -> int:
        pid = g.next_id
        while pid in g.inflight:
            pid = pid % 65535 + 1
        g.next_id = pid % 65535 + 1
        return pid

    def _publish_bytes(
        self, g: LightGateway, topic: str, payload: bytes, retain: bool = False, pid: int = 0
    ) -> bytes:
        """A PUBLISH with the topic's alias, as MqttLink.publish uses them."""
        name = topic.encode()
        alias = g.alias.get(name, 0)
        if alias:
            return publish_packet(
                b"", pid or self._packet_id(g), payload, retain=retain, alias=alias
            )
        if len(g.alias) < g.alias_max:
            alias = g.alias[name] = len(g.alias) + 1
        return publish_packet(name, pid or self._packet_id(g), payload, retain=retain, alias=alias)

    # -- telemetry
    def _sample(self, g: LightGateway, now: float) -> None:
        """Draw one sample: published at once when connected, else buffered."""
        g.next_sample += self.interval_s
        if g.next_sample <= now:  # the loop fell behind: the next one an interval from now
            g.next_sample = now + self.interval_s
        g.seq += 1
        seq = g.seq
        if g.drawn is None:
            g.drawn = [seq, seq, 1]
        else:
            g.drawn[1], g.drawn[2] = seq, g.drawn[2] + 1
        rec = (seq, _fill(g.sample_parts, seq, g.boot, round(time.time(), 3)))
        if g.state != UP:
            g.pending.append(rec)
            return
        i = g.index
        pid = self._packet_id(g)
        g.inflight[pid] = [rec]
        self.published += 1
        self._send(i, self._publish_bytes(g, g.topics.telemetry, rec[1], pid=pid), now)

    def _replay(self, g: LightGateway, now: float) -> None:
        """As Delivery.replay: oldest first, in batches, through the token bucket."""
        if g.replay_at is None or g.state != UP or not g.pending:
            return
        if now < g.replay_at:
            return
        b = self.buffer
        burst = max(float(b.batch_records), b.replay_rate * MAX_STEP_S)
        g.tokens = min(burst, g.tokens + (now - g.tokens_at) * b.replay_rate)
        g.tokens_at = now
        i = g.index
        while g.pending and len(g.batch_ids) < MAX_INFLIGHT_BATCHES:
            n = min(b.batch_records, int(g.tokens))
            if n < 1:
                g.replay_at = now + (1 - g.tokens) / b.replay_rate
                return
            recs: list[tuple[int, bytes]] = []
            size = 0
            while g.pending and len(recs) < n:
                if recs and size + len(g.pending[0][1]) > BATCH_MAX_BYTES:
                    break
                rec = g.pending.popleft()
                recs.append(rec)
                size += len(rec[1])
            pid = self._packet_id(g)
            g.inflight[pid] = recs
            g.batch_ids.add(pid)
            g.tokens -= len(recs)
            self.replayed += len(recs)
            payload = batch_payload(g.device, [r[1] for r in recs])
            self._send(i, self._publish_bytes(g, g.topics.telemetry_batch, payload, pid=pid), now)
            if g.state != UP:
                return

    # -- control (and call_soon, start and stop: LoopFleet)
    def drop(self, i: int) -> None:
        """Cut gateway ``i``'s connection as a failing backhaul would (no DISCONNECT: the
        broker sends its Will); it reconnects with backoff. On the loop's thread
        (:meth:`call_soon`)."""
        sock = self.gateways[i].sock
        if sock is not None and self.gateways[i].state == UP:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- what the scenarios read (SimFleet); from another thread, as a census of plain reads
    @property
    def size(self) -> int:
        return len(self.gateways)

    @property
    def connected(self) -> int:
        return self._up

    @property
    def buffered(self) -> int:
        return sum(len(g.pending) + sum(map(len, list(g.inflight.values()))) for g in self.gateways)

    @property
    def sent(self) -> int:
        return self.published + self.replayed

    def pending(self) -> int:
        return sum(len(g.pending) for g in self.gateways)

    def device_ids(self) -> list[str]:
        return [g.device for g in self.gateways]

    def expected(self, skip: frozenset[str] = frozenset()) -> Drawn:
        return {
            (g.device, self.sid): list(g.drawn)
            for g in self.gateways
            if g.drawn is not None and g.device not in skip
        }

    def behind(self, most: int) -> list[tuple[str, bool, int, str | None]]:
        out = []
        for g in self.gateways:
            if g.pending or g.state != UP:
                out.append((g.device, g.state == UP, len(g.pending), g.last_error))
                if len(out) >= most:
                    break
        return out
