"""The wire and what both sides share, in one package: the only part of the agent central
may import.

- :mod:`~agent.protocol.topics`: every topic, and the names that go into them
- :mod:`~agent.protocol.wire`: the payload models (docs/protocol.md is generated from them)
- :mod:`~agent.protocol.signing`: Ed25519 signatures on configs and commands
- :mod:`~agent.protocol.overlay`: how desired documents combine
- :mod:`~agent.protocol.settings`: the ``[mqtt]`` config section both sides share
- :mod:`~agent.protocol.client`: the one MQTT client factory
- :mod:`~agent.protocol.atomicfile`: the one atomic-write helper

Nothing here imports the rest of the agent (``.importlinter`` enforces it).
"""

from agent.protocol.topics import Topics
from agent.protocol.wire import (
    SCHEMA_VERSION,
    WIRE_INT_MAX,
    WIRE_TS_MAX,
    AgentInfo,
    Clients,
    ConfigDesired,
    ConfigReported,
    Count,
    Health,
    Iface,
    Net,
    Number,
    Percent,
    Status,
    Telemetry,
    TelemetryBatch,
    Timestamp,
    Wire,
    batch_payload,
    encode,
)

__all__ = [
    "SCHEMA_VERSION",
    "WIRE_INT_MAX",
    "WIRE_TS_MAX",
    "AgentInfo",
    "Clients",
    "ConfigDesired",
    "ConfigReported",
    "Count",
    "Health",
    "Iface",
    "Net",
    "Number",
    "Percent",
    "Status",
    "Telemetry",
    "TelemetryBatch",
    "Timestamp",
    "Topics",
    "Wire",
    "batch_payload",
    "encode",
]
