"""Pure logic of config rollouts: canary batches, failure thresholds, outcomes, versions.

No I/O here: ``central/ctl/commands.py`` feeds it retained messages and reports and acts on the answers.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.protocol.overlay import overlay


class Outcome(enum.StrEnum):
    """What became of one desired document on one gateway."""

    APPLIED = "applied"
    REJECTED = "rejected"
    ROLLED_BACK = "rolled_back"
    NO_REPORT = "no report"  # nothing heard before the timeout

    @property
    def failed(self) -> bool:
        return self is not Outcome.APPLIED


@dataclass(frozen=True, slots=True)
class Amount:
    """A count (``"3"``) or a percentage (``"25%"``) of some total."""

    value: float
    percent: bool

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}"


def parse_amount(text: str, what: str, *, minimum: int = 0) -> Amount:
    """``"3"`` or ``"25%"``; ValueError says what is wrong (the CLI prints it as a usage error)."""
    raw = text.strip()
    percent = raw.endswith("%")
    number = raw[:-1].strip() if percent else raw
    try:
        value = float(number) if percent else int(number)
    except ValueError:
        raise ValueError(
            f"{what}: {text!r} is neither a whole number (e.g. 2) nor a percentage (e.g. 10%)"
        ) from None
    if percent and not 0 <= value <= 100:
        raise ValueError(f"{what}: {text!r} must be between 0% and 100%")
    if value < minimum:
        raise ValueError(f"{what}: {text!r} must be at least {minimum}")
    return Amount(float(value), percent)


def parse_batch(text: str) -> Amount:
    """``--canary``: how many devices go first (at least one)."""
    amount = parse_amount(text, "--canary", minimum=1)
    if amount.percent and amount.value == 0:
        raise ValueError("--canary: must be more than 0%")
    return amount


def parse_threshold(text: str) -> Amount:
    """``--max-failures``: how many failures are tolerated (``0`` = none)."""
    return parse_amount(text, "--max-failures")


def batch_size(amount: Amount, total: int) -> int:
    """Devices in the canary batch: N, or P% rounded up; never more than ``total``."""
    if total <= 0:
        return 0
    n = math.ceil(total * amount.value / 100) if amount.percent else int(amount.value)
    return max(1, min(total, n))


def select_canaries(members: Iterable[str], amount: Amount) -> tuple[list[str], list[str]]:
    """(canaries, rest): the first batch of the sorted ids, so a rerun picks the same ones."""
    ordered = sorted(set(members))
    n = batch_size(amount, len(ordered))
    return ordered[:n], ordered[n:]


def exceeds(threshold: Amount, failed: int, total: int) -> bool:
    """True when ``failed`` out of ``total`` is more than the threshold allows."""
    if failed <= 0:
        return False
    if threshold.percent:
        return total > 0 and failed * 100 > threshold.value * total
    return failed > threshold.value


def outcome_of(report: Mapping[str, Any], source: str, version: int) -> Outcome | None:
    """The outcome of document (``source``, ``version``) in a reported config, or None if the
    report is not (yet) about it: an older document, or still ``applying``.

    A report names its trigger (``source``/``version``) and every document of the effective
    config (``versions``); a change that waited for another apply to settle is reported under
    the other trigger, so both are looked at. A newer version of the same document counts too:
    the gateway has moved past this one.
    """
    state = report.get("state")
    if not isinstance(state, str) or state not in {"applied", "rejected", "rolled_back"}:
        return None
    versions = report.get("versions")
    seen = versions.get(source) if isinstance(versions, Mapping) else None
    trigger = report.get("version")
    if report.get("source") == source and isinstance(trigger, int) and trigger >= version:
        return Outcome(state)
    if isinstance(seen, int) and not isinstance(seen, bool) and seen >= version:
        return Outcome(state)
    return None


@dataclass(frozen=True, slots=True)
class Tally:
    applied: int
    failed: int
    pending: int

    @property
    def total(self) -> int:
        return self.applied + self.failed + self.pending

    def line(self) -> str:
        return (
            f"applied {self.applied}, failed {self.failed}, pending {self.pending} of {self.total}"
        )


def tally(outcomes: Mapping[str, Outcome | None]) -> Tally:
    """Counts, where ``None`` is still pending and ``NO_REPORT`` is a failure (timed out)."""
    applied = sum(1 for o in outcomes.values() if o is Outcome.APPLIED)
    pending = sum(1 for o in outcomes.values() if o is None)
    return Tally(applied, len(outcomes) - applied - pending, pending)


def finalise(outcomes: Mapping[str, Outcome | None]) -> dict[str, Outcome]:
    """After the timeout: whoever has not reported is a ``NO_REPORT`` failure."""
    return {d: (o if o is not None else Outcome.NO_REPORT) for d, o in outcomes.items()}


def should_halt(outcomes: Mapping[str, Outcome], threshold: Amount) -> bool:
    """The canary rule: halt when the failed share of the batch exceeds ``--max-failures``."""
    failed = sum(1 for o in outcomes.values() if o.failed)
    return exceeds(threshold, failed, len(outcomes))


def document_version(payload: bytes | None) -> int | None:
    """The version of a retained desired document, or None (absent, empty or unreadable)."""
    if not payload:
        return None
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    v = doc.get("version") if isinstance(doc, dict) else None
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def document_config(payload: bytes | None) -> dict[str, Any]:
    """The ``config`` of a retained desired document; ``{}`` when there is none."""
    if not payload:
        return {}
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    cfg = doc.get("config") if isinstance(doc, dict) else None
    return dict(cfg) if isinstance(cfg, dict) else {}


def next_version(current: bytes | None, given: int | None = None) -> int:
    """The version to publish: ``given`` (it must be newer), or the current one + 1 (or 1)."""
    now = document_version(current)
    if given is None:
        return 1 if now is None else now + 1
    if now is not None and given <= now:
        raise ValueError(
            f"--version {given} is not newer than the current document's version {now}; "
            f"gateways would ignore it (use {now + 1} or leave --version out)"
        )
    return given


def canary_document(config: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """A canary's device document: the new group config with the device's own settings on
    top, so the device's own keys still win as they will under the group document."""
    return overlay([config, own])


def members(
    group: str,
    statuses: Mapping[str, Mapping[str, Any]],
    reports: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[str]:
    """Sorted ids of the group's gateways: a status listing the group, or (for a gateway whose
    last word was its Will, which carries no groups) a report that used the group's document."""
    # A status is whatever its gateway published: "groups" may be anything.
    found = {
        d for d, s in statuses.items() if isinstance(g := s.get("groups"), list) and group in g
    }
    for d, r in (reports or {}).items():
        versions = r.get("versions")
        if isinstance(versions, Mapping) and f"group/{group}" in versions:
            found.add(d)
    return sorted(found)


def parse_args_kv(pairs: Sequence[str]) -> dict[str, Any]:
    """``key=value`` command arguments; a value that reads as JSON (30, true) is taken as such."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--arg {pair!r}: write it as key=value, e.g. --arg delay_s=30")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out
