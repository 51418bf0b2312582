"""From an MQTT message to rows: the topic's kind, validation with the wire models, and the
batch that remembers which message each row came from (so a failed batch can be split).

Pure; the consumer (:mod:`central.ingest.consumer`) does the I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from agent.protocol import Telemetry, topics
from agent.protocol.topics import TOPIC_SAFE
from agent.protocol.wire import telemetry_json
from central.store.base import (
    Sample,
    WriteBatch,
)

#: Quarantine rows one source may write per minute (see :class:`QuarantineLimit`).
QUARANTINE_PER_SOURCE = 10


class Incoming(NamedTuple):
    """One message as the network thread queues it (a NamedTuple: made in ~0.4 us, a frozen
    dataclass in ~0.6 us, once per message on paho's thread)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class QuarantinedMessage(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@functools.lru_cache(maxsize=65536)
def _topic_safe(name: str) -> bool:
    # Cached: the same few thousand gateway ids come again and again (a regex match per
    # message cost ~0.4 us, a cache hit ~0.1 us); bounded, as names come from the network.
    return TOPIC_SAFE.fullmatch(name) is not None


def parse_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(kind, name)``: kind is telemetry, batch, status, reported, desired, group_desired
    or service (``agent.protocol.topics.KINDS``); None unless the name is a device id or group name
    (``TOPIC_SAFE``)."""
    parts = topics.parse_topic(prefix, topic)
    if parts is None:
        return None
    level, name, leaf = parts
    kind = topics.KINDS.get((level, leaf))
    return (kind, name) if kind and _topic_safe(name) else None


def subscriptions(prefix: str, group: str) -> list[str]:
    """The consumer's topic filters; an empty ``group`` means plain (not shared) subscriptions.

    Mosquitto 2.0 does not restore shared subscriptions from its persistence file: after a
    broker restart, messages published before central subscribes again are lost. Plain
    subscriptions of a persistent session are restored, so a single instance loses nothing
    (docs/central.md, "Known limits").
    """
    filters = [
        topics.gw_topic(prefix, "+", leaf)
        if level == topics.GW
        else topics.group_filter(prefix, leaf)
        for level, leaf in topics.KINDS
    ]
    return [topics.shared(group, f) for f in filters]


def to_sample(t: Telemetry, *, historical: bool) -> Sample:
    """A validated record as stored, live or replayed alike: ``raw`` is the record encoded again
    by the wire's own encoder, ``t.model_dump_json()`` (compact JSON, keys in the model's
    order, unknown keys kept after the known ones, defaults filled in, a null ``errors`` or
    ``radio`` left out, numbers as pydantic writes them), so a record reads the same whichever
    way it came and whoever sent it. It is made by ``telemetry_json``, which writes that same
    text inside pydantic-core (about 4 us a 600-byte record, against 8 us through
    ``Telemetry._omit_absent``)."""
    h = t.health
    return Sample(
        device=t.device,
        sid=t.sid,
        seq=t.seq,
        ts=t.ts,
        historical=historical,
        boot=t.boot,
        clients=t.clients.total if t.clients else None,
        cpu_pct=h.cpu_pct if h else None,
        mem_used_pct=h.mem_used_pct if h else None,
        temp_c=h.temp_c if h else None,
        disk_used_pct=h.disk_used_pct if h else None,
        version=t.agent.version,
        raw=telemetry_json(t),
    )


M = TypeVar("M", bound=BaseModel)


def validate_payload(model: type[M], payload: bytes) -> M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        if errs and errs[0]["type"] == "json_invalid":
            raise QuarantinedMessage("json", f"not JSON: {errs[0]['msg']}") from None
        if not errs:
            raise QuarantinedMessage("schema", str(exc)) from None
        loc = ".".join(str(p) for p in errs[0]["loc"]) or "(document)"
        raise QuarantinedMessage("schema", f"{loc}: {errs[0]['msg']}") from None


def clean_text(text: str, limit: int = 1000) -> str:
    """Text the store can hold: no lone surrogates, at most ``limit`` characters."""
    return text.encode("utf-8", "backslashreplace").decode()[:limit]


@dataclass(slots=True)
class Built:
    """A batch and which message each of its rows came from.

    Messages' samples follow one another: ``ends[i]`` is the end of message ``i``'s in
    ``batch.samples``. Desired documents, reports and quarantine rows are rare, so each is
    tagged with its message (``desired_of`` and so on). Only a failed batch looks at these.
    """

    batch: WriteBatch
    msgs: Sequence[Incoming]
    ends: list[int] = field(default_factory=list)
    desired_of: list[int] = field(default_factory=list)
    reported_of: list[int] = field(default_factory=list)
    quarantined_of: list[int] = field(default_factory=list)
    service_of: list[int] = field(default_factory=list)

    def part(self, lo: int, hi: int) -> WriteBatch:
        """The rows of messages ``lo`` to ``hi - 1`` (no device rows or alert changes)."""
        b = self.batch
        return WriteBatch(
            samples=b.samples[self.ends[lo - 1] if lo else 0 : self.ends[hi - 1]],
            desired=[r for r, i in zip(b.desired, self.desired_of, strict=True) if lo <= i < hi],
            reported=[r for r, i in zip(b.reported, self.reported_of, strict=True) if lo <= i < hi],
            quarantined=[
                r for r, i in zip(b.quarantined, self.quarantined_of, strict=True) if lo <= i < hi
            ],
            service=[r for r, i in zip(b.service, self.service_of, strict=True) if lo <= i < hi],
        )

    def kind(self, i: int, prefix: str) -> str | None:
        """What message ``i`` was taken as (``KINDS``); None if it was quarantined."""
        if i in self.quarantined_of:
            return None
        m = self.msgs[i]
        where = parse_topic(prefix, m.topic)
        if where is None:
            return None
        return where[0] if m.payload or where[0] in ("telemetry", "batch") else "cleared"


class QuarantineLimit:
    """At most ``per_minute`` rows in all and ``QUARANTINE_PER_SOURCE`` per source in each
    minute (a fixed window): a gateway that sends nothing but garbage can neither fill the
    disk nor crowd out the others' rows. Every bad message is counted either way."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._window = -1
        self._total = 0
        self._by_source: dict[str, int] = {}

    def allow(self, source: str, now: float) -> bool:
        window = int(now // 60)
        if window != self._window:
            self._window, self._total, self._by_source = window, 0, {}
        n = self._by_source.get(source, 0)
        if self._total >= self.per_minute or n >= QUARANTINE_PER_SOURCE:
            return False
        self._by_source[source] = n + 1
        self._total += 1
        return True
