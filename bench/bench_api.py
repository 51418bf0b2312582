"""HTTP API latency over a store of 10,000 gateways, on SQLite, PostgreSQL or both.

1. fills a throwaway store through its write API: ``--devices`` gateways in 40 regions
   (each in one of 20 groups, with a config report), ``--history`` raw samples for each of
   the first 500 gateways, a desired document per group, a few open alerts and every
   gateway's service report (on both stores since PostgreSQL schema version 4). SQLite is
   a file in a temp dir; PostgreSQL a throwaway cluster (central/sim/localpg.py: initdb +
   pg_ctl on a free loopback port, ``fsync=off`` for the fill, which reads do not touch,
   256 MB of shared buffers), ANALYZEd after the fill as autovacuum would;
2. serves ``central.api.create_app`` with uvicorn on a free loopback port in a subprocess
   (one process, as ``titik-central run`` does, without ingest);
3. one client (``http.client``, one keep-alive connection, sequential) sends each query
   ``--n`` times after 20 warm-up requests and reports p50/p95/p99 in ms.

``--store both`` fills and measures SQLite, then PostgreSQL, with the same data, and prints
one table with both stores' figures per query, side by side. ``--before TREE`` serves another
checkout's code (e.g. main's) beside this tree's on each filled store and measures every query
on both in alternating rounds: before and after in one run, under the same load.

Run: .venv/bin/python bench/bench_api.py [--devices 10000] [--n 500] [--store both]
Prints a markdown table, the machine and the command on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import footer  # noqa: E402

QUERIES = [
    ("summary", "/api/summary"),
    ("devices, top 100 by clients", "/api/devices?limit=100&sort=-clients"),
    (
        "devices, region + status filter, sort by temp",
        "/api/devices?region=Region%2007&status=online&sort=-temp_c&limit=100",
    ),
    ("devices, search id/site", "/api/devices?q=taman%2012&limit=100"),
    ("device detail", "/api/devices/gw-00042"),
    ("device history (24 h raw)", "/api/devices/gw-00042/history"),
    ("public summary", "/api/public/summary"),
    ("metrics", "/metrics"),
]


STORES = ("sqlite", "postgresql")


def open_store(target: str | Path) -> Any:
    """Central's store at ``target``: a PostgreSQL url, or a SQLite file."""
    if str(target).startswith("postgresql://"):
        from central.store.pg import PgStore

        return PgStore(str(target))
    from central.store.sqlite import SqliteStore

    return SqliteStore(Path(target))


def create_token(target: str | Path) -> str:
    """A viewer's token in the store's own tables; its secret."""
    from central.store.pg.tables import PgTokenStore
    from central.store.tokens import TokenStore

    is_pg = str(target).startswith("postgresql://")
    tokens = PgTokenStore(str(target)) if is_pg else TokenStore(Path(target))
    try:
        return tokens.create("bench", "viewer")[1]
    finally:
        tokens.close()


