"""A small HTTP server for tests/integration/test_citizen_path.py, run inside a network
namespace (``ip netns exec NS python netns_http.py ADDRESS PORT MODE``): the captive-portal
check's target or the stand-in Internet. Prints ``ready`` once it listens.

Modes: ``open`` (204 No Content, as the open Internet's portal check URL answers), ``page``
(200 with a body, as an Internet page), ``portal`` (302 to a login page, as a captive portal
answers), ``error`` (500, a broken portal).
"""

from __future__ import annotations

import http.server
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    mode = "open"

    def do_GET(self) -> None:
        if self.mode == "open":
            self.send_response(204)
            self.end_headers()
        elif self.mode == "page":
            body = b"success\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.mode == "portal":
            self.send_response(302)
            self.send_header("Location", "http://login.portal.test/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_error(500)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    address, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    Handler.mode = mode
    server = http.server.ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
