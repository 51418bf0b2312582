"""titik-sim: a simulated fleet in one process, from the demo's handful to a city's 9,000.

Each gateway is a real :class:`agent.core.Agent` (the same publishing, buffering and
config code paths as a gateway) on the simulated platform. One thread drives them all with
an event loop: a heap of next-due times says which agents to tick, and a selector says which
MQTT sockets are ready, so a pass costs what is due and ready, not one syscall per gateway.
Gateways are spread over Jakarta's administrative cities with plausible positions, sites and
groups. The scenarios (steady, outage, flap, canary, chaos) are in :mod:`central.sim.scenarios`; ``main`` is
the ``titik-sim`` command.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import logging
import os
import queue
import random
import resource
import selectors
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import Telemetry
from agent.state import AgentState

if TYPE_CHECKING:
    from central.sim import scenarios

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
                # a region, a quarter of the fleet, and a cohort of 1,000 (the unit of a rollout)
                "groups": [slug, f"wave-{i % 4 + 1}", f"cohort-{i // 1000 + 1}"],
            }
        )
    return plan


#: Longest the loop sleeps, so stop requests and queued calls are served promptly.
MAX_WAIT_S = 0.2
#: How often each connection's keepalive is checked (paho's ``loop_misc``).
MISC_EVERY_S = 5.0
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


def raise_nofile() -> tuple[int, int]:
    """Raise the soft limit of open files to the hard limit: one socket per gateway."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


@dataclass
class FleetStats:
    """What the loop saw, for the scenarios' measurements (appended by the loop thread)."""

    connects: list[float] = field(default_factory=list)  # wall time of each CONNACK seen
    passes: int = 0


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


class Fleet:
    """``n`` real agents on the simulated platform, driven by one event-loop thread.

    ``ramp_s`` spreads the first connection attempts; each gateway's first sample comes a
    random part of an interval after that, so samples are spread as in a real fleet.
    ``skew[i]`` is added to gateway ``i``'s wall clock (a clock jump, for the chaos scenario).
    """

    def __init__(
        self,
        n: int,
        host: str,
        port: int,
        workdir: Path,
        *,
        interval_s: float = 10.0,
        ramp_s: float = 0.0,
        reconnect_max_s: float | None = None,
        replay_jitter_s: float | None = None,
        seed: int = 1,
    ) -> None:
        self.agents: list[TrackedAgent] = []
        self.roots: list[Path] = []
        self.skew = [0.0] * n
        self.interval_s = interval_s
        rng = random.Random(seed)
        now = time.monotonic()
        self._start_at: list[float] = []
        # A gateway's defaults (agent/config.py) unless a test asks for faster ones.
        mqtt: dict[str, object] = {"host": host, "port": port}
        if reconnect_max_s is not None:
            mqtt["reconnect_max_s"] = reconnect_max_s
        buffer = {} if replay_jitter_s is None else {"replay_jitter_s": replay_jitter_s}
        for device in gateway_plan(n, seed):
            state = workdir / str(device["id"])
            cfg = parse_config(
                {
                    "device": device,
                    "mqtt": mqtt,
                    "telemetry": {"interval_s": interval_s},
                    "state": {"dir": str(state)},
                    "platform": {"kind": "simulated", "root": str(state / "root")},
                    "buffer": buffer,
                },
                {},
            )
            platform = SimulatedPlatform(str(device["id"]))
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
        self.stats = FleetStats()
        self._busy = [False] * n  # ticking in a worker thread: the loop leaves it alone
        self._pool: ThreadPoolExecutor | None = None
        self._connect_pool: ThreadPoolExecutor | None = None
        self._calls: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

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
                    self._service(i, time.monotonic())
        finally:
            self._pool.shutdown(wait=True)
            self._connect_pool.shutdown(wait=True)
            for agent in self.agents:
                agent.shutdown("simulation stopped")
            sel.close()

    def _service(self, i: int, now: float) -> None:
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
            self._misc_at[i] = now + MISC_EVERY_S
        if link.want_write():
            link.loop_write()
        self._sync(i)
        due = link.due()
        nxt = min(now + min(wait, 3600.0), self._misc_at[i], due if due is not None else now + 3600)
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

    # -- control from other threads
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop's thread (the agents are not thread-safe)."""
        self._calls.put(fn)

    def drop(self, i: int) -> None:
        """Cut gateway ``i``'s connection as a failing backhaul would (no DISCONNECT, the
        broker sends the Will); the agent notices, buffers and reconnects with backoff.
        Call on the loop's thread (through :meth:`call_soon`)."""
        sock = self.agents[i].link.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="titik-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

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


