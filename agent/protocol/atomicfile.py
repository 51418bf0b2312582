"""Crash-safe small-file writes (temp file, fsync, rename, fsync the directory), and the
bookkeeping of writes that failed.

It lives in the protocol package because it is the project's one atomic-write helper: central
(the broker kit) writes through it too, and central may import nothing else of the agent.

Gateways run out of flash (ENOSPC) and flash wears out (EIO). A write that fails must cost
a log line and a count in the next sample, never a crash, and never a half-written file:
:func:`write_atomic` leaves the old content in place and no temp file behind, and
:class:`WriteFaults` remembers what failed for the sample's ``errors``.
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable
from pathlib import Path

#: Filesystems that cannot fsync a directory say so with one of these (FUSE, older jffs2).
_NO_DIR_FSYNC = frozenset({errno.EINVAL, errno.ENOTSUP, errno.EBADF})


def tmp_path(path: Path) -> Path:
    """Where :func:`write_atomic` stages ``path``: a hidden sibling, so a sweep can find it."""
    return path.with_name(f".{path.name}.tmp")


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``: a nearly full disk may take part of a write before it refuses."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def write_atomic(
    path: Path,
    data: bytes,
    *,
    tmp: Path | None = None,
    sync_directory: bool = True,
    write: Callable[[int, bytes], None] = write_all,
    mode: int | None = None,
) -> None:
    """Replace ``path`` with ``data`` so a power cut leaves the old or the new content, never half.

    Raises OSError (ENOSPC, EIO, EROFS...) with the old content still in place and the temp
    file removed. A failed directory fsync raises too: the rename then happened, but may not
    survive a power cut, and the caller must not count on it.

    The agent's only atomic writer: small state files with the defaults, the spool's segments
    with its own ``tmp`` name (which its sweep knows), ``sync_directory=False`` (it syncs the
    directory once per spill) and its ``write`` (which its tests replace).

    The file is created 0600 (less under a stricter umask); ``mode`` sets exactly that mode
    before the first byte is written, so there is no moment with wider access (the broker kit
    writes certificates 0644 and keys 0600 this way).
    """
    tmp = tmp_path(path) if tmp is None else tmp
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            if mode is not None:
                os.fchmod(fd, mode)
            write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    if sync_directory:
        sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def sweep_tmp(path: Path) -> bool:
    """Remove a temp file a crash left behind for ``path``; True if there was one.

    It never reached its rename, so it was never committed: the file itself is intact.
    """
    try:
        tmp_path(path).unlink()
    except FileNotFoundError:
        return False
    except OSError:
        return False  # a read-only or failing disk: harmless, tried again next start
    return True


def describe(exc: OSError) -> str:
    """'ENOSPC: No space left on device' for an OSError."""
    name = errno.errorcode.get(exc.errno or 0, "")
    text = exc.strerror or str(exc)
    return f"{name}: {text}" if name else text


class WriteFaults:
    """Writes to flash that failed since the agent started, by kind.

    ``entries`` is what the next sample carries in ``errors`` (``write.<kind>``: how many
    failed, whether writing works again, the last error). :meth:`failed` and :meth:`ok` say
    whether the event is news (the first failure of an episode, or its end), so the caller
    logs one line per episode instead of one per attempt. Nothing here runs on the sample
    path unless a write has failed.
    """

    def __init__(self) -> None:
        self.entries: dict[str, str] = {}
        self.total = 0
        self._count: dict[str, int] = {}
        self._failing: dict[str, tuple[int, str]] = {}  # kind -> (failed in episode, last)

    def failed(self, kind: str, what: str, exc: OSError) -> bool:
        """A write of ``kind`` (to the file ``what``) raised ``exc``; True if it is news."""
        self.total += 1
        n = self._count[kind] = self._count.get(kind, 0) + 1
        episode, _ = self._failing.get(kind, (0, ""))
        last = f"{describe(exc)} ({what})"
        self._failing[kind] = (episode + 1, last)
        self.entries[f"write.{kind}"] = f"{n} failed since start, still failing; last: {last}"
        return episode == 0

    def ok(self, kind: str) -> int:
        """A write of ``kind`` worked: how many had failed in the episode it ends (0: none)."""
        if kind not in self._failing:
            return 0
        episode, last = self._failing.pop(kind)
        n = self._count[kind]
        self.entries[f"write.{kind}"] = f"{n} failed since start, writing again; last: {last}"
        return episode
