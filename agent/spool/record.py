"""The unit the spool stores: one serialized sample with its sequence number."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Record:
    """One telemetry sample on its way to the broker.

    Attributes:
        seq: Unique and strictly increasing per agent; the spool's id for the record and
            the consumer's de-duplication key (delivery is at-least-once).
        ts: UNIX seconds of the measurement; the age cap compares it with the wall clock.
        data: The serialized sample. Opaque to the spool and never logged.
    """

    seq: int
    ts: float
    data: bytes
