"""Download an upgrade package with the standard library only: bounded, resumable, verified.

The file grows as ``<dest>.part``; an interrupted transfer (a dropped link, a timeout, the
agent restarted) keeps it, and the next attempt asks for the rest with an HTTP ``Range``
request. A server that ignores the range (200 instead of 206) or answers with another range
sends the whole file again. The download stops as soon as it would exceed the size the
signed manifest gives, and the finished file must have exactly that size and SHA-256, else
it is deleted. Only then is it renamed to ``dest``.

URLs are never logged or reported as given: :func:`agent.protocol.upgrade.redact_url` drops
the user, password and query (where download tokens live). A user and password in the URL
are sent as HTTP Basic credentials (urllib does not do that by itself).

On OpenWrt ``urllib`` is the ``python3-urllib`` package, ``http.client`` and ``email`` (which
``http.client`` parses headers with) ``python3-email``, ``ssl`` ``python3-openssl``:
packaging/nfpm.yaml depends on them (docs/packaging.md).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

from agent import __version__
from agent.protocol.upgrade import Package, redact_url

CHUNK = 64 * 1024
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class FetchError(Exception):
    """A download failed. ``resumable``: the part kept on disk is good for another attempt."""

    def __init__(self, reason: str, *, resumable: bool) -> None:
        super().__init__(reason)
        self.resumable = resumable


def _sha256_of(path: Path) -> hashlib._Hash:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Redirects only to http(s) (urllib would follow one to ftp), and credentials never to
    another host (urllib would send the Authorization header along)."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        target = urlsplit(newurl)
        if target.scheme not in ("http", "https"):
            raise urllib.error.HTTPError(
                redact_url(req.full_url), code, "redirect to a non-HTTP URL refused", headers, fp
            )
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and target.hostname != urlsplit(req.full_url).hostname:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def _request(url: str, offset: int) -> urllib.request.Request:
    parts = urlsplit(url)
    headers = {"User-Agent": f"titik-agent/{__version__}", "Accept-Encoding": "identity"}
    if parts.username is not None:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        netloc = parts.hostname or ""
        if ":" in netloc:
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.Request(url, headers=headers)  # noqa: S310 - http(s) only (Package)


def download(
    pkg: Package,
    dest: Path,
    *,
    timeout_s: float = 30.0,
    deadline_s: float = 1800.0,
    progress: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Path:
    """Fetch ``pkg`` into ``dest`` (resuming ``dest.part``); FetchError says why not.

    ``timeout_s`` bounds each network wait, ``deadline_s`` the whole attempt; ``progress`` is
    called with (bytes so far, size) after each chunk.
    """
    if dest.is_file() and dest.stat().st_size == pkg.size:
        if _sha256_of(dest).hexdigest() == pkg.sha256:
            return dest  # fetched already (an earlier attempt, before a restart)
        dest.unlink()
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have >= pkg.size:  # more than the manifest allows, or complete but never checked
        part.unlink()
        have = 0
    transfer = _Transfer(pkg, part, have, clock() + deadline_s, clock, progress)
    try:
        transfer.run(timeout_s, deadline_s)
    except FetchError as exc:
        if not exc.resumable:
            part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    return dest


class _Transfer:
    """One attempt: the request (ranged when a part is there), the copy, the checks."""

    def __init__(
        self,
        pkg: Package,
        part: Path,
        have: int,
        end: float,
        clock: Callable[[], float],
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.pkg, self.part, self.have, self.end = pkg, part, have, end
        self.clock, self.progress = clock, progress
        self.where = redact_url(pkg.url)
        self.hash = _sha256_of(part) if have else hashlib.sha256()

    def fail(self, why: str, *, resumable: bool) -> FetchError:
        return FetchError(f"{self.where}: {why}", resumable=resumable)

    def run(self, timeout_s: float, deadline_s: float) -> None:
        try:
            resp = _OPENER.open(_request(self.pkg.url, self.have), timeout=timeout_s)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and self.have:  # our range is past the server's file: restart
                self.part.unlink()
                raise self.fail("HTTP 416 for the rest of the file", resumable=True) from None
            raise self.fail(f"HTTP {exc.code} {exc.reason}", resumable=False) from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self.fail(_why(exc), resumable=True) from None
        with resp:
            mode = self._mode(resp)
            try:
                with self.part.open(mode) as out:
                    self._copy(resp, out, deadline_s)
                    out.flush()
                    os.fsync(out.fileno())
            except (OSError, http.client.HTTPException) as exc:
                # A broken transfer keeps what arrived, for the next attempt's range.
                raise self.fail(
                    f"interrupted after {self.have} of {self.pkg.size} bytes ({_why(exc)})",
                    resumable=True,
                ) from None
        if self.have != self.pkg.size:
            raise self.fail(
                f"the server closed after {self.have} of {self.pkg.size} bytes", resumable=True
            )
        digest = self.hash.hexdigest()
        if digest != self.pkg.sha256:
            raise self.fail(
                f"SHA-256 {digest[:16]}... is not the manifest's {self.pkg.sha256[:16]}...; "
                "the file is deleted",
                resumable=False,
            )

    def _mode(self, resp: http.client.HTTPResponse) -> str:
        """'ab' to append to the part (a 206 for exactly our range), else 'wb'."""
        size = self.pkg.size
        if resp.status == 206 and self.have:
            got = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
            if got is None or int(got.group(1)) != self.have:
                self.part.unlink(missing_ok=True)
                raise self.fail("the server sent another range than asked", resumable=True)
            if got.group(3) != "*" and int(got.group(3)) != size:
                raise self.fail(
                    f"the file is {got.group(3)} bytes, the manifest says {size}", resumable=False
                )
            mode = "ab"
        elif resp.status in (200, 206):
            self.have, self.hash, mode = 0, hashlib.sha256(), "wb"  # the whole file again
        else:
            raise self.fail(f"HTTP {resp.status}", resumable=False)
        length = resp.headers.get("Content-Length")
        if length is not None and length.isdigit() and self.have + int(length) > size:
            raise self.fail(
                f"the server sends {self.have + int(length)} bytes, the manifest says {size}; "
                "not downloaded",
                resumable=False,
            )
        return mode

    def _copy(self, resp: http.client.HTTPResponse, out: IO[bytes], deadline_s: float) -> None:
        size = self.pkg.size
        while True:
            if self.clock() > self.end:
                raise self.fail(
                    f"not complete after {deadline_s:g}s ({self.have} of {size} bytes); the "
                    "rest is asked for on the next attempt",
                    resumable=True,
                )
            block = resp.read(min(CHUNK, size - self.have + 1))
            if not block:
                return
            self.have += len(block)
            if self.have > size:
                raise self.fail(
                    f"more than the manifest's {size} bytes; not downloaded", resumable=False
                )
            out.write(block)
            self.hash.update(block)
            if self.progress is not None:
                self.progress(self.have, size)


def _why(exc: BaseException) -> str:
    """A short reason, never the URL (a ValueError from urllib may quote it)."""
    if isinstance(exc, ValueError):
        return "not a URL urllib can fetch"
    if isinstance(exc, urllib.error.URLError):
        exc = exc.reason if isinstance(exc.reason, BaseException) else exc
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc) or type(exc).__name__
    return text if len(text) < 120 else text[:117] + "..."
