"""The alert lifecycle engine when a whole city goes down at once: how long its ticks hold
central's writer thread.

Fills a throwaway store with ``--devices`` gateways in 40 regions and an ``offline`` alert
for each (down within 90 s of each other), then times the engine's ticks
(central/alerting/engine.py): taking the alerts in (5,000 a
tick at most, each with its history row, the window check and its incident), a tick
with all of them down, resolving them in five steps, and an idle tick.

Run: .venv/bin/python bench/bench_alerts.py [--devices 9000] [--store sqlite|postgresql]

``--store postgresql`` runs it on a throwaway PostgreSQL (central/sim/localpg.py: Debian's
``postgresql``, fsync off), as the 50,000-gateway outage does.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from central.alerting.engine import AlertEngine
from central.config import IncidentsConfig
from central.store.alerting import AlertingStore
from central.store.base import AlertChange, DeviceState, WriteBatch
from central.store.sqlite import SqliteStore


@contextlib.contextmanager
def stores(kind: str) -> Iterator[tuple[Any, AlertingStore]]:
    """Central's store and the lifecycle's tables, on a throwaway SQLite file or PostgreSQL."""
    if kind == "sqlite":
        db = Path(tempfile.mkdtemp(prefix="titik-bench-alerts-")) / "b.db"
        yield SqliteStore(db), AlertingStore(db)
        return
    from central.sim.localpg import LocalPostgres
    from central.store.pg import PgStore
    from central.store.pg.tables import PgAlertingStore

    pg = LocalPostgres(shared_buffers="256MB").start()
    try:
        url = pg.create_database("bench")
        store = PgStore(url)
        alerting = PgAlertingStore(url)
        try:
            yield store, alerting
        finally:
            alerting.close()
            store.close()
    finally:
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=9000)
    ap.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    args = ap.parse_args()
    with stores(args.store) as (store, alerting):
        run(store, alerting, args.devices, args.store)


def run(store: Any, alerting: AlertingStore, n: int, kind: str) -> None:
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
    engine = AlertEngine(alerting, IncidentsConfig(group_wait_s=0), sent.append)
    print("| tick | seconds | notifications so far |\n| --- | ---: | ---: |")

    def tick(name: str, at: float) -> None:
        t0 = time.perf_counter()
        engine.tick(at)
        print(f"| {name} | {time.perf_counter() - t0:.3f} | {len(sent)} |")

    # 5,000 taken in a tick: every alert in, then one tick more (the incidents' update).
    for k in range(-(-n // 5000) + 1):
        tick(f"take in ({k + 1})", t + k * 400)
    tick("nothing new, all down", t + 1999)
    # Back in five steps, a tick after each, as in a drain (each step touches every incident).
    fifth = -(-n // 5)
    for k in range(5):
        back = [
            AlertChange("offline", f"gw-{i:05d}", t + 10, close=True)
            for i in range(k * fifth, min(n, (k + 1) * fifth))
        ]
        store.write(WriteBatch(alerts=back))
        tick(f"a fifth back ({k + 1})", t + 2000 + k)
    tick("idle", t + 2010)
    print(f"\n{n} gateways in 40 regions, {kind}; command: .venv/bin/python "
          f"bench/bench_alerts.py --devices {n} --store {kind}")  # fmt: skip


if __name__ == "__main__":
    main()
