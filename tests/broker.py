"""Test helpers around a real Mosquitto: the broker itself and a recording subscriber."""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from central.sim.localbroker import LocalBroker as Broker
from central.sim.localbroker import free_port, wait_until

__all__ = ["Broker", "Message", "Subscriber", "free_port", "subscriber", "wait_until"]


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """A test client that records every message on ``topics``; waits on events, not sleeps.

    ``persistent=True`` uses a persistent session (clean session off) and reconnects by
    itself, so with a persistent broker it misses nothing across broker restarts.
    """

    def __init__(
        self, broker: Broker, *topics: str, client_id: str = "test-sub", persistent: bool = False
    ) -> None:
        self.messages: queue.Queue[Message] = queue.Queue()
        self.seen: list[Message] = []
        self._subscribed = False
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        self.client.reconnect_delay_set(0.05, 0.5)
        self.client.on_message = lambda c, u, m: self.messages.put(
            Message(m.topic, m.payload, bool(m.retain))
        )
        self.client.on_subscribe = lambda *a: setattr(self, "_subscribed", True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        wait_until(lambda: self._subscribed, 5, "SUBACK")

    def next(
        self, pred: Callable[[Message], bool] = lambda m: True, timeout: float = 10
    ) -> Message:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching message within {timeout}s; saw {len(self.seen)}")
            try:
                msg = self.messages.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(msg)
            if pred(msg):
                return msg

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@contextlib.contextmanager
def subscriber(
    broker: Broker, *topics: str, client_id: str = "test-sub", persistent: bool = False
) -> Iterator[Subscriber]:
    sub = Subscriber(broker, *topics, client_id=client_id, persistent=persistent)
    try:
        yield sub
    finally:
        sub.close()


def ctrl_c_works() -> None:
    """``preexec_fn`` for a child a test interrupts with SIGINT: a test suite started in the
    background by a non-interactive shell ignores SIGINT (POSIX: so do its children), and a
    Python started with SIGINT ignored never raises KeyboardInterrupt, so the child's Ctrl-C
    handling would never run."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
