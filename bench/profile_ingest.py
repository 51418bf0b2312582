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
    .venv/bin/python bench/profile_ingest.py --store pg --devices 10000 --messages 20000 --kind status

``--kind status``: the backlog is statuses, every gateway online and then its Will, as central
takes them after a broker restart (Mosquitto sends every client's Will when it stops).

Prints a markdown table (stage, samples, µs per message) and the top functions by own
samples; ``--raw FILE`` keeps py-spy's collapsed stacks. Needs py-spy (the dev extra).

Before and after in one run (the machine's load moves every figure; compare within a run):

    git -C /work/main archive HEAD | tar -x -C /tmp/ingest-before   # (mkdir it first)
    .venv/bin/python bench/profile_ingest.py --before /tmp/ingest-before --rounds 3 --bare

drains the backlog with TREE's code and with this tree's in turns (before, after, before...),
each into a fresh database, ``--bare`` with bench/bench_multi.py's bare paho subscriber
draining the same backlog just before each, and ends with the medians and each run's ratio
to its bare subscriber.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shlex
import shutil
import signal
import statistics
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

BENCH_MULTI = ROOT / "bench" / "bench_multi.py"

#: Stages, first match wins, by a frame's ``function (file)`` text anywhere in the stack,
#: checked from the innermost frame outwards; the writer's acks first (see ``stage_of``).
STAGES = (
    ("paho receive (network thread, to the inbox)", ("paho/mqtt/client.py",)),
    ("validation (model_validate_json)", ("validate_payload",)),
    ("to_sample (model_dump_json, Sample)", ("to_sample",)),
    ("fleet state (apply_live, take)", ("ingest/fleet.py",)),
    ("store write (SQL, commit)", ("store/pg/store.py", "store/sqlite.py", "psycopg")),
    ("lag histogram, commit bookkeeping", ("observe_lag", "_commit (central")),
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
        while consumer.stats.acked < messages:  # stored (a status updates its device's row)
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


ACKS = "acks (client.ack in the writer: PUBACK queued, socket pair written)"


def stage_of(stack: list[str]) -> str:
    # paho's own frames are innermost in an ack too; they are the writer's, not receiving.
    if any(f.startswith("Client.ack (paho/mqtt/client.py") for f in stack):
        return ACKS
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
    ap.add_argument(
        "--kind", choices=("telemetry", "status"), default="telemetry",
        help="what the backlog is: live samples, or statuses (every gateway online, then "
        "its Will, as after a broker restart)",
    )  # fmt: skip
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here (last run)")
    ap.add_argument("--top", type=int, default=25, help="functions listed by own samples")
    ap.add_argument(
        "--before", type=Path, metavar="TREE",
        help="also drain with the code in TREE (a source tree of titik with this script), "
        "alternating with this tree's",
    )  # fmt: skip
    ap.add_argument("--rounds", type=int, default=1, help="drains per tree")
    ap.add_argument(
        "--bare", action="store_true",
        help="before each drain a bare paho subscriber drains the same backlog "
        "(bench/bench_multi.py's): its CPU µs/msg and central's ratio to it",
    )  # fmt: skip
    args = ap.parse_args()
    trees = [("before", args.before.resolve()), ("after", ROOT)] if args.before else [("", ROOT)]
    for _, tree in trees:
        check_tree(tree)
    from central.sim.localbroker import LocalBroker

    runs: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp))
        broker.start()
        pg = None
        try:
            if args.store == "pg":
                from tests.postgres import Postgres

                pg = Postgres().start()
            port = str(broker.port)
            n = str(args.messages)
            if args.bare:
                bare_child(port, n, "subscribe")
            for r in range(args.rounds):
                for label, tree in trees:
                    if pg is not None:
                        where = pg.create_database()
                    else:
                        where = str(Path(tmp) / f"prof-{r}-{label}.db")
                    name = f"{label or 'this tree'}, round {r + 1}"
                    runs.append(one_run(args, name, tree, port, where, Path(tmp)))
                    runs[-1]["label"] = label
        finally:
            if pg is not None:
                pg.stop()
            broker.stop()
    if args.before or args.bare:
        summary(args, runs)
    return 0


def one_run(
    args: argparse.Namespace, name: str, tree: Path, port: str, where: str, tmp: Path
) -> dict[str, object]:
    """Publish a backlog, let the bare subscriber (``--bare``) and then TREE's central drain
    it; central's CPU µs per message and the bare one's."""
    n = str(args.messages)
    child = [sys.executable, str(tree / "bench" / "profile_ingest.py"), "_child"]
    child += ["central", port, args.store, where]
    run_in(tree, [*child, "subscribe", n])
    print(f"{name}: publishing {n} messages", file=sys.stderr)
    run_in(ROOT, [*mine(), "publish", port, str(args.devices), n, args.kind])
    bare = bare_child(port, n, "drain") if args.bare else None
    print(f"{name}: draining under py-spy", file=sys.stderr)
    result, lines = drain(args, tree, [*child, "drain", n], tmp)
    if args.before:
        print(f"\n# {name} ({tree})\n")
    report(args, result, lines)
    return {"us": 1e6 * result["cpu_s"] / args.messages, "bare": bare}


def mine() -> list[str]:
    return [sys.executable, __file__, "_child"]


def run_in(tree: Path, cmd: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    subprocess.run(cmd, check=True, cwd=tree, env=env, stdout=subprocess.DEVNULL)


def check_tree(tree: Path) -> None:
    """TREE's own ``central`` is the one its children import (not this venv's editable one)."""
    out = subprocess.run(
        [sys.executable, "-c", "import central; print(central.__file__)"],
        check=True, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
        capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not Path(out).resolve().is_relative_to(tree):
        sys.exit(f"{tree}: its children would import {out}, not that tree's central")
    if not (tree / "bench" / "profile_ingest.py").exists():
        sys.exit(f"{tree}: no bench/profile_ingest.py there")


def bare_child(port: str, n: str, phase: str) -> float | None:
    """bench_multi's bare subscriber; its CPU µs per message when draining."""
    out = subprocess.run(
        [sys.executable, str(BENCH_MULTI), "_child", "bare", port, n, phase],
        check=True, cwd=ROOT, capture_output=True, text=True,
    ).stdout.strip().splitlines()  # fmt: skip
    return 1e6 * json.loads(out[-1])["cpu_s"] / int(n) if phase == "drain" else None


def drain(
    args: argparse.Namespace, tree: Path, child: list[str], tmp: Path
) -> tuple[dict[str, float], list[str]]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = tmp / "raw.txt"
    out = subprocess.run(
        [spy, "record", "--format", "raw", "-r", str(args.rate), "-o", str(raw),
         "--threads", "--", *child],
        check=True, cwd=tree, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(tree)},
    )  # fmt: skip
    result = json.loads([x for x in out.stdout.splitlines() if x.startswith("{")][-1])
    if args.raw:
        shutil.copy(raw, args.raw)
    return result, raw.read_text().splitlines()


def summary(args: argparse.Namespace, runs: list[dict[str, object]]) -> None:
    print(f"\n## Consumer CPU µs/msg ({args.store}, {args.messages} messages each)\n")
    print("| run | consumer µs/msg | bare µs/msg | x bare |")
    print("| --- | ---: | ---: | ---: |")
    labels = list(dict.fromkeys(str(r["label"]) for r in runs))
    for r in runs:
        us, bare = float(r["us"]), r["bare"]  # type: ignore[arg-type]
        ratio = f"{us / bare:.2f}" if isinstance(bare, float) else ""
        b = f"{bare:.0f}" if isinstance(bare, float) else ""
        print(f"| {r['label'] or 'this tree'} | {us:.0f} | {b} | {ratio} |")
    for label in labels:
        mine_ = [r for r in runs if r["label"] == label]
        med = statistics.median(float(r["us"]) for r in mine_)  # type: ignore[arg-type]
        ratios = [
            float(r["us"]) / r["bare"]  # type: ignore[arg-type, operator]
            for r in mine_
            if isinstance(r["bare"], float)
        ]
        text = f", median x bare {statistics.median(ratios):.2f}" if ratios else ""
        print(f"\n**{label or 'this tree'}**: median {med:.0f} µs/msg over {len(mine_)}{text}")
    print(f"\nCommand: `{shlex.join([sys.executable, *sys.argv])}`")


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
            child_publish(int(rest[0]), int(rest[1]), int(rest[2]), status=rest[3] == "status")
        else:
            child_central(int(rest[0]), rest[1], rest[2], rest[3], int(rest[4]))
        sys.exit(0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
