"""The citizen path: the AP acts as a client on its own LAN side and walks what a citizen walks.

1. **dhcp**: a DHCP DISCOVER and REQUEST (RFC 2131) broadcast on the LAN bridge
   (``service.citizen_interface``, ``br-lan`` on OpenWrt), answered by whichever server serves
   the citizens (the AP's own dnsmasq, or one upstream of a bridged AP);
2. **dns**: one A lookup of ``service.dns_name`` (default: ``service.portal_url``'s host)
   through the DNS server of the lease;
3. **portal**: the captive-portal check of :mod:`agent.service.probes` on the address of
   ``portal_url``'s host (what the DNS step got, when it looked that host up):
   ``open``, ``portal`` or ``broken``, passed when it is what ``service.citizen_portal`` says
   a citizen should meet (``open`` by default). When a portal is expected and found, the path
   ends there: a citizen must sign in before the Internet answers;
4. **inet**: an HTTP GET of ``service.citizen_url`` (its host looked up through the lease's
   DNS server), passed on a 2xx answer.

The first step that fails ends the path and is named with its reason (a word from
:data:`REASONS`, never a message: an error text could carry an address). Each step has its
timeout: the DHCP step ``service.citizen_dhcp_timeout_s`` (4 s: dnsmasq, as OpenWrt runs it,
pings an address before it offers it and waits up to 3 s for an answer, so a new citizen's
first lease takes ~3 s there, and so does the probe's), the other three a share each of
``service.citizen_budget_s`` (2 s). A walk never takes longer than the two together.

The client is written here, ~150 lines over a UDP socket, rather than run as busybox
``udhcpc`` (docs/architecture.md, "The citizen path"): the socket is bound to the bridge with
SO_BINDTODEVICE and sends from port 68 to the broadcast address with the BROADCAST flag set, so
the server's answers come back as broadcasts to port 68, which the kernel hands to this socket
and also loops back to a dnsmasq on the AP itself. Nothing is configured: the leased address
is never put on an interface, the AP's own addresses and routes stay as they were, and the
lease is released (DHCPRELEASE, to the server) before the path returns, however it ended. The client's
hardware address is not the AP's: a locally administered one derived from the bridge's own
(stable, so that a lost release leaves at most one stale lease in the pool, and distinct, so
that a bridged AP that got its own address by DHCP never shares, or releases, its own lease).

Privacy: the result holds verdicts and milliseconds only. The lease's address, the server's,
and the probe's hardware address stay in this module's locals.
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import random
import socket
import struct
import time
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import urlsplit

from agent.service.probes import probe_dns, probe_portal

if TYPE_CHECKING:
    from agent.service_config import ServiceConfig

#: The steps, in order.
STEPS = ("dhcp", "dns", "portal", "inet")
#: The share of ``citizen_budget_s`` each step after the lease may take at most (or what is
#: left): the DHCP step has its own timeout, ``citizen_dhcp_timeout_s``.
SHARES = {"dns": 0.25, "portal": 0.35, "inet": 1.0}

#: Why a step failed. dhcp: no server offered an address (none answers, or its pool is
#: exhausted: dnsmasq stays silent then), ``nak`` (the server refused the request), ``no_ack``
#: (an offer, then no answer to the request), ``no_dns`` (a lease without a DNS server),
#: ``error`` (the interface is missing, port 68 is taken, ...; the log says which). dns: the
#: probe's verdicts. portal: the verdict met, when it is not the one expected. inet:
#: ``no_address`` (the URL's host did not resolve), ``timeout``, ``refused``, ``redirect`` (a
#: 3xx: someone answered in the Internet's place), ``status`` (another non-2xx), ``error``.
REASONS = (
    "no_offer",
    "nak",
    "no_ack",
    "no_dns",
    "error",
    "timeout",
    "nxdomain",
    "fail",
    "open",
    "portal",
    "broken",
    "no_address",
    "refused",
    "redirect",
    "status",
)

DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68
MAGIC = b"\x63\x82\x53\x63"
DISCOVER, OFFER, REQUEST, ACK, NAK, RELEASE = 1, 2, 3, 5, 6, 7
OPT_DNS, OPT_REQUESTED, OPT_LEASE, OPT_TYPE, OPT_SERVER, OPT_PARAMS, OPT_CLIENT_ID = (
    6,
    50,
    51,
    53,
    54,
    55,
    61,
)


class CitizenResult(NamedTuple):
    """One walk of the path: ``ms`` holds each step's time, in order, for the steps that ran
    (the failing one included); ``fail`` and ``why`` name the step that stopped it."""

    lease: bool
    ms: list[float]
    portal: str | None = None
    fail: str | None = None
    why: str | None = None
    wall_ms: float = 0.0


class Lease(NamedTuple):
    address: bytes
    server: bytes
    dns: list[str]


class DhcpError(Exception):
    """A DHCP step that failed, with its reason (one of :data:`REASONS`)."""

    def __init__(self, why: str, detail: str = "") -> None:
        super().__init__(detail or why)
        self.why = why


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def probe_mac(interface: str, root: str = "") -> bytes:
    """The probe's hardware address: locally administered, unicast, derived from the
    interface's own (stable across runs), random when that cannot be read."""
    try:
        with open(f"{root}/sys/class/net/{interface}/address", "rb") as f:
            seed = f.read().strip()
        digest = hashlib.sha256(b"titik-citizen-path:" + seed).digest()
    except OSError:
        digest = random.randbytes(6)
    return bytes([(digest[0] | 0x02) & 0xFE]) + digest[1:6]


