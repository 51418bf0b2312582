"""A webhook receiver for tests and trials: prints every notification it gets, one JSON line
each on stdout (``titik-central webhook-receiver --port P``).

``--fail-first N`` answers the first N requests with 503 (to watch central retry);
``--secret-env VAR`` checks ``X-Titik-Signature`` with the secret in that environment
variable (never on the command line, where ``ps`` would show it) and answers 401 to a request
that does not carry the right one. Each line is ``{"n", "ok", "signature", "body"}``:
``signature`` is ``"valid"``, ``"invalid"`` or ``"none"``.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from central.alerting.webhook import sign

MAX_BODY = 1 << 20


class Receiver(ThreadingHTTPServer):
    def __init__(self, port: int, host: str, fail_first: int, secret: str) -> None:
        super().__init__((host, port), Handler)
        self.fail_first = fail_first
        self.secret = secret
        self.count = 0
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def log_message(self, format: str, *args: Any) -> None:
        pass  # stdout is for the notifications

    def do_POST(self) -> None:
        length = min(int(self.headers.get("Content-Length") or 0), MAX_BODY)
        raw = self.rfile.read(length)
        srv = self.server
        with srv.lock:
            srv.count += 1
            n = srv.count
        sig = self.headers.get("X-Titik-Signature")
        ts = self.headers.get("X-Titik-Timestamp", "")
        signature = "none"
        if sig is not None and srv.secret:
            good = hmac.compare_digest(sig, sign(srv.secret, ts, raw))
            signature = "valid" if good else "invalid"
        ok = n > srv.fail_first and (not srv.secret or signature == "valid")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        line = {"n": n, "ok": ok, "signature": signature, "body": body}
        with srv.lock:
            sys.stdout.write(json.dumps(line, sort_keys=True) + "\n")
            sys.stdout.flush()
        code = 200 if ok else (503 if n <= srv.fail_first else 401)
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "webhook-receiver",
        help="print the webhook notifications sent to a port (for trials and tests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--port", type=int, required=True, help="listen on this port (0: any free)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--fail-first", type=int, default=0, metavar="N", help="answer 503 N times")
    p.add_argument(
        "--secret-env", metavar="VAR", help="check signatures with the secret in this variable"
    )


def main(args: argparse.Namespace) -> int:
    secret = ""
    if args.secret_env:
        secret = os.environ.get(args.secret_env, "")
        if not secret:
            print(f"--secret-env: ${args.secret_env} is empty or not set", file=sys.stderr)
            return 2
    try:
        srv = Receiver(args.port, args.host, args.fail_first, secret)
    except OSError as exc:
        print(f"--port: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    host, port = srv.server_address[:2]
    print(f"listening on http://{host!s}:{port}/", file=sys.stderr, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0
