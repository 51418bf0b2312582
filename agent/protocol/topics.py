"""Every MQTT topic of the project, and the only place one is spelled.

A gateway's topics are ``{prefix}/gw/{device}/{leaf}``, a group's ``{prefix}/group/{group}/
{leaf}``; titik-ctl talks to itself under ``{prefix}/ctl/{user}/{client id}``. Desired
documents are named by their *target* (``gw/<device>``, ``group/<name>``), which is also how
a config report's ``versions`` names them (the gateway's own document is ``gw`` there).
``tests/unit/test_topics_single_source.py`` fails when another module spells a topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Final

from pydantic import AfterValidator

#: Safe inside one MQTT topic level: no wildcards, no separators, no spaces. Device ids,
#: group names and the topic prefix must be this.
TOPIC_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TOPIC_SAFE_RULE = "must be 1-64 letters, digits, '.', '_' or '-' (it goes into MQTT topics)"


def _topic_safe(value: str) -> str:
    # Python's re, not Field(pattern=...): pydantic-core's regex engine costs ~0.5 MB of RAM
    # per process, a lot on a 128 MB router (see docs/benchmarks.md).
    if not TOPIC_SAFE.fullmatch(value):
        raise ValueError(TOPIC_SAFE_RULE)
    return value


#: A config value that goes into one topic level.
TopicName = Annotated[str, AfterValidator(_topic_safe)]

GW: Final = "gw"
GROUP: Final = "group"
CTL: Final = "ctl"

# Leaves: what follows the gateway or group level.
TELEMETRY: Final = "telemetry"
TELEMETRY_BATCH: Final = "telemetry/batch"
STATUS: Final = "status"
CONFIG_DESIRED: Final = "config/desired"
CONFIG_REPORTED: Final = "config/reported"
CMD: Final = "cmd"
CMD_RESULT: Final = "cmd/result"
#: The service-health report (radios, client quality, probes): its own topic, every few
#: minutes, so the telemetry sample keeps its size (docs/architecture.md, "Service health").
SERVICE: Final = "service"

#: What a gateway publishes.
GATEWAY_PUBLISHES: Final = (
    TELEMETRY,
    TELEMETRY_BATCH,
    STATUS,
    CONFIG_REPORTED,
    CMD_RESULT,
    SERVICE,
)
#: What a gateway reads (its own and its groups' documents).
GATEWAY_READS: Final = (CONFIG_DESIRED, CMD)
#: What a group has.
GROUP_LEAVES: Final = (CONFIG_DESIRED, CMD)

#: Central's kinds of message, by (level, leaf): see :func:`parse_topic`.
KINDS: Final = {
    (GW, TELEMETRY): "telemetry",
    (GW, TELEMETRY_BATCH): "batch",
    (GW, STATUS): "status",
    (GW, CONFIG_REPORTED): "reported",
    (GW, CONFIG_DESIRED): "desired",
    (GROUP, CONFIG_DESIRED): "group_desired",
    (GW, SERVICE): "service",
}


def gw_topic(prefix: str, device: str, leaf: str) -> str:
    """``{prefix}/gw/{device}/{leaf}``; ``device`` may be ``+`` (a filter) or ``%u`` (an ACL
    pattern)."""
    return f"{prefix}/{GW}/{device}/{leaf}"


def group_topic(prefix: str, group: str, leaf: str) -> str:
    return f"{prefix}/{GROUP}/{group}/{leaf}"


def gw_filter(prefix: str, leaf: str) -> str:
    """Every gateway's ``leaf``."""
    return gw_topic(prefix, "+", leaf)


def group_filter(prefix: str, leaf: str) -> str:
    return group_topic(prefix, "+", leaf)


def gw_everything(prefix: str, device: str) -> str:
    """All of one gateway's topics (``{prefix}/gw/{device}/#``)."""
    return f"{prefix}/{GW}/{device}/#"


def shared(group: str, topic_filter: str) -> str:
    """An MQTT 5 shared subscription of ``group``; an empty group is a plain subscription."""
    return f"$share/{group}/{topic_filter}" if group else topic_filter


def ctl_topic(prefix: str, user: str, client_id: str) -> str:
    """Where one titik-ctl run talks to itself (snapshot marker, MQTT 5 reply topic)."""
    return f"{prefix}/{CTL}/{user}/{client_id}"


def ctl_filter(prefix: str, user: str) -> str:
    """All of one operator's titik-ctl topics (what the broker kit's ACL grants)."""
    return f"{prefix}/{CTL}/{user}/#"


def device_of(topic: str, prefix: str, leaf: str) -> str | None:
    """The device of ``{prefix}/gw/{device}/{leaf}``, or None if the topic is another."""
    head, tail = f"{prefix}/{GW}/", f"/{leaf}"
    if topic.startswith(head) and topic.endswith(tail):
        device = topic[len(head) : -len(tail)]
        return device if device and "/" not in device else None
    return None


def parse_topic(prefix: str, topic: str) -> tuple[str, str, str] | None:
    """``(level, name, leaf)`` of ``{prefix}/{gw|group}/{name}/{leaf}``, else None. The caller
    checks that ``name`` is topic-safe."""
    parts = topic.split("/", 3)
    if len(parts) < 4 or parts[0] != prefix or parts[1] not in (GW, GROUP):
        return None
    return parts[1], parts[2], parts[3]


def gw_target(device: str) -> str:
    """A gateway's own desired document as a target: ``gw/<device>``."""
    return f"{GW}/{device}"


def group_target(group: str) -> str:
    return f"{GROUP}/{group}"


#: A config report's name for the gateway's own document (its groups' are their targets).
OWN_SOURCE: Final = GW


@dataclass(frozen=True, slots=True)
class Topics:
    """The topics of one gateway; ``prefix`` and ``device`` are already validated topic-safe."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{GW}/{self.device}"

    @property
    def telemetry(self) -> str:
        return gw_topic(self.prefix, self.device, TELEMETRY)

    @property
    def status(self) -> str:
        return gw_topic(self.prefix, self.device, STATUS)

    @property
    def telemetry_batch(self) -> str:
        return gw_topic(self.prefix, self.device, TELEMETRY_BATCH)

    @property
    def service(self) -> str:
        return gw_topic(self.prefix, self.device, SERVICE)

    @property
    def config_desired(self) -> str:
        return gw_topic(self.prefix, self.device, CONFIG_DESIRED)

    @property
    def config_reported(self) -> str:
        return gw_topic(self.prefix, self.device, CONFIG_REPORTED)

    @property
    def cmd(self) -> str:
        return gw_topic(self.prefix, self.device, CMD)

    @property
    def cmd_result(self) -> str:
        return gw_topic(self.prefix, self.device, CMD_RESULT)

    def group_config_desired(self, group: str) -> str:
        return group_topic(self.prefix, group, CONFIG_DESIRED)

    def group_cmd(self, group: str) -> str:
        return group_topic(self.prefix, group, CMD)
