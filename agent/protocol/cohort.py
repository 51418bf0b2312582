"""Which gateways a rollout wave reaches: one rule, computed alike on the gateway and centrally.

A group's desired document may carry ``"rollout": {"id": R, "percent": P, "others": {...}}``:
the gateways in the wave's cohort take ``config``, every other member takes ``others`` (the
config the group had before the rollout). A gateway's place in rollout R is
``rank(R, device)``, the first 32 bits of SHA-256 of ``"R/device"`` taken modulo 10,000; the
cohort of P percent is every gateway whose rank is below ``P * 100``. So:

- the cohorts of one rollout nest: a gateway in the 5 % wave is in the 25 % wave too, and a
  wave only ever adds gateways;
- they differ from rollout to rollout (the id is in the hash), so the same gateways are not
  always the canaries;
- central computes the same cohort from the ids it knows, to gate a wave on exactly the
  gateways it reached, without a list of ids in the document (9,000 ids would not fit in the
  64 KiB a document may have).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

#: Ranks run from 0 to BUCKETS - 1; a percentage is a whole number of hundredths.
BUCKETS = 10_000
ROLLOUT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def rank(rollout_id: str, device: str) -> int:
    digest = hashlib.sha256(f"{rollout_id}/{device}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % BUCKETS


def threshold(percent: float) -> int:
    """The first rank outside a cohort of ``percent`` (0-100; hundredths of a percent count)."""
    return min(BUCKETS, max(0, math.floor(percent * 100 + 1e-9)))


def in_cohort(rollout_id: str, device: str, percent: float) -> bool:
    return rank(rollout_id, device) < threshold(percent)


def cohort(rollout_id: str, devices: Iterable[str], percent: float) -> list[str]:
    """The sorted ids of ``devices`` in the cohort."""
    limit = threshold(percent)
    return sorted(d for d in devices if rank(rollout_id, d) < limit)


def check_selector(raw: Any) -> str | None:
    """None if ``raw`` is a valid ``rollout`` member, else ``"<key>: <reason>"``."""
    if not isinstance(raw, Mapping):
        return "rollout: must be an object {id, percent, others}"
    extra = set(raw) - {"id", "percent", "others"}
    if extra:
        return f"rollout.{sorted(extra)[0]}: unknown key"
    rid = raw.get("id")
    if not isinstance(rid, str) or not ROLLOUT_ID.match(rid):
        return "rollout.id: must be 1-64 letters, digits, '.', '_' or '-'"
    pct = raw.get("percent")
    if (
        isinstance(pct, bool)
        or not isinstance(pct, int | float)
        or not math.isfinite(pct)
        or not 0 <= pct <= 100
    ):
        return "rollout.percent: must be a number from 0 to 100"
    if not isinstance(raw.get("others"), Mapping):
        return "rollout.others: must be an object (the config of the gateways outside the wave)"
    return None
