"""A simulated fleet over several processes, for more gateways than one process may open
sockets for.

Each worker process runs a :class:`~central.sim.fleet.SimulatedFleet` of its share of the
gateways (their ids, places and broker ports as in one fleet of all of them), with its own
event loop; the parent asks every worker over a pipe for what the steady and outage
scenarios read (connected, buffered, sent, pending, the seqs each gateway drew, CONNACK
times) and adds the answers up. Why: every process here may hold at most its hard limit of
open files (20,000 in this sandbox, which cannot raise it), one socket per gateway; a
worker takes at most :data:`~central.sim.localbroker.PER_EDGE` gateways. The scenarios that
reach into the agents themselves (canary, rollout, upgrade, chaos, service, flap) need
one process.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from central.sim.fleet import Drawn, SimulatedFleet, gateway_plan, plant_faults
from central.sim.light import LightFleet
from central.sim.localbroker import PER_EDGE

log = logging.getLogger("titik.sim")

#: How long a worker may take to build its gateways and start its loop (17,000 agents, each
#: with its spool and state directory, take about a minute on this machine).
START_TIMEOUT_S = 600.0
#: How long a worker may take to say goodbye for its gateways at the end.
STOP_TIMEOUT_S = 120.0


def workers_for(gateways: int, per: int = PER_EDGE) -> int:
    """How many worker processes ``gateways`` need (1: the fleet fits in this one)."""
    return max(1, -(-gateways // per))


def split(n: int, parts: int) -> list[tuple[int, int]]:
    """Pure: ``n`` gateways in ``parts`` contiguous shares as even as can be."""
    bounds = [n * k // parts for k in range(parts + 1)]
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def _serve(conn: Connection, n: int, args: tuple[Any, ...], kw: dict[str, Any]) -> None:
    """A worker: build its share, run it, answer the parent until told to stop."""
    # Ctrl-C reaches the whole process group: the parent stops the workers in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # As the parent's: thousands of agents, only their errors (each sets "titik" to INFO).
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: r.levelno >= logging.ERROR)
    fleet: SimulatedFleet | LightFleet = (
        LightFleet(n, *args, **kw) if kw.pop("light", False) else SimulatedFleet(n, *args, **kw)
    )
    fleet.start()
    conn.send(fleet.size)
    answers = {
        "connected": lambda: fleet.connected,
        "buffered": lambda: fleet.buffered,
        "sent": lambda: fleet.sent,
        "pending": fleet.pending,
        "device_ids": fleet.device_ids,
        "connects": fleet.connects,
        "cpu_s": fleet.cpu_s,
    }
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            fleet.stop()
            return
        if cmd == "stop":
            fleet.stop()
            conn.send(None)
            return
        if cmd == "expected":
            conn.send(fleet.expected(arg))
        elif cmd == "behind":
            conn.send(fleet.behind(arg))
        else:
            conn.send(answers[cmd]())


class WorkerFleet:
    """``n`` gateways in ``workers`` processes (:class:`~central.sim.fleet.SimFleet`); the
    arguments are :class:`~central.sim.fleet.SimulatedFleet`'s, and ``light=True`` makes each
    worker's a :class:`~central.sim.light.LightFleet`."""

    def __init__(
        self,
        n: int,
        host: str,
        port: list[int],
        workdir: Path,
        *,
        workers: int,
        seed: int = 1,
        service_interval_s: float | None = None,
        service_faults: int = 0,
        **kw: Any,
    ) -> None:
        if workers < 1 or workers > n:
            raise ValueError(f"{workers} workers for {n} gateways: 1 to {n}")
        self.n = n
        self.faults = plant_faults(n, service_faults, seed) if service_interval_s else {}
        self._ids = [str(d["id"]) for d in gateway_plan(n, seed)]
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._theirs: list[Connection] = []
        self._lock = threading.Lock()  # one question at a time on the pipes
        for part in split(n, workers):
            mine, theirs = ctx.Pipe()
            opts = {
                **kw,
                "seed": seed,
                "service_interval_s": service_interval_s,
                "service_faults": service_faults,
                "part": part,
            }
            proc = ctx.Process(
                target=_serve,
                args=(theirs, n, (host, port, workdir), opts),
                name=f"titik-sim-worker-{len(self._procs) + 1}",
                daemon=True,
            )
            self._conns.append(mine)
            self._theirs.append(theirs)
            self._procs.append(proc)

    @property
    def workers(self) -> int:
        return len(self._procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p.pid is not None]

    def start(self) -> None:
        """Start every worker; back once each has built its gateways and runs its loop."""
        for proc in self._procs:
            proc.start()
        for theirs in self._theirs:  # the worker's end is the worker's: EOF when it dies
            theirs.close()
        for conn, proc in zip(self._conns, self._procs, strict=True):
            if not conn.poll(START_TIMEOUT_S):
                raise RuntimeError(f"{proc.name} did not start within {START_TIMEOUT_S:.0f}s")
            try:
                conn.recv()
            except EOFError:
                raise RuntimeError(f"{proc.name} exited {proc.exitcode} while starting") from None

    def _ask(self, cmd: str, arg: object = None) -> list[Any]:
        with self._lock:
            for conn in self._conns:
                conn.send((cmd, arg))
            return [conn.recv() for conn in self._conns]

    @property
    def size(self) -> int:
        return self.n

    @property
    def connected(self) -> int:
        return sum(self._ask("connected"))

    @property
    def buffered(self) -> int:
        return sum(self._ask("buffered"))

    @property
    def sent(self) -> int:
        return sum(self._ask("sent"))

    def pending(self) -> int:
        return sum(self._ask("pending"))

    def device_ids(self) -> list[str]:
        return list(self._ids)

    def expected(self, skip: frozenset[str] = frozenset()) -> Drawn:
        out: Drawn = {}
        for part in self._ask("expected", skip):
            out.update(part)
        return out

    def behind(self, most: int) -> list[tuple[str, bool, int, str | None]]:
        return [b for part in self._ask("behind", most) for b in part][:most]

    def connects(self) -> list[float]:
        return sorted(t for part in self._ask("connects") for t in part)

    def cpu_s(self) -> float:
        """CPU seconds of this process and every worker."""
        t = os.times()
        return float(t.user + t.system + sum(self._ask("cpu_s")))

    def stop(self) -> None:
        """Every worker stops its gateways (each says goodbye as a gateway would) and exits."""
        with self._lock:
            for conn, proc in zip(self._conns, self._procs, strict=True):
                if proc.is_alive():
                    with contextlib.suppress(OSError):
                        conn.send(("stop", None))
            for conn, proc in zip(self._conns, self._procs, strict=True):
                with contextlib.suppress(OSError, EOFError):
                    if proc.is_alive() and conn.poll(STOP_TIMEOUT_S):
                        conn.recv()
                proc.join(10)
                if proc.is_alive():
                    proc.terminate()
                    proc.join(10)
