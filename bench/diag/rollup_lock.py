"""Does the PostgreSQL roll-up hold ingest commits back? A diagnostic, not a benchmark.

One writer commits 500-sample batches into a throwaway PostgreSQL (tests/postgres.py) as fast
as it can for ``--seconds``, first alone, then with ``PgStore.roll_up`` every second in another
thread (as the leader runs it: ``LOCK TABLE samples IN SHARE MODE`` for one ``SELECT max(id)``,
then the fold in its own transaction). Prints the commits' median, p95 and max and how long
each roll-up took. (docs/benchmarks.md, issue 21, "Where ingest spends CPU".)

    .venv/bin/python bench/diag/rollup_lock.py --seconds 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bench_ingest import payload
from central.store.base import Sample, WriteBatch
from central.store.pg.store import PgStore
from tests.postgres import Postgres


def run(url: str, seconds: float, rollup: bool) -> str:
    st = PgStore(url)
    raw = payload("gw-1", 1).decode()
    now, seq, lat, took = time.time(), 0, [], []
    stop = threading.Event()

    def roller() -> None:
        while not stop.wait(1.0):
            t0 = time.perf_counter()
            st.roll_up()
            took.append(time.perf_counter() - t0)

    th = threading.Thread(target=roller)
    if rollup:
        th.start()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        b = [
            Sample(f"gw-{i}", "s", seq, now + seq, False, 1, 3, 1.0, 2.0, 3.0, 4.0, "0.1", raw)
            for i in range(500)
        ]
        seq += 1
        t0 = time.perf_counter()
        st.write(WriteBatch(samples=b))
        lat.append(time.perf_counter() - t0)
    stop.set()
    if rollup:
        th.join()
    st.close()
    lat.sort()
    return (
        f"| {'every 1 s' if rollup else 'none'} | {len(lat)} | {1000 * statistics.median(lat):.1f} "
        f"| {1000 * lat[int(0.95 * len(lat))]:.1f} | {1000 * lat[-1]:.1f} "
        f"| {', '.join(f'{1000 * t:.0f}' for t in took) or '-'} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    args = ap.parse_args()
    pg = Postgres().start()
    try:
        rows = [run(pg.create_database(), args.seconds, r) for r in (False, True)]
    finally:
        pg.stop()
    print("| roll-up | commits | median ms | p95 ms | max ms | each roll-up, ms |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
