"""A seeded, synthetic gateway for demos, tests and the fleet simulator.

No I/O at all: thousands of these run in one process. It holds what the collectors' simulated
readings draw on (:class:`agent.collectors.base.SimHost`): a seeded generator, the site's size
and a daily curve (quiet at night, busy around midday and evening).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from pathlib import Path
from typing import Any

from agent.platforms.base import Platform

RADIOS = ("phy0-ap0", "phy1-ap0")
TZ_OFFSET_S = 7 * 3600  # the demo city runs on WIB (UTC+7)


def daily_curve(wall: float) -> float:
    """0.05 at 04:00 local, about 1.0 at 12:30 and 20:00; smooth in between."""
    hour = ((wall + TZ_OFFSET_S) % 86400) / 3600
    midday = math.exp(-(((hour - 12.5) / 2.5) ** 2))
    evening = math.exp(-(((hour - 20.0) / 2.0) ** 2))
    return max(0.05, 0.9 * midday + evening)


class SimulatedPlatform(Platform):
    name = "simulated"

    def __init__(self, seed: int | str = 0, boot_wall: float | None = None) -> None:
        digest = hashlib.sha256(str(seed).encode()).digest()
        self.rng = random.Random(digest)
        self.mac = "02" + digest[:5].hex()  # locally administered
        self.capacity = self.rng.randint(20, 120)  # peak clients of this site
        self.boot_wall = (
            time.time() - self.rng.randint(600, 30 * 86400) if boot_wall is None else boot_wall
        )
        self._boot_id = "-".join(
            digest[a:b].hex() for a, b in ((5, 9), (9, 11), (11, 13), (13, 15), (15, 21))
        )
        self._rx = self.rng.randint(10**6, 10**9)
        self._tx = self.rng.randint(10**6, 10**9)
        #: A fault for the service report to show (agent.service.simulated.FAULTS): titik-sim
        #: plants them for the dashboard to find.
        self.service_fault: str | None = None

    # -- what the collectors' simulated readings draw on (agent.collectors.base.SimHost)
    radios = RADIOS

    def busy(self, wall: float) -> float:
        return daily_curve(wall)

    def count_bytes(self, rx: float, tx: float) -> tuple[int, int]:
        self._rx += int(rx)
        self._tx += int(tx)
        return self._rx, self._tx

    def primary_mac(self) -> str | None:
        return self.mac

    def boot_id(self) -> str | None:
        return self._boot_id

    def model(self) -> str | None:
        return "Simulated gateway"

    def state_dir(self) -> Path:
        return Path("/var/lib/titik")

    # -- actions: nothing real happens; the results look like a healthy gateway's
    def restart_wifi(self) -> dict[str, Any]:
        return {"restarted": "wifi (simulated)"}

    def kick_client(self, mac: str, ban_s: int) -> dict[str, Any]:
        return {"kicked": True, "iface": RADIOS[0]}

    def reboot(self) -> None:
        self.boot_wall = time.time()
        self._boot_id = hashlib.sha256(self._boot_id.encode()).hexdigest()[:36]

    def diagnostics(self, targets: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ping": {
                "target": targets["ping"],
                "ok": True,
                "rtt_ms": round(self.rng.uniform(5, 40), 1),
            },
            "dns": {"name": targets["dns"], "ok": True, "addresses": 1, "ms": 3.0},
            "resolvers": ["192.0.2.53"],
            "default_route": "wan",
            "radios": dict.fromkeys(RADIOS, True),
        }
        if "http" in targets:
            out["http"] = {"url": targets["http"], "ok": True, "status": 204, "ms": 42.0}
        return out
