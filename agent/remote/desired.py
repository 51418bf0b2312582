"""Pure logic of desired configs on the gateway: the cohort it takes, overlaying, diffing,
hashing (a document's checks are :mod:`agent.protocol.desired`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from agent.protocol.cohort import in_cohort

# The document's checks are the protocol's (central makes them too); re-exported for the agent.
from agent.protocol.desired import MAX_DOCUMENT_BYTES as MAX_DOCUMENT_BYTES  # noqa: PLC0414
from agent.protocol.desired import MAX_PEEK_BYTES as MAX_PEEK_BYTES  # noqa: PLC0414
from agent.protocol.desired import Rejected as Rejected  # noqa: PLC0414
from agent.protocol.desired import parse_document as parse_document  # noqa: PLC0414
from agent.protocol.desired import peek_version as peek_version  # noqa: PLC0414
from agent.protocol.desired import validate as validate  # noqa: PLC0414
from agent.protocol.overlay import overlay as overlay  # noqa: PLC0414

#: Sections a firmware hook applies; the agent applies the others to itself. (The schema
#: module is loaded only when a document arrives: its models cost RAM on every gateway.)
HOOK_SECTIONS = ("wifi", "hotspot")


def resolve(doc: Mapping[str, Any], device: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config this gateway takes from a parsed document, and, for a rollout wave,
    ``{"id", "member"}``: in the wave's cohort it takes ``config``, outside it ``others``
    (agent.protocol.cohort)."""
    sel = doc.get("rollout")
    if sel is None:
        return doc["config"], None
    member = in_cohort(sel["id"], device, sel["percent"])
    return (doc["config"] if member else sel["others"]), {"id": sel["id"], "member": member}


def changed_sections(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def config_hash(cfg: Mapping[str, Any]) -> str:
    body = json.dumps(cfg, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def redact(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to show: Wi-Fi passphrases replaced by ``**********``."""
    out = json.loads(json.dumps(cfg))
    for ssid in (out.get("wifi") or {}).get("ssids", {}).values():
        if ssid.get("key"):
            ssid["key"] = "**********"
    return dict(out)
