"""What PostgreSQL spends per message in bench/bench_multi.py's drain, statement by statement.
A diagnostic, not a benchmark.

Starts its own throwaway PostgreSQL (as tests/postgres.py, ``fsync=off``) with the
``pg_stat_statements`` module loaded (Debian's ``postgresql`` package ships it), runs
bench_multi.py's drain (a queued backlog of ``--messages`` telemetry messages from
``--devices`` gateways, drained by ``--instances`` central consumers, the leader's roll-up
included), then prints each statement's calls, total execution time and time per message,
PostgreSQL's CPU per message (as bench_multi.py measures it), and how the ``devices`` and
``samples`` tables were written (updates, how many of them HOT, index sizes).
Execution time includes waits (a lock, a row locked by the other instance): compare it with
the CPU column. (docs/benchmarks.md, issue 21, "Where ingest spends CPU".)

    .venv/bin/python bench/diag/pg_statements.py --messages 20000 --instances 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import psycopg

from bench.bench_multi import PgCpu, drain_central
from central.sim.localbroker import LocalBroker
from central.sim.localpg import LocalPostgres
from central.store.pg.store import PgStore

SETTINGS = {
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
    "pg_stat_statements.max": "1000",
}

STATEMENTS = """
SELECT calls, total_exec_time AS ms, rows, regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s)
ORDER BY total_exec_time DESC LIMIT %s
"""

TABLES = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup,
       pg_total_relation_size(relid) AS bytes, pg_indexes_size(relid) AS index_bytes
FROM pg_stat_user_tables
WHERE relname = 'devices' OR relname LIKE 'samples%' OR relname LIKE 'rollups%'
ORDER BY relname
"""


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--instances", type=int, default=1, choices=(1, 2))
    ap.add_argument("--top", type=int, default=15, help="how many statements to show")
    args = ap.parse_args()
    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp))
        broker.start()
        pg = LocalPostgres(durable=False, settings=SETTINGS).start()
        try:
            url = pg.create_database("diag")
            PgStore(url).close()  # the schema, so the statements below are central's only
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION pg_stat_statements")
                conn.execute("SELECT pg_stat_statements_reset()")
            out = drain_central(broker.port, url, n, args.instances, PgCpu(pg.data), args.devices)
            with psycopg.connect(url, autocommit=True) as conn:
                stmts = conn.execute(STATEMENTS.encode(), ("diag", args.top)).fetchall()
                tables = conn.execute(TABLES.encode()).fetchall()
        finally:
            pg.stop()
            broker.stop()
    print(
        f"{n} messages, {args.devices} gateways, {args.instances} instance(s): "
        f"{out['rate']:,.0f} msg/s, PostgreSQL CPU {1e6 * out['pg_cpu_s'] / n:.0f} µs/msg, "
        f"commit avg {out['commit_ms_avg']:.1f} ms\n"
    )
    print("| calls | total ms | µs per message | rows | statement |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for calls, ms, rows, query in stmts:
        print(f"| {calls} | {ms:,.0f} | {1000 * ms / n:.1f} | {rows} | `{query[:110]}` |")
    print("\n| table | inserted | updated | HOT | dead | size kB | indexes kB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, ins, upd, hot, dead, size, idx in tables:
        if ins or upd:
            print(f"| {name} | {ins} | {upd} | {hot} | {dead} | {size // 1024} | {idx // 1024} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