@contextlib.contextmanager
def filled(kind: str, tmp: Path, devices: int, history: int) -> Iterator[str]:
    """A store of ``kind`` filled by :func:`fill`: its SQLite path or PostgreSQL url."""
    t0 = time.monotonic()
    if kind == "sqlite":
        db = tmp / "central.db"
        fill(db, devices, history)
        print(f"filled SQLite in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        yield str(db)
        return
    from central.sim.localpg import LocalPostgres

    pg = LocalPostgres(durable=False, shared_buffers="256MB", max_connections=50).start()
    try:
        url = pg.create_database("bench")
        fill(url, devices, history)
        pg.execute("ANALYZE", "bench")  # the planner's statistics, as autovacuum keeps them
        print(f"filled PostgreSQL in {time.monotonic() - t0:.1f} s", file=sys.stderr)
        yield url
    finally:
        pg.stop()


def fill(db: str | Path, devices: int, history: int) -> None:
    from agent.protocol import ConfigReported
    from central.store.base import (
        AlertChange,
        DesiredDoc,
        DeviceState,
        ReportedDoc,
        Sample,
        WriteBatch,
    )

    now = time.time()
    store = open_store(db)
    states = [
        DeviceState(
            f"gw-{i:05d}",
            site=f"Taman {i % 997} no. {i}",
            region=f"Region {i % 40:02d}",
            lat=-6.2 + (i % 100) / 1000,
            lon=106.8 + (i // 100) / 1000,
            groups=["all", f"g{i % 20}"],
            online=i % 10 != 0,
            boot=2,
            last_seen=now - (i % 60),
            clients=(i * 7) % 80,
            cpu_pct=float(i % 100),
            mem_used_pct=float((i * 3) % 100),
            temp_c=40.0 + i % 30,
            disk_used_pct=float(i % 50),
            version="0.1.0",
            platform="openwrt",
        )
        for i in range(devices)
    ]
    reports = [
        ReportedDoc(
            d.device,
            ConfigReported(
                version=3, source="group", versions={"group/all": 3}, state="applied", hash="h",
                ts=now,
            ),
            '{"state":"applied"}',
        )
        for d in states
    ]  # fmt: skip
    desired = [DesiredDoc("group/all", 3, '{"ssid":"Titik"}', now)] + [
        DesiredDoc(f"group/g{g}", 1, '{"channel":6}', now) for g in range(20)
    ]
    store.write(WriteBatch(devices=states, reported=reports, desired=desired))
    samples = [
        Sample(
            f"gw-{d:05d}", "s", seq, now - 86000 + seq * 60, False, 2, seq % 50,
            10.0, 40.0, 50.0, 20.0, "0.1.0", "{}",
        )
        for d in range(min(devices, 500))
        for seq in range(history)
    ]  # fmt: skip
    for start in range(0, len(samples), 20000):
        store.write(WriteBatch(samples=samples[start : start + 20000]))
    print(f"  {len(states):,} devices, {len(samples):,} samples written", file=sys.stderr)
    store.write(
        WriteBatch(alerts=[AlertChange("temp", f"gw-{i:05d}", now, "hot") for i in range(0, 50)])
    )
    # Every gateway's service report (issue 20), a tenth of them with a dead portal: /metrics
    # carries their per-region aggregates.
    from agent.protocol.service import Probes, ServiceReport
    from central.store.service import to_row

    healthy = ServiceReport(ts=now, interval_s=300, probes=Probes(dns="ok", portal="open"))
    dead = ServiceReport(ts=now, interval_s=300, probes=Probes(dns="ok", portal="broken"))
    rows = [to_row(d.device, dead if i % 10 == 3 else healthy, now) for i, d in enumerate(states)]
    store.write(WriteBatch(service=rows))
    store.roll_up()
    store.close()


def serve(db: str, port: int, tree: str | None = None, device_series: bool = False) -> int:
    if tree:  # another checkout's code (``--metrics-before``): first on the path
        sys.path.insert(0, tree)
    import uvicorn

    import central
    from central.api.app import create_app
    from central.ingest.consumer import IngestStats

    print(f"serving {central.__file__} on port {port}", file=sys.stderr)
    extra = {"device_series": True} if device_series else {}
    app = create_app(open_store(db), IngestStats(), **extra)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure(port: int, path: str, n: int, headers: dict[str, str]) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    took = []
    for i in range(n + 20):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        dt = time.perf_counter() - t0
        if resp.status != 200:
            raise SystemExit(f"{path}: HTTP {resp.status}: {body[:200]!r}")
        if i >= 20:
            took.append(dt * 1000)
    conn.close()
    return took


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--history",
        type=int,
        default=1440,
        help="raw samples (one a minute) for each of the first 500 gateways",
    )
    parser.add_argument("--n", type=int, default=500, help="requests per query")
    parser.add_argument(
        "--metrics-before",
        metavar="TREE",
        help="only /metrics, side by side: the code in TREE (e.g. `git archive main | tar -x -C "
        "TREE`) without and with [metrics] device_series, and this tree's alike, in alternating "
        "rounds of --n requests on the same store",
    )
    parser.add_argument(
        "--before",
        metavar="TREE",
        help="every query, side by side on the same filled store: the code in TREE (e.g. "
        "`git archive main | tar -x -C TREE`) and this tree's, one server each, in --rounds "
        "alternating rounds of --n/--rounds requests, so that the machine's other load falls "
        "on both alike (TREE must read this tree's schema)",
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of --metrics-before, --before"
    )
    parser.add_argument(
        "--store",
        choices=(*STORES, "both"),
        default="sqlite",
        help="the store to fill and serve; both: SQLite then PostgreSQL (a throwaway cluster "
        "of Debian's postgresql), same data, one table (default: sqlite)",
    )
    parser.add_argument("--serve", nargs=2, metavar=("DB", "PORT"), help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--device-series", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve[0], int(args.serve[1]), args.tree, args.device_series)
    if args.metrics_before:
        return compare_metrics(args)
    stores = list(STORES) if args.store == "both" else [args.store]
    if args.before:
        return compare_trees(args, stores)
    rows: list[tuple[str, str, str, list[float]]] = []
    for kind in stores:
        with (
            tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
            filled(kind, Path(tmp), args.devices, args.history) as target,
        ):
            # Every request carries a viewer's Bearer token, as Prometheus and scripts send
            # it: the timings include checking it.
            headers = {"Authorization": f"Bearer {create_token(target)}"}
            server, port = start_server(target)
            try:
                for name, path in QUERIES:
                    took = measure(port, path, args.n, headers)
                    rows.append((name, path, kind, took))
                    print(f"{kind} {name}: p95 {pct(took, 95):.1f} ms", file=sys.stderr)
            finally:
                server.terminate()
                server.wait(10)
    samples = min(args.devices, 500) * args.history
    print(
        f"### API latency ({args.devices:,} gateways, {samples:,} raw samples, "
        f"{args.n} requests per query, one keep-alive client; {' and '.join(stores)})\n"
    )
    print("| query | path | store | p50 ms | p95 ms | p99 ms | mean ms |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, path in QUERIES:  # each query's stores side by side
        for qname, qpath, kind, took in rows:
            if (qname, qpath) == (name, path):
                print(
                    f"| {name} | `{path}` | {kind} | {pct(took, 50):.1f} | {pct(took, 95):.1f} | "
                    f"{pct(took, 99):.1f} | {statistics.fmean(took):.1f} |"
                )
    footer("uvicorn 1 process" + (f", {_pg_version()}" if "postgresql" in stores else ""))
    return 0


def compare_trees(args: argparse.Namespace, stores: list[str]) -> int:
    """Each query against the code in ``--before`` and this tree's, on the same store."""
    tree = str(Path(args.before).resolve())
    variants = [("before", ["--tree", tree]), ("after", [])]
    per_round = max(1, args.n // args.rounds)
    took: dict[tuple[str, str, str], list[float]] = {}
    for kind in stores:
        with (
            tempfile.TemporaryDirectory(prefix="bench-api-") as tmp,
            filled(kind, Path(tmp), args.devices, args.history) as target,
        ):
            headers = {"Authorization": f"Bearer {create_token(target)}"}
            servers = [(name, *start_server(target, *extra)) for name, extra in variants]
            try:
                for qname, path in QUERIES:
                    for _ in range(args.rounds):
                        for name, _, port in servers:
                            took.setdefault((qname, kind, name), []).extend(
                                measure(port, path, per_round, headers)
                            )
                    print(
                        f"{kind} {qname}: p95 "
                        + " -> ".join(
                            f"{pct(took[(qname, kind, name)], 95):.1f}" for name, _ in variants
                        )
                        + " ms",
                        file=sys.stderr,
                    )
            finally:
                for _, server, _ in servers:
                    server.terminate()
                    server.wait(10)
    samples = min(args.devices, 500) * args.history
    print(
        f"### API latency before and after ({args.devices:,} gateways, {samples:,} raw "
        f"samples, {args.rounds} alternating rounds of {per_round} requests per query and "
        f"tree, one keep-alive client; {' and '.join(stores)})\n"
    )
    print("| query | store | before p50 ms | before p95 ms | after p50 ms | after p95 ms |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for qname, _ in QUERIES:
        for kind in stores:
            b, a = took[(qname, kind, "before")], took[(qname, kind, "after")]
            print(
                f"| {qname} | {kind} | {pct(b, 50):.1f} | {pct(b, 95):.1f} | "
                f"{pct(a, 50):.1f} | {pct(a, 95):.1f} |"
            )
    footer("uvicorn 1 process" + (f", {_pg_version()}" if "postgresql" in stores else ""))
    return 0


def _pg_version() -> str:
    from central.sim.localpg import pg_bindir

    return f"PostgreSQL {pg_bindir().parent.name} (fsync off, shared_buffers 256MB)"


def start_server(db: str | Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db), str(port), *extra], cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise SystemExit("the server did not start") from None
            time.sleep(0.1)
        else:
            return server, port


def compare_metrics(args: argparse.Namespace) -> int:
    """/metrics before and after, side by side: the same store, one server per variant,
    alternating rounds so that the machine's other load falls on all of them alike."""
    variants = [
        ("before", ["--tree", str(Path(args.metrics_before).resolve())]),
        (
            "before, device_series on",
            ["--tree", str(Path(args.metrics_before).resolve()), "--device-series"],
        ),
        ("after", []),
        ("after, device_series on", ["--device-series"]),
    ]
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        db = Path(tmp) / "central.db"
        fill(db, args.devices, args.history)
        from central.store.tokens import TokenStore

        _, secret = TokenStore(db).create("bench", "viewer")
        headers = {"Authorization": f"Bearer {secret}"}
        servers = [(name, *start_server(db, *extra)) for name, extra in variants]
        took: dict[str, list[list[float]]] = {name: [] for name, _ in variants}
        sizes: dict[str, int] = {}
        try:
            for r in range(args.rounds):
                for name, _, port in servers:
                    took[name].append(measure(port, "/metrics", args.n, headers))
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    conn.request("GET", "/metrics", headers=headers)
                    sizes[name] = len(conn.getresponse().read())
                    conn.close()
                    print(
                        f"round {r + 1} {name}: p95 {pct(took[name][-1], 95):.1f} ms",
                        file=sys.stderr,
                    )
        finally:
            for _, server, _ in servers:
                server.terminate()
                server.wait(10)
    print(
        f"### /metrics before and after ({args.devices:,} gateways, {args.rounds} alternating "
        f"rounds of {args.n} requests, one keep-alive client)\n"
    )
    print("| variant | body bytes | p50 ms | p95 ms | p99 ms | p95 per round ms |")
    print("| --- | ---: | ---: | ---: | ---: | --- |")
    for name, _ in variants:
        every = [t for rnd in took[name] for t in rnd]
        rounds = " / ".join(f"{pct(rnd, 95):.1f}" for rnd in took[name])
        print(
            f"| {name} | {sizes[name]:,} | {pct(every, 50):.1f} | {pct(every, 95):.1f} | "
            f"{pct(every, 99):.1f} | {rounds} |"
        )
    footer("uvicorn 1 process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
