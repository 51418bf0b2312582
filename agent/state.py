"""The agent's persistent counters: ``seq`` (per sample), ``boot`` (per connect) and ``sid``.

Flash wears out, so ``seq`` costs no write per sample: the agent reserves a block of numbers
on disk and hands them out from memory. A restart continues after the reserved block, so a
sequence can skip forward but never repeats. ``sid`` names the lifetime of this state: when
the state is wiped or unreadable a new ``sid`` starts, so a consumer that de-duplicates on
``(device, sid, seq)`` never mistakes the new numbers for duplicates of old ones.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

from agent.atomicfile import write_atomic

log = logging.getLogger("titik.state")

#: Samples per seq reservation: one write per 1000 samples (17 h at the default 60 s interval).
SEQ_BLOCK = 1000
STATE_FILE = "counters.json"


@dataclass
class Counters:
    sid: str
    seq_reserved: int  # the first seq not yet reserved on disk
    boot: int


def parse_counters(raw: bytes) -> Counters:
    """Pure: decode the state file, raising ValueError on anything odd."""
    data = json.loads(raw)
    sid, seq, boot = data["sid"], data["seq_reserved"], data["boot"]
    if not (isinstance(sid, str) and sid and isinstance(seq, int) and isinstance(boot, int)):
        raise ValueError("wrong field types")
    if seq < 0 or boot < 0:
        raise ValueError("negative counter")
    return Counters(sid, seq, boot)


class AgentState:
    """Counters kept under ``directory``; falls back to memory (and says so once) if it can't write."""

    def __init__(self, directory: Path | None, block: int = SEQ_BLOCK) -> None:
        self._dir = directory
        self._block = block
        self._persist = directory is not None
        self._c = self._load()
        self._next_seq = self._c.seq_reserved  # resume after the last reserved block

    @property
    def sid(self) -> str:
        return self._c.sid

    @property
    def boot(self) -> int:
        return self._c.boot

    def next_seq(self) -> int:
        seq = self._next_seq
        if seq >= self._c.seq_reserved:
            self._c.seq_reserved = seq + self._block
            self._save()
        self._next_seq = seq + 1
        return seq

    def next_boot(self) -> int:
        self._c.boot += 1
        self._save()
        return self._c.boot

    def _path(self) -> Path | None:
        return None if self._dir is None else self._dir / STATE_FILE

    def _load(self) -> Counters:
        fresh = Counters(sid=uuid.uuid4().hex[:16], seq_reserved=0, boot=0)
        path = self._path()
        if path is None:
            return fresh
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return parse_counters(path.read_bytes())
        except FileNotFoundError:
            return fresh
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unknown past: start a new lifetime rather than risk repeating seq numbers.
            log.error("state %s unreadable (%s); starting new sid %s", path, exc, fresh.sid)
            return fresh

    def _save(self) -> None:
        path = self._path()
        if path is None or not self._persist:
            return
        body = json.dumps(
            {"sid": self._c.sid, "seq_reserved": self._c.seq_reserved, "boot": self._c.boot}
        ).encode()
        try:
            write_atomic(path, body)
        except OSError as exc:
            # A new sid keeps numbers unique: a later run reloads the old file and its old sid.
            self._persist = False
            self._c.sid = uuid.uuid4().hex[:16]
            log.error(
                "cannot write state %s: %s; counters now live in memory only, new sid %s",
                path,
                exc.strerror or exc,
                self._c.sid,
            )


def default_state_dir(platform_name: str) -> Path:
    # OpenWrt's /var is /tmp, which is RAM: keep state on flash, where keep.d saves it.
    return Path("/etc/titik/state") if platform_name == "openwrt" else Path("/var/lib/titik")