def dhcp_message(
    kind: int,
    xid: int,
    mac: bytes,
    *,
    ciaddr: bytes = bytes(4),
    requested: bytes | None = None,
    server: bytes | None = None,
) -> bytes:
    """A BOOTREQUEST (RFC 2131, 2) of DHCP message type ``kind``, BROADCAST flag set."""
    head = struct.pack(
        ">BBBBIHH4s4s4s4s16s64s128s",
        1,  # op: BOOTREQUEST
        1,  # htype: Ethernet
        6,  # hlen
        0,  # hops
        xid,
        0,  # secs
        0x8000 if kind != RELEASE else 0,  # BROADCAST: answer us by broadcast, we have no address
        ciaddr,
        bytes(4),
        bytes(4),
        bytes(4),
        mac,
        b"",
        b"",
    )
    opts = bytes([OPT_TYPE, 1, kind, OPT_CLIENT_ID, 7, 1]) + mac
    if requested is not None:
        opts += bytes([OPT_REQUESTED, 4]) + requested
    if server is not None:
        opts += bytes([OPT_SERVER, 4]) + server
    if kind != RELEASE:
        opts += bytes([OPT_PARAMS, 3, 1, 3, OPT_DNS])
    return head + MAGIC + opts + b"\xff"


def dhcp_reply(data: bytes, xid: int, mac: bytes) -> tuple[int, bytes, dict[int, bytes]] | None:
    """``(message type, yiaddr, options)`` of a BOOTREPLY for us, None for anything else."""
    if len(data) < 240 or data[0] != 2 or data[236:240] != MAGIC:
        return None
    if struct.unpack(">I", data[4:8])[0] != xid or data[28:34] != mac:
        return None
    options: dict[int, bytes] = {}
    i = 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(data):
            return None
        size = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2 : i + 2 + size]
        i += 2 + size
    kind = options.get(OPT_TYPE, b"")
    if len(kind) != 1:
        return None
    return kind[0], data[16:20], options


