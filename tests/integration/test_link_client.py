"""Which paho client a gateway's link connects with (against a real Mosquitto).

A client that opened a connection is never used again: paho would resend what it had in
flight, and the agent's buffer must be the only queue. A client whose attempts all failed
holds nothing and is used again: through an outage of hours, one attempt a minute each built
a new paho Client, and a city's gateways coming back built 50,000 more in the recovery's
busiest minute (docs/benchmarks.md, "Runs 8 and 9")."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import pytest

from agent.config import MqttConfig, parse_config
from agent.link import Will
from agent.mqtt import MqttLink
from tests.broker import Broker

pytestmark = pytest.mark.broker


def mqtt_cfg(broker: Broker, **extra: object) -> MqttConfig:
    return parse_config(
        {"mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_s": 0.1, **extra}}
    ).mqtt


def make_link(cfg: MqttConfig, acked: list[int]) -> MqttLink:
    return MqttLink(
        cfg,
        "gw-c",
        before_connect=lambda: Will("titik/gw/gw-c/status", b"{}", qos=1, retain=True),
        on_connected=lambda: None,
        on_ack=acked.append,
    )


def step_until(link: MqttLink, cond: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        link.step(0.05)


def test_failed_attempts_reuse_the_client_and_a_used_one_is_replaced(
    stopped_broker: Broker,
) -> None:
    broker = stopped_broker
    acked: list[int] = []
    link = make_link(mqtt_cfg(broker), acked)
    first = link._client
    step_until(link, lambda: link._backoff.attempts >= 3)  # refused: the broker is down
    assert link._client is first  # nothing was ever sent with it

    broker.start()
    step_until(link, lambda: link.connected)
    assert link._client is first  # the client of the failed attempts connects
    mid = link.publish("titik/gw/gw-c/telemetry", b"{}")
    step_until(link, lambda: mid in acked)

    # Cut as a failing backhaul would: the next connection is a new client, whatever the
    # old one still held.
    link.socket().shutdown(socket.SHUT_RDWR)
    step_until(link, lambda: link.connects == 2 and link.connected)
    second = link._client
    assert second is not first
    mid = link.publish("titik/gw/gw-c/telemetry", b"{}")
    step_until(link, lambda: mid in acked)

    # The broker goes away: the first attempt after builds one new client (the connected one
    # is spent), and the attempts after it use that one again. (The lost connection counts
    # as the backoff's first attempt, the first reconnection attempt as its second.)
    broker.stop()
    step_until(link, lambda: not link.connected and link._backoff.attempts >= 2)
    third = link._client
    assert third is not second
    step_until(link, lambda: link._backoff.attempts >= 4)
    assert link._client is third
    broker.start()
    step_until(link, lambda: link.connects == 3 and link.connected)
    assert link._client is third
    link.close()


def test_a_new_configuration_builds_a_new_client_even_if_the_old_never_connected(
    stopped_broker: Broker, broker: Broker
) -> None:
    """The client is built from the configuration (TLS, credentials): a link told to use
    another broker while it could not reach the first does not keep the first's client."""
    acked: list[int] = []
    link = make_link(mqtt_cfg(stopped_broker), acked)
    first = link._client
    step_until(link, lambda: link._backoff.attempts >= 2)
    link.reconnect(mqtt_cfg(broker, keepalive_s=30))
    step_until(link, lambda: link.connected)
    assert link._client is not first
    assert link._client._keepalive == 30
    link.close()
