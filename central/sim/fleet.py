"""titik-sim: a simulated fleet in one process, from the demo's handful to a city's 9,000.

Each gateway is a real :class:`agent.core.Agent` (the same publishing, buffering and
config code paths as a gateway) on the simulated platform. One thread drives them all with
an event loop: a heap of next-due times says which agents to tick, and a selector says which
MQTT sockets are ready, so a pass costs what is due and ready, not one syscall per gateway.
Gateways are spread over Jakarta's administrative cities with plausible positions, sites and
groups. The scenarios are in :mod:`central.sim.scenarios` and :mod:`central.sim.chaos`, the
stack they run against in :mod:`central.sim.stack`; :mod:`central.sim.cli` is ``titik-sim``.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import queue
import random
import resource
import selectors
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import Telemetry
from agent.service.simulated import FAULTS
from agent.state import AgentState
from central.sim.localbroker import source_address

log = logging.getLogger("titik.sim")


@dataclass(frozen=True)
class Region:
    name: str
    lat: float
    lon: float
    weight: int  # share of the access points


#: Jakarta's administrative cities, with their approximate centres.
REGIONS = (
    Region("Jakarta Pusat", -6.182, 106.834, 3),
    Region("Jakarta Utara", -6.138, 106.883, 3),
    Region("Jakarta Barat", -6.168, 106.759, 4),
    Region("Jakarta Selatan", -6.261, 106.810, 4),
    Region("Jakarta Timur", -6.225, 106.900, 5),
    Region("Kepulauan Seribu", -5.750, 106.600, 1),
)
SITES = ("Taman", "Pasar", "Halte TransJakarta", "Puskesmas", "Kantor Kelurahan", "RPTRA")


def gateway_plan(n: int, seed: int = 1) -> list[dict[str, object]]:
    """Pure: ``n`` gateways' device sections, deterministic for a seed."""
    rng = random.Random(seed)
    regions = [r for r in REGIONS for _ in range(r.weight)]
    plan = []
    for i in range(n):
        r = rng.choice(regions)
        spread = 0.01 if r.name == "Kepulauan Seribu" else 0.035
        slug = r.name.lower().replace(" ", "-")
        plan.append(
            {
                "id": f"gw-sim-{i:05d}",
                "site": f"{rng.choice(SITES)} {r.name.split()[-1]} {i % 97 + 1}",
                "region": r.name,
                "lat": round(r.lat + rng.uniform(-spread, spread), 5),
                "lon": round(r.lon + rng.uniform(-spread, spread), 5),
                # a region, a quarter of the fleet, a cohort of 1,000 (the unit of a canary
                # push), and the whole city (the group a rollout in waves goes to)
                "groups": [slug, f"wave-{i % 4 + 1}", f"cohort-{i // 1000 + 1}", "city"],
            }
        )
    return plan


#: Longest the loop sleeps, so stop requests and queued calls are served promptly.
MAX_WAIT_S = 0.2
#: How often each connection's keepalive is checked (paho's ``loop_misc``), as a share of
#: the gateway's ``mqtt.keepalive_s``: paho sends a PINGREQ once ``keepalive_s`` passed without
#: traffic, so checked every quarter of it a ping leaves by 1.25 x keepalive, before the
#: broker's 1.5 x. (Every 5 s, as before, was 12 wake-ups a minute per gateway for one sample:
#: at 2,000 gateways, most of the simulator's CPU; 50,000 would not fit in one core.)
MISC_SHARE = 0.25
#: Threads for ticks that handle config documents or commands. Those run firmware hooks as
#: subprocesses (about 50 ms per apply on the simulated platform): on the loop's thread, a
#: push to 1,000 gateways would stall the other 8,000 for most of a minute.
HOOK_WORKERS = 8
#: Threads for connection attempts. paho connects with a blocking ``connect()``: while a
#: broker is shutting down or swamped, its accept queue is full, SYNs are dropped and each
#: attempt blocks for seconds (up to paho's 5 s timeout). A gateway waits for its own; on
#: the loop's thread one such wait stalls the whole fleet (found at 9,000: reconnects came
#: in bursts with 15 s gaps, and the outage went unnoticed for a minute). Not more: every
#: thread competes for the GIL, and 128 of them starved the loop (most of its time went to
#: getting the GIL back).
CONNECT_WORKERS = 16


