"""Real filesystems that fail: a small tmpfs to fill up (ENOSPC), and an ext4 whose device
shrinks under it (EIO), for tests of what the agent does when flash is full or failing.

Both need root (mount, losetup); a test that cannot have them is skipped, saying why.

- :func:`full_tmpfs`: ``mount -t tmpfs -o size=...``; :meth:`Fill.fill` writes a filler file
  until the kernel says ENOSPC, :meth:`Fill.free` deletes it.
- :func:`failing_ext4`: ext4 (no journal, ``errors=continue``) on a loop device over a 16 MiB
  image. :meth:`Shrink.fail` truncates the image to 64 KiB and tells the loop driver
  (``losetup -c``): every block past that is then "beyond end of device", so writing new data
  fails with a real EIO from the block layer (``fsync`` returns it), as a worn-out flash
  does, while the pages already cached still read.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


def _need_root(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    for tool in tools:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")


@dataclass
class Fill:
    mnt: Path

    @property
    def filler(self) -> Path:
        return self.mnt / "filler"

    def fill(self) -> int:
        """Write until the filesystem is full; returns the bytes the filler took."""
        n = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (65536, 4096, 512, 1):
                chunk = b"\0" * size
                while True:
                    try:
                        n += os.write(fd, chunk)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        return n

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def full_tmpfs(where: Path, size: str = "256k") -> Iterator[Fill]:
    """A real tmpfs of ``size`` at ``where`` (created), unmounted afterwards."""
    _need_root("mount", "umount")
    where.mkdir(parents=True, exist_ok=True)
    res = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if res.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {res.stderr.strip()}")
    try:
        yield Fill(where)
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))


@dataclass
class Shrink:
    mnt: Path
    image: Path
    device: str

    def fail(self) -> None:
        """From now on, writing new data to the filesystem fails with EIO."""
        os.truncate(self.image, 64 * 1024)
        res = _run("losetup", "-c", self.device)
        assert res.returncode == 0, res.stderr


@contextlib.contextmanager
def failing_ext4(where: Path, image: Path) -> Iterator[Shrink]:
    """ext4 on a loop device at ``where``; :meth:`Shrink.fail` makes its writes fail (EIO)."""
    _need_root("mount", "umount", "losetup", "mkfs.ext4")
    where.mkdir(parents=True, exist_ok=True)
    with image.open("wb") as fh:
        fh.truncate(16 * 2**20)
    res = _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image))
    if res.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {res.stderr.strip()}")
    res = _run("losetup", "-f", "--show", str(image))
    if res.returncode != 0:
        pytest.skip(f"no loop device: {res.stderr.strip()}")
    device = res.stdout.strip()
    try:
        res = _run("mount", "-o", "errors=continue", device, str(where))
        if res.returncode != 0:
            pytest.skip(f"cannot mount ext4 on {device}: {res.stderr.strip()}")
        try:
            yield Shrink(where, image, device)
        finally:
            if _run("umount", str(where)).returncode != 0:
                _run("umount", "-l", str(where))
    finally:
        _run("losetup", "-d", device)
