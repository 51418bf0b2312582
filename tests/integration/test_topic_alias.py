"""MQTT 5 topic aliases against a real Mosquitto: after the first message on a topic the agent
sends an empty topic and the alias (``MqttLink.publish``), and each message still arrives on
its full topic (Mosquitto would drop the connection on an alias it does not know)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.mqtt import AliasProperties
from agent.protocol import Telemetry
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
