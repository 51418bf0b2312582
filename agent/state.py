"""The agent's persistent counters: ``seq`` (per sample), ``boot`` (per connect) and ``sid``.

Flash wears out, so neither counter costs a write per use: the agent reserves a block of
numbers on disk and hands them out from memory (``seq`` 1000 at a time, ``boot`` 100 at a
time). A restart continues after the reserved block, so a counter can skip forward but never
repeats or goes back. ``sid`` names the lifetime of this state: when the state is wiped or
unreadable, or a seq reservation cannot be written, a new ``sid`` starts, so a consumer that
de-duplicates on ``(device, sid, seq)`` never mistakes the new numbers for old ones.
docs/architecture.md, "Counters without flash wear", has the reasoning.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.protocol import WIRE_INT_MAX
from agent.protocol.atomicfile import WriteFaults, describe, sweep_tmp, write_atomic
from agent.protocol.inbound import own_object, whole

log = logging.getLogger("titik.state")

#: Samples per seq reservation: one write per 1000 samples (17 h at the default 60 s interval).
SEQ_BLOCK = 1000
#: Connection attempts per boot reservation: in an outage, with reconnects at most
#: ``mqtt.reconnect_max_s`` (60 s) apart, one write per ~100 attempts instead of one per attempt.
BOOT_BLOCK = 100
STATE_FILE = "counters.json"
#: After a failed write, the next try is this many seconds later, then twice as long...
RETRY_MIN_S = 30.0
RETRY_MAX_S = 600.0
#: Counters this close to the wire's limit start a new lifetime instead (never reached in
#: practice: 2^53 samples is 285 million years at one a second; a damaged file could claim it).
_HEADROOM = 1 << 20


@dataclass
class Counters:
    sid: str
    seq_reserved: int  # the first seq not yet reserved on disk
    boot: int  # the highest boot number reserved on disk: every boot used so far is <= it


def parse_counters(raw: bytes) -> Counters:
    """Pure: decode the state file, raising ValueError or TypeError on anything odd."""
    data = own_object(raw)
    sid, seq, boot = data["sid"], data["seq_reserved"], data["boot"]
    if not (isinstance(sid, str) and sid and whole(seq) is not None and whole(boot) is not None):
        raise TypeError("wrong field types")
    if max(seq, boot) > WIRE_INT_MAX - _HEADROOM:
        raise ValueError("counter beyond what the wire carries")
    return Counters(sid, seq, boot)


class AgentState:
    """Counters kept under ``directory``.

    If a reservation cannot be written (ENOSPC, EIO, a read-only disk), the numbers keep
    coming from memory: seqs under a new sid (so none can repeat under the old one), boots
    past the last reservation on disk. The write is tried again ``RETRY_MIN_S`` later (then
    less often); once it works, a restart continues where this process is.
    """

    def __init__(
        self,
        directory: Path | None,
        block: int = SEQ_BLOCK,
        *,
        boot_block: int = BOOT_BLOCK,
        faults: WriteFaults | None = None,
    ) -> None:
        self._dir = directory
        self._block = block
        self._boot_block = boot_block
        self.faults = faults or WriteFaults()
        #: True while memory holds reservations the disk does not: :meth:`retry` is due.
        self.unsaved = False
        self._retry_at = 0.0
        self._retry_wait = RETRY_MIN_S
        self._sid_is_new = False  # this process started a new sid after a failed write
        self._c = self._load()
        self._boot_on_disk = self._c.boot
        self._next_seq = self._c.seq_reserved  # resume after the last reserved block
        self._boot = self._c.boot  # the last boot number that may have been used

    @property
    def sid(self) -> str:
        return self._c.sid

    @property
    def boot(self) -> int:
        return self._boot

    def next_seq(self) -> int:
        seq = self._next_seq
        if seq >= self._c.seq_reserved:
            if seq > WIRE_INT_MAX - self._block:  # see _HEADROOM: a new lifetime, from 0
                self._new_sid("seq reached the wire's limit")
                seq = 0
            self._c.seq_reserved = seq + self._block
            if not self._save() and not self._sid_is_new:
                self._new_sid("cannot reserve seq numbers on disk")
        self._next_seq = seq + 1
        return seq

    def next_boot(self) -> int:
        boot = self._boot + 1
        if boot > self._c.boot:
            self._c.boot = boot + self._boot_block - 1
            self._save()
        self._boot = boot
        return boot

    def retry(self, now: float) -> None:
        """Call while :attr:`unsaved`: writes the reservations once the disk takes them."""
        if not self.unsaved:
            return
        if self._retry_at == 0.0:  # the write just failed: the first retry is a while away
            self._retry_at = now + self._retry_wait
        elif now >= self._retry_at and not self._save():
            self._retry_wait = min(RETRY_MAX_S, self._retry_wait * 2)
            self._retry_at = now + self._retry_wait

    # -- persistence
    def _path(self) -> Path | None:
        return None if self._dir is None else self._dir / STATE_FILE

    def _load(self) -> Counters:
        fresh = Counters(sid=uuid.uuid4().hex[:16], seq_reserved=0, boot=0)
        path = self._path()
        if path is None:
            return fresh
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if sweep_tmp(path):
                log.info("state: removed an unfinished write of %s", path)
            return parse_counters(path.read_bytes())
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unknown past: start a new lifetime rather than risk repeating seq numbers.
            why = describe(exc) if isinstance(exc, OSError) else str(exc)
            log.error("state %s unreadable (%s); starting new sid %s", path, why, fresh.sid)
            return fresh

    def _new_sid(self, why: str) -> None:
        self._c.sid = uuid.uuid4().hex[:16]
        self._sid_is_new = True
        log.error(
            "state: %s; seq numbers continue under a new sid %s, so none can repeat",
            why,
            self._c.sid,
        )

    def _save(self) -> bool:
        path = self._path()
        if path is None:
            return True
        body = json.dumps(
            {"sid": self._c.sid, "seq_reserved": self._c.seq_reserved, "boot": self._c.boot}
        ).encode()
        try:
            write_atomic(path, body)
        except OSError as exc:
            self.unsaved = True
            if self.faults.failed("state", path.name, exc):
                log.error(
                    "state: cannot write %s (%s); counters live in memory until it works "
                    "again (tried every %g-%gs); a restart before then starts boot after %d",
                    path,
                    describe(exc),
                    RETRY_MIN_S,
                    RETRY_MAX_S,
                    self._boot_on_disk,
                )
            return False
        self._boot_on_disk = self._c.boot
        self.unsaved = False
        self._sid_is_new = False
        self._retry_at, self._retry_wait = 0.0, RETRY_MIN_S
        failed = self.faults.ok("state")
        if failed:
            log.warning("state: %s written again after %d failed writes", path, failed)
        return True
