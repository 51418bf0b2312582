"""Service probes, each bounded in time, all of one run within ``probe_budget_s``:

- **DNS** through the AP's own resolver (``service.dns_server``, dnsmasq at 127.0.0.1:53 on
  OpenWrt): one A query over UDP, built here (a resolver library is not on the gateway, and
  ``socket.getaddrinfo`` can be neither pointed at a server nor given a timeout);
- **captive portal**: an HTTP GET of ``service.portal_url``, which answers ``204 No Content`` on
  the open Internet. A 204 is ``open``; a redirect or a page is ``portal`` (someone answered in
  the Internet's place); no answer, a refusal or a server error is ``broken``;
- **Internet**: ``service.connects`` TCP connects to each of ``service.targets``, the median
  connect time, the share lost and the jitter (mean difference of consecutive times). TCP, not
  ICMP: an ICMP echo needs a raw socket (root or CAP_NET_RAW) or Linux's ping sockets
  (``net.ipv4.ping_group_range``, closed by default on OpenWrt and Debian), and a TCP connect
  to port 443 is also what a citizen's browser does first.

The budget is split in order: DNS up to a quarter, the portal up to half of what is left, the
connects the rest; a probe that finds no time left is reported as not run (null), never as a
failure. The whole run never takes longer than the budget (tests/bench check 2 s).
"""

from __future__ import annotations

import http.client
import ipaddress
import itertools
import random
import socket
import statistics
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from agent.service_config import ServiceConfig


class ProbeResult(NamedTuple):
    dns: str | None = None
    dns_ms: float | None = None
    portal: str | None = None
    portal_ms: float | None = None
    inet_ms: float | None = None
    loss_pct: float | None = None
    jitter_ms: float | None = None
    wall_ms: float | None = None


