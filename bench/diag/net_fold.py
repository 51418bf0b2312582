"""What the network roll-up costs PostgreSQL, by how each sample's ``raw`` is parsed. A
diagnostic, not a benchmark.

Fills a throwaway PostgreSQL (tests/postgres.py) with ``--samples`` samples of
bench/bench_ingest.py's telemetry (about 900 bytes of ``raw`` each, ``--devices`` gateways, a
minute apart), then runs each variant of the fold over all of them under ``EXPLAIN ANALYZE``
in a transaction that is rolled back, the variants taking turns for ``--rounds`` rounds, and
prints the median execution time and the time per sample (docs/benchmarks.md, issue 21,
"Where ingest spends CPU"):

- ``titik_jsonb`` : every row through the plpgsql function (a subtransaction per row), as
  ``NET_ROLLUP`` did up to this change;
- ``raw::jsonb``  : the plain cast, what ``NET_ROLLUP`` runs now (central/store/pg/queries.py);
- ``strpos``      : the plain cast for text without a backslash, the function for the rest;
- ``raw::json``   : the ``json`` type with ``->`` paths (each path re-reads the text);
- ``columns``     : the ``rollups_5m`` fold beside it (no JSON at all), for scale.

Then the fold as the store runs it (``run_safely``: the plain cast, and the safe form again
if one row is refused), wall clock, without and with one sample holding ``\\u0000``.

    .venv/bin/python bench/diag/net_fold.py --samples 20000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.bench_ingest import payload
from central.store.base import Sample, WriteBatch
from central.store.pg import queries
from central.store.pg.store import _ROLLUP, PgStore
from tests.postgres import Postgres

NOW = 1_795_800_000.0

_JSON_WAN = "(j -> 'net' ->> 'wan')"


def _json_number(expr: str) -> str:
    return f"(CASE WHEN json_typeof({expr}) = 'number' THEN ({expr})::text::float8 END)"


def _json_fold() -> str:
    """The same fold on the json type: ``->`` on json parses the text again at each step."""
    rx = _json_number(f"(j -> 'net' -> 'ifaces' -> {_JSON_WAN} -> 'rx_bps')")
    tx = _json_number(f"(j -> 'net' -> 'ifaces' -> {_JSON_WAN} -> 'tx_bps')")
    up = (
        "(CASE WHEN json_typeof(j -> 'net' -> 'wan_up') = 'boolean' "
        "THEN (j -> 'net' ->> 'wan_up')::boolean END)"
    )
    fast = queries._net_rollup(queries.FAST_J)
    head, tail = fast.split("FROM (SELECT device, trunc", 1)
    _, rest = tail.split("GROUP BY 1, 2", 1)
    inner = (
        f"FROM (SELECT device, trunc(ts / 300)::bigint * 300 AS bucket, {rx} AS rx_bps, "  # noqa: S608 - constants only
        f"{tx} AS tx_bps, {up} AS wan_up FROM (SELECT device, ts, raw::json AS j FROM samples "
        "WHERE id > %s AND id <= %s OFFSET 0) p) s GROUP BY 1, 2"
    )
    return head + inner + rest


VARIANTS = {
    "titik_jsonb": queries._net_rollup(queries.SAFE_J),
    "raw::jsonb": queries._net_rollup(queries.FAST_J),
    "strpos": queries._net_rollup(
        "CASE WHEN strpos(raw, '\\') = 0 THEN raw::jsonb ELSE titik_jsonb(raw) END"
    ),
    "raw::json": _json_fold(),
    "columns": _ROLLUP,
}


def fill(st: PgStore, samples: int, devices: int, bad: bool = False) -> int:
    seq, n = 0, 0
    while n < samples:
        batch = []
        for d in range(devices):
            if n >= samples:
                break
            raw = payload(f"gw-{d:05d}", seq).decode()
            if bad and n == samples // 2:
                raw = raw.replace('"0.1.0"', '"0.1\\u0000x"')
            dev = f"gw-{d:05d}"
            cols = (3, seq % 60, 23.4, 48.2, 53.1, 22.3)
            batch.append(Sample(dev, "s", seq, NOW + 60 * seq, False, *cols, "0.1.0", raw))
            n += 1
        for i in range(0, len(batch), 500):
            st.write(WriteBatch(samples=batch[i : i + 500]))
        seq += 1
    return n


def explain_ms(st: PgStore, sql: str, top: int) -> float:
    with st._conn() as conn, conn.transaction(force_rollback=True):
        row = conn.execute(
            ("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + sql).encode(), (0, top)
        ).fetchone()
        plan = row["QUERY PLAN"] if row else "[{}]"
        plan = json.loads(plan) if isinstance(plan, str) else plan
        return float(plan[0]["Execution Time"])


def store_fold_ms(st: PgStore, top: int) -> float:
    with st._conn() as conn, conn.transaction(force_rollback=True):
        t0 = time.perf_counter()
        queries.run_safely(conn, st.NET_ROLLUP, st.NET_ROLLUP_SAFE, (0, top))
        return 1000 * (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    pg = Postgres().start()
    try:
        good = PgStore(pg.create_database(), clock=lambda: NOW)
        bad = PgStore(pg.create_database(), clock=lambda: NOW)
        n = fill(good, args.samples, args.devices)
        fill(bad, args.samples, args.devices, bad=True)
        for st in (good, bad):
            with st._conn() as conn:
                conn.execute("VACUUM ANALYZE samples")
        times: dict[str, list[float]] = {k: [] for k in VARIANTS}
        runs: dict[str, list[float]] = {"no bad row": [], "one row with \\u0000": []}
        for _ in range(args.rounds):
            for name, sql in VARIANTS.items():
                times[name].append(explain_ms(good, sql, n))
            runs["no bad row"].append(store_fold_ms(good, n))
            runs["one row with \\u0000"].append(store_fold_ms(bad, n))
        good.close()
        bad.close()
    finally:
        pg.stop()
    print(f"Fold of {n} samples ({args.devices} gateways), median of {args.rounds} rounds\n")
    print("| parse | EXPLAIN ANALYZE ms | µs per sample | all rounds, ms |")
    print("| --- | ---: | ---: | --- |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name} | {med:.0f} | {1000 * med / n:.1f} | {', '.join(f'{t:.0f}' for t in ts)} |"
        )
    print("\n| the store's fold (run_safely), wall clock | ms | all rounds, ms |")
    print("| --- | ---: | --- |")
    for name, ts in runs.items():
        print(f"| {name} | {statistics.median(ts):.0f} | {', '.join(f'{t:.0f}' for t in ts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
