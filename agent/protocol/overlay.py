"""How desired documents combine: the gateway's groups in order, then its own document.

The gateway applies ``overlay([group docs..., own doc])`` (agent/remote/controller.py) and
titik-ctl computes the same to know what a canary will run (central/ctl/rollout.py), so the
rule lives here, once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins; objects merge key by key, anything else (lists too) is replaced whole."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def overlay(configs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Later configs win; objects merge key by key, anything else is replaced whole."""
    out: dict[str, Any] = {}
    for cfg in configs:
        out = deep_merge(out, cfg)
    return out
