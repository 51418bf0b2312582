"""A gateway whose broker resumed its session does not subscribe again (against a real
Mosquitto): the broker says so in the CONNACK (Session Present, MQTT 5 3.2.2.1.1) and keeps
the subscriptions. Subscribing anyway cost Mosquitto a walk of each group topic's subscriber
list per gateway, most of its CPU after a city-wide outage (docs/benchmarks.md, "The
gateways' side and the brokers'"). Where the session is gone, or a subscription was refused,
the gateway subscribes.

The evidence is what the broker sends: a retained message comes with every SUBSCRIBE that
matches it, so one arriving again means the gateway subscribed again."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import parse_config
from agent.link import Will
from agent.mqtt import MqttLink
from agent.protocol.client import make_client
from tests.broker import Broker

pytestmark = pytest.mark.broker

TOPICS = ["titik/gw/gw-s/config/desired", "titik/group/city/cmd"]


def publish(broker: Broker, topic: str, payload: bytes, *, retain: bool = False) -> None:
    c = make_client("test-pub")
    c.connect(broker.host, broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def make_link(broker: Broker, got: list[tuple[str, bytes, bool]]) -> MqttLink:
    cfg = parse_config(
        {"mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_s": 0.2}}
    ).mqtt
    assert cfg.session_expiry_s > 0  # the default: a persistent session

    def on_message(m: paho.MQTTMessage) -> None:
        got.append((m.topic, m.payload, m.retain))

    return MqttLink(
        cfg,
        "gw-s",
        before_connect=lambda: Will("titik/gw/gw-s/status", b"{}", qos=1, retain=True),
        on_connected=lambda: None,
        on_ack=lambda mid: None,
        on_message=on_message,
        subscriptions=TOPICS,
    )


def step_until(link: MqttLink, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        link.step(0.05)


def settle(link: MqttLink, seconds: float = 0.7) -> None:
    """Let whatever the broker sends after a CONNACK arrive."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        link.step(0.05)


def cut(link: MqttLink) -> None:
    """Drop the TCP connection as a failing backhaul would (no DISCONNECT)."""
    link.socket().shutdown(socket.SHUT_RDWR)


def retained(got: list[tuple[str, bytes, bool]]) -> int:
    return sum(1 for _t, p, r in got if r and p == b"doc-1")


def test_a_resumed_session_is_not_subscribed_again_and_still_delivers(broker: Broker) -> None:
    publish(broker, TOPICS[0], b"doc-1", retain=True)
    got: list[tuple[str, bytes, bool]] = []
    link = make_link(broker, got)
    step_until(link, lambda: retained(got) == 1 and link._subscribed)
    cut(link)
    step_until(link, lambda: link.connects == 2 and link.connected)
    settle(link)
    assert retained(got) == 1  # not subscribed again: the retained document did not come back
    publish(broker, TOPICS[1], b"cmd-1")  # the session's subscriptions still deliver
    step_until(link, lambda: (TOPICS[1], b"cmd-1", False) in got)

    # The broker restarts without persistence: the session is gone (and the retained
    # document with it), so the link subscribes again, or the command would never arrive.
    broker.restart()
    step_until(link, lambda: link.connects == 3 and link._subscribed)
    publish(broker, TOPICS[1], b"cmd-2")
    step_until(link, lambda: (TOPICS[1], b"cmd-2", False) in got)
    link.close()


def test_a_refused_subscription_is_asked_for_again_on_the_next_connection(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Mosquitto's ACLs grant every subscription (they filter on delivery), so the refusal
    (MQTT 5 reason 0x87, not authorised) is handed to the link as its SUBACK would be."""
    publish(broker, TOPICS[0], b"doc-1", retain=True)
    got: list[tuple[str, bytes, bool]] = []
    link = make_link(broker, got)
    step_until(link, lambda: retained(got) == 1 and link._subscribed)
    suback = [ReasonCode(PacketTypes.SUBACK, identifier=i) for i in (1, 0x87)]
    link._handle_subscribe(link._client, None, link._subscribe_mid or 0, suback, None)
    assert not link._subscribed
    assert "broker refused 1 of 2 subscriptions: Not authorized" in caplog.text
    cut(link)
    step_until(link, lambda: link.connects == 2 and link.connected)
    step_until(link, lambda: retained(got) == 2)  # subscribed again, though the session was kept
    assert link._subscribed
    link.close()
