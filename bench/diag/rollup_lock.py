"""Does the PostgreSQL roll-up hold ingest commits back? A diagnostic, not a benchmark.

One writer commits 500-sample batches into a throwaway PostgreSQL (tests/postgres.py) as fast
as it can for ``--seconds``, first alone, then with ``PgStore.roll_up`` every second in another
thread (as the leader runs it: ``LOCK TABLE samples IN SHARE MODE`` for one ``SELECT max(id)``,
then the fold in its own transaction). Prints the commits' median, p95 and max and how long
each roll-up took. (docs/benchmarks.md, issue 21, "Where ingest spends CPU".)

``--before TREE`` measures another checkout's store too (its ``central``, imported in a child
process), the two trees taking turns on the same server, ``--rounds`` times, so both see the
same machine:

    git archive main | tar -x -C /tmp/before      # or any commit
    .venv/bin/python bench/diag/rollup_lock.py --seconds 12 --before /tmp/before --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[2]


def run(url: str, seconds: float, rollup: bool) -> str:
    """One writer for ``seconds`` (and the roll-up every second), with the ``central`` first
    on sys.path; one row of the table."""
    from bench.bench_ingest import payload
    from central.store.base import Sample, WriteBatch
    from central.store.pg.store import PgStore

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


def run_in(tree: Path, url: str, seconds: float, rollup: bool) -> str:
    """:func:`run` in a child process importing ``central`` from ``tree``."""
    out = subprocess.run(
        [sys.executable, __file__, "_run", str(tree), url, str(seconds), str(int(rollup))],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=12.0, help="each run's length")
    ap.add_argument(
        "--before",
        type=Path,
        metavar="TREE",
        help="another checkout of the project, measured in turn with this one",
    )
    ap.add_argument("--rounds", type=int, default=1, help="how many times each tree runs")
    args = ap.parse_args()
    sys.path.insert(0, str(HERE))
    from tests.postgres import Postgres

    trees = [("before", args.before.resolve())] if args.before else []
    trees.append(("this tree", HERE))
    rows = []
    pg = Postgres().start()
    try:
        for _ in range(args.rounds):
            for label, tree in trees:
                for r in (False, True):
                    rows.append(f"| {label} {run_in(tree, pg.create_database(), args.seconds, r)}")
    finally:
        pg.stop()
    print("| tree | roll-up | commits | median ms | p95 ms | max ms | each roll-up, ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_run":
        tree, url, seconds, rollup = sys.argv[2:6]
        sys.path.insert(0, tree)
        print(run(url, float(seconds), rollup == "1"), flush=True)
        sys.exit(0)
    sys.exit(main())
