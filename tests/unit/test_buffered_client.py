"""agent/protocol/client.py's BufferedClient (central's consumer) against a real Mosquitto:
every message whole and in order, whatever its size against the read chunk, none left
waiting in memory for more network data, and a reconnect that starts clean; and its own
PUBLISH decoder against paho's, on named and generated packets. It overrides four of paho's
internals; a test checks the installed paho still has them as it assumes."""

from __future__ import annotations

import inspect
import queue
import threading
import time

import paho.mqtt.client as paho
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol.client import RECV_CHUNK, BufferedClient, make_client
from tests.broker import Broker, wait_until


def _receiver(broker: Broker, topic: str) -> tuple[paho.Client, queue.SimpleQueue[bytes]]:
    got: queue.SimpleQueue[bytes] = queue.SimpleQueue()
    client = make_client("buffered-rx", manual_ack=True, buffered=True)
    assert isinstance(client, BufferedClient)
    subscribed = threading.Event()

    def on_message(c: paho.Client, _u: object, msg: paho.MQTTMessage) -> None:
        got.put(msg.payload)
        c.ack(msg.mid, msg.qos)

    client.on_message = on_message
    client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.reconnect_delay_set(0.05, 0.5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert subscribed.wait(10)
    return client, got


def _publisher(broker: Broker) -> paho.Client:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="buffered-tx")
    pub.max_queued_messages_set(0)
    pub.max_inflight_messages_set(1000)
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    return pub


def _take(got: queue.SimpleQueue[bytes], n: int, timeout: float = 20.0) -> list[bytes]:
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        out.append(got.get(timeout=max(0.01, deadline - time.monotonic())))
    return out


def test_every_message_whole_and_in_order_across_chunks(broker: Broker) -> None:
    rx, got = _receiver(broker, "b/#")
    pub = _publisher(broker)
    try:
        # Small ones (a hundred per chunk), ones near the chunk's size, and larger than it.
        sizes = [1, 7, 600, 127, 128, 16_383, 16_384, RECV_CHUNK - 5, RECV_CHUNK + 3, 300_000]
        sent = [
            (f"{i:05d}:".encode() + bytes([65 + i % 26]) * sizes[i % len(sizes)])
            for i in range(1000)
        ]
        for payload in sent:
            pub.publish("b/x", payload, qos=1)
        assert _take(got, len(sent)) == sent
    finally:
        pub.loop_stop()
        rx.loop_stop()


def test_a_burst_is_delivered_without_waiting_for_more_data(broker: Broker) -> None:
    """The last messages of a burst arrive with the burst: none waits in the buffer for the
    next bytes on the socket (select() cannot see them)."""
    rx, got = _receiver(broker, "b/#")
    pub = _publisher(broker)
    try:
        burst = [f"m{i}".encode() for i in range(500)]
        for payload in burst:
            pub.publish("b/y", payload, qos=1)
        # Nothing else is sent (no ping is due for a minute): all must come now.
        assert _take(got, len(burst), timeout=5) == burst
        assert isinstance(rx, BufferedClient) and rx.buffered() == 0
    finally:
        pub.loop_stop()
        rx.loop_stop()


def test_a_reconnect_starts_with_an_empty_buffer(broker: Broker) -> None:
    rx, got = _receiver(broker, "b/#")
    pub = _publisher(broker)
    try:
        pub.publish("b/z", b"before", qos=1).wait_for_publish(5)
        assert _take(got, 1) == [b"before"]
        assert isinstance(rx, BufferedClient)
        rx._rbuf, rx._rpos = b"\x30\x7fstale bytes of the old connection", 0
        broker.restart()
        wait_until(lambda: rx.is_connected(), 20, "the consumer to reconnect")
        assert rx.buffered() == 0
        pub.loop_stop()
        pub = _publisher(broker)
        wait_until(lambda: pub.is_connected(), 20, "the publisher to reconnect")
        pub.publish("b/z", b"after", qos=1).wait_for_publish(5)
        assert _take(got, 1) == [b"after"]
    finally:
        pub.loop_stop()
        rx.loop_stop()


