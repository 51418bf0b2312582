"""Service reports for central's tests (issue 20): a healthy one and the simulator's three
faults, as dicts in the wire format (agent/protocol/service.py)."""

from __future__ import annotations

import copy
import time
from typing import Any

HEALTHY: dict[str, Any] = {
    "v": 1,
    "ts": 1.7e9,
    "interval_s": 300,
    "radios": {
        "phy0-ap0": {
            "channel": 6,
            "width_mhz": 20,
            "txpower_dbm": 20.0,
            "noise_dbm": -92,
            "busy_pct": 31.5,
            "nbr": {"6": [3, -61], "11": [1, -80]},
        },
        "phy1-ap0": {
            "channel": 36,
            "width_mhz": 80,
            "txpower_dbm": 23.0,
            "noise_dbm": -95,
            "busy_pct": 12.0,
        },
    },
    "ssids": {
        "phy0-ap0": {
            "sta": 12,
            "rssi": [0, 1, 4, 5, 2],
            "tx_mbps": 72.2,
            "rx_mbps": 54.0,
            "retry_pct": 6.1,
            "fail_pct": 0.4,
            "ev": [5, 3, 0],
        },
        "phy1-ap0": {"sta": 20, "rssi": [0, 2, 6, 8, 4], "tx_mbps": 433.3, "rx_mbps": 300.0},
    },
    "dhcp": {"ack": 14, "nak": 0, "no_address": 0},
    "probes": {
        "dns": "ok",
        "dns_ms": 8.5,
        "portal": "open",
        "portal_ms": 41.0,
        "inet_ms": 22.0,
        "loss_pct": 0.0,
        "jitter_ms": 2.1,
        "broker_ms": 35.0,
    },
}


def report(fault: str | None = None, *, ts: float | None = None) -> dict[str, Any]:
    """A report; ``fault``: ``busy_channel``, ``dhcp_exhausted`` or ``dead_portal``."""
    doc = copy.deepcopy(HEALTHY)
    doc["ts"] = time.time() if ts is None else ts
    if fault == "busy_channel":
        doc["radios"]["phy0-ap0"]["busy_pct"] = 94.0
        doc["ssids"]["phy0-ap0"]["retry_pct"] = 38.0
    elif fault == "dhcp_exhausted":
        doc["dhcp"] = {"ack": 0, "nak": 0, "no_address": 23}
    elif fault == "dead_portal":
        doc["probes"]["portal"] = "broken"
        doc["probes"]["portal_ms"] = 2000.0
    elif fault is not None:
        raise ValueError(fault)
    return doc
