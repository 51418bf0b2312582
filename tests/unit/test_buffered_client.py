"""agent/protocol/client.py's BufferedClient (central's consumer) against a real Mosquitto:
every message whole and in order, whatever its size against the read chunk, none left
waiting in memory for more network data, and a reconnect that starts clean. It overrides
three of paho's internals; the last test checks the installed paho still has them as it
assumes."""

from __future__ import annotations

import inspect
import queue
import threading
import time

import paho.mqtt.client as paho
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
    for name in ("_sock_recv", "_sock_close", "loop_read", "_packet_read"):
        assert callable(getattr(paho.Client, name, None)), f"paho.Client.{name} is gone"
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
