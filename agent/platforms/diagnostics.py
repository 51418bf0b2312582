"""The ``diagnostics`` command: can this gateway reach the world, and are its radios up?

Each probe is short (a few seconds at most) and independent: a failing probe is reported
as data (``ok: false`` with the reason), never as a failed command.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from agent.runner import CommandError, CommandRunner, run_checked

RTT_RE = re.compile(r"time[=<]([0-9.]+) ?ms")


def parse_resolv_conf(text: str) -> list[str]:
    return [
        parts[1]
        for line in text.splitlines()
        if (parts := line.split()) and parts[0] == "nameserver" and len(parts) > 1
    ]


def parse_ping_rtt(text: str) -> float | None:
    m = RTT_RE.search(text)
    return float(m.group(1)) if m else None


def ping(runner: CommandRunner, host: str, timeout_s: float = 2.0) -> dict[str, Any]:
    try:
        out = run_checked(
            runner, ["ping", "-c", "1", "-W", str(int(timeout_s)), host], timeout_s + 1
        )
    except CommandError as exc:
        return {"target": host, "ok": False, "error": str(exc)}
    return {"target": host, "ok": True, "rtt_ms": parse_ping_rtt(out)}


def dns(name: str) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, None)
    except OSError as exc:
        return {"name": name, "ok": False, "error": str(exc)}
    return {
        "name": name,
        "ok": True,
        "addresses": len({i[4][0] for i in infos}),
        "ms": round(1000 * (time.monotonic() - t0), 1),
    }


def http(url: str, timeout_s: float = 5.0) -> dict[str, Any]:
    if not url.startswith(("http://", "https://")):
        return {"url": url, "ok": False, "error": "only http:// and https:// URLs"}
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:  # noqa: S310 - scheme checked
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        return {"url": url, "ok": False, "error": str(exc)}
    return {
        "url": url,
        "ok": status < 500,
        "status": status,
        "ms": round(1000 * (time.monotonic() - t0), 1),
    }


def read_resolvers(root: Path) -> list[str]:
    try:
        return parse_resolv_conf((root / "etc/resolv.conf").read_text())
    except OSError:
        return []
