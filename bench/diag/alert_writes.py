"""What closing a city's offline alerts costs central's writer on PostgreSQL: one statement
per alert (before), against one statement per run of closes (``PgStore._write_alerts``).

After a city-wide outage every gateway's online status closes its offline alert, and the
writer writes those closes in the same transactions as the samples: at 50,000 gateways the
writer stored no sample for the first 20 s of the recovery. A throwaway PostgreSQL
(central/sim/localpg.py, durable like titik-sim's); ``--alerts`` offline alerts opened, then closed
in batches of ``--batch`` (a batch of the writer: ``[store] batch_max``), each way in turn on
its own database, timed per batch:

    .venv/bin/python bench/diag/alert_writes.py --alerts 50000 --batch 2000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from central.sim.localpg import LocalPostgres
from central.store.base import AlertChange, WriteBatch
from central.store.pg.store import PgStore


def one_by_one(store: PgStore, alerts: list[AlertChange]) -> None:
    """The writer before: a statement (a round trip) per alert."""
    with store._conn() as conn, conn.transaction(), conn.cursor() as cur:
        c: Any = cur
        for a in alerts:
            c.execute(
                "UPDATE alerts SET closed = %s WHERE device = %s AND kind = %s AND closed IS NULL",
                (a.at, a.device, a.kind),
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=2000)
    args = ap.parse_args()
    pg = LocalPostgres(durable=True).start()
    try:
        ways = {
            "one statement per alert (before)": one_by_one,
            "one per run (PgStore.write)": lambda st, a: st.write(WriteBatch(alerts=a)),
        }
        for name, write in ways.items():
            store = PgStore(pg.create_database())
            opens = [AlertChange("offline", f"gw-{i:05d}", 1.0, "will") for i in range(args.alerts)]
            store.write(WriteBatch(alerts=opens))
            closes = [AlertChange("offline", a.device, 2.0, close=True) for a in opens]
            took = []
            t0 = time.perf_counter()
            for k in range(0, len(closes), args.batch):
                t = time.perf_counter()
                write(store, closes[k : k + args.batch])
                took.append(time.perf_counter() - t)
            total = time.perf_counter() - t0
            if store.alerts():
                raise SystemExit(f"{name}: alerts left open")
            print(
                f"{name:34s} {args.alerts} closes in {total:6.2f} s "
                f"({total / args.alerts * 1e6:6.1f} us each; batch of {args.batch}: median "
                f"{statistics.median(took) * 1000:7.1f} ms)",
                flush=True,
            )
            store.close()
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
