"""What one simulated gateway's recovery costs the simulator: CPU per reconnect and replay.

Run:  .venv/bin/python bench/diag/sim_reconnect.py [--gateways 4000] [--down 35]

N real agents (central.sim.fleet.SimulatedFleet, state on tmpfs) connect to a throwaway
Mosquitto; the broker stops for ``--down`` seconds (each gateway buffers a sample or so), then
starts again, and this process's CPU (user and system, every thread) is measured from the
restart until every gateway is connected with nothing left to send. Also reported: the
cyclic garbage collector's share (``gc.callbacks``). No central: only the gateways' side.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from central.sim.cli import setup_logging  # noqa: E402
from central.sim.fleet import SimulatedFleet, raise_nofile, wait_connected  # noqa: E402
from central.sim.light import LightFleet  # noqa: E402
from central.sim.localbroker import LocalBroker, listeners_for  # noqa: E402


class GcTimer:
    def __init__(self) -> None:
        self.total = 0.0
        self.by_gen = [0, 0, 0]
        self.time_gen = [0.0, 0.0, 0.0]
        self._t0 = 0.0
        gc.callbacks.append(self)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            took = time.perf_counter() - self._t0
            self.total += took
            self.time_gen[info["generation"]] += took
            self.by_gen[info["generation"]] += 1


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu() -> tuple[float, float]:
    t = os.times()
    return t.user, t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateways", type=int, default=4000)
    ap.add_argument("--interval", type=float, default=30.0)
    ap.add_argument("--down", type=float, default=35.0, help="seconds the broker is down")
    ap.add_argument("--reconnect-max", type=float, default=15.0)
    ap.add_argument("--replay-jitter", type=float, default=5.0)
    ap.add_argument(
        "--light", action="store_true", help="light gateways (central.sim.light), not agents"
    )
    args = ap.parse_args()
    setup_logging()
    raise_nofile(args.gateways + 200)
    work = Path(tempfile.mkdtemp(prefix="simrc-", dir="/dev/shm"))
    # Persistent, as the simulator's: the sessions come back with the broker.
    broker = LocalBroker(work, persistence=True, listeners=listeners_for(args.gateways))
    broker.start()
    fleet = (LightFleet if args.light else SimulatedFleet)(
        args.gateways,
        broker.host,
        broker.ports,
        work / "gw",
        interval_s=args.interval,
        ramp_s=5.0,
        reconnect_max_s=args.reconnect_max,
        replay_jitter_s=args.replay_jitter,
    )
    fleet.start()
    try:
        n = wait_connected(fleet, 120)
        print(f"connected {n}/{args.gateways}", flush=True)
        broker.stop()
        t = time.monotonic()
        while fleet.connected:
            time.sleep(0.2)
        time.sleep(max(0.0, args.down - (time.monotonic() - t)))
        backlog = fleet.pending()
        print(f"objects the collector tracks: {len(gc.get_objects())}", flush=True)
        timer = GcTimer()
        u0, s0 = cpu()
        t0 = time.monotonic()
        broker.start()
        if broker.proc is None:
            raise SystemExit("mosquitto did not start")
        pid = broker.proc.pid
        b0 = proc_cpu(pid)
        while fleet.connected < fleet.size or fleet.pending():
            time.sleep(0.25)
            if time.monotonic() - t0 > 300:
                raise SystemExit("not drained in 300 s")
        took = time.monotonic() - t0
        u1, s1 = cpu()
        b1 = proc_cpu(pid)
        gc.callbacks.remove(timer)
        print(f"after the recovery: {len(gc.get_objects())}", flush=True)
        per = (u1 - u0 + s1 - s0) / args.gateways * 1000
        print(
            f"gateways {args.gateways} backlog {backlog} drained {took:.1f}s  "
            f"cpu user {u1 - u0:.2f}s sys {s1 - s0:.2f}s  per gateway {per:.2f} ms  "
            f"broker {b1 - b0:.2f}s ({(b1 - b0) / args.gateways * 1000:.2f} ms per gateway)  "
            f"gc {timer.total:.2f}s (collections by generation {timer.by_gen}, seconds "
            f"{[round(x, 2) for x in timer.time_gen]})",
            flush=True,
        )
    finally:
        fleet.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
