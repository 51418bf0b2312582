"""The port between the agent and its broker connection.

:class:`Link` is all that sampling's delivery, the status messages and the command replies
need of a connection; :class:`agent.mqtt.MqttLink` is the adapter that implements it with
paho. Tests of the bookkeeping above it pass any object of this shape (httpx's transport
rule: the logic never names the library). :class:`LinkEvents` is the other direction: what a
link calls back, all on the caller's thread, inside ``step()``.

This module imports neither paho nor the agent's other modules, so both sides depend on it
and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from agent.config import MqttConfig


@dataclass(frozen=True)
class Will:
    """The message the broker publishes when the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class Link(Protocol):
    """One connection to the broker, as the agent uses it."""

    cfg: MqttConfig
    #: True from CONNACK until the connection is gone.
    connected: bool

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation: bytes | None = None,
    ) -> int | None:
        """Queue a message; the id ``on_ack`` will name, or None when it cannot go now."""

    def step(self, timeout: float) -> None:
        """Up to ``timeout`` seconds of network work; callbacks run in here."""

    def kick(self) -> None:
        """Connect now if disconnected, forgetting the backoff."""

    def reconnect(self, cfg: MqttConfig | None = None) -> None:
        """Drop the connection cleanly (no Will) and connect again, to ``cfg`` if given."""

    def close(self) -> None:
        """Clean DISCONNECT; whatever was unacked comes back through ``on_disconnected``."""


class LinkEvents(Protocol):
    """What a link calls back (all inside :meth:`Link.step`, on the caller's thread)."""

    def before_connect(self) -> Will:
        """Called before every connection attempt: the Will to register."""

    def on_connected(self) -> None:
        """After a successful CONNACK."""

    def on_ack(self, mid: int) -> None:
        """The broker acknowledged a QoS 1 publish."""

    def on_nack(self, mid: int, reason: str) -> None:
        """The broker refused it (an MQTT 5 reason code)."""

    def on_disconnected(self) -> None:
        """The connection is gone, with every unacked publish."""

    def on_message(self, msg: Any) -> None:
        """A message arrived on one of the subscriptions (paho's ``MQTTMessage``)."""
