"""Client quality per SSID from the stations' own counters, aggregates only.

- ``iw dev <if> station dump`` (any Linux; OpenWrt ships iw too): signal, the last frame's
  tx/rx bitrate, and per-station counters of packets sent, retries and failures;
- ``ubus call hostapd.<if> get_clients`` (OpenWrt, when iw is missing): signal and rates
  (kbit/s), no retry counters.

Retry and failure ratios cover the interval: each station's counters are compared with the
previous report's (kept in memory by MAC, on the gateway only); a station new since then counts
with everything since it associated. Only the histogram, medians and ratios leave this module.
"""

from __future__ import annotations

import json
import re
import statistics
from bisect import bisect_right
from collections.abc import Mapping
from typing import NamedTuple

from agent.collectors.wifi import ParseError, describe

#: Kept in step with agent.protocol.service.RSSI_EDGES (a test checks they are equal), so this
#: module does not import the report's models.
RSSI_EDGES = (-80, -70, -60, -50)


class Station(NamedTuple):
    signal_dbm: int | None
    tx_mbps: float | None
    rx_mbps: float | None
    tx_packets: int | None
    tx_retries: int | None
    tx_failed: int | None


class Quality(NamedTuple):
    """What one SSID's stations add up to (the fields of ``SsidQuality`` it can fill)."""

    sta: int
    rssi: list[int]
    tx_mbps: float | None
    rx_mbps: float | None
    retry_pct: float | None
    fail_pct: float | None


_HEADER = re.compile(r"Station ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}) \(on \S+\)\s*")
_FIELD = re.compile(r"\s+([a-z][a-z /]*[a-z]):\s*(.*?)\s*")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_KEYS = {
    "signal": "signal",
    "tx bitrate": "tx",
    "rx bitrate": "rx",
    "tx packets": "packets",
    "tx retries": "retries",
    "tx failed": "failed",
    "authorized": "authorized",
}


def _first_number(text: str) -> float | None:
    m = _NUMBER.match(text)
    return float(m[0]) if m else None


def parse_station_dump(text: str) -> dict[str, Station]:
    """Authorized stations of ``iw dev <if> station dump`` by MAC (lower case). ``signal``
    is the first number of its line (``-57 [-62, -59] dBm`` is -57); a value out of any
    plausible range (``75 dBm`` from a driver bug) is left out."""
    raw: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    stray = False
    for line in text.splitlines():
        if m := _HEADER.fullmatch(line):
            current = raw.setdefault(m[1].lower(), {})
        elif current is not None and (fm := _FIELD.fullmatch(line)) and fm[1] in _KEYS:
            current[_KEYS[fm[1]]] = fm[2]
        elif current is None and line.strip():
            stray = True
    if not raw and stray:
        raise ParseError(f"iw station dump: unexpected output {describe(text)}")
    out = {}
    for mac, f in raw.items():
        if f.get("authorized") == "no":
            continue
        signal = _first_number(f.get("signal", ""))
        out[mac] = Station(
            int(signal) if signal is not None and -128 <= signal < 0 else None,
            _first_number(f.get("tx", "")),
            _first_number(f.get("rx", "")),
            *(_count(f.get(k)) for k in ("packets", "retries", "failed")),
        )
    return out


def _count(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def parse_ubus_clients(text: str) -> dict[str, Station]:
    """Authorized stations of ``ubus call hostapd.<if> get_clients`` by MAC: ``signal`` and
    ``rate`` (kbit/s); hostapd's ubus object has no retry counters."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"ubus get_clients: invalid JSON at char {exc.pos}") from exc
    clients = doc.get("clients") if isinstance(doc, dict) else None
    if not isinstance(clients, dict):
        raise ParseError("ubus get_clients: no 'clients' object")
    out = {}
    for mac, info in clients.items():
        if not isinstance(info, dict) or info.get("authorized") is False:
            continue
        signal = info.get("signal")
        rate = info.get("rate")
        if not isinstance(rate, dict):
            rate = {}
        out[str(mac).lower()] = Station(
            signal if isinstance(signal, int) and -128 <= signal < 0 else None,
            _mbps(rate.get("tx")),
            _mbps(rate.get("rx")),
            None,
            None,
            None,
        )
    return out


def _mbps(kbps: object) -> float | None:
    if isinstance(kbps, int) and not isinstance(kbps, bool) and kbps >= 0:
        return kbps / 1000
    return None


def rssi_histogram(signals: list[int]) -> list[int]:
    hist = [0] * (len(RSSI_EDGES) + 1)
    for s in signals:
        hist[bisect_right(RSSI_EDGES, s)] += 1
    return hist


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def aggregate(now: Mapping[str, Station], before: Mapping[str, Station] | None) -> Quality:
    """One SSID's quality from its stations now and at the previous report."""
    signals = [s.signal_dbm for s in now.values() if s.signal_dbm is not None]
    sent = retries = failed = 0
    counted = False
    for mac, s in now.items():
        if s.tx_packets is None or s.tx_retries is None or s.tx_failed is None:
            continue
        old = (before or {}).get(mac)
        d = [s.tx_packets, s.tx_retries, s.tx_failed]
        if old is not None and old.tx_packets is not None and old.tx_retries is not None:
            prev = [old.tx_packets, old.tx_retries, old.tx_failed or 0]
            if all(a >= b for a, b in zip(d, prev, strict=True)):  # else: counters reset
                d = [a - b for a, b in zip(d, prev, strict=True)]
        sent, retries, failed = sent + d[0], retries + d[1], failed + d[2]
        counted = True
    return Quality(
        sta=len(now),
        rssi=rssi_histogram(signals),
        tx_mbps=_median([s.tx_mbps for s in now.values() if s.tx_mbps is not None]),
        rx_mbps=_median([s.rx_mbps for s in now.values() if s.rx_mbps is not None]),
        retry_pct=_ratio(retries, sent) if counted else None,
        fail_pct=_ratio(failed, sent + failed) if counted else None,
    )


def _ratio(part: int, whole: int) -> float | None:
    return round(min(100.0, 100.0 * part / whole), 1) if whole > 0 else None
