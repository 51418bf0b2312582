"""Network: per-interface byte counters, rates, errors and link state; WAN up or down."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from agent.collectors.base import Collector, Context, LinuxHost, SimHost, paths_under
from agent.collectors.files import read_file
from agent.protocol import Iface, Net

RTF_UP = 0x0001


class IfaceCounters(NamedTuple):
    rx: int
    tx: int
    err: int


def parse_default_route(text: str) -> str | None:
    """``/proc/net/route`` -> the interface of the IPv4 default route, or None.

    Columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ... in hex.
    The route with the lowest metric wins, as the kernel would choose.
    """
    best: tuple[int, str] | None = None
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue  # truncated line
        try:
            dest, flags, metric, mask = (
                int(cols[1], 16),
                int(cols[3], 16),
                int(cols[6]),
                int(cols[7], 16),
            )
        except ValueError:
            continue
        if dest == 0 and mask == 0 and flags & RTF_UP and (best is None or metric < best[0]):
            best = (metric, cols[0])
    return None if best is None else best[1]


def rate(prev: int | None, cur: int, dt: float) -> int | None:
    """Bytes/s; None on the first sample, a zero interval, or a counter reset."""
    if prev is None or dt <= 0 or cur < prev:
        return None
    return round((cur - prev) / dt)


def select_ifaces(available: Iterable[str], wanted: list[str]) -> list[str]:
    names = sorted(available)
    if wanted:
        return [n for n in names if n in wanted]
    return [n for n in names if n != "lo"]


def build_net(
    counters: Mapping[str, IfaceCounters],
    link_up: Mapping[str, bool],
    prev: Mapping[str, IfaceCounters],
    dt: float,
    wan: str | None,
    wan_link_up: bool,
) -> Net:
    """Pure: assemble the ``net`` section from two readings ``dt`` seconds apart."""
    ifaces = {}
    for name, c in counters.items():
        if not link_up.get(name, True) and c == (0, 0, 0):
            continue  # an unused port or virtual device: nothing to say, and bytes cost
        p = prev.get(name)
        ifaces[name] = Iface(
            up=link_up.get(name),
            rx=c.rx,
            tx=c.tx,
            rx_bps=rate(p.rx if p else None, c.rx, dt),
            tx_bps=rate(p.tx if p else None, c.tx, dt),
            err=c.err,
        )
    return Net(wan_up=wan is not None and wan_link_up, wan=wan, ifaces=ifaces)


def parse_net_dev(data: bytes) -> dict[str, IfaceCounters]:
    """``/proc/net/dev`` -> byte and error counters per interface.

    Two header lines, then per interface ``name: rx_bytes rx_packets rx_errs rx_drop ...
    tx_bytes tx_packets tx_errs ...`` (16 numbers). Older 2.6 kernels printed ``%6s:%8lu``,
    which glues a count of eight digits or more to the colon (``eth0:123456789``). An entry cut
    short, as a read racing a device's removal can be, is skipped.

    The text is split in one go rather than line by line: a line's length grows with its
    counters, so each line would be an object whose size class changes over the months, while
    the words stay in one size class; the agent's RSS stays flat only if a sample's
    allocations do not drift (docs/architecture.md, "Memory on the gateway").
    """
    words = data.split()
    out: dict[str, IfaceCounters] = {}
    for i, word in enumerate(words):
        colon = word.find(b":")
        if colon < 0:
            continue
        if colon + 1 < len(word):  # glued: the first number is part of this word
            fields = [word[colon + 1 :], *words[i + 1 : i + 16]]
        else:
            fields = words[i + 1 : i + 17]
        if len(fields) < 16 or not all(f.isdigit() for f in fields):
            continue  # cut short: the end of the text, or the next entry's name, came first
        err = int(fields[2]) + int(fields[10])
        out[word[:colon].decode(errors="replace")] = IfaceCounters(
            int(fields[0]), int(fields[8]), err
        )
    return out


def read_counters(net_dev: str, wanted: list[str]) -> dict[str, IfaceCounters]:
    """Byte and error counters, from ``net_dev`` (``/proc/net/dev``), of the interfaces to
    report (all but ``lo`` by default).

    Not psutil's ``net_io_counters``: it reads the file as text, line by line, and builds two
    tuples per interface. Not its ``nowrap`` either, which keeps an entry for every interface
    name ever seen (PPP and VPN links come and go). The kernel's counters are 64-bit; one that
    goes back (a link re-created) gives a null rate.
    """
    every = parse_net_dev(read_file(net_dev))
    return {n: every[n] for n in select_ifaces(every, wanted)}


#: ``operstate`` values that mean the link passes traffic (the kernel's IFF_RUNNING, which is
#: what psutil reports as ``isup``); "unknown" is what loopback, tun and many drivers say.
RUNNING_STATES = (b"up", b"unknown")


def parse_operstate(data: bytes) -> bool:
    """``/sys/class/net/<if>/operstate`` (up, down, dormant, ...) -> whether it is running."""
    return data.strip() in RUNNING_STATES


def read_link_up(net_class: str, names: Iterable[str]) -> dict[str, bool]:
    """Link state of ``names`` from sysfs. An interface with no ``operstate`` (gone since it
    was listed) is left out. One small read per interface, where ``psutil.net_if_stats()``
    re-reads /proc/net/dev and makes four ioctls per interface."""
    up: dict[str, bool] = {}
    for name in names:
        try:
            up[name] = parse_operstate(read_file(f"{net_class}/{name}/operstate"))
        except OSError:
            continue
    return up


def read_default_route(route_file: str, memo: dict[str, Any]) -> str | None:
    """The WAN interface from ``route_file``. The table rarely changes, so the text is parsed
    only when it differs from the last reading (kept in ``memo``)."""
    try:
        raw = read_file(route_file)
    except OSError:
        return None
    last = memo.get("route")
    if last is not None and last[0] == raw:
        wan: str | None = last[1]
        return wan
    wan = parse_default_route(raw.decode(errors="replace"))
    memo["route"] = (raw, wan)
    return wan


def collect(host: LinuxHost, ctx: Context) -> Net:
    """The reading on any Linux."""
    net_dev, route, net_class = paths_under(
        ctx, "network.paths", host.root, "proc/net/dev", "proc/net/route", "sys/class/net"
    )
    counters = read_counters(net_dev, host.interfaces)
    prev, prev_mono = ctx.memo.get("net", ({}, ctx.mono))
    ctx.memo["net"] = (counters, ctx.mono)
    wan = read_default_route(route, ctx.memo)
    names = [*counters, wan] if wan and wan not in counters else counters
    link_up = read_link_up(net_class, names)
    return build_net(
        counters, link_up, prev, ctx.mono - prev_mono, wan, link_up.get(wan or "", False)
    )


def simulate(sim: SimHost, ctx: Context) -> Net:
    """A WAN and a LAN bridge whose traffic follows the site's day."""
    prev = ctx.memo.get("net")
    dt = ctx.mono - prev[0] if prev else 0.0
    bps_rx = 2_000_000 * sim.busy(ctx.wall) * sim.rng.uniform(0.5, 1.5)
    bps_tx = bps_rx / 6
    rx, tx = sim.count_bytes(bps_rx * dt, bps_tx * dt)
    ctx.memo["net"] = (ctx.mono,)
    have_rate = prev is not None and dt > 0
    wan = Iface(
        up=True,
        rx=rx,
        tx=tx,
        rx_bps=round(bps_rx) if have_rate else None,
        tx_bps=round(bps_tx) if have_rate else None,
        err=0,
    )
    lan = Iface(up=True, rx=tx, tx=rx, rx_bps=wan.tx_bps, tx_bps=wan.rx_bps, err=0)
    return Net(wan_up=True, wan="wan", ifaces={"br-lan": lan, "wan": wan})


COLLECTOR = Collector("net", {"linux": collect, "simulated": simulate})
