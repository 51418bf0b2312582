"""The wire and what both sides share, in one package: the only part of the agent central
may import.

- :mod:`~agent.protocol.topics`: every topic, and the names that go into them
- :mod:`~agent.protocol.wire`: the payload models (docs/protocol.md is generated from them)
- :mod:`~agent.protocol.service`: the service-health report's models, imported on first use
- :mod:`~agent.protocol.score`: the AP health score from a service report (pure)
- :mod:`~agent.protocol.signing`: Ed25519 signatures on configs and commands
- :mod:`~agent.protocol.overlay`: how desired documents combine
- :mod:`~agent.protocol.settings`: the ``[mqtt]`` config section both sides share
- :mod:`~agent.protocol.client`: the one MQTT client factory
- :mod:`~agent.protocol.atomicfile`: the one atomic-write helper
- :mod:`~agent.protocol.collectors`, :mod:`~agent.protocol.desired`,
  :mod:`~agent.protocol.remote_schema`, :mod:`~agent.protocol.inbound`,
  :mod:`~agent.protocol.commands`, :mod:`~agent.protocol.cohort`: what a gateway accepts
  (collector names, desired documents and their config, inbound JSON, commands, rollout
  waves), checked by central the same way before anything is signed or sent

Nothing here imports the rest of the agent (``.importlinter`` enforces it).
"""

from agent.protocol.topics import Topics as Topics

# Every wire model, as when the protocol was one module: ``from agent.protocol import X`` keeps
# working for whatever wire.py defines (a new model needs no second line here).
from agent.protocol.wire import *  # noqa: F403

#: Names served from agent.protocol.service, which is imported only when one is first asked for
#: (a gateway without the service report never pays its ~330 KiB).
_SERVICE_NAMES = frozenset(
    {
        "RSSI_EDGES",
        "CitizenPath",
        "DhcpEvents",
        "NeighbourId",
        "Probes",
        "RadioReport",
        "ServiceReport",
        "SsidQuality",
        "encode_report",
    }
)


def __getattr__(name: str) -> object:
    if name in _SERVICE_NAMES:
        from agent.protocol import service

        return getattr(service, name)
    raise AttributeError(f"module 'agent.protocol' has no attribute {name!r}")
