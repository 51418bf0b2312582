"""Replay benchmark: drain 100,000 buffered records to a local Mosquitto.

Run:  .venv/bin/python bench/bench_replay.py [--records 100000]

Side by side in one run, on the same machine and broker:
  baseline  one QoS 1 MQTT message per record (paho's default 20 in flight): what a naive
            store-and-forward does, and what tops out near 10,000 messages/s in Python;
  titik     the agent's real replay path (Agent._replay -> TelemetryBatch messages), with
            the spool read back from disk, at the default batch size and at a large one.
A separate consumer process subscribes and counts every record, so "drained" means the
records reached a subscriber, not only that the broker acknowledged them.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import core  # noqa: E402
from agent.config import parse_config  # noqa: E402
from agent.core import Agent, open_spool  # noqa: E402
from agent.platforms.simulated import SimulatedPlatform  # noqa: E402
from agent.protocol import Topics, encode  # noqa: E402
from agent.spool import Record  # noqa: E402
from agent.state import AgentState  # noqa: E402
from central.sim.localbroker import LocalBroker  # noqa: E402

TARGET = 20_000


def consumer(host: str, port: int, topic: str, ready: Any, done: Any, expected: int) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    count = 0

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        nonlocal count
        count += m.payload.count(b'"seq":')
        if count >= expected:
            done.set()

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-consumer-{os.getpid()}")
    c.on_message = on_message
    c.on_subscribe = lambda *a: ready.set()
    c.connect(host, port)
    c.subscribe(topic, qos=1)
    c.loop_forever()


def fill(directory: Path, n: int) -> int:
    """Buffer n realistic samples as an offline agent would, and close (all on disk)."""
    cfg = parse_config(
        {"mqtt": {"host": "x"}, "device": {"id": "gw-bench"}, "platform": {"kind": "simulated"}}
    )
    agent = Agent(cfg, SimulatedPlatform("gw-bench"), AgentState(None), open_spool(cfg, directory))
    spool = agent.spool
    spool.close()
    from agent.spool import Spool

    spool = Spool(directory / "buffer", max_bytes=1 << 30, flush_interval_s=1e9)
    template = agent.sample(seq=0)
    size = 0
    for seq in range(n):
        data = encode(template.model_copy(update={"seq": seq}))
        size += len(data)
        spool.append(Record(seq, template.ts, data))
    spool.close()
    return size // n


def run_case(
    name: str, broker: LocalBroker, state: Path, n: int, batch: int, inflight: int
) -> dict[str, Any]:
    cfg = parse_config(
        {
            "mqtt": {"host": broker.host, "port": broker.port},
            "device": {"id": "gw-bench"},
            "platform": {"kind": "simulated"},
            "telemetry": {"interval_s": 3600},
            "buffer": {
                "max_bytes": 1 << 30,
                "replay_rate": 10**7,
                "replay_jitter_s": 0,
                "batch_records": batch,
                "flush_interval_s": 600,
            },
        }
    )
    ready, done = mp.Event(), mp.Event()
    proc = mp.Process(
        target=consumer,
        args=(
            broker.host,
            broker.port,
            Topics("titik", "gw-bench").telemetry + "/#",
            ready,
            done,
            n,
        ),
        daemon=True,
    )
    proc.start()
    ready.wait(10)
    core.MAX_INFLIGHT_BATCHES = inflight
    agent = Agent(cfg, SimulatedPlatform("gw-bench"), AgentState(None), open_spool(cfg, state))
    agent._next_sample = float("inf")  # only the replay is measured
    pending0 = agent.spool.pending
    cpu0 = time.process_time()
    t0 = time.monotonic()
    last = t0
    while not done.is_set():
        wait = agent.tick()
        agent.link.step(min(wait, 0.05))
        now = time.monotonic()
        if now - last > 2:
            last = now
            print(f"  {name}: {agent.counts.replayed:,} records sent", file=sys.stderr)
        if now - t0 > 300:
            break
    elapsed = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    agent.shutdown("bench")
    proc.terminate()
    return {
        "name": name,
        "records": pending0,
        "seconds": elapsed,
        "rate": pending0 / elapsed,
        "cpu_us": 1e6 * cpu / max(1, pending0),
        "complete": done.is_set(),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument(
        "--baseline-records",
        type=int,
        default=20_000,
        help="records for the one-message-per-record baseline (it is slow)",
    )
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="titik-bench-replay-") as tmp:
        base = Path(tmp)
        broker_dir = base / "broker"
        broker_dir.mkdir()
        broker = LocalBroker(broker_dir)
        broker.start()
        try:
            cases = [
                ("baseline: 1 record per message, 20 in flight", args.baseline_records, 1, 20),
                ("titik: default batch_records=50", args.records, 50, core.MAX_INFLIGHT_BATCHES),
                ("titik: batch_records=500", args.records, 500, core.MAX_INFLIGHT_BATCHES),
            ]
            for name, n, batch, inflight in cases:
                state = base / name.split(":")[0] / str(batch)
                state.mkdir(parents=True)
                print(f"filling {n:,} records for {name} ...", file=sys.stderr)
                size = fill(state, n)
                print(f"replaying ({size} B per record) ...", file=sys.stderr)
                rows.append(run_case(name, broker, state, n, batch, inflight) | {"size": size})
        finally:
            broker.stop()
    print(
        f"\nMachine: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{platform.machine()}; command: .venv/bin/python bench/bench_replay.py "
        f"--records {args.records}\n"
    )
    print("| case | records | seconds | records/s | agent CPU µs/record | all received | target |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        target = f"≥ {TARGET:,}/s" if r["name"].startswith("titik") else "-"
        print(
            f"| {r['name']} | {r['records']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} | "
            f"{r['cpu_us']:.1f} | {'yes' if r['complete'] else 'NO'} | {target} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
