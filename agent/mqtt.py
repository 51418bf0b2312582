"""The paho-mqtt adapter: connect with a Will, publish with ack tracking, reconnect with jitter.

One :class:`MqttLink` per gateway and no module-level state, so thousands can live in one
process. The loop is driven from outside, through :meth:`MqttLink.step` (one link) or a
selector over many (``socket``/``loop_read``/``loop_write``/``loop_misc``); nothing here starts
a thread.

paho facts this relies on (see docs/architecture.md):
- ``is_published()`` is unreliable for messages queued while offline, so delivery is
  tracked by ``on_publish(mid)`` alone, and a v5 PUBACK with a failure reason is a failure.
- paho would resend QoS 1 messages that were in flight when a connection dropped. The agent's
  spool must be the only queue, so every connection gets a paho client that never had one
  (a new one, or the one whose attempts failed), and whatever was in flight is handed back
  through ``on_disconnected`` to be replayed from the spool.
- paho sets no Session Expiry; the agent uses a clean session and does its own buffering.
- paho's own ``loop()`` opens a socket pair per client for thread wake-ups (two more file
  descriptors, not closed with the connection) and waits in ``select()``, which fails for
  descriptors above 1023. :meth:`MqttLink.step` waits in ``poll()`` on the one socket instead.
"""

from __future__ import annotations

import functools
import logging
import math
import select
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from tenacity import RetryCallState, wait_random_exponential

from agent.config import MqttConfig
from agent.link import LinkEvents, Will
from agent.protocol.client import client_for, shared_properties

__all__ = [
    "AliasProperties",
    "Backoff",
    "MqttLink",
    "Will",
    "alias_properties",
    "make_link",
    "poll_io",
]

log = logging.getLogger("titik.mqtt")


class AliasProperties(Properties):
    """The PUBLISH properties that carry one topic alias, packed once.

    paho packs a message's Properties each time it sends the message, and ``Properties.pack``
    makes some 75 throwaway strings to do it (it strips the spaces from every property name it
    knows, once per name and again per property set). On a gateway that is most of what a
    publish allocates, in two of the small-object allocator's size classes, and it was where
    nearly every page the agent touched after minute 2 was touched (docs/benchmarks.md,
    "Agent"). An alias's properties never change, so they are packed here, once.
    """

    _packed: bytes

    def __init__(self, alias: int) -> None:
        # Not Properties.__init__: its lookup tables are shared (shared_properties). A
        # gateway's connection keeps one of these per topic; with tables of their own they
        # were most of the objects a simulated fleet's garbage collector walked.
        self.__dict__.update(shared_properties(PacketTypes.PUBLISH).__dict__)
        self.TopicAlias = alias
        # Properties.__setattr__ accepts only MQTT property names.
        object.__setattr__(self, "_packed", super().pack())  # type: ignore[no-untyped-call]

    def pack(self) -> bytes:
        return self._packed


@functools.cache
def alias_properties(alias: int) -> AliasProperties:
    """The one :class:`AliasProperties` for ``alias``, shared by every connection (paho only
    reads it): making one checks the property and packs it, some 20 us, which thousands of
    gateways reconnecting after an outage paid two or three times each."""
    return AliasProperties(alias)


class Backoff:
    """Exponential backoff with full jitter (tenacity's ``wait_random_exponential``).

    Full jitter spreads thousands of gateways that lost the broker at the same instant
    over the whole window instead of bunching them at ``min * 2**n``.
    """

    def __init__(self, min_s: float, max_s: float) -> None:
        self._wait = wait_random_exponential(multiplier=min_s, max=max_s)
        self.attempts = 0

    def next_delay(self) -> float:
        self.attempts += 1
        state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
        state.attempt_number = self.attempts
        return float(self._wait(state))

    def reset(self) -> None:
        self.attempts = 0


