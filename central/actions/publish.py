"""Central's publishing connection: the console's signed configs and commands go out here.

A connection of its own (client id ``<mqtt.client_id>-console``, a clean session), with the
credentials and TLS of central's ``[mqtt]`` section through the project's one client factory
(agent.protocol.client): publishing never waits behind the consumer's persistent session and
its manual acks, and a stuck publish never holds up ingest. The broker kit grants central's
user write access to exactly ``config/desired`` and ``cmd`` (central/broker/files.py).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.reasoncodes import ReasonCode

from agent.protocol.client import client_for
from central.actions.core import PublishError
from central.config import CentralMqttConfig

log = logging.getLogger("titik.central.console")

CLIENT_SUFFIX = "-console"


class MqttPublisher:
    """QoS 1 publishes that return once the broker acknowledged them."""

    def __init__(self, mqtt: CentralMqttConfig, *, timeout_s: float = 10.0) -> None:
        self.mqtt = mqtt
        self.timeout_s = timeout_s
        self.connected = threading.Event()
        self._error: str | None = None
        client_id = mqtt.client_id[: 64 - len(CLIENT_SUFFIX)] + CLIENT_SUFFIX
        self.client = client_for(mqtt, client_id)
        self.client.reconnect_delay_set(1, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        #: PUBACK reason codes that refused a message, by mid (an ACL says "not authorized").
        self._refused: dict[int, str] = {}

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self._error = str(rc)
            log.error("the broker refused the console's connection: %s", rc)
            return
        self._error = None
        self.connected.set()

    def _on_publish(
        self, client: paho.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any
    ) -> None:
        # paho calls this before it marks the message published: no race with publish().
        if rc.is_failure:
            self._refused[mid] = str(rc)

    def _on_disconnect(self, *args: Any) -> None:
        self.connected.clear()

    def start(self) -> None:
        self.client.connect_async(self.mqtt.host, self.mqtt.port, keepalive=self.mqtt.keepalive_s)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        if not self.connected.wait(self.timeout_s):
            why = f" ({self._error})" if self._error else ""
            raise PublishError(f"not connected to {self.mqtt.host}:{self.mqtt.port}{why}")
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        try:
            info.wait_for_publish(self.timeout_s)
        except (RuntimeError, ValueError) as exc:
            raise PublishError(str(exc)) from None
        if not info.is_published():
            raise PublishError(f"no acknowledgement within {self.timeout_s:g} s")
        refused = self._refused.pop(info.mid, None)
        if refused is not None:
            raise PublishError(f"the broker refused it ({refused}); check central's broker ACL")