def wait_connected(fleet: Fleet, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while fleet.connected < len(fleet.agents) and time.monotonic() < deadline:
        time.sleep(0.2)
    return fleet.connected


# -- titik-sim ------------------------------------------------------------------------------


def progress(fleet: Fleet, db: Path | None, stop: threading.Event, every_s: float = 5.0) -> None:
    """One line every few seconds: connected, messages/s sent and ingested, buffered."""
    from central.sim.scenarios import stored_rows

    sent, rows, t = fleet.sent, stored_rows(db) if db else 0, time.monotonic()
    while not stop.wait(every_s):
        now_sent, now_rows, now = fleet.sent, stored_rows(db) if db else 0, time.monotonic()
        dt = now - t
        ingest = f", central {(now_rows - rows) / dt:.0f} rows/s" if db else ""
        log.info(
            "connected %d/%d, sent %.0f msg/s%s, buffered %d",
            fleet.connected,
            len(fleet.agents),
            (now_sent - sent) / dt,
            ingest,
            fleet.buffered,
        )
        sent, rows, t = now_sent, now_rows, now


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a whole number of 1 or more")
    return int(text)


def parse_hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: write it as HOST:PORT")
    return host, int(port)


def rss_bytes() -> int:
    """Resident memory of this process (Linux), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


SCENARIOS = ("steady", "outage", "flap", "canary", "failing-canary", "chaos")


def parse_scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in SCENARIOS]
    if wrong or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(wrong) or text!r}: choose from {', '.join(SCENARIOS)}"
        )
    return names


def run_scenario(
    name: str,
    args: argparse.Namespace,
    fleet: Fleet,
    stack: scenarios.Stack,
    run_dir: Path,
    plan: scenarios.ChaosPlan | None = None,
) -> scenarios.Result:
    from central.sim import scenarios

    seconds = args.minutes * 60
    if name == "chaos":
        assert plan is not None  # noqa: S101 - main() makes it when chaos is asked for
        return scenarios.chaos(fleet, stack, seconds, plan)
    if name == "steady":
        return scenarios.steady(fleet, stack, seconds)
    if name == "outage":
        return scenarios.outage(fleet, stack, args.outage_minutes * 60)
    if name == "flap":
        return scenarios.flap(fleet, stack, seconds)
    return scenarios.canary(
        fleet,
        stack,
        args.group,
        run_dir,
        batch=args.canary,
        fail=args.fail_canary or name == "failing-canary",
        timeout=args.ctl_timeout,
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="titik-sim",
        description=(
            "Run N simulated gateways (real agents on the simulated platform, spread over "
            "Jakarta) against Mosquitto and central, play scenarios on them and report what "
            "was measured. Without --broker it starts its own Mosquitto and titik-central in "
            "--workdir and stops them at the end. Progress is logged every 5 s."
        ),
        epilog=(
            "examples:\n"
            "  titik-sim --gateways 200 --minutes 1\n"
            "  titik-sim --gateways 9000 --ramp 60 --scenario steady,outage,canary \\\n"
            "            --minutes 5 --outage-minutes 10 --canary 10 --report sim.md\n"
            "scenarios:\n"
            "  steady          run as is: connections, msg/s sent and stored, lag p50/p95\n"
            "  outage          stop the broker for --outage-minutes, start it again: backlog,\n"
            "                  reconnect storm, drain time, broker/central CPU, records lost\n"
            "  flap            a tenth of the gateways lose their connection at random\n"
            "  canary          titik-ctl config push --group G --canary BATCH of a Wi-Fi config\n"
            "  failing-canary  the same with the canaries' firmware failing: it must halt\n"
            "  chaos           for --minutes: 5% of the gateways' state disks full and 5%\n"
            "                  of their clocks a day off, 3 extra clients sending poison\n"
            "                  messages, the broker restarted, central killed (SIGKILL) and\n"
            "                  restarted; then every record of every gateway must be stored\n"
            "                  once (full disks need root: a small tmpfs per gateway)\n"
            "docs/simulator.md explains each figure."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--gateways", type=positive_int, default=200, metavar="N", help="(default: 200)"
    )
    ap.add_argument(
        "--broker",
        type=parse_hostport,
        metavar="HOST:PORT",
        help="an existing broker (default: start Mosquitto and central in --workdir)",
    )
    ap.add_argument("--central-db", type=Path, help="with --broker: central's SQLite, to count")
    ap.add_argument(
        "--interval", type=float, default=60.0, help="seconds between samples (default: 60)"
    )
    ap.add_argument(
        "--scenario",
        type=parse_scenarios,
        default=["steady"],
        metavar="NAME[,NAME...]",
        help=f"what to run, in order, on one fleet: {', '.join(SCENARIOS)} (default: steady)",
    )
    ap.add_argument("--minutes", type=float, default=2.0, help="how long steady and flap run")
    ap.add_argument(
        "--outage-minutes", type=float, help="how long the broker is down (default: --minutes)"
    )
    ap.add_argument("--ramp", type=float, default=10.0, help="seconds to spread first connects")
    ap.add_argument(
        "--group",
        default="cohort-1",
        help="canary: the group to push to (cohort-K holds 1,000 gateways, wave-K a quarter)",
    )
    ap.add_argument("--canary", default="2", help="canary: the batch (N or P%%)")
    ap.add_argument(
        "--fail-canary", action="store_true", help="canary: make the canaries fail (halts)"
    )
    ap.add_argument(
        "--ctl-timeout", type=float, default=300.0, help="canary: titik-ctl's --timeout"
    )
    ap.add_argument(
        "--workdir",
        type=Path,
        default=Path("titik-sim-work"),
        help="where each run's broker, central and gateway state go (default: ./titik-sim-work)",
    )
    ap.add_argument("--report", type=Path, metavar="FILE", help="write the figures as markdown")
    ap.add_argument(
        "--state-on-disk",
        action="store_true",
        help="keep the gateways' state and spools under --workdir, not on tmpfs (/dev/shm)",
    )
    return ap


def gateway_state(args: argparse.Namespace, run_dir: Path, stack: contextlib.ExitStack) -> Path:
    """Where the gateways keep their state and spools: on tmpfs unless --state-on-disk.

    A stand-in, said so in docs/simulator.md: each gateway fsyncs its own flash, but here
    9,000 gateways would share one disk and one interpreter lock, and during an outage their
    spills (about 300 fsyncs a second) held the event loop back for most of its time: the
    simulator would measure this machine's disk, not the fleet."""
    shm = Path("/dev/shm")
    if args.state_on_disk or not shm.is_dir() or not os.access(shm, os.W_OK):
        return run_dir / "gateways"
    where = shm / f"titik-sim-{os.getpid()}-{run_dir.name}"
    stack.callback(shutil.rmtree, where, ignore_errors=True)
    return where


def chaos_setup(
    args: argparse.Namespace, state: Path, stack: contextlib.ExitStack
) -> scenarios.ChaosPlan | None:
    """With the chaos scenario: who it hits, and the disk-full gateways' own small state
    filesystems, mounted before the fleet is built (unmounted when the run ends)."""
    from central.sim import scenarios

    if "chaos" not in args.scenario:
        return None
    ids = [str(d["id"]) for d in gateway_plan(args.gateways)]
    plan = scenarios.chaos_plan(args.gateways)
    return stack.enter_context(scenarios.small_disks(plan, [state / i for i in ids]))


def run_all(
    args: argparse.Namespace,
    fleet: Fleet,
    stack: scenarios.Stack,
    run_dir: Path,
    report: scenarios.Report,
    mem: dict[str, object],
    plan: scenarios.ChaosPlan | None = None,
) -> None:
    """The scenarios in order, each one's figures logged and (with --report) written."""
    for name in args.scenario:
        log.info("scenario %s", name)
        result = run_scenario(name, args, fleet, stack, run_dir, plan)
        result |= mem
        report.sections.append((name, result))
        for k, v in result.items():
            if k != "output":
                log.info("%s: %s", k, v)
        if "output" in result:
            print(result["output"], end="")
        if args.report:  # after each scenario: a long run keeps what it measured so far
            args.report.write_text(report.markdown())


def setup_logging() -> None:
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    # Thousands of agents: only their errors; each agent sets the "titik" level itself.
    for handler in logging.getLogger().handlers:
        handler.addFilter(lambda r: r.name == log.name or r.levelno >= logging.ERROR)
    log.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    from central.sim import scenarios

    parser = build_parser()
    args = parser.parse_args(argv)
    if "chaos" in args.scenario and args.broker:
        parser.error("the chaos scenario restarts the broker and central: run it without --broker")
    if args.outage_minutes is None:
        args.outage_minutes = args.minutes
    setup_logging()
    soft, hard = raise_nofile()
    log.info("open files limit raised to %d (hard limit %d)", soft, hard)
    if args.gateways + 100 > soft:
        log.warning("%d gateways need more open files than %d", args.gateways, soft)
    run_dir = args.workdir.resolve() / time.strftime("run-%Y%m%dT%H%M%S")
    report = scenarios.Report(
        " ".join(["titik-sim", *(argv if argv is not None else sys.argv[1:])])
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with contextlib.ExitStack() as stack_cm:
        if args.broker:
            host, port = args.broker
            stack = scenarios.Stack(host, port, db=args.central_db)
        else:
            log.info("starting Mosquitto and central in %s", run_dir)
            stack = stack_cm.enter_context(scenarios.local_stack(run_dir / "stack"))
        rss0 = rss_bytes()
        state = gateway_state(args, run_dir, stack_cm)
        plan = chaos_setup(args, state, stack_cm)
        fleet = Fleet(
            args.gateways,
            stack.host,
            stack.port,
            state,
            interval_s=args.interval,
            ramp_s=args.ramp,
        )
        log.info("%d gateways built; event loop starting", args.gateways)
        stop = threading.Event()
        ticker = threading.Thread(target=progress, args=(fleet, stack.db, stop), daemon=True)
        fleet.start()
        ticker.start()
        try:
            wait_connected(fleet, max(60.0, args.ramp + 60))
            log.info("%d/%d connected", fleet.connected, args.gateways)
            mem = {
                "rss_mb": round(rss_bytes() / 2**20),
                "kb_per_gateway": round((rss_bytes() - rss0) / 1024 / args.gateways, 1),
            }
            run_all(args, fleet, stack, run_dir, report, mem, plan)
        except KeyboardInterrupt:
            log.info("interrupted: stopping the gateways")
            return 130
        finally:
            stop.set()
            fleet.stop()
            if args.report and report.sections:
                args.report.write_text(report.markdown())
                log.info("report written to %s", args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