def dhcp_socket(interface: str) -> socket.socket:
    """UDP port 68 on ``interface`` only, allowed to broadcast."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        # All addresses, but of this one interface (SO_BINDTODEVICE): a DHCP answer comes to
        # the broadcast address, which a socket bound to an address would not receive.
        s.bind(("0.0.0.0", DHCP_CLIENT_PORT))  # noqa: S104
    except OSError:
        s.close()
        raise
    return s


def _exchange(
    s: socket.socket, message: bytes, xid: int, mac: bytes, wanted: set[int], deadline: float
) -> tuple[int, bytes, dict[int, bytes]] | None:
    """Broadcast ``message`` (again halfway to the deadline, in case one was lost), and wait
    for a reply of a ``wanted`` type."""
    resend_at: float | None = time.monotonic() + (deadline - time.monotonic()) / 2
    s.sendto(message, ("255.255.255.255", DHCP_SERVER_PORT))
    while (now := time.monotonic()) < deadline:
        if resend_at is not None and now >= resend_at:
            s.sendto(message, ("255.255.255.255", DHCP_SERVER_PORT))
            resend_at = None
        s.settimeout(max(0.001, min(deadline, resend_at or deadline) - now))
        try:
            data = s.recv(2048)
        except TimeoutError:
            continue
        reply = dhcp_reply(data, xid, mac)
        if reply is not None and reply[0] in wanted:
            return reply
    return None


def obtain_lease(s: socket.socket, mac: bytes, xid: int, deadline: float) -> Lease:
    """DISCOVER, OFFER, REQUEST, ACK; raises :class:`DhcpError` with the reason."""
    # Most of the time for the offer: dnsmasq pings an address before it offers it and waits
    # up to 3 s for an answer (PING_WAIT); a REQUEST is answered at once.
    left = deadline - time.monotonic()
    discover = dhcp_message(DISCOVER, xid, mac)
    offer = _exchange(s, discover, xid, mac, {OFFER}, deadline - min(0.5, left / 4))
    if offer is None:
        raise DhcpError("no_offer")
    _, offered, opts = offer
    server = opts.get(OPT_SERVER, b"")[:4]
    if len(server) != 4:
        raise DhcpError("no_offer", "the offer names no server")
    request = dhcp_message(REQUEST, xid, mac, requested=offered, server=server)
    ack = _exchange(s, request, xid, mac, {ACK, NAK}, deadline)
    if ack is None:
        raise DhcpError("no_ack")
    kind, address, opts = ack
    if kind == NAK:
        raise DhcpError("nak")
    raw = opts.get(OPT_DNS, b"")
    dns = [socket.inet_ntoa(raw[i : i + 4]) for i in range(0, len(raw) - len(raw) % 4, 4)]
    return Lease(address, server, dns)


def release(s: socket.socket, mac: bytes, xid: int, lease: Lease) -> None:
    """DHCPRELEASE to the server that gave the lease (RFC 2131, 4.4.6: unicast), by broadcast
    on the interface when it cannot be sent there (the AP has no address or route on the
    bridge's network; dnsmasq takes a broadcast release alike)."""
    message = dhcp_message(RELEASE, xid, mac, ciaddr=lease.address, server=lease.server)
    try:
        s.sendto(message, (socket.inet_ntoa(lease.server), DHCP_SERVER_PORT))
    except OSError:
        s.sendto(message, ("255.255.255.255", DHCP_SERVER_PORT))


def fetch(url: str, address: str, timeout: float) -> str | None:
    """An HTTP GET of ``url`` at ``address``: None on a 2xx, else the reason it failed."""
    parts = urlsplit(url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn = http.client.HTTPConnection(address, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": parts.netloc, "User-Agent": "titik-agent"})
        resp = conn.getresponse()
        resp.read(65536)
        status = resp.status
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except (OSError, http.client.HTTPException):
        return "error"
    finally:
        conn.close()
    if 200 <= status < 300:
        return None
    return "redirect" if 300 <= status < 400 else "status"


class _Walk:
    """The bookkeeping of one walk: each step's time, what was met, the step that failed."""

    def __init__(self) -> None:
        self.start = self.step_start = self.deadline = time.monotonic()
        self.budget = 0.0
        self.ms: list[float] = []
        self.lease = False
        self.portal: str | None = None

    def leased(self, budget: float) -> None:
        """The lease is there: the steps after it share ``budget`` from now."""
        self.lease = True
        self.budget = budget
        self.deadline = time.monotonic() + budget

    def timeout(self, step: str) -> float:
        """Start ``step``: its timeout, its share of the budget or what is left of it."""
        self.step_start = time.monotonic()
        return max(0.0, min(SHARES[step] * self.budget, self.deadline - self.step_start))

    def done(self) -> None:
        self.ms.append(_ms(time.monotonic() - self.step_start))

    def result(self, fail: str | None = None, why: str | None = None) -> CitizenResult:
        wall = _ms(time.monotonic() - self.start)
        return CitizenResult(self.lease, self.ms, self.portal, fail, why, wall)


def walk(
    interface: str,
    portal_url: str,
    fetch_url: str,
    *,
    expect_portal: str = "open",
    dns_name: str | None = None,
    dhcp_timeout: float = 4.0,
    budget: float = 2.0,
    rng: random.Random | None = None,
    mac: bytes | None = None,
    log: list[str] | None = None,
) -> CitizenResult:
    """One walk of the citizen path on ``interface`` (see the module's docstring): the DHCP
    step within ``dhcp_timeout`` seconds, the others within ``budget``. ``log`` gets the
    reason of a local error (``error``) in words, for the agent's log only."""
    rng = rng or random.Random()
    mac = mac or probe_mac(interface)
    xid = rng.getrandbits(32)
    w = _Walk()
    deadline = w.start + dhcp_timeout
    try:
        s = dhcp_socket(interface)
    except OSError as exc:
        if log is not None:
            log.append(f"{interface}: {exc.strerror or exc}")
        w.done()
        return w.result("dhcp", "error")
    with s:
        try:
            lease = obtain_lease(s, mac, xid, deadline)
        except DhcpError as exc:
            w.done()
            return w.result("dhcp", exc.why)
        except OSError as exc:
            if log is not None:
                log.append(f"{interface}: {exc.strerror or exc}")
            w.done()
            return w.result("dhcp", "error")
        w.done()
        w.leased(budget)
        try:
            if not lease.dns:
                return w.result("dhcp", "no_dns")
            server = f"{lease.dns[0]}:53"
            urls = (portal_url, fetch_url)
            return _after_lease(w, server, urls, expect_portal, dns_name, rng)
        finally:
            try:
                release(s, mac, xid, lease)
            except OSError as exc:
                if log is not None:
                    log.append(f"release: {exc.strerror or exc}")


def _resolve(
    server: str, host: str, known: tuple[str, list[str]], timeout: float, rng: random.Random
) -> str | None:
    """``host``'s address: itself when it is one, from ``known`` (a name the DNS step looked
    up, and what it got) when it is that name, else looked up through ``server`` now."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host == known[0]:
        return known[1][0] if known[1] else None
    verdict, _, addresses = probe_dns(server, host, timeout, rng)
    return addresses[0] if verdict == "ok" else None


def _after_lease(
    w: _Walk,
    server: str,
    urls: tuple[str, str],
    expect_portal: str,
    name: str | None,
    rng: random.Random,
) -> CitizenResult:
    """Steps dns, portal and inet through the lease's DNS ``server``: the DNS step looks up
    ``name``, or the portal URL's host when there is no name."""
    portal_url, fetch_url = urls
    portal_host = urlsplit(portal_url).hostname or ""
    name = name or portal_host
    verdict, _, addresses = probe_dns(server, name, w.timeout("dns"), rng)
    w.done()
    if verdict != "ok":
        return w.result("dns", verdict)
    known = (name, addresses)
    timeout = w.timeout("portal")
    address = _resolve(server, portal_host, known, timeout / 2, rng)
    if address is None:  # the check's host has no address: neither portal nor Internet
        w.portal = "broken"
    else:
        left = max(0.001, w.step_start + timeout - time.monotonic())
        w.portal, _ = probe_portal(portal_url, address, left)
    w.done()
    if w.portal != expect_portal:
        return w.result("portal", w.portal)
    if w.portal == "portal":  # expected and met: a citizen signs in before going further
        return w.result()
    timeout = w.timeout("inet")
    address = _resolve(server, urlsplit(fetch_url).hostname or "", known, timeout / 3, rng)
    if address is None:
        w.done()
        return w.result("inet", "no_address")
    why = fetch(fetch_url, address, max(0.001, w.deadline - time.monotonic()))
    w.done()
    return w.result("inet", why) if why else w.result()


def run_citizen_path(
    cfg: ServiceConfig, rng: random.Random, log: list[str] | None = None
) -> CitizenResult:
    """One walk under ``cfg``'s ``citizen_*`` settings."""
    return walk(
        cfg.citizen_interface,
        cfg.portal_url,
        cfg.citizen_url,
        expect_portal=cfg.citizen_portal,
        dns_name=cfg.dns_name,
        dhcp_timeout=cfg.citizen_dhcp_timeout_s,
        budget=cfg.citizen_budget_s,
        rng=rng,
        log=log,
    )
