"""The light gateways' MQTT packets and JSON templates (central/sim/light.py), pure parts.
That Mosquitto takes the packets, and central the messages, is tests/integration/
test_sim_light.py's."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.protocol import Status, Telemetry
from central.sim.light import (
    ProtocolError,
    _fill,
    _template,
    connect_packet,
    publish_packet,
    read_properties,
    read_varint,
    split_packets,
    subscribe_packet,
    varint,
)


@given(st.integers(min_value=0, max_value=268_435_455))
def test_varint_round_trips(n: int) -> None:
    data = varint(n)
    assert 1 <= len(data) <= 4
    assert read_varint(data + b"rest", 0) == (n, len(data))
    assert read_varint(data[:-1], 0) is None  # cut short: wait for more


def test_a_varint_longer_than_four_bytes_is_refused() -> None:
    with pytest.raises(ProtocolError, match="longer than 4 bytes"):
        read_varint(b"\xff\xff\xff\xff\x01", 0)


@given(
    st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=300)), max_size=8),
    st.lists(st.integers(1, 64), max_size=40),
)
def test_split_packets_takes_whole_packets_however_the_bytes_arrive(
    packets: list[tuple[int, bytes]], cuts: list[int]
) -> None:
    stream = b"".join(bytes((first,)) + varint(len(body)) + body for first, body in packets)
    buf = bytearray()
    got: list[tuple[int, bytes]] = []
    at = 0
    for cut in [*cuts, len(stream)]:
        buf += stream[at : at + cut]
        at += cut
        got += split_packets(buf)
        if at >= len(stream):
            break
    got += split_packets(buf)
    assert got == packets
    assert not buf


def test_read_properties_reads_integers_skips_the_rest_and_refuses_what_it_cannot_read() -> None:
    props = (
        b"\x22\x00\x0a"  # topic alias maximum 10
        + b"\x21\x03\xe8"  # receive maximum 1000
        + b"\x12\x00\x03abc"  # assigned client identifier (skipped)
        + b"\x26\x00\x01k\x00\x01v"  # a user property (skipped)
        + b"\x27\x00\x01\x00\x00"  # maximum packet size
    )
    body = b"\x00\x00" + varint(len(props)) + props + b"after"
    got, end = read_properties(body, 2)
    assert got == {0x22: 10, 0x21: 1000, 0x27: 65536}
    assert body[end:] == b"after"
    with pytest.raises(ProtocolError, match="unknown property 0x7f"):
        read_properties(b"\x02\x7f\x00", 0)
    with pytest.raises(ProtocolError, match="longer than their packet"):
        read_properties(b"\x09\x22\x00", 0)
    with pytest.raises(ProtocolError, match="overran"):
        read_properties(b"\x02\x27\x00\x00\x00\x01", 0)


def test_connect_carries_a_retained_qos1_will_and_resumes_the_session() -> None:
    packet = connect_packet("gw-1", 60, 604800, "titik/gw/gw-1/status", b'{"online":false}')
    assert packet[0] == 0x10
    length, at = read_varint(packet, 1) or (0, 0)
    body = packet[at:]
    assert len(body) == length
    assert body[:7] == b"\x00\x04MQTT\x05"
    flags = body[7]
    assert flags & 0x04 and flags & 0x08 and flags & 0x20  # Will, QoS 1, retained
    assert not flags & 0x02  # clean start off: the persistent session is resumed
    assert struct.unpack(">H", body[8:10]) == (60,)
    assert body[10:16] == b"\x05\x11" + struct.pack(">I", 604800)  # session expiry
    clean = connect_packet("gw-1", 60, 0, "t", b"x")
    assert clean[clean.index(b"MQTT") + 5] & 0x02  # no session kept: clean start


def test_publish_names_its_topic_or_its_alias() -> None:
    first = publish_packet(b"titik/gw/a/telemetry", 7, b"{}", alias=1)
    assert first[0] == 0x32
    assert b"titik/gw/a/telemetry" in first and first.endswith(b"\x00\x07\x03\x23\x00\x01{}")
    later = publish_packet(b"", 8, b"{}", alias=1, retain=True)
    assert later[0] == 0x33 and later[2:4] == b"\x00\x00"  # retained, empty topic
    sub = subscribe_packet(3, ["a/b", "c"])
    assert sub[0] == 0x82 and sub.endswith(b"\x00\x03a/b\x01\x00\x01c\x01")


def test_templates_fill_to_the_wire_models() -> None:
    parts = _template(
        {"online": True, "v": 1, "site": 'Taman "1"'}, {"boot": 876543219876, "ts": 0.5}
    )
    status = Status.model_validate_json(_fill(parts, 3, 1765000000.25))
    assert status.boot == 3 and status.ts == 1765000000.25 and status.site == 'Taman "1"'
    sample = {
        "v": 1,
        "device": "gw-1",
        "sid": "s",
        "agent": {"version": "1"},
    }
    t_parts = _template(sample, {"seq": 987654321987, "boot": 876543219876, "ts": 0.5})
    raw = _fill(t_parts, 12, 4, 1765000000.125)
    assert json.loads(raw)["seq"] == 12
    t = Telemetry.model_validate_json(raw)
    assert (t.seq, t.boot, t.ts, t.device) == (12, 4, 1765000000.125, "gw-1")
