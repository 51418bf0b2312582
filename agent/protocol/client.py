"""The one MQTT client factory of the project: every ``paho.Client`` is built here.

The agent's link, central's consumer, titik-ctl and titik-sim's probes all speak paho 2.x
with ``CallbackAPIVersion.VERSION2``; building the client in one place keeps the protocol
version, the session flag, credentials and TLS the same everywhere. Callers attach their own
callbacks.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.protocol.settings import MqttConnection


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
) -> paho.Client:
    """A paho client, not yet connected. TLS is on when ``ca`` is given (the server's
    certificate is always verified; ``insecure`` skips only the host name check, for tests).
    ``manual_ack``: the caller acks each QoS 1 message itself (central acks after commit).
    ``persistent``: for MQTT 3.1.1, a persistent session (``clean_session`` false); MQTT 5
    sets its session at CONNECT (``clean_start`` and ``SessionExpiryInterval``)."""
    v5 = protocol == "5"
    client = paho.Client(
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
    )
