"""Neighbouring access points from ``iw dev <if> scan dump``: how many per channel, and the
strongest signal among them.

``scan dump`` prints what the kernel already holds from the radio's last scans (hostapd scans
at start for 20/40 MHz coexistence and for automatic channel selection): it starts no scan, so
it never takes the AP off its channel. The BSSIDs and SSIDs in the output stay here unless the
operator turns ``service.share_neighbour_ids`` on.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from agent.collectors.wifi import ParseError, describe

_BSS = re.compile(r"BSS ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5})\s*\(on \S+\).*")
_FREQ = re.compile(r"\s+freq:\s*(\d+)(?:\.\d+)?\s*")
_SIGNAL = re.compile(r"\s+signal:\s*(-?\d+)(?:\.\d+)? dBm\s*")
_SSID = re.compile(r"\s+SSID: ?(.*)")
_PRIMARY = re.compile(r"\s+(?:DS Parameter set: channel|\* primary channel:)\s*(\d+)\s*")


class Bss(NamedTuple):
    bssid: str
    channel: int | None
    signal_dbm: int | None
    ssid: str | None


def channel_of_mhz(mhz: int) -> int | None:
    """IEEE channel number of a centre frequency (2.4, 5 and 6 GHz bands)."""
    if mhz == 2484:
        return 14
    if 2412 <= mhz <= 2472:
        return (mhz - 2407) // 5
    if 5000 <= mhz <= 5900:
        return (mhz - 5000) // 5
    if 5955 <= mhz <= 7115:
        return (mhz - 5950) // 5
    return None


def parse_scan_dump(text: str) -> list[Bss]:
    """Every ``BSS ...`` block: its channel (from ``freq``, else the DS/HT primary channel),
    signal and SSID. A block cut short keeps what it has."""
    found: list[dict[str, object]] = []
    stray = False
    for line in text.splitlines():
        if m := _BSS.fullmatch(line):
            found.append({"bssid": m[1].lower()})
        elif not found:
            stray = stray or bool(line.strip())
        elif m := _FREQ.fullmatch(line):
            found[-1]["channel"] = channel_of_mhz(int(m[1]))
        elif m := _SIGNAL.fullmatch(line):
            found[-1]["signal"] = int(m[1])
        elif (m := _SSID.fullmatch(line)) and "ssid" not in found[-1]:
            found[-1]["ssid"] = m[1].strip() or None
        elif (m := _PRIMARY.fullmatch(line)) and found[-1].get("channel") is None:
            found[-1]["channel"] = int(m[1])
    if not found and stray:
        raise ParseError(f"iw scan dump: unexpected output {describe(text)}")
    return [
        Bss(str(b["bssid"]), b.get("channel"), b.get("signal"), b.get("ssid"))  # type: ignore[arg-type]
        for b in found
    ]


def by_channel(seen: list[Bss], own: set[str] | None = None) -> dict[str, tuple[int, int]]:
    """``{channel: (count, strongest dBm)}`` of the neighbours with a known channel and signal;
    ``own`` are this gateway's own BSSIDs, left out."""
    out: dict[str, tuple[int, int]] = {}
    for b in seen:
        if b.channel is None or b.signal_dbm is None or (own and b.bssid in own):
            continue
        key = str(b.channel)
        n, best = out.get(key, (0, -128))
        out[key] = (n + 1, max(best, -128, min(0, b.signal_dbm)))
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))