def plant_faults(n: int, each: int, seed: int = 1) -> dict[str, str]:
    """Pure: ``each`` gateways of ``n`` for each service fault (agent.service.simulated.FAULTS),
    picked at random but the same for a seed; device id -> fault."""
    if each <= 0:
        return {}
    if 3 * each > n:
        raise ValueError(f"{each} gateways for each of 3 faults: the fleet has only {n}")
    picked = random.Random(f"faults-{seed}").sample(range(n), 3 * each)
    return {f"gw-sim-{i:05d}": FAULTS[k // each] for k, i in enumerate(picked)}


def raise_nofile(need: int = 0) -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit (one socket per gateway), and
    the hard limit itself to ``need`` when it is lower and this process may (root, or
    CAP_SYS_RESOURCE; up to the kernel's fs.nr_open). The broker and central, started by
    the simulator, inherit the limits. Returns (soft, hard) as they end up."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if need > hard:
        with contextlib.suppress(OSError, ValueError):
            ceiling = int(Path("/proc/sys/fs/nr_open").read_text())
            want = min(need, ceiling)
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class FleetStats:
    """What the loop saw, for the scenarios' measurements (appended by the loop thread)."""

    connects: list[float] = field(default_factory=list)  # wall time of each CONNACK seen
    passes: int = 0


#: Per (device, sid): [first seq, last seq, how many drawn] (as central.sim.stored counts).
Drawn = dict[tuple[str, str], list[int]]


class SimFleet(Protocol):
    """What the steady and outage scenarios read of a fleet: :class:`SimulatedFleet` in this
    process, or :class:`central.sim.workers.WorkerFleet` over several processes."""

    faults: dict[str, str]  # planted service faults, device id -> fault

    @property
    def size(self) -> int: ...
    @property
    def connected(self) -> int: ...
    @property
    def buffered(self) -> int: ...
    @property
    def sent(self) -> int: ...
    def pending(self) -> int: ...
    def device_ids(self) -> list[str]: ...
    def expected(self, skip: frozenset[str] = frozenset()) -> Drawn: ...
    def behind(self, most: int) -> list[tuple[str, bool, int, str | None]]: ...
    def connects(self) -> list[float]: ...
    def cpu_s(self) -> float: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class TrackedAgent(Agent):
    """An agent that remembers which sequence numbers it drew, under which ``sid``, so the
    scenarios can say which of them central stored. Within one process seqs are drawn in
    order, but a ``sid`` changes when the state cannot be written (a full disk): per sid the
    first and last seq and how many were drawn (a sample whose collection raised after its
    seq was drawn leaves a gap that is not counted)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.drawn: dict[str, list[int]] = {}  # sid -> [first seq, last seq, count]

    def sample(self, seq: int | None = None) -> Telemetry:
        t = super().sample(seq)
        if seq is None:
            r = self.drawn.get(t.sid)
            if r is None:
                self.drawn[t.sid] = [t.seq, t.seq, 1]
            else:
                r[1], r[2] = t.seq, r[2] + 1
        return t


class LoopFleet:
    """The plumbing a fleet driven by one event-loop thread shares (:class:`SimulatedFleet`,
    :class:`central.sim.light.LightFleet`): other threads hand the loop work
    (:meth:`call_soon`) and start and stop it; the scenarios read the CONNACKs it saw and the
    process's CPU. A subclass runs the loop in :meth:`run`, draining ``_calls`` until
    ``_stop`` is set."""

    thread_name = "titik-sim"

    def __init__(self) -> None:
        self.stats = FleetStats()
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread (the gateways are not thread-safe)."""
        self._calls.put(fn)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def connects(self) -> list[float]:
        """Wall time of every CONNACK seen."""
        return list(self.stats.connects)

    def cpu_s(self) -> float:
        """CPU seconds this process has used (user + system, every thread)."""
        t = os.times()
        return t.user + t.system


class SimulatedFleet(LoopFleet):
    """``n`` real agents on the simulated platform, driven by one event-loop thread.

    ``ramp_s`` spreads the first connection attempts; each gateway's first sample comes a
    random part of an interval after that, so samples are spread as in a real fleet.
    ``skew[i]`` is added to gateway ``i``'s wall clock (a clock jump, for the chaos scenario).
    ``port`` may be several (a broker's listeners, :func:`central.sim.localbroker.
    listeners_for`, or several edge brokers'): gateway ``i`` connects to
    ``port[i % len(port)]``. ``part``: only the gateways ``part[0]`` to ``part[1] - 1`` of the
    ``n`` (their ids, places and ports as in the whole fleet), for one worker process of
    :class:`central.sim.workers.WorkerFleet`. Past :func:`central.sim.localbroker.per_source`
    gateways (``per_source`` if given) they connect from several loopback addresses
    (:func:`central.sim.localbroker.source_address`).
    """

    def __init__(
        self,
        n: int,
        host: str,
        port: int | Sequence[int],
        workdir: Path,
        *,
        interval_s: float = 10.0,
        ramp_s: float = 0.0,
        reconnect_max_s: float | None = None,
        replay_jitter_s: float | None = None,
        seed: int = 1,
        service_interval_s: float | None = None,
        service_faults: int = 0,
        trusted_keys: tuple[str, ...] = (),
        part: tuple[int, int] | None = None,
        per_source: int | None = None,
    ) -> None:
        super().__init__()
        first, end = part if part is not None else (0, n)
        self.agents: list[TrackedAgent] = []
        self.roots: list[Path] = []
        self.skew = [0.0] * (end - first)
        self.interval_s = interval_s
        rng = random.Random(seed)
        now = time.monotonic()
        self._start_at: list[float] = []
        # A gateway's defaults (agent/config.py) unless a test asks for faster ones.
        ports = [port] if isinstance(port, int) else list(port)
        mqtt: dict[str, object] = {"host": host}
        if reconnect_max_s is not None:
            mqtt["reconnect_max_s"] = reconnect_max_s
        buffer = {} if replay_jitter_s is None else {"replay_jitter_s": replay_jitter_s}
        #: Gateways given a service fault (issue 20): device id -> fault.
        self.faults = plant_faults(n, service_faults, seed) if service_interval_s else {}
        service: dict[str, object] = (
            {
                "enabled": True,
                "interval_s": service_interval_s,
                "jitter_s": min(30.0, service_interval_s / 10),
            }
            if service_interval_s
            else {}
        )
        for k, device in enumerate(gateway_plan(n, seed)[first:end]):
            state = workdir / str(device["id"])
            cfg = parse_config(
                {
                    "device": device,
                    "mqtt": {
                        **mqtt,
                        "port": ports[(first + k) % len(ports)],
                        **(
                            {"source_address": src}
                            if (src := source_address(first + k, n, per_source))
                            else {}
                        ),
                    },
                    "telemetry": {"interval_s": interval_s},
                    "state": {"dir": str(state)},
                    "platform": {"kind": "simulated", "root": str(state / "root")},
                    "buffer": buffer,
                    **({"service": service} if service else {}),
                    # the operations key (the upgrade scenario's manifest and commands)
                    **({"security": {"trusted_keys": list(trusted_keys)}} if trusted_keys else {}),
                },
                {},
            )
            platform = SimulatedPlatform(str(device["id"]))
            platform.service_fault = self.faults.get(str(device["id"]))
            wall = self._wall(len(self.agents))
            agent = TrackedAgent(
                cfg,
                platform,
                AgentState(state),
                open_spool(cfg, state, wall=wall),
                wall=wall,
                rng=rng,
            )
            start = now + rng.uniform(0, ramp_s)
            # Spread the first samples over an interval, as a real fleet's are; the agent
            # otherwise samples at construction and every gateway would keep the same phase.
            agent._next_sample = start + rng.uniform(0, interval_s)
            self.agents.append(agent)
            self.roots.append(state / "root")
            self._start_at.append(start)
        # Ticking in a worker thread: the loop leaves it alone.
        self._busy = [False] * len(self.agents)
        self._pool: ThreadPoolExecutor | None = None
        self._connect_pool: ThreadPoolExecutor | None = None

    def _wall(self, i: int) -> Callable[[], float]:
        skew = self.skew
        return lambda: time.time() + skew[i]

    # -- the event loop
    def run(self) -> None:
        """Drive every agent until :meth:`stop`, then say goodbye like a gateway would."""
        sel = selectors.DefaultSelector()
        n = len(self.agents)
        self._sel = sel
        self._fd = [-1] * n
        self._mask = [0] * n
        self._up = [False] * n
        self._misc_at = [0.0] * n
        self._tick_at = [0.0] * n  # before this, the agent said it has nothing due
        self._misc_every = [max(1.0, MISC_SHARE * a.cfg.mqtt.keepalive_s) for a in self.agents]
        self._next_at = list(self._start_at)
        heap = [(t, i) for i, t in enumerate(self._next_at)]
        heapq.heapify(heap)
        self._heap = heap
        self._pool = ThreadPoolExecutor(HOOK_WORKERS, thread_name_prefix="titik-sim-hooks")
        self._connect_pool = ThreadPoolExecutor(
            CONNECT_WORKERS, thread_name_prefix="titik-sim-connect"
        )
        try:
            while not self._stop.is_set():
                self.stats.passes += 1
                while not self._calls.empty():
                    self._calls.get()()
                now = time.monotonic()
                while heap and heap[0][0] <= now:
                    t, i = heapq.heappop(heap)
                    if t == self._next_at[i]:  # else a stale entry, rescheduled since
                        self._service(i, now)
                wait = (
                    min(MAX_WAIT_S, max(0.0, heap[0][0] - time.monotonic())) if heap else MAX_WAIT_S
                )
                for key, mask in sel.select(wait):
                    i = key.data
                    link = self.agents[i].link
                    if mask & selectors.EVENT_READ:
                        link.loop_read()
                    if mask & selectors.EVENT_WRITE:
                        link.loop_write()
                    # Acks and messages may let the agent replay or apply something now.
                    self._service(i, time.monotonic(), io=True)
        finally:
            self._pool.shutdown(wait=True)
            self._connect_pool.shutdown(wait=True)
            for agent in self.agents:
                agent.shutdown("simulation stopped")
            sel.close()

    def _service(self, i: int, now: float, *, io: bool = False) -> None:
        """Tick gateway ``i`` if it is due (or its socket had something), connect it if due,
        check its keepalive if due."""
        if self._busy[i]:
            return  # a worker has it; _offloaded() schedules it again
        agent = self.agents[i]
        due = agent.link.due()
        if due is not None and now >= due and self._connect_pool is not None:
            self._offload(i, self._connect_pool)
            return
        if agent.messages_waiting and self._pool is not None:
            self._offload(i, self._pool)
            return
        if not io and now < self._tick_at[i]:
            # Woken for the keepalive check only: the agent's last tick said it has nothing
            # to do before _tick_at (as Agent.run on a gateway would sleep until then).
            self._after_tick(i, now, self._tick_at[i] - now)
            return
        self._after_tick(i, now, agent.tick())

    def _work(self, i: int) -> float:
        """What a worker does for gateway ``i``: a tick, and a connection attempt if due."""
        agent = self.agents[i]
        wait = agent.tick()
        agent.link.connect_if_due()
        return wait

    def _offload(self, i: int, pool: ThreadPoolExecutor) -> None:
        """Tick gateway ``i`` (and connect it, if due) in a worker thread. Until that is done
        the loop neither ticks it nor reads or writes its socket (its registration is
        dropped), so one thread at a time touches the agent, as on a gateway."""
        self._busy[i] = True
        if self._fd[i] >= 0:
            self._sel.unregister(self._fd[i])
            self._fd[i], self._mask[i] = -1, 0
        fut = pool.submit(self._work, i)
        fut.add_done_callback(lambda f: self.call_soon(lambda: self._offloaded(i, f)))

    def _offloaded(self, i: int, fut: Future[float]) -> None:
        self._busy[i] = False
        try:
            wait = fut.result()
        except Exception:  # as Agent.run would, keep the gateway going
            log.exception("gateway %s: tick failed", self.agents[i].device_id)
            wait = 1.0
        self._after_tick(i, time.monotonic(), wait)

    def _after_tick(self, i: int, now: float, wait: float) -> None:
        link = self.agents[i].link  # connection attempts are a worker's (see _service)
        if now >= self._misc_at[i]:
            link.loop_misc()
            self._misc_at[i] = now + self._misc_every[i]
        if link.want_write():
            link.loop_write()
        self._sync(i)
        due = link.due()
        self._tick_at[i] = now + min(wait, 3600.0)
        nxt = min(self._tick_at[i], self._misc_at[i], due if due is not None else now + 3600)
        nxt = max(nxt, now + 0.001)
        self._next_at[i] = nxt
        heapq.heappush(self._heap, (nxt, i))

    def _sync(self, i: int) -> None:
        """Keep the selector's registration in step with the link's socket and write wish."""
        link = self.agents[i].link
        sock = link.socket()
        fd = sock.fileno() if sock is not None else -1
        mask = 0
        if fd >= 0:
            mask = selectors.EVENT_READ | (selectors.EVENT_WRITE if link.want_write() else 0)
        old = self._fd[i]
        if old != fd or mask == 0:
            if old >= 0:
                # By number: the old socket may be closed already (epoll dropped it then).
                self._sel.unregister(old)
            if mask:
                self._sel.register(fd, mask, i)
            self._fd[i], self._mask[i] = (fd, mask) if mask else (-1, 0)
        elif mask != self._mask[i]:
            self._sel.modify(fd, mask, i)
            self._mask[i] = mask
        if link.connected and not self._up[i]:
            self.stats.connects.append(time.time())
        self._up[i] = link.connected

    # -- control from other threads (and call_soon, start and stop: LoopFleet)
    def drop(self, i: int) -> None:
        """Cut gateway ``i``'s connection as a failing backhaul would (no DISCONNECT, the
        broker sends the Will); the agent notices, buffers and reconnects with backoff.
        Call on the loop's thread (through :meth:`call_soon`)."""
        sock = self.agents[i].link.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- what the scenarios read (SimFleet); from another thread, as a census of plain reads
    @property
    def size(self) -> int:
        return len(self.agents)

    def device_ids(self) -> list[str]:
        return [a.device_id for a in self.agents]

    def pending(self) -> int:
        """Buffered records not yet handed to the broker."""
        return sum(a.spool.pending for a in self.agents)

    def expected(self, skip: frozenset[str] = frozenset()) -> Drawn:
        """The seqs each gateway drew (but those of ``skip``), for counting what was lost."""
        return {
            (a.device_id, sid): list(r)
            for a in self.agents
            if a.device_id not in skip
            for sid, r in list(a.drawn.items())
        }

    def behind(self, most: int) -> list[tuple[str, bool, int, str | None]]:
        """Up to ``most`` gateways not connected or with a backlog: (id, connected, pending,
        the link's last error)."""
        out = []
        for a in self.agents:
            if a.spool.pending or not a.link.connected:
                out.append((a.device_id, a.link.connected, a.spool.pending, a.link.last_error))
                if len(out) >= most:
                    break
        return out

    @property
    def connected(self) -> int:
        return sum(a.link.connected for a in self.agents)

    @property
    def buffered(self) -> int:
        return sum(a.spool.buffered for a in self.agents)

    @property
    def sent(self) -> int:
        """Samples handed to the broker live, plus records replayed."""
        return sum(a.counts.published + a.counts.replayed for a in self.agents)


def wait_connected(fleet: SimFleet, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    poll = min(1.0, max(0.2, fleet.size / 20_000))  # as stack.census_poll
    while fleet.connected < fleet.size and time.monotonic() < deadline:
        time.sleep(poll)
    return fleet.connected


# -- titik-sim ------------------------------------------------------------------------------
