"""The spool directory: the only module that touches the filesystem.

Writes are atomic (temp name, fsync, rename) and reads are bounded, so a damaged or
foreign file can cost us a log line but never memory or a crash. Errors are raised as
OSError; the Spool decides what they mean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from agent.protocol import atomicfile
from agent.protocol.atomicfile import describe, sync_dir, write_atomic
from agent.spool.segment import (
    BLOCK_HEADER,
    CORRUPT_DIR,
    TMP_SUFFIX,
    TOMBSTONE_NAME,
    block_size,
    open_block,
    parse_segment_name,
    segment_name,
)

KEEP_CORRUPT = 5  # files kept in corrupt/, newest first
MAX_SET_ASIDE_PER_LOAD = 8  # more foreign files than this smells like a shared directory

_CORRUPT_NAME = re.compile(r"^(\d{6})-")


def open_read(path: Path) -> int:
    """Open for reading without an atime update: with the default relatime, the first
    read after a write would otherwise dirty the inode, i.e. cost a flash write to read.
    O_NOATIME is only allowed to the file's owner; fall back without it."""
    flags = os.O_RDONLY | os.O_CLOEXEC
    noatime = getattr(os, "O_NOATIME", 0)
    if noatime:
        try:
            return os.open(path, flags | noatime)
        except PermissionError:
            pass
    return os.open(path, flags)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``.

    Every byte the spool stores goes through here, so tests can stand in a full disk
    (raise ``OSError(errno.ENOSPC)``) or count writes by replacing this function.
    """
    atomicfile.write_all(fd, data)


@dataclass(slots=True)
class Listing:
    """What the spool directory holds, sorted into the spool's own kinds of file."""

    segments: list[tuple[int, Path]] = field(default_factory=list)  # by id
    tombstone: Path | None = None
    unfinished: list[Path] = field(default_factory=list)  # temp files of a cut-off write
    foreign: list[Path] = field(default_factory=list)  # regular files that are not ours
    ignored: list[Path] = field(default_factory=list)  # dirs, links, sockets: left alone


def prepare(directory: Path) -> str | None:
    """Create ``directory`` if needed; the reason it cannot be used, or None if it can."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create it: {exc.strerror or exc}"
    if not directory.is_dir():
        return "not a directory"
    # access() reports EROFS even to root, so a read-only overlay is caught here without
    # writing a probe file (which would cost flash on every start).
    if not os.access(directory, os.W_OK | os.X_OK):
        return "not writable"
    return None


class SegmentStore:
    """Segment, tombstone and corrupt/ files under one directory."""

    def __init__(self, directory: Path, *, keep_corrupt: int = KEEP_CORRUPT) -> None:
        self.directory = directory
        self.keep_corrupt = keep_corrupt

    def path(self, seg_id: int) -> Path:
        return self.directory / segment_name(seg_id)

    def listing(self) -> Listing:
        out = Listing()
        fd = open_read(self.directory)
        try:
            names = os.listdir(fd)
        finally:
            os.close(fd)
        for name in names:
            path = self.directory / name
            if name == CORRUPT_DIR:
                continue
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if not stat.S_ISREG(st.st_mode):
                out.ignored.append(path)
            elif name.endswith(TMP_SUFFIX):
                out.unfinished.append(path)
            elif name == TOMBSTONE_NAME:
                out.tombstone = path
            elif (seg_id := parse_segment_name(name)) is not None:
                out.segments.append((seg_id, path))
            else:
                out.foreign.append(path)
        out.segments.sort()
        out.foreign.sort()
        return out

    def read(self, path: Path, limit: int) -> bytes | None:
        """The whole file, or None if it is larger than ``limit`` (then it is not ours)."""
        with os.fdopen(open_read(path), "rb") as f:
            if os.fstat(f.fileno()).st_size > limit:
                return None
            return f.read(limit + 1)

    def read_blocks(self, seg_id: int, offsets: set[int]) -> dict[int, bytes]:
        """The raw bytes of the blocks at ``offsets`` of a segment; SegmentDamage if bad."""
        out: dict[int, bytes] = {}
        with os.fdopen(open_read(self.path(seg_id)), "rb") as f:
            for off in sorted(offsets):
                f.seek(off)
                head = f.read(BLOCK_HEADER.size)
                payload = f.read(block_size(head)) if len(head) == BLOCK_HEADER.size else b""
                out[off] = open_block(head, payload)
        return out

    def write_segment(self, seg_id: int, data: bytes) -> None:
        self._write_atomic(segment_name(seg_id), data)

    def write_tombstone(self, data: bytes) -> None:
        self._write_atomic(TOMBSTONE_NAME, data)

    def _write_atomic(self, name: str, data: bytes) -> None:
        # write_all is looked up here, at each call, so a test that replaces it is heard.
        tmp = self.directory / (name + TMP_SUFFIX)
        write_atomic(self.directory / name, data, tmp=tmp, sync_directory=False, write=write_all)

    def sync_dir(self) -> None:
        """Make renames and unlinks in the directory durable."""
        sync_dir(self.directory)

    def delete(self, path: Path) -> None:
        """Remove a file; one that is already gone is fine."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def set_aside(self, path: Path, log: logging.Logger) -> bool:
        """Move a damaged or foreign file into corrupt/, keeping only the newest few there."""
        aside = self.directory / CORRUPT_DIR
        try:
            aside.mkdir(exist_ok=True)
            numbers = []
            with os.scandir(aside) as it:
                for entry in it:
                    m = _CORRUPT_NAME.match(entry.name)
                    if m:
                        numbers.append((int(m.group(1)), entry.name))
            numbers.sort()
            n = numbers[-1][0] + 1 if numbers else 1
            os.replace(path, aside / f"{n:06d}-{path.name}")
            numbers.append((n, ""))
            for _n, name in numbers[: max(0, len(numbers) - self.keep_corrupt)]:
                victim = aside / name
                if victim.is_dir() and not victim.is_symlink():
                    continue
                victim.unlink()
        except OSError as exc:
            log.error(
                "spool: could not move %s into %s/: %s", path.name, CORRUPT_DIR, describe(exc)
            )
            return False
        return True
