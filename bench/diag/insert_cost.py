"""What the samples' INSERT costs PostgreSQL per row, and how much of it is the duplicate check
across partitions or history's index. A diagnostic, not a benchmark.

A throwaway PostgreSQL (tests/postgres.py), one database per variant; each round writes one
500-sample batch (bench/bench_ingest.py's telemetry, ~900 bytes of ``raw``) into each
database in turn, timing the statement alone (``PgStore``'s own ``_INSERT_SAMPLES``), and
prints the median per row:

- ``as is``: the statement and the indexes as central has them;
- ``no NOT EXISTS``: without the check that a (device, sid, seq) is not stored already under
  another ``ts`` (it probes every partition of ``samples``);
- ``no samples_device_ts``: without history's (device, ts) index.

(docs/benchmarks.md, issue 21, "PostgreSQL's CPU per message".)

    .venv/bin/python bench/diag/insert_cost.py --rounds 40
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bench_ingest import payload
from central.store.base import Sample
from central.store.pg.store import _GET_SAMPLE, _INSERT_SAMPLES, _SAMPLE_FLOATS, PgStore, _floats
from tests.postgres import Postgres

BATCH = 500
_CHECK = """WHERE NOT EXISTS (
    SELECT 1 FROM samples s WHERE s.device = u.device AND s.sid = u.sid AND s.seq = u.seq)
"""


def columns(seq: int, now: float) -> list[list[object]]:
    batch = [
        Sample(f"gw-{i:05d}", "s", seq, now + seq, False, 1, 3, 1.0, 2.0, 3.0, 4.0, "0.1",
               payload(f"gw-{i:05d}", seq).decode())
        for i in range(BATCH)
    ]  # fmt: skip
    cols: list[list[object]] = [list(c) for c in zip(*map(_GET_SAMPLE, batch), strict=True)]
    for i in _SAMPLE_FLOATS:
        cols[i] = list(_floats(cols[i]))
    return cols


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40)
    args = ap.parse_args()
    if _CHECK not in _INSERT_SAMPLES:
        raise SystemExit("the samples' INSERT changed: update this script's variants")
    variants = {
        "as is": (_INSERT_SAMPLES, None),
        "no NOT EXISTS": (_INSERT_SAMPLES.replace(_CHECK, ""), None),
        "no samples_device_ts": (_INSERT_SAMPLES, "samples_device_ts"),
    }
    now = time.time()
    pg = Postgres().start()
    try:
        stores = {}
        for name, (_, drop) in variants.items():
            st = stores[name] = PgStore(pg.create_database(), clock=lambda: now)
            if drop:
                with st._conn() as conn:
                    conn.execute(f"DROP INDEX {drop}".encode())
        took: dict[str, list[float]] = {k: [] for k in variants}
        for seq in range(args.rounds):
            cols = columns(seq, now)
            for name, (sql, _) in variants.items():
                with stores[name]._conn() as conn, conn.transaction(), conn.cursor() as cur:
                    t0 = time.perf_counter()
                    cur.execute(sql, cols)
                    took[name].append(time.perf_counter() - t0)
        for st in stores.values():
            st.close()
    finally:
        pg.stop()
    skip = min(4, args.rounds // 4)  # the first batches fill empty indexes
    print(f"{BATCH}-sample batches, {args.rounds - skip} rounds (the first {skip} left out)\n")
    print("| variant | µs per row (median) | min |")
    print("| --- | ---: | ---: |")
    for name, ts in took.items():
        t = ts[skip:]
        print(f"| {name} | {1e6 * statistics.median(t) / BATCH:.1f} | {1e6 * min(t) / BATCH:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
