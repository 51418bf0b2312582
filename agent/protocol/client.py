"""The one MQTT client factory of the project: every ``paho.Client`` is built here.

The agent's link, central's consumer, titik-ctl and titik-sim's probes all speak paho 2.x
with ``CallbackAPIVersion.VERSION2``; building the client in one place keeps the protocol
version, the session flag, credentials and TLS the same everywhere. Callers attach their own
callbacks.
"""

from __future__ import annotations

import functools
import ssl
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.protocol.settings import MqttConnection

#: Bytes a :class:`BufferedClient` asks the socket for at once.
RECV_CHUNK = 65536
#: A QoS 1 PUBACK as paho writes it (``_send_command_with_mid``): type, length 2, packet id.
#: MQTT 5 leaves the reason code (success) and properties out at that length (3.4.2.1).
_PUBACK = struct.Struct("!BBH")


@functools.cache
def _properties_tables() -> dict[str, object]:
    """An empty ``Properties``' attributes (its packet type, and the tables of names, ids and
    types it looks every property up in), made once."""
    return dict(Properties(PacketTypes.PUBLISH).__dict__)  # type: ignore[no-untyped-call]


def shared_properties(packet_type: int) -> Properties:
    """An empty MQTT 5 ``Properties`` for ``packet_type`` that shares its lookup tables with
    every other one made here. paho's own builds them afresh each time: a list, two 27-entry
    dicts and 54 tuples and lists, about 7 us and 57 objects for the cyclic garbage collector
    to track. paho only reads the tables, and setting a property (``props.TopicAlias = 3``)
    still checks its name, packet type and range against them; the values set are the
    object's own."""
    props: Properties = Properties.__new__(Properties)
    props.__dict__.update(_properties_tables())
    props.packetType = packet_type
    return props


def _no_publish_properties() -> Properties:
    """An MQTT 5 PUBLISH's properties when it has none (paho builds a Properties per message,
    a third of its receive path)."""
    return shared_properties(PacketTypes.PUBLISH)


