"""Pure logic of desired configs: parsing documents, overlaying them, diffing, hashing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agent.config import format_validation_error
from agent.protocol import WIRE_INT_MAX
from agent.protocol.cohort import check_selector, in_cohort
from agent.protocol.overlay import overlay as overlay  # noqa: PLC0414
from agent.remote.inbound import BadInput, load_object, name, whole

#: Sections a firmware hook applies; the agent applies the others to itself. (The schema
#: module is loaded only when a document arrives: its models cost RAM on every gateway.)
HOOK_SECTIONS = ("wifi", "hotspot")

#: Largest desired-config document accepted, bytes.
MAX_DOCUMENT_BYTES = 64 * 1024
#: Largest refused document still parsed for its version, to name it in the report.
MAX_PEEK_BYTES = 1 << 20


class Rejected(Exception):
    """A document or config that cannot be applied; the message names the key path."""


def parse_document(payload: bytes) -> dict[str, Any]:
    """``{"version": N, "config": {...}, "sig"?: {...}}`` -> the dict; Rejected says why not.

    Every number in the document must be finite, and every whole number within the wire's
    limit (agent.protocol.WIRE_INT_MAX), wherever it is: the refusal names its key path.
    """
    try:
        doc = load_object(payload, "(document)", MAX_DOCUMENT_BYTES)
    except BadInput as exc:
        raise Rejected(str(exc)) from None
    extra = set(doc) - {"version", "config", "rollout", "sig"}
    if extra:
        raise Rejected(f"{name(sorted(extra)[0])}: unknown key")
    if whole(doc.get("version")) is None:
        raise Rejected(f"version: must be a whole number from 0 to {WIRE_INT_MAX}")
    if not isinstance(doc.get("config"), dict):
        raise Rejected("config: must be an object")
    if "rollout" in doc and (why := check_selector(doc["rollout"])) is not None:
        raise Rejected(why)
    return doc


def resolve(doc: Mapping[str, Any], device: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config this gateway takes from a parsed document, and, for a rollout wave,
    ``{"id", "member"}``: in the wave's cohort it takes ``config``, outside it ``others``
    (agent.protocol.cohort)."""
    sel = doc.get("rollout")
    if sel is None:
        return doc["config"], None
    member = in_cohort(sel["id"], device, sel["percent"])
    return (doc["config"] if member else sel["others"]), {"id": sel["id"], "member": member}


def peek_version(payload: bytes) -> int | None:
    """The version of a document that was refused, if it has a usable one (for its report)."""
    if len(payload) > MAX_PEEK_BYTES:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return whole(doc.get("version")) if isinstance(doc, dict) else None


def validate(effective: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise (defaults filled in); Rejected names the first bad key path."""
    from agent.remote.schema import RemoteConfig

    try:
        model = RemoteConfig.model_validate(effective)
    except ValidationError as exc:
        path, _, reason = format_validation_error(exc).splitlines()[0].partition(": ")
        raise Rejected(f"{name(path)}: {reason}") from None
    return model.model_dump(mode="json", exclude_none=True)


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
