"""Reading the small /proc and /sys files a sample needs, at the least cost in allocations.

A gateway samples every interval for months. ``open(path).read()`` builds a FileIO, a
BufferedReader, a TextIOWrapper and its decoder (some 25 objects) to return one string;
``read_file`` makes the bytes it returns and nothing else. The parsers take ``bytes``.

Why it matters: the objects a sample creates and frees are what CPython's small-object
allocator keeps pages for, and each sample's churn can push some pool to a new high and touch
a page it never touched before. That was the agent's slow RSS creep after start-up
(docs/benchmarks.md, "Agent"), and it fell with the allocations per sample.
"""

from __future__ import annotations

import os

#: One read gets all of any file read here; a longer one is read on until EOF.
CHUNK = 16384


def read_file(path: str) -> bytes:
    """The whole file at ``path`` (a ``str``: a ``Path`` would be converted every call)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        data = os.read(fd, CHUNK)
        if not data:
            return data
        more = os.read(fd, CHUNK)  # b"" (no allocation) at EOF, the usual case
        if not more:
            return data
        parts = [data, more]
        while more := os.read(fd, CHUNK):
            parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)


def list_dir(path: str) -> list[str]:
    """Entry names of ``path``; [] when it does not exist or is not a directory. Discovery
    (radios, sensors) uses this rather than ``Path.iterdir``/``glob``, which build a ``Path``
    per entry: 500 allocations against 70 to find the radios among four interfaces."""
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