def split_host_port(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def dns_query(name: str, qid: int) -> bytes:
    """A recursive A query for ``name`` (RFC 1035, 4.1)."""
    labels = b"".join(
        bytes([len(part)]) + part
        for part in (p.encode("idna") for p in name.rstrip(".").split("."))
    )
    return (
        struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack(">HH", 1, 1)
    )


def _skip_name(msg: bytes, i: int) -> int:
    while i < len(msg):
        n = msg[i]
        if n & 0xC0 == 0xC0:
            return i + 2
        if n == 0:
            return i + 1
        i += n + 1
    raise ValueError("name runs past the message")


def dns_answer(reply: bytes, qid: int) -> tuple[str, list[str]] | None:
    """``(verdict, IPv4 addresses)``: verdict ``ok`` (an answer), ``nxdomain`` or ``fail``
    (another error, or no address); None when the reply is not ours (wrong id, not a
    response, cut short)."""
    if len(reply) < 12:
        return None
    rid, flags, qdcount, ancount = struct.unpack(">HHHH", reply[:8])
    if rid != qid or not flags & 0x8000:
        return None
    rcode = flags & 0xF
    if rcode == 3:
        return "nxdomain", []
    addresses = []
    try:
        i = 12
        for _ in range(qdcount):
            i = _skip_name(reply, i) + 4
        for _ in range(ancount):
            i = _skip_name(reply, i)
            rtype, _cls, _ttl, size = struct.unpack(">HHIH", reply[i : i + 10])
            i += 10
            if rtype == 1 and size == 4:
                addresses.append(socket.inet_ntoa(reply[i : i + 4]))
            i += size
    except (ValueError, struct.error, OSError):
        return None
    return ("ok" if rcode == 0 and addresses else "fail"), addresses


def probe_dns(
    server: str, name: str, timeout: float, rng: random.Random
) -> tuple[str, float, list[str]]:
    """(verdict, ms, addresses) of one lookup of ``name`` through ``server``; verdict
    ``timeout`` when no answer came in ``timeout`` seconds."""
    host, port = split_host_port(server)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    qid = rng.randrange(1 << 16)
    start = time.monotonic()
    deadline = start + timeout
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            # Connected: only the server's replies come in, and an ICMP port unreachable
            # (nothing listens there) ends the wait at once as ConnectionRefusedError.
            s.connect((host, port))
            s.send(dns_query(name, qid))
            while (left := deadline - time.monotonic()) > 0:
                s.settimeout(left)
                answer = dns_answer(s.recv(4096), qid)
                if answer is not None:
                    return answer[0], _ms(time.monotonic() - start), answer[1]
        except TimeoutError:
            pass
        except OSError:  # e.g. ICMP port unreachable: nothing listens there
            return "fail", _ms(time.monotonic() - start), []
    return "timeout", _ms(time.monotonic() - start), []


def portal_verdict(status: int, body: bytes) -> str:
    if status == 204 or (status == 200 and not body.strip()):
        return "open"
    if 300 <= status < 400 or status in {200, 511}:
        return "portal"
    return "broken"


def probe_portal(url: str, address: str | None, timeout: float) -> tuple[str, float]:
    """The portal check against ``address`` (the URL's host as the DNS probe resolved it;
    http.client would otherwise resolve it with getaddrinfo, which takes no timeout)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    start = time.monotonic()
    if address is None:
        return "broken", 0.0
    conn = http.client.HTTPConnection(address, parts.port or 80, timeout=timeout)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request("GET", path, headers={"Host": host, "User-Agent": "titik-agent"})
        resp = conn.getresponse()
        verdict = portal_verdict(resp.status, resp.read(4096))
    except (OSError, http.client.HTTPException):
        verdict = "broken"
    finally:
        conn.close()
    return verdict, _ms(time.monotonic() - start)


def tcp_connect(host: str, port: int, timeout: float) -> float | None:
    """Seconds a TCP connect took, or None when it failed or timed out."""
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return time.monotonic() - start
    except OSError:
        return None


def probe_internet(
    targets: list[str], connects: int, deadline: float, per_try: float
) -> tuple[float | None, float | None, float | None]:
    """(median ms, loss %, jitter ms) over the connects that had time to run."""
    times: list[float] = []
    tried = 0
    for _ in range(connects):
        for target in targets:
            left = deadline - time.monotonic()
            if left <= 0.01:
                break
            host, port = split_host_port(target)
            timeout = min(per_try, left)
            took = tcp_connect(host, port, timeout)
            if took is None and timeout < per_try and time.monotonic() >= deadline - 0.01:
                break  # cut short by the budget: not run, rather than lost
            tried += 1
            if took is not None:
                times.append(took)
    if not tried:
        return None, None, None
    loss = round(100.0 * (tried - len(times)) / tried, 1)
    if not times:
        return None, loss, None
    jitter = (
        _ms(statistics.fmean(abs(a - b) for a, b in itertools.pairwise(times)))
        if len(times) > 1
        else None
    )
    return _ms(statistics.median(times)), loss, jitter


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def run_probes(
    cfg: ServiceConfig, rng: random.Random, clock: Callable[[], float] = time.monotonic
) -> ProbeResult:
    """One run of every probe under ``cfg``, within ``cfg.probe_budget_s``. The DNS probe
    looks up the portal URL's host (or ``cfg.dns_name``), and the portal check connects to
    the address it got."""
    budget = cfg.probe_budget_s
    start = clock()
    deadline = start + budget
    portal_host = urlsplit(cfg.portal_url).hostname or ""
    name = cfg.dns_name or portal_host
    dns, dns_ms, addresses = probe_dns(cfg.dns_server, name, budget / 4, rng)
    address = _literal(portal_host)
    if address is None and name == portal_host and addresses:
        address = addresses[0]
    portal = portal_ms = None
    left = deadline - clock()
    if left > 0.05:
        portal, portal_ms = probe_portal(cfg.portal_url, address, left / 2)
    inet: tuple[float | None, float | None, float | None] = (None, None, None)
    left = deadline - clock()
    if left > 0.05 and cfg.targets:
        inet = probe_internet(list(cfg.targets), cfg.connects, deadline, max(0.05, left / 3))
    return ProbeResult(dns, dns_ms, portal, portal_ms, *inet, wall_ms=_ms(clock() - start))