def poll_io(client: paho.Client, timeout: float) -> MQTTErrorCode:
    """paho's ``loop(timeout)`` without its socket pair and ``select()``: wait in ``poll()``
    for the client's socket, then read, write and do the keepalive."""
    sock = client.socket()
    if sock is None:
        return MQTTErrorCode.MQTT_ERR_NO_CONN
    # Bytes TLS has decrypted already do not make the socket readable: don't wait then.
    pending = sock.pending() if isinstance(sock, ssl.SSLSocket) else 0
    poller = select.poll()
    poller.register(sock, select.POLLIN | (select.POLLOUT if client.want_write() else 0))
    events = 0
    for _fd, ev in poller.poll(0 if pending else math.ceil(timeout * 1000)):
        events |= ev
    if pending or events & (select.POLLIN | select.POLLERR | select.POLLHUP):
        rc = client.loop_read()
        if rc or client.socket() is None:
            return rc
    if events & select.POLLOUT:
        rc = client.loop_write()
        if rc or client.socket() is None:
            return rc
    return client.loop_misc()


class MqttLink:
    """One gateway's connection to the broker.

    Callbacks (all run inside :meth:`step`, on the caller's thread):
      ``before_connect() -> Will``  called before every connection attempt;
      ``on_connected()``            after a successful CONNACK;
      ``on_ack(mid)``               the broker acknowledged a QoS 1 publish;
      ``on_nack(mid, reason)``      the broker refused it (v5 reason code);
      ``on_disconnected()``         the connection is gone, with every unacked publish;
      ``on_message(msg)``           a message arrived on one of ``subscriptions``.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str,
        *,
        before_connect: Callable[[], Will],
        on_connected: Callable[[], None],
        on_ack: Callable[[int], None],
        on_nack: Callable[[int, str], None] | None = None,
        on_disconnected: Callable[[], None] | None = None,
        on_message: Callable[[paho.MQTTMessage], None] | None = None,
        subscriptions: list[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.client_id = client_id
        self._before_connect = before_connect
        self._on_connected = on_connected
        self._on_ack = on_ack
        self._on_nack = on_nack or (lambda mid, reason: None)
        self._on_disconnected = on_disconnected or (lambda: None)
        self._on_message = on_message
        self.subscriptions = subscriptions or []
        self._clock = clock
        self._backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        self._next_attempt = clock()  # first attempt at once
        self._wake = threading.Event()
        self.connected = False
        self._tcp_open = False
        self.connects = 0
        # The broker acknowledged every subscription on a session this link holds: while the
        # broker says that session is present, they are in it (see _handle_connect).
        self._subscribed = False
        self._subscribe_mid: int | None = None
        # MQTT 5 topic aliases of this connection: after the first message a topic costs
        # 3 bytes instead of ~30 on every publish (flaky, metered backhaul).
        # topic -> the PUBLISH Properties carrying its alias, built and packed once, and
        # reused (paho only reads them): no Properties object, nor packing, per message.
        self._alias_props: dict[str, AliasProperties] = {}
        self._alias_max = 0
        self.last_error: str | None = None
        self._client = self._make_client()
        # The next attempt builds a new client: this one opened a connection (whatever it had
        # in flight must not be resent, see above) or was built for another configuration. A
        # client whose attempts all failed is used again: an outage of hours is an attempt a
        # minute, and a city's gateways coming back each built one more paho Client
        # (docs/benchmarks.md, "Runs 8 and 9").
        self._client_stale = False

    # -- construction
    def _make_client(self) -> paho.Client:
        client = client_for(
            self.cfg,
            self.client_id,
            protocol=self.cfg.protocol,
            persistent=self.cfg.session_expiry_s > 0,
        )
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        client.on_subscribe = self._handle_subscribe
        return client

    # -- driving
    def step(self, timeout: float) -> None:
        """Do up to ``timeout`` seconds of network work: connect when due, then read/write."""
        if not self._tcp_open and self._clock() >= self._next_attempt:
            self._attempt()
        if self._tcp_open:
            self._check(self._io(timeout))
        else:
            wait = min(timeout, max(0.0, self._next_attempt - self._clock()))
            if self._wake.wait(wait):
                self._wake.clear()

    def _io(self, timeout: float) -> MQTTErrorCode:
        return poll_io(self._client, timeout)

    def _check(self, rc: MQTTErrorCode) -> None:
        ok = (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN)
        if rc not in ok and self._tcp_open:  # on_disconnect may have handled it already
            self._lost(f"connection lost ({paho.error_string(rc)})")

    # -- driving from a selector: many links in one thread (central/sim/fleet.py), instead of step()
    def due(self) -> float | None:
        """Clock time of the next connection attempt, or None while a connection is open."""
        return None if self._tcp_open else self._next_attempt

    def connect_if_due(self) -> bool:
        """Start a connection attempt if one is due; True when a socket is open."""
        if not self._tcp_open and self._clock() >= self._next_attempt:
            self._attempt()
        return self._tcp_open

    def socket(self) -> Any:
        """The open socket to select on, or None."""
        return self._client.socket() if self._tcp_open else None

    def want_write(self) -> bool:
        return self._tcp_open and self._client.want_write()

    def loop_read(self) -> None:
        if self._tcp_open:
            self._check(self._client.loop_read())

    def loop_write(self) -> None:
        if self._tcp_open:
            self._check(self._client.loop_write())

    def loop_misc(self) -> None:
        """Keepalive: send PINGREQ when due, drop a connection whose PINGRESP never came."""
        if self._tcp_open:
            self._check(self._client.loop_misc())

    def kick(self) -> None:
        """Try to connect now, forgetting the backoff (e.g. the WAN just came up)."""
        self._backoff.reset()
        self._next_attempt = self._clock()
        self._wake.set()

    def _attempt(self) -> None:
        will = self._before_connect()
        if self._client_stale:
            self._client = self._make_client()  # no resend queue carried over (see above)
            self._client_stale = False
        client = self._client
        client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        props = None
        persistent = self.cfg.session_expiry_s > 0
        if self.cfg.protocol == "5":
            # A persistent session: while the gateway is offline the broker queues the QoS 1
            # commands sent to it (each until its own message expiry), and delivers them at
            # the next connection, which resumes the session (clean_start false).
            props = shared_properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.cfg.session_expiry_s
        try:
            client.connect(
                self.cfg.host,
                self.cfg.port,
                keepalive=self.cfg.keepalive_s,
                bind_address=str(self.cfg.source_address or ""),
                clean_start=not persistent
                if self.cfg.protocol == "5"
                else paho.MQTT_CLEAN_START_FIRST_ONLY,
                properties=props,
            )
        except (OSError, ValueError) as exc:  # refused, unreachable, DNS, TLS (SSLError is OSError)
            self._schedule_retry(f"cannot reach broker {self.cfg.host}:{self.cfg.port}: {exc}")
            return
        self._tcp_open = True
        self._client_stale = True

    def _schedule_retry(self, reason: str) -> None:
        delay = self._backoff.next_delay()
        self._next_attempt = self._clock() + delay
        self.last_error = reason
        log.warning("%s; retry %d in %.1fs", reason, self._backoff.attempts, delay)

    def _lost(self, reason: str) -> None:
        was_connected = self.connected
        self.connected = False
        self._tcp_open = False
        if was_connected:
            log.warning("disconnected from broker: %s", reason)
            self._on_disconnected()
        self._schedule_retry(reason)

    # -- paho callbacks
    def _handle_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            # The broker refused us (bad credentials, not authorised...); paho closes the socket.
            self._lost(f"broker refused connection: {reason}")
            return
        self.connected = True
        self.connects += 1
        self._alias_props = {}
        self._alias_max = int(getattr(props, "TopicAliasMaximum", 0) or 0) if props else 0
        self.last_error = None
        self._backoff.reset()
        log.info("connected to %s:%d", self.cfg.host, self.cfg.port)
        if self.subscriptions and not (flags.session_present and self._subscribed):
            # Subscribed unless the broker resumed a session that has them (MQTT 5, 3.2.2.1.1:
            # Session Present means it kept the session state, subscriptions included) and
            # this link saw them granted. When the session expired, or the broker restarted
            # without persistence, it is not present: subscribed again, and the retained
            # desired configs come again (their versions make that harmless). Subscribing on
            # every connection cost the broker a walk of each group topic's subscriber list
            # per gateway: after a city-wide outage, 8 lists of thousands each for every one
            # of the gateways coming back (docs/benchmarks.md, "The gateways' side and the
            # brokers'").
            self._subscribed = False
            _rc, self._subscribe_mid = client.subscribe([(t, 1) for t in self.subscriptions])
        self._on_connected()

    def _handle_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        props: Properties | None,
    ) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(r) for r in reasons if r.is_failure]
        self._subscribed = not refused and len(reasons) == len(self.subscriptions)
        if refused:
            log.warning(
                "broker refused %d of %d subscriptions: %s",
                len(refused),
                len(reasons),
                ", ".join(sorted(set(refused))),
            )

    def _handle_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if self._tcp_open:
            self._lost(f"broker closed the connection ({reason})")

    def _handle_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        props: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._on_nack(mid, str(reason))
        else:
            self._on_ack(mid)

    def _handle_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        if self._on_message is not None:
            try:
                self._on_message(msg)
            except Exception:  # nothing from the network may stop the agent
                log.exception("error handling a message on %s", msg.topic)

    def reconnect(self, cfg: MqttConfig | None = None) -> None:
        """Drop the connection (cleanly, no Will) and connect again, to ``cfg`` if given."""
        if cfg is not None:
            self.cfg = cfg
            self._subscribed = False  # another broker's session may hold other subscriptions
            self._client_stale = True  # TLS, credentials: the client is built from cfg
        self.close()
        self.kick()

    # -- publishing
    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation: bytes | None = None,
    ) -> int | None:
        """Queue a publish; the mid to await in ``on_ack``, or None when not connected."""
        if not self.connected:
            return None
        if correlation is not None:  # an MQTT 5 reply: no alias, the topic is the requester's
            reply = shared_properties(PacketTypes.PUBLISH)
            reply.CorrelationData = correlation
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=reply)
            return self._mid_of(info)
        props = self._alias_props.get(topic)
        if props is not None:
            topic = ""  # the broker maps the alias back to the topic
        elif len(self._alias_props) < self._alias_max:
            # The first message on a topic carries the topic and its new alias.
            props = alias_properties(len(self._alias_props) + 1)
            self._alias_props[topic] = props
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        return self._mid_of(info)

    def _mid_of(self, info: paho.MQTTMessageInfo) -> int | None:
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            return None
        if not self.connected:
            # The write failed inside publish() and paho reported the loss from there: our
            # on_disconnected has run already, handing back what was in flight. This message
            # would be in flight on a dead connection, never acked nor handed back; None makes
            # the caller keep it for the next connection (if it got out, that is a duplicate,
            # which central drops).
            return None
        return info.mid

    def close(self) -> None:
        """Clean DISCONNECT: the broker does not send the Will."""
        self._tcp_open = False
        if self.connected:
            self.connected = False
            self._client.disconnect()
            if self._client.socket() is not None:
                self._io(0.1)  # flush the DISCONNECT packet
            self._on_disconnected()


def make_link(
    cfg: MqttConfig,
    client_id: str,
    events: LinkEvents,
    subscriptions: list[str],
    clock: Callable[[], float] = time.monotonic,
) -> MqttLink:
    """An :class:`MqttLink` that reports to ``events`` (the agent's default link factory)."""
    return MqttLink(
        cfg,
        client_id,
        before_connect=events.before_connect,
        on_connected=events.on_connected,
        on_ack=events.on_ack,
        on_nack=events.on_nack,
        on_disconnected=events.on_disconnected,
        on_message=events.on_message,
        subscriptions=subscriptions,
        clock=clock,
    )