class BufferedClient(paho.Client):
    """paho's client reading its socket :data:`RECV_CHUNK` bytes at a time, for a consumer
    of thousands of messages a second (central).

    paho 2.x reads each packet straight from the socket: one ``recv`` for its first byte,
    one per byte of its length, one for the rest, and a ``select`` before each packet
    (``loop_read`` reads one packet when nothing of its own is in flight): four or five
    system calls and their Python frames per message. This client reads what the kernel
    holds in one ``recv`` and hands paho its bytes from memory, and ``loop_read`` goes on
    while any are left, so a burst of a hundred messages costs one ``select`` and one
    ``recv``. paho's state machine is untouched; the buffer is dropped with the socket (a
    reconnect starts clean).

    A QoS 0 or 1 PUBLISH without properties (every message central takes) is decoded by
    :meth:`_handle_publish` without paho's per-message ``Properties`` build; anything else
    (QoS 2, properties, a malformed packet) goes to paho's own.

    It overrides paho's ``_sock_recv``, ``_sock_close``, ``loop_read`` and
    ``_handle_publish`` (tests/unit/test_buffered_client.py checks them against the installed
    paho, and the decoder against paho's own).

    :meth:`ack_many` acks a committed batch at once: paho's ``ack`` queues each PUBACK with
    its own wake-up of the network thread and its own ``send``."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._rbuf = b""
        self._rpos = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rpos >= len(self._rbuf):
            data = super()._sock_recv(RECV_CHUNK)  # BlockingIOError, OSError: as paho's
            if len(data) <= bufsize:
                self._rbuf, self._rpos = b"", 0
                return data
            self._rbuf, self._rpos = data, 0
        end = self._rpos + bufsize
        out = self._rbuf[self._rpos : end]
        self._rpos = min(end, len(self._rbuf))
        return out

    def buffered(self) -> int:
        """Bytes read from the socket that paho has not parsed yet."""
        return len(self._rbuf) - self._rpos

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        # select() cannot see bytes already in memory: parse them all before waiting again.
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock and self.buffered():
            rc = super().loop_read(1)
        return rc

    def _handle_publish(self) -> MQTTErrorCode:
        """paho's ``_handle_publish`` for QoS 0 and 1 with no properties: the same message
        (topic bytes, mid, flags, an empty ``Properties`` under MQTT 5, payload, timestamp),
        the same log line, the same callbacks and ack."""
        header: int = self._in_packet["command"]
        packet = self._in_packet["packet"]  # a bytearray; paho's message holds bytes
        qos = (header & 0x06) >> 1
        v5 = self._protocol == MQTTProtocolVersion.MQTTv5
        at = 2 + ((packet[0] << 8) | packet[1]) if len(packet) >= 2 else 0
        props_at = at + 2 if qos else at
        body = props_at + 1 if v5 else props_at
        if (
            qos > 1  # QoS 2, or 3: paho's protocol error
            or at == 0
            or len(packet) < body
            or (v5 and packet[props_at] != 0)
            or (not v5 and at == 2)  # an empty topic: paho's protocol error
        ):
            return super()._handle_publish()
        message = paho.MQTTMessage(
            mid=(packet[at] << 8) | packet[at + 1] if qos else 0, topic=bytes(packet[2:at])
        )
        message.dup = (header & 0x08) != 0
        message.qos = qos
        message.retain = (header & 0x01) != 0
        if v5:
            message.properties = _no_publish_properties()
        message.payload = bytes(packet[body:])
        if self._logger is not None or self._on_log is not None:
            topic = message._topic.decode("utf-8", "backslashreplace")
            if v5:
                self._easy_log(
                    paho.MQTT_LOG_DEBUG,
                    "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', properties=%s, ...  (%d bytes)",
                    message.dup, message.qos, message.retain, message.mid,
                    topic, message.properties, len(message.payload),
                )  # fmt: skip
            else:
                self._easy_log(
                    paho.MQTT_LOG_DEBUG,
                    "Received PUBLISH (d%d, q%d, r%d, m%d), '%s', ...  (%d bytes)",
                    message.dup, message.qos, message.retain, message.mid,
                    topic, len(message.payload),
                )  # fmt: skip
        message.timestamp = paho.time_func()
        self._handle_on_message(message)
        if qos == 0 or self._manual_ack:
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        return self._send_puback(message.mid)

    def ack_many(self, mids: Iterable[int]) -> None:
        """Ack these QoS 1 messages (``manual_ack``): their PUBACKs, back to back in the
        stream as MQTT allows, queued as one write with one wake-up, through paho's own
        ``_packet_queue`` (thread-safe as ``ack`` is)."""
        blob = b"".join([_PUBACK.pack(paho.PUBACK, 2, mid) for mid in mids])
        if blob and self._manual_ack:
            self._packet_queue(paho.PUBACK, blob, 0, 0)

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()


def make_client(
    client_id: str,
    *,
    protocol: Literal["5", "3.1.1"] = "5",
    username: str | None = None,
    password: str | None = None,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
    insecure: bool = False,
    manual_ack: bool = False,
    persistent: bool = False,
    buffered: bool = False,
) -> paho.Client:
    """A paho client, not yet connected. TLS is on when ``ca`` is given (the server's
    certificate is always verified; ``insecure`` skips only the host name check, for tests).
    ``manual_ack``: the caller acks each QoS 1 message itself (central acks after commit).
    ``persistent``: for MQTT 3.1.1, a persistent session (``clean_session`` false); MQTT 5
    sets its session at CONNECT (``clean_start`` and ``SessionExpiryInterval``).
    ``buffered``: a :class:`BufferedClient` (central's consumer: many messages a second)."""
    v5 = protocol == "5"
    client = (BufferedClient if buffered else paho.Client)(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
        clean_session=None if v5 else not persistent,
        manual_ack=manual_ack,
    )
    if username:
        client.username_pw_set(username, password)
    if ca is not None:
        client.tls_set(
            ca_certs=str(ca),
            certfile=str(cert) if cert else None,
            keyfile=str(key) if key else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
        client.tls_insecure_set(insecure)
    return client


def client_for(
    section: MqttConnection,
    client_id: str,
    *,
    protocol: Literal["5", "3.1.1"] = "5",
    manual_ack: bool = False,
    persistent: bool = False,
    buffered: bool = False,
) -> paho.Client:
    """:func:`make_client` with the credentials and TLS of a config's ``[mqtt]`` section."""
    return make_client(
        client_id,
        protocol=protocol,
        username=section.username,
        password=section.password.get_secret_value() if section.password else None,
        ca=section.tls.ca,
        cert=section.tls.cert,
        key=section.tls.key,
        insecure=section.tls.insecure,
        manual_ack=manual_ack,
        persistent=persistent,
        buffered=buffered,
    )
