"""What the upgrade tests share: a real HTTP server with Range support, and signed manifests.

The server is the standard library's ThreadingHTTPServer on a free loopback port, with a
handler that answers ``Range: bytes=N-`` with a 206 and ``Content-Range`` as RFC 9110 says
(SimpleHTTPRequestHandler ignores ranges). A test can make it cut a transfer after some
bytes (the connection is closed mid-body), ignore ranges (a 200 with the whole file, as many
servers do), or lie about the size, and it records each request's headers.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import sign
from agent.protocol.upgrade import MANIFEST_CONTEXT

_RANGE = re.compile(r"bytes=(\d+)-")


@dataclass
class Files:
    """What the server serves, and how it misbehaves."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    #: path -> bytes after which the first N responses are cut (the connection closed).
    cut_after: dict[str, int] = field(default_factory=dict)
    cuts_left: dict[str, int] = field(default_factory=dict)
    ignore_range: bool = False
    #: path -> the URL a 302 sends the client to.
    redirects: dict[str, str] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _handler(files: Files) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with files.lock:
                files.requests.append({"path": self.path, **dict(self.headers.items())})
                body = files.blobs.get(self.path.split("?")[0])
                cut = None
                if files.cuts_left.get(self.path.split("?")[0], 0) > 0:
                    files.cuts_left[self.path.split("?")[0]] -= 1
                    cut = files.cut_after[self.path.split("?")[0]]
            where = files.redirects.get(self.path.split("?")[0])
            if where is not None:
                self.send_response(302)
                self.send_header("Location", where)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if body is None:
                self.send_error(404)
                return
            start = 0
            got = _RANGE.fullmatch(self.headers.get("Range", ""))
            if got and not files.ignore_range:
                start = int(got.group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if cut is not None:
                self.wfile.write(rest[:cut])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(rest)

    return Handler


@contextmanager
def http_server(files: Files) -> Iterator[str]:
    """Serve ``files``; yields the base URL (http://127.0.0.1:PORT)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(files))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def package_entry(url: str, blob: bytes, fmt: str = "sim", arch: str = "all") -> dict[str, Any]:
    return {
        "format": fmt,
        "arch": arch,
        "url": url,
        "size": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }


def signed_manifest(
    key: Ed25519PrivateKey,
    version: str,
    packages: list[dict[str, Any]],
    min_from: str = "0.0.1",
) -> dict[str, Any]:
    body = {"version": version, "min_from": min_from, "packages": packages}
    return sign(key, MANIFEST_CONTEXT, body)
