"""Untrusted JSON from the broker (desired configs, commands), parsed so nothing in it can
stop the agent, and so every refusal names the key path and the reason.

Python's ``json`` accepts more than the wire allows, and some of it is dangerous:

- ``NaN``, ``Infinity`` and ``1e400`` (which becomes infinity): a NaN ``expires_at``
  passed both expiry checks and was then forgotten, so the same command ran again;
- whole numbers of any size: ``1180591620717411303424`` as a config version was accepted,
  reported, and stopped central's store (it holds 64-bit integers);
- nesting as deep as the payload allows: ``[[[[...`` raises RecursionError, which is not a
  ValueError;
- lone UTF-16 surrogates (``"\\ud800"``), which cannot be encoded back to UTF-8, as the
  signature check and the config hash must.

:func:`load` refuses all of these with :class:`BadInput`.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from agent.protocol import WIRE_INT_MAX

#: Deepest nesting accepted. A remote config is five levels deep at most
#: (wifi.ssids.<name>.radios[]), a command's args two.
MAX_DEPTH = 16
#: Longest key path or key quoted back in an error.
_MAX_NAME = 64
#: Key paths quoted back as they are; anything else is JSON-quoted.
_PLAIN = re.compile(r"[A-Za-z0-9_.\-\[\]()]+")


class BadInput(ValueError):
    """Input that cannot be accepted; ``str()`` is ``"<key path>: <reason>"``."""


def load(payload: bytes, what: str = "(payload)") -> Any:
    """Parse ``payload``; BadInput names the first problem (``what`` stands for the whole)."""
    try:
        value = json.loads(payload)
    except RecursionError:
        raise BadInput(f"{what}: nested more than {MAX_DEPTH} levels deep") from None
    except UnicodeDecodeError:
        raise BadInput(f"{what}: not JSON: not valid UTF-8") from None
    except ValueError as exc:
        raise BadInput(f"{what}: not JSON: {exc}") from None
    check(value, what)
    return value


def load_object(payload: bytes, what: str, max_bytes: int) -> dict[str, Any]:
    """A JSON object of at most ``max_bytes`` from the network; BadInput says what is wrong."""
    if len(payload) > max_bytes:
        raise BadInput(f"{what}: {len(payload)} bytes, more than {max_bytes}")
    value = load(payload, what)
    if not isinstance(value, dict):
        raise BadInput(f"{what}: must be a JSON object")
    return value


def own_object(raw: bytes) -> dict[str, Any]:
    """A JSON object from one of the agent's own files (the counters, remote.json): ValueError
    or TypeError if it is not one, for the caller to treat the file as damaged."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict):
        raise TypeError("not a JSON object")
    return data


def check(value: Any, what: str = "(payload)") -> None:
    """Walk a parsed document (iteratively) and raise BadInput at the first value the wire
    does not allow: a non-finite number, a whole number beyond +-WIRE_INT_MAX, a string
    that is not valid Unicode, or nesting deeper than MAX_DEPTH."""
    stack: list[tuple[str, Any, int]] = [("", value, 0)]
    while stack:
        path, v, depth = stack.pop()
        if isinstance(v, dict):
            if depth >= MAX_DEPTH:
                raise BadInput(f"{name(path or what)}: nested more than {MAX_DEPTH} levels deep")
            for key, sub in v.items():
                part = key or '""'
                sub_path = f"{path}.{part}" if path else part
                if not _encodable(key):
                    raise BadInput(f"{name(path or what)}: a key is not valid Unicode")
                stack.append((sub_path, sub, depth + 1))
        elif isinstance(v, list):
            if depth >= MAX_DEPTH:
                raise BadInput(f"{name(path or what)}: nested more than {MAX_DEPTH} levels deep")
            stack.extend((f"{path}[{i}]", sub, depth + 1) for i, sub in enumerate(v))
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise BadInput(f"{name(path or what)}: must be a finite number, not {v}")
        elif isinstance(v, int) and not isinstance(v, bool):
            if not -WIRE_INT_MAX <= v <= WIRE_INT_MAX:
                raise BadInput(
                    f"{name(path or what)}: a whole number beyond the wire's limit "
                    f"of +-{WIRE_INT_MAX} (2^53-1)"
                )
        elif isinstance(v, str) and not _encodable(v):
            raise BadInput(f"{name(path or what)}: not valid Unicode (a lone surrogate)")


def name(path: str) -> str:
    """A key or key path fit to quote back: as is when plain (``wifi.ssids.public``), else
    JSON-quoted and escaped (``""``, ``"a b"``); cut at 64 characters, with ``...``."""
    cut = len(path) > _MAX_NAME
    head = path[:_MAX_NAME]
    if _PLAIN.fullmatch(head):
        return head + "..." if cut else head
    quoted = json.dumps(head)  # ASCII: control characters and lone surrogates escaped
    return quoted[:-1] + '..."' if cut else quoted


def whole(value: Any, *, lo: int = 0) -> int | None:
    """``value`` if it is a whole number from ``lo`` to WIRE_INT_MAX (not a bool), else None."""
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= WIRE_INT_MAX:
        return value
    return None


def _encodable(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True
