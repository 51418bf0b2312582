"""The alert lifecycle engine when a whole city goes down at once: how long its ticks hold
central's writer thread.

Fills a throwaway store with ``--devices`` gateways in 40 regions and an ``offline`` alert
for each (down within 90 s of each other), then times the engine's ticks
(central/alerting/engine.py) as central's writer runs them: taking the alerts in (5,000 a
tick at most, each with its history row, the window check and its incident), the ticks
after, resolving all of them, and an idle tick.

Run: .venv/bin/python bench/bench_alerts.py [--devices 9000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from central.alerting.engine import AlertEngine
from central.config import IncidentsConfig
from central.store.alerting import AlertingStore
from central.store.base import AlertChange, DeviceState, WriteBatch
from central.store.sqlite import SqliteStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=9000)
    n = ap.parse_args().devices
    tmp = Path(tempfile.mkdtemp(prefix="titik-bench-alerts-"))
    store = SqliteStore(tmp / "b.db")
    store.write(
        WriteBatch(
            devices=[
                DeviceState(f"gw-{i:05d}", region=f"R{i % 40}", site=f"s{i // 10}",
                            groups=["city", f"g{i % 20}"])
                for i in range(n)
            ]
        )
    )  # fmt: skip
    t = time.time()
    down = [AlertChange("offline", f"gw-{i:05d}", t - 600 + i * 0.01, "x") for i in range(n)]
    store.write(WriteBatch(alerts=down))
    sent: list[dict[str, Any]] = []
    engine = AlertEngine(AlertingStore(tmp / "b.db"), IncidentsConfig(group_wait_s=0), sent.append)
    print("| tick | seconds | notifications so far |\n| --- | ---: | ---: |")

    def tick(name: str, at: float) -> None:
        t0 = time.perf_counter()
        engine.tick(at)
        print(f"| {name} | {time.perf_counter() - t0:.3f} | {len(sent)} |")

    for k in range(3):
        tick(f"take in ({k + 1})", t + k * 400)
    back = [AlertChange("offline", f"gw-{i:05d}", t + 10, close=True) for i in range(n)]
    store.write(WriteBatch(alerts=back))
    tick("all back", t + 2000)
    tick("idle", t + 2001)
    print(f"\n{n} gateways in 40 regions; command: .venv/bin/python bench/bench_alerts.py "
          f"--devices {n}")  # fmt: skip


if __name__ == "__main__":
    main()
