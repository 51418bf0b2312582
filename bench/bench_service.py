"""The service probes' wall time per run (issue 20, point 8: at most 2 s), each scenario many
times, against a real dnsmasq as the AP's resolver, an HTTP server as the portal and TCP
listeners as Internet targets on loopback, all well and with each part failing (the same
servers as tests/integration/test_service_probes.py).

    .venv/bin/python bench/bench_service.py [--runs 20]

Prints a Markdown table for docs/benchmarks.md. Needs dnsmasq (scripts/setup installs it).
"""

from __future__ import annotations

import argparse
import http.server
import platform
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config import parse_config
from agent.service import probes
from tests.integration.test_service_probes import Portal, free_port, start_dnsmasq

BUDGET_S = 2.0


@contextmanager
def portal_server(mode: str) -> Iterator[int]:
    handler = type("P", (Portal,), {"mode": mode})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def listener() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(256)
        yield int(s.getsockname()[1])


@contextmanager
def mute_resolver() -> Iterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{s.getsockname()[1]}"


def service_cfg(dns: str, portal_port: int, targets: list[str], **extra: object) -> object:
    section = {
        "enabled": True,
        "dns_server": dns,
        "portal_url": f"http://portal.test:{portal_port}/generate_204",
        "targets": targets,
        **extra,
    }
    return parse_config({"mqtt": {"host": "x"}, "service": section}).service


def time_runs(make: Callable[[], object], runs: int) -> list[float]:
    took = []
    for i in range(runs):
        cfg = make()
        t0 = time.monotonic()
        probes.run_probes(cfg, random.Random(i))  # type: ignore[arg-type]
        took.append(time.monotonic() - t0)
    return took


def probe_rows(runs: int) -> list[tuple[str, list[float]]]:
    rows: list[tuple[str, list[float]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-service-") as tmp:
        proc, dns = start_dnsmasq(Path(tmp))
        try:
            with listener() as up, portal_server("open") as open_, portal_server("slow") as slow:
                ok = [f"127.0.0.1:{up}"]
                rows.append(("all well", time_runs(lambda: service_cfg(dns, open_, ok), runs)))
                rows.append(
                    ("portal hangs (answers after 3 s)", time_runs(lambda: service_cfg(dns, slow, ok), runs))
                )  # fmt: skip
                with mute_resolver() as mute:
                    rows.append(
                        ("resolver never answers", time_runs(lambda: service_cfg(mute, open_, ok), runs))
                    )  # fmt: skip
                closed = [f"127.0.0.1:{up}", f"127.0.0.1:{free_port()}"]
                rows.append(
                    ("one of two targets refuses", time_runs(lambda: service_cfg(dns, open_, closed), runs))
                )  # fmt: skip
                hole = ["192.0.2.1:443"]  # TEST-NET-1: routed nowhere, connects time out
                rows.append(
                    ("Internet a black hole", time_runs(lambda: service_cfg(dns, open_, hole, connects=10), runs))
                )  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(5)
    return rows


def ms(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))] * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="probe runs per scenario")
    args = ap.parse_args()
    rows = probe_rows(args.runs)
    print(f"\n### Service probes, {args.runs} runs per scenario (budget {BUDGET_S:g} s)\n")
    print("| scenario | median ms | p95 ms | max ms | within budget |")
    print("| --- | ---: | ---: | ---: | --- |")
    for name, took in rows:
        worst = max(took)
        print(
            f"| {name} | {statistics.median(took) * 1000:.0f} | {ms(took, 0.95):.0f} | "
            f"{worst * 1000:.0f} | {'yes' if worst <= BUDGET_S else 'NO'} |"
        )
    print(
        f"\nMachine: {platform.machine()}, {len(__import__('os').sched_getaffinity(0))} CPUs, "
        f"Python {platform.python_version()}"
    )
    print("Command: `.venv/bin/python bench/bench_service.py " + " ".join(sys.argv[1:]) + "`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
