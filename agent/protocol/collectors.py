"""The collectors' names: what ``telemetry.collectors`` lists in a gateway's config and in the
remote config, so part of the wire (the remote config's schema, which central checks too,
names them). This is the registry of docs/collectors.md: one line per collector.

The collector is the module ``agent.collectors.<name>``; this module imports none of them.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

#: name (what ``telemetry.collectors`` lists) -> on by default.
REGISTRY: dict[str, bool] = {
    "health": True,
    "network": True,
    "clients": True,
    "radio": False,
}


def _collector_name(value: str) -> str:
    if value not in REGISTRY:
        raise ValueError(f"unknown collector {value!r}; the collectors are: {', '.join(REGISTRY)}")
    return value


#: A name of :data:`REGISTRY` (its one line per collector is the only list).
CollectorName = Annotated[
    str,
    AfterValidator(_collector_name),
    WithJsonSchema({"type": "string", "enum": list(REGISTRY)}),
]
