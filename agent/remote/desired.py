"""Pure logic of desired configs: parsing documents, overlaying them, diffing, hashing."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from agent.config import deep_merge, format_validation_error

#: Sections a firmware hook applies; the agent applies the others to itself. (The schema
#: module is loaded only when a document arrives: its models cost RAM on every gateway.)
HOOK_SECTIONS = ("wifi", "hotspot")

#: Largest desired-config document accepted, bytes.
MAX_DOCUMENT_BYTES = 64 * 1024


class Rejected(Exception):
    """A document or config that cannot be applied; the message names the key path."""


def parse_document(payload: bytes) -> dict[str, Any]:
    """``{"version": N, "config": {...}, "sig"?: {...}}`` -> the dict; Rejected says why not."""
    if len(payload) > MAX_DOCUMENT_BYTES:
        raise Rejected(f"(document): {len(payload)} bytes, more than {MAX_DOCUMENT_BYTES}")
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Rejected(f"(document): not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise Rejected("(document): must be a JSON object")
    extra = set(doc) - {"version", "config", "sig"}
    if extra:
        raise Rejected(f"{sorted(extra)[0]}: unknown key")
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise Rejected("version: must be a whole number >= 0")
    if not isinstance(doc.get("config"), dict):
        raise Rejected("config: must be an object")
    return doc


def overlay(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Later configs win; objects merge key by key, anything else is replaced whole."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out = deep_merge(out, cfg)
    return out


def validate(effective: Mapping[str, Any]) -> dict[str, Any]:
    """Validate and normalise (defaults filled in); Rejected names the first bad key path."""
    from agent.remote.schema import RemoteConfig

    try:
        model = RemoteConfig.model_validate(effective)
    except ValidationError as exc:
        raise Rejected(format_validation_error(exc).splitlines()[0]) from None
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
