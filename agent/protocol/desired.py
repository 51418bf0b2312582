"""A desired-config document as a gateway checks it: its shape, its numbers, its selector and,
overlaid with the others, its config against the schema. Central checks the web console's
documents with the same functions before anything is signed or sent (issue 18), so what
central accepts is what a gateway accepts.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from agent.protocol.cohort import check_selector
from agent.protocol.inbound import BadInput, load_object, name, whole
from agent.protocol.settings import format_validation_error
from agent.protocol.wire import WIRE_INT_MAX

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
    from agent.protocol.remote_schema import RemoteConfig

    try:
        model = RemoteConfig.model_validate(effective)
    except ValidationError as exc:
        path, _, reason = format_validation_error(exc).splitlines()[0].partition(": ")
        raise Rejected(f"{name(path)}: {reason}") from None
    return model.model_dump(mode="json", exclude_none=True)
