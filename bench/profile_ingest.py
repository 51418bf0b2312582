"""Where central's ingest spends CPU per message: one consumer drains a backlog under py-spy
(every thread, native frames off) and the time is split by stage (issue 21, point 5).

The drain method of bench/bench_ingest.py: the consumer (``titik-central run``'s, built by
central.cli.build) subscribes with a persistent session and goes away, a load generator
publishes ``--messages`` valid Telemetry payloads for ``--devices`` gateways, then the
consumer comes back under ``py-spy record`` and drains them into SQLite or a throwaway
PostgreSQL (tests/postgres.py). py-spy samples at ``--rate`` Hz; a stage's share of the
samples times the consumer's CPU seconds / messages gives its µs per message (idle samples,
threads waiting in a lock or a socket, are left out with ``--idle`` off, py-spy's default).

    .venv/bin/python bench/profile_ingest.py --store pg --messages 20000
    .venv/bin/python bench/profile_ingest.py --store sqlite --messages 20000

Prints a markdown table (stage, samples, µs per message) and the top functions by own
samples; ``--raw FILE`` keeps py-spy's collapsed stacks. Needs py-spy (the dev extra).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_ingest import child_publish  # noqa: E402
from bench.bench_multi import config_text, cpu_now  # noqa: E402

#: Stages, first match wins, by a frame's ``function (file)`` text anywhere in the stack,
#: checked from the innermost frame outwards.
STAGES = (
    ("paho receive (network thread, to the inbox)", ("paho/mqtt/client.py",)),
    ("validation (model_validate_json)", ("validate_payload",)),
    ("to_sample (model_dump_json, Sample)", ("to_sample",)),
    ("fleet state (apply_live, take)", ("ingest/fleet.py",)),
    ("store write (SQL, commit)", ("store/pg/store.py", "store/sqlite.py", "psycopg")),
    ("lag histogram, acks", ("observe_lag", "client.ack", "_commit (central")),
    ("batching (inbox get, parse_topic, build)", ("_collect", "build (central", "parse_topic")),
    ("leader, roll-up, maintenance", ("_maintain", "roll_up", "leader.py")),
)


def child_central(port: int, store: str, where: str, phase: str, messages: int) -> None:
    import logging

    from central.cli import build
    from central.config import parse_config

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    text = config_text(port, where if store == "pg" else "", "prof-c0", "prof")
    if store == "sqlite":
        text = text.replace('url = ""\n', f'path = "{where}"\n', 1)
    st, consumer = build(parse_config(text))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    cpu0 = cpu_now()
    consumer.start()
    if phase == "subscribe":
        consumer.subscribed.wait(10)
        consumer.stop()
        st.close()
        return

    def watch() -> None:
        while consumer.stats.stored + consumer.stats.duplicates < messages:
            time.sleep(0.01)  # polling the counter for the end, not synchronising
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    t0 = time.perf_counter()
    consumer.run(stop)
    took = time.perf_counter() - t0
    consumer.stop()
    st.close()
    s = consumer.stats
    out = {
        "cpu_s": cpu_now() - cpu0,
        "took_s": took,
        "batches": s.batches,
        "commit_ms_avg": 1000 * s.commit_seconds_total / max(1, s.batches),
        "stored": s.stored,
    }
    print(json.dumps(out), flush=True)


def stage_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, keys in STAGES:
            if any(k in frame for k in keys):
                return name
    return "other"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--store", choices=("pg", "sqlite"), default="pg")
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    ap.add_argument("--top", type=int, default=25, help="functions listed by own samples")
    args = ap.parse_args()
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    from central.sim.localbroker import LocalBroker

    me = [sys.executable, __file__, "_child"]
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp))
        broker.start()
        pg = None
        try:
            if args.store == "pg":
                from tests.postgres import Postgres

                pg = Postgres().start()
                where = pg.create_database()
            else:
                where = str(Path(tmp) / "prof.db")
            port = str(broker.port)
            n = str(args.messages)
            child = [*me, "central", port, args.store, where]
            subprocess.run([*child, "subscribe", n], check=True, cwd=ROOT)
            print(f"publishing {n} messages", file=sys.stderr)
            subprocess.run(
                [*me, "publish", port, str(args.devices), n], check=True, cwd=ROOT,
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
            print("draining under py-spy", file=sys.stderr)
            raw = Path(tmp) / "raw.txt"
            out = subprocess.run(
                [spy, "record", "--format", "raw", "-r", str(args.rate), "-o", str(raw),
                 "--threads", "--", *child, "drain", n],
                check=True, cwd=ROOT, capture_output=True, text=True,
            )  # fmt: skip
            result = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
            if args.raw:
                shutil.copy(raw, args.raw)
            lines = raw.read_text().splitlines()
        finally:
            if pg is not None:
                pg.stop()
            broker.stop()
    report(args, result, lines)
    return 0


def report(args: argparse.Namespace, result: dict[str, float], lines: list[str]) -> None:
    by_stage: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in lines:
        stack_text, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        frames = stack_text.split(";")
        # Startup (imports, connect) is not the drain.
        if not any("run (central/ingest/consumer.py" in f or "paho" in f for f in frames):
            continue
        c = int(count_text)
        total += c
        by_stage[stage_of(frames)] += c
        own[frames[-1]] += c
    us = 1e6 * result["cpu_s"] / args.messages
    print(
        f"## Ingest CPU by stage ({args.store}, {args.messages} messages, {args.devices} devices)\n"
    )
    print(
        f"Consumer CPU {result['cpu_s']:.2f} s = **{us:.0f} µs/msg**; drained in "
        f"{result['took_s']:.1f} s, {result['batches']} batches, commit "
        f"{result['commit_ms_avg']:.1f} ms avg. {total} busy samples.\n"
    )
    print("| stage | samples | share | µs/msg |")
    print("| --- | ---: | ---: | ---: |")
    for name, c in by_stage.most_common():
        print(f"| {name} | {c} | {c / max(1, total):.0%} | {us * c / max(1, total):.0f} |")
    print(f"\nTop {args.top} functions by own samples:\n")
    for frame, c in own.most_common(args.top):
        print(f"- {c / max(1, total):.1%} {frame}")
    print(f"\nCommand: `{shlex.join([sys.executable, *sys.argv])}`")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, *rest = sys.argv[2:]
        if kind == "publish":
            child_publish(int(rest[0]), int(rest[1]), int(rest[2]))
        else:
            child_central(int(rest[0]), rest[1], rest[2], rest[3], int(rest[4]))
        sys.exit(0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
