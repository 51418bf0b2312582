"""Seeded, plausible synthetic readings for demos, tests and the fleet simulator.

No I/O at all: thousands of these run in one process. Client counts follow a daily curve
(quiet at night, busy around midday and evening) with per-gateway size and noise.
"""

from __future__ import annotations

import hashlib
import math
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.platforms.base import Platform
from agent.protocol import Clients, Health, Iface, Net

if TYPE_CHECKING:
    from agent.collectors import Context

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

    def health(self, ctx: Context) -> Health:
        r = self.rng
        busy = daily_curve(ctx.wall)
        load = round(0.2 + 1.5 * busy * r.uniform(0.7, 1.3), 2)
        return Health(
            cpu_pct=round(min(100.0, 8 + 55 * busy * r.uniform(0.6, 1.4)), 1),
            load1=load,
            load5=round(load * 0.9, 2),
            load15=round(load * 0.8, 2),
            mem_used_pct=round(35 + 25 * busy + r.uniform(-3, 3), 1),
            mem_avail_b=int(256 * 2**20 * (0.6 - 0.25 * busy)),
            disk_used_pct=round(22 + r.uniform(0, 0.5), 1),
            temp_c=round(44 + 18 * busy + r.uniform(-1.5, 1.5), 1),
            uptime_s=max(0, int(ctx.wall - self.boot_wall)),
        )

    def network(self, ctx: Context) -> Net:
        prev = ctx.memo.get("net")
        dt = ctx.mono - prev[0] if prev else 0.0
        bps_rx = 2_000_000 * daily_curve(ctx.wall) * self.rng.uniform(0.5, 1.5)
        bps_tx = bps_rx / 6
        self._rx += int(bps_rx * dt)
        self._tx += int(bps_tx * dt)
        ctx.memo["net"] = (ctx.mono,)
        have_rate = prev is not None and dt > 0
        wan = Iface(
            up=True,
            rx=self._rx,
            tx=self._tx,
            rx_bps=round(bps_rx) if have_rate else None,
            tx_bps=round(bps_tx) if have_rate else None,
            err=0,
        )
        lan = Iface(up=True, rx=self._tx, tx=self._rx, rx_bps=wan.tx_bps, tx_bps=wan.rx_bps, err=0)
        return Net(wan_up=True, wan="wan", ifaces={"br-lan": lan, "wan": wan})

    def clients(self, ctx: Context) -> Clients:
        expected = self.capacity * daily_curve(ctx.wall)
        total = max(0, round(self.rng.gauss(expected, math.sqrt(expected) + 0.5)))
        on_5ghz = round(total * 0.6)
        by_iface = {RADIOS[0]: total - on_5ghz, RADIOS[1]: on_5ghz}
        return Clients(total=total, by_iface=by_iface, leases=total + self.rng.randint(0, 3))

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
