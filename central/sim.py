"""A simulated fleet in one process, for the demo: many real agents on the simulated platform.

Each gateway is a real :class:`agent.core.Agent` (the same publishing, buffering and
config code paths as a gateway), driven from one thread: every pass ticks each agent and
runs one non-blocking step of its MQTT connection. Gateways are spread over Jakarta's
administrative cities with plausible positions, sites and groups.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.state import AgentState

log = logging.getLogger("titik.sim")


@dataclass(frozen=True)
class Region:
    name: str
    lat: float
    lon: float
    weight: int  # share of the access points


#: Jakarta's administrative cities, with their approximate centres.
REGIONS = (
    Region("Jakarta Pusat", -6.182, 106.834, 3),
    Region("Jakarta Utara", -6.138, 106.883, 3),
    Region("Jakarta Barat", -6.168, 106.759, 4),
    Region("Jakarta Selatan", -6.261, 106.810, 4),
    Region("Jakarta Timur", -6.225, 106.900, 5),
    Region("Kepulauan Seribu", -5.750, 106.600, 1),
)
SITES = ("Taman", "Pasar", "Halte TransJakarta", "Puskesmas", "Kantor Kelurahan", "RPTRA")


def gateway_plan(n: int, seed: int = 1) -> list[dict[str, object]]:
    """Pure: ``n`` gateways' device sections, deterministic for a seed."""
    rng = random.Random(seed)
    regions = [r for r in REGIONS for _ in range(r.weight)]
    plan = []
    for i in range(n):
        r = rng.choice(regions)
        spread = 0.01 if r.name == "Kepulauan Seribu" else 0.035
        slug = r.name.lower().replace(" ", "-")
        plan.append(
            {
                "id": f"gw-sim-{i:05d}",
                "site": f"{rng.choice(SITES)} {r.name.split()[-1]} {i % 97 + 1}",
                "region": r.name,
                "lat": round(r.lat + rng.uniform(-spread, spread), 5),
                "lon": round(r.lon + rng.uniform(-spread, spread), 5),
                "groups": [slug, f"wave-{i % 4 + 1}"],
            }
        )
    return plan


class Fleet:
    def __init__(
        self, n: int, host: str, port: int, workdir: Path, *, interval_s: float = 10.0
    ) -> None:
        self.agents: list[Agent] = []
        for device in gateway_plan(n):
            state = workdir / str(device["id"])
            cfg = parse_config(
                {
                    "device": device,
                    "mqtt": {"host": host, "port": port, "reconnect_max_s": 30},
                    "telemetry": {"interval_s": interval_s},
                    "state": {"dir": str(state)},
                    "platform": {"kind": "simulated", "root": str(state / "root")},
                    "buffer": {"replay_jitter_s": 5},
                },
                {},
            )
            platform = SimulatedPlatform(str(device["id"]))
            self.agents.append(Agent(cfg, platform, AgentState(state), open_spool(cfg, state)))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """Drive every agent until :meth:`stop`; a short sleep when nothing is due."""
        while not self._stop.is_set():
            soonest = 1.0
            for agent in self.agents:
                soonest = min(soonest, agent.tick())
                agent.link.step(0)
            self._stop.wait(min(0.05, max(0.0, soonest)))
        for agent in self.agents:
            agent.shutdown("demo stopped")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="titik-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def connected(self) -> int:
        return sum(a.link.connected for a in self.agents)


def wait_connected(fleet: Fleet, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while fleet.connected < len(fleet.agents) and time.monotonic() < deadline:
        time.sleep(0.2)
    return fleet.connected