def test_the_installed_paho_still_reads_through_what_it_overrides() -> None:
    for name in (
        "_sock_recv", "_sock_close", "loop_read", "_packet_read",
        "_handle_publish", "_handle_on_message", "_send_puback", "_easy_log",
    ):  # fmt: skip
        assert callable(getattr(paho.Client, name, None)), f"paho.Client.{name} is gone"
    assert "self._handle_publish()" in inspect.getsource(paho.Client._packet_handle)
    reads = inspect.getsource(paho.Client._packet_read)
    assert "self._sock_recv(" in reads and "self._sock.recv" not in reads
    assert "self.loop_read()" in inspect.getsource(paho.Client._loop)
    assert "self._sock_close()" in inspect.getsource(paho.Client._reset_sockets)


def test_ack_many_acks_each_message_once_for_the_broker(broker: Broker) -> None:
    """Batches acked with one write each: the broker takes every PUBACK (the persistent
    session redelivers none of them, and sends the next ones), and what was not acked comes
    again."""

    def session() -> tuple[BufferedClient, queue.SimpleQueue[paho.MQTTMessage]]:
        got: queue.SimpleQueue[paho.MQTTMessage] = queue.SimpleQueue()
        c = make_client("acker", manual_ack=True, buffered=True)
        assert isinstance(c, BufferedClient)
        subscribed = threading.Event()
        c.on_message = lambda _c, _u, m: got.put(m)
        c.on_connect = lambda cl, *_: cl.subscribe("a/#", qos=1)
        c.on_subscribe = lambda *_: subscribed.set()
        props = paho.Properties(paho.PacketTypes.CONNECT)  # type: ignore[attr-defined]
        props.SessionExpiryInterval = 600
        c.connect(broker.host, broker.port, clean_start=False, properties=props)
        c.loop_start()
        assert subscribed.wait(10)
        return c, got

    c, got = session()
    pub = _publisher(broker)
    try:
        for i in range(300):
            pub.publish("a/x", f"{i}".encode(), qos=1)
        # Mosquitto sends 20 unacked at most: ack in batches of 20, the last 10 not at all.
        for at in range(0, 300, 20):
            batch = [got.get(timeout=20) for _ in range(20)]
            assert [int(m.payload) for m in batch] == list(range(at, at + 20))
            c.ack_many(m.mid for m in (batch if at < 280 else batch[:10]))
        time.sleep(0.5)  # the PUBACKs reach the broker before the disconnect
        c.disconnect()
        c.loop_stop()
        c, got = session()
        again = sorted(int(got.get(timeout=20).payload) for _ in range(10))
        assert again == list(range(290, 300))
        time.sleep(1.0)
        assert got.empty()  # none of the 290 acked came again
    finally:
        pub.loop_stop()
        c.loop_stop()


# --- the PUBLISH decoder, against paho's own ---------------------------------------------


class _Wire:
    """A socket holding ``data``: paho reads it as the network would give it, and what the
    client sends (its PUBACKs) is kept."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos, self.sent = data, 0, b""

    def recv(self, n: int) -> bytes:
        if self.pos >= len(self.data):
            raise BlockingIOError
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def send(self, data: bytes) -> int:
        self.sent += bytes(data)
        return len(data)

    def pending(self) -> int:
        return 0

    def close(self) -> None:
        pass


def _packet(header: int, body: bytes) -> bytes:
    n, length = len(body), b""
    while True:
        n, digit = divmod(n, 128)
        length += bytes([digit | (0x80 if n else 0)])
        if not n:
            return bytes([header]) + length + body


def _publish(
    topic: bytes, payload: bytes, *, qos: int = 1, mid: int = 7, props: bytes | None = b"\0"
) -> bytes:
    """A PUBLISH packet; ``props`` is MQTT 5's property block (None for MQTT 3.1.1)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    return _packet(0x30 | qos << 1, body + (props or b"") + payload)


def _decode(cls: type[paho.Client], v5: bool, stream: bytes, manual: bool) -> list[object]:
    """What ``cls`` makes of ``stream``: each message's fields, then how reading ended, and
    the bytes it sent back."""
    c = cls(
        CallbackAPIVersion.VERSION2,
        client_id="decode",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        manual_ack=manual,
    )
    seen: list[object] = []
    c.on_message = lambda _c, _u, m: seen.append(
        (m._topic, m.payload, m.mid, m.qos, m.dup, m.retain, str(m.properties))
    )
    wire = _Wire(stream)
    c._sock = wire  # type: ignore[assignment]
    c._state = paho._ConnectionState.MQTT_CS_CONNECTED
    end: object = None
    for _ in range(len(stream) + 2):
        try:
            rc = c.loop_read(1)
        except Exception as exc:  # whatever paho does, both must do
            end = type(exc).__name__
            break
        if rc != paho.MQTT_ERR_SUCCESS:
            end = int(rc)
            break
    c._sock = None
    return [*seen, end, wire.sent]


