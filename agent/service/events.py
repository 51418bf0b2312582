"""Association, authentication and DHCP events from hostapd's and dnsmasq's log lines.

- OpenWrt: ``logread`` (ubox; each line ``<ctime> <facility>.<level> <program>: <message>``,
  the format of ``read_cb`` in openwrt/ubox ``log/logread.c``);
- Raspberry Pi OS and other systemd systems: ``journalctl -o short-unix`` for the ``hostapd``,
  ``dnsmasq-dhcp`` and ``dnsmasq`` identifiers since the last read.

Counted per AP interface (hostapd names it first in each message) over the report's interval:
``AP-STA-CONNECTED`` (an association), ``AP-STA-DISCONNECTED`` (a disassociation) and
authentication failures (``AP-STA-POSSIBLE-PSK-MISMATCH``, an 802.1X ``authentication failed``,
``CTRL-EVENT-EAP-FAILURE``). dnsmasq's ``DHCPACK``, ``DHCPNAK`` and ``no address available``
(the pool is exhausted) are counted for the whole AP: dnsmasq serves the bridge, not an SSID.
The addresses and names in the lines are never kept.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

# "Wed Oct 25 17:26:50 2023 daemon.notice hostapd: phy0-ap0: AP-STA-CONNECTED ..."
_LOGREAD = re.compile(r"(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}) \S+ ([\w.-]+)(?:\[\d+\])?: (.*)")
# "1698254810.123456 host hostapd[812]: wlan0: AP-STA-CONNECTED ..."
_JOURNAL = re.compile(r"(\d+(?:\.\d+)?) \S+ ([\w.-]+)(?:\[\d+\])?: (.*)")
_HOSTAPD = re.compile(r"([A-Za-z0-9._-]+): (.*)")
_AUTH_FAIL = ("AP-STA-POSSIBLE-PSK-MISMATCH", "authentication failed", "CTRL-EVENT-EAP-FAILURE")


@dataclass
class LogCounts:
    """Events of one interval. ``by_iface``: [associations, disassociations, auth failures]."""

    by_iface: dict[str, list[int]] = field(default_factory=dict)
    ack: int = 0
    nak: int = 0
    no_address: int = 0
    newest: float = 0.0  # the newest line's time, where the next read starts

    def iface(self, name: str) -> list[int]:
        return self.by_iface.setdefault(name, [0, 0, 0])


def _logread_time(stamp: str) -> float | None:
    try:
        return time.mktime(time.strptime(stamp, "%a %b %d %H:%M:%S %Y"))
    except (ValueError, OverflowError):
        return None


def _count(counts: LogCounts, program: str, message: str) -> None:
    if program == "hostapd":
        m = _HOSTAPD.fullmatch(message)
        if m is None:
            return
        iface, rest = m[1], m[2]
        if rest.startswith("AP-STA-CONNECTED "):
            counts.iface(iface)[0] += 1
        elif rest.startswith("AP-STA-DISCONNECTED "):
            counts.iface(iface)[1] += 1
        elif any(marker in rest for marker in _AUTH_FAIL):
            counts.iface(iface)[2] += 1
    elif program in ("dnsmasq-dhcp", "dnsmasq"):
        if message.startswith("DHCPACK("):
            counts.ack += 1
        elif message.startswith("DHCPNAK("):
            counts.nak += 1
        elif message.startswith("DHCPDISCOVER(") and message.endswith("no address available"):
            counts.no_address += 1


def parse_log(text: str, since: float, *, journal: bool, ignore: tuple[str, ...] = ()) -> LogCounts:
    """Events in the lines of ``text`` newer than ``since`` (UNIX seconds). logread's times
    are whole seconds in local time: a line in the same second as ``since`` is taken as
    already counted. A line that holds one of ``ignore`` (the citizen path's own hardware
    address: its lease is no citizen's) is not counted."""
    counts = LogCounts(newest=since)
    pattern = _JOURNAL if journal else _LOGREAD
    for line in text.splitlines():
        if "hostapd" not in line and "dnsmasq" not in line:
            continue
        m = pattern.fullmatch(line.rstrip())
        if m is None:
            continue
        ts = float(m[1]) if journal else _logread_time(m[1])
        if ts is None or ts <= since:
            continue
        counts.newest = max(counts.newest, ts)
        if ignore and any(word in m[3] for word in ignore):
            continue
        _count(counts, m[2], m[3])
    return counts


def logread_argv() -> list[str]:
    return ["logread"]


def journal_argv(since: float) -> list[str]:
    return [
        "journalctl",
        "--no-pager",
        "-q",
        "-o",
        "short-unix",
        f"--since=@{int(since)}",
        "-t",
        "hostapd",
        "-t",
        "dnsmasq-dhcp",
        "-t",
        "dnsmasq",
    ]
