"""MQTT 5 topic aliases against a real Mosquitto: after the first message on a topic the agent
sends an empty topic and the alias (``MqttLink.publish``), and each message still arrives on
its full topic (Mosquitto would drop the connection on an alias it does not know)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import MQTTException, Properties

from agent.mqtt import AliasProperties, alias_properties
from agent.protocol import Telemetry
from agent.protocol.client import shared_properties
from tests.broker import Broker, subscriber
from tests.integration.test_link_loss import make_agent, run_until

pytestmark = pytest.mark.broker


def test_alias_properties_pack_as_paho_does_but_once() -> None:
    plain = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    plain.TopicAlias = 3
    props = AliasProperties(3)
    assert props.pack() == plain.pack() == b"\x03\x23\x00\x03"  # length, id 0x23, 16-bit alias
    assert props.pack() is props.pack()  # packed once, not per publish
    assert props.TopicAlias == 3


def test_shared_properties_pack_check_and_hold_values_as_paho_does() -> None:
    """The agent's CONNECT, reply and alias properties share paho's lookup tables instead of
    building them per object; each still packs as paho's own, refuses what paho refuses, and
    keeps its values to itself."""
    connect = shared_properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 86400
    plain = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    plain.SessionExpiryInterval = 86400
    assert connect.pack() == plain.pack()  # type: ignore[no-untyped-call]
    reply = shared_properties(PacketTypes.PUBLISH)
    reply.CorrelationData = b"op-7"
    other = shared_properties(PacketTypes.PUBLISH)
    assert not hasattr(other, "CorrelationData")  # values are each object's own
    assert other.pack() == b"\x00"  # type: ignore[no-untyped-call]
    assert other.names is reply.names and other.properties is connect.properties  # shared
    with pytest.raises(MQTTException, match="does not apply"):
        other.SessionExpiryInterval = 5  # a CONNECT property, as paho refuses it
    with pytest.raises(MQTTException, match="range"):
        other.TopicAlias = 0
    a, b = AliasProperties(1), AliasProperties(2)
    assert (a.TopicAlias, b.TopicAlias) == (1, 2)
    assert a.names is b.names
    assert alias_properties(2) is alias_properties(2)  # one per alias, for every connection
    assert alias_properties(2).pack() == b.pack()


def test_every_aliased_message_arrives_on_its_topic(broker: Broker, tmp_path: Path) -> None:
    agent = make_agent(broker, tmp_path)
    with subscriber(broker, "titik/gw/gw-loss/telemetry") as sub:
        run_until(agent, lambda: agent.link.connected and agent.spool.buffered == 0)
        seqs = [agent.collect_now() for _ in range(3)]
        run_until(agent, lambda: agent.spool.buffered == 0)
        got: list[int] = []
        deadline = time.monotonic() + 10
        while len(got) < 3 and time.monotonic() < deadline:
            msg = sub.next(timeout=5)
            assert msg.topic == "titik/gw/gw-loss/telemetry"
            got.append(Telemetry.model_validate_json(msg.payload).seq)
    aliases = agent.link._alias_props
    agent.shutdown()
    assert got == seqs
    assert isinstance(aliases["titik/gw/gw-loss/telemetry"], AliasProperties)