def test_publish_decoded_as_paho_decodes_it() -> None:
    """The fast path (QoS 0 and 1, no properties) and every packet it hands to paho: the same
    messages, the same end, the same PUBACKs, under MQTT 5 and 3.1.1, acked by paho or not."""
    t = b"titik/gw/gw-1/telemetry"
    cases = {
        "v5 qos1": (True, _publish(t, b'{"seq": 1}')),
        "v5 qos0": (True, _publish(t, b"x" * 600, qos=0)),
        "v5 dup retain": (True, bytes([0x3B]) + _publish(t, b"p", qos=1)[1:]),
        "v5 empty payload": (True, _publish(t, b"")),
        "v5 properties": (True, _publish(t, b"p", props=b"\x02\x01\x01")),
        "v5 qos2": (True, _publish(t, b"p", qos=2)),
        "v5 empty topic": (True, _publish(b"", b"p")),
        "v5 not utf-8": (True, _publish(b"titik/\xff", b"p")),
        "v5 cut short": (True, _packet(0x32, b"\x00\x05ti")),
        "v5 no props byte": (True, _packet(0x32, b"\x00\x01t\x00\x07")),
        "v5 one byte": (True, _packet(0x32, b"\x00")),
        "v311 qos1": (False, _publish(t, b"p", props=None)),
        "v311 qos0": (False, _publish(t, b"p", qos=0, props=None)),
        "v311 empty topic": (False, _publish(b"", b"p", props=None)),
        "v311 cut short": (False, _packet(0x32, b"\x00\x09titik")),
    }
    for name, (v5, stream) in cases.items():
        for manual in (True, False):
            want = _decode(paho.Client, v5, stream, manual)
            assert _decode(BufferedClient, v5, stream, manual) == want, (name, manual)
    both = _publish(t, b"a") + _publish(t, b"b", qos=0) + _publish(t, b"c", props=b"\x01\x01")
    assert _decode(BufferedClient, True, both, True) == _decode(paho.Client, True, both, True)


@settings(max_examples=300, deadline=None)
@given(
    v5=st.booleans(),
    header=st.integers(0, 15),
    body=st.one_of(
        st.binary(max_size=40),
        st.builds(
            lambda topic, mid, props, payload: (
                len(topic).to_bytes(2, "big") + topic + mid.to_bytes(2, "big") + props + payload
            ),
            st.binary(max_size=12),
            st.integers(0, 65535),
            st.sampled_from([b"\0", b"\x02\x01\x01", b"\x05\x02\0\0\0\x09", b"\x03", b""]),
            st.binary(max_size=20),
        ),
    ),
    manual=st.booleans(),
)
def test_any_publish_packet_decoded_as_paho_decodes_it(
    v5: bool, header: int, body: bytes, manual: bool
) -> None:
    stream = _packet(0x30 | header, body)
    assert _decode(BufferedClient, v5, stream, manual) == _decode(paho.Client, v5, stream, manual)


def test_each_message_has_properties_of_its_own() -> None:
    """The empty properties are copies: what a callback sets on one message's is not on the
    next one's."""
    c = BufferedClient(
        CallbackAPIVersion.VERSION2, client_id="props", protocol=paho.MQTTv5, manual_ack=True
    )
    got: list[paho.MQTTMessage] = []

    def on_message(_c: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        got.append(m)
        if len(got) == 1:
            m.properties.ResponseTopic = "mine"  # type: ignore[union-attr]

    c.on_message = on_message
    t = b"titik/gw/gw-1/telemetry"
    c._sock = _Wire(_publish(t, b"a") + _publish(t, b"b"))  # type: ignore[assignment]
    c._state = paho._ConnectionState.MQTT_CS_CONNECTED
    while len(got) < 2:
        assert c.loop_read(1) == paho.MQTT_ERR_SUCCESS
    c._sock = None
    assert getattr(got[0].properties, "ResponseTopic", None) == "mine"
    assert not hasattr(got[1].properties, "ResponseTopic")
    assert str(got[1].properties) == str(paho.Properties(paho.PacketTypes.PUBLISH))  # type: ignore[attr-defined]
