"""``titik-sim``: the command line of the fleet simulator (docs/simulator.md).

It builds a :class:`~central.sim.fleet.SimulatedFleet`, starts or joins a stack
(:mod:`central.sim.stack`), runs the scenarios asked for and prints their figures.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TypedDict

import psutil

from central.sim import chaos, scenarios
from central.sim import stack as stack_mod
from central.sim.fleet import SimFleet, SimulatedFleet, gateway_plan, raise_nofile, wait_connected
from central.sim.light import LightFleet
from central.sim.localbroker import PER_EDGE, edges_for
from central.sim.stored import StoredSamples
from central.sim.workers import WorkerFleet, workers_for

log = logging.getLogger("titik.sim")


def progress(
    fleet: SimFleet, db: StoredSamples | None, stop: threading.Event, every_s: float = 5.0
) -> None:
    """One line every few seconds: connected, messages/s sent and ingested, buffered."""
    sent, rows, t = fleet.sent, db.rows() if db else 0, time.monotonic()
    while not stop.wait(every_s):
        now_sent, now_rows, now = fleet.sent, db.rows() if db else 0, time.monotonic()
        dt = now - t
        ingest = f", central {(now_rows - rows) / dt:.0f} rows/s" if db else ""
        log.info(
            "connected %d/%d, sent %.0f msg/s%s, buffered %d",
            fleet.connected,
            fleet.size,
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


SCENARIOS = (
    "steady", "outage", "flap", "canary", "failing-canary", "rollout", "upgrade", "chaos",
    "service",
)  # fmt: skip


def parse_waves(text: str) -> list[float]:
    try:
        return [float(w.strip().removesuffix("%")) for w in text.split(",") if w.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: percentages, e.g. 1,10,50,100") from None


def parse_scenarios(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    wrong = [n for n in names if n not in SCENARIOS]
    if wrong or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(wrong) or text!r}: choose from {', '.join(SCENARIOS)}"
        )
    return names


#: What a fleet in several worker processes can run (the others reach into the agents).
WORKER_SCENARIOS = ("steady", "outage")


def run_scenario(
    name: str,
    args: argparse.Namespace,
    fleet: SimFleet,
    stack: stack_mod.Stack,
    run_dir: Path,
    plan: chaos.ChaosPlan | None = None,
    base: scenarios.RolloutBase | None = None,
    release: scenarios.UpgradeRelease | None = None,
) -> stack_mod.Result:
    seconds = args.minutes * 60
    any_fleet: dict[str, Callable[[], stack_mod.Result]] = {  # WORKER_SCENARIOS
        "steady": lambda: scenarios.steady(fleet, stack, seconds),
        "outage": lambda: scenarios.outage(fleet, stack, args.outage_minutes * 60),
    }
    if name in any_fleet:
        return any_fleet[name]()
    if not isinstance(fleet, SimulatedFleet):  # check_args refused it already
        raise TypeError(f"the {name} scenario needs the fleet in one process: --workers 1")
    if name == "chaos":
        assert plan is not None  # noqa: S101 - main() makes it when chaos is asked for
        return chaos.chaos(fleet, stack, seconds, plan)
    simple: dict[str, Callable[[], stack_mod.Result]] = {
        "flap": lambda: scenarios.flap(fleet, stack, seconds),
        "service": lambda: scenarios.service_faults(
            fleet, stack, timeout=max(120.0, 3 * (args.service_interval or 0))
        ),
    }
    if name in simple:
        return simple[name]()
    if name == "upgrade":
        assert release is not None  # noqa: S101 - main() makes it when upgrade is asked for
        return scenarios.upgrade_in_waves(
            fleet,
            stack,
            args.rollout_group,
            release,
            failing_pct=args.failing_pct,
            waves=tuple(parse_waves(args.upgrade_waves)),
            steps=args.upgrade_steps,
            spread_s=args.upgrade_spread,
            health_timeout_s=args.health_timeout,
            soak_s=args.soak,
            max_failure_pct=args.max_failure_pct,
            timeout=args.ctl_timeout,
        )
    if name == "rollout":
        return scenarios.rollout_in_waves(
            fleet,
            stack,
            args.rollout_group,
            base=base,
            failing_pct=args.failing_pct,
            soak_s=args.soak,
            timeout=args.ctl_timeout,
        )
    return scenarios.canary(
        fleet,
        stack,
        args.group,
        run_dir,
        batch=args.canary,
        fail=args.fail_canary or name == "failing-canary",
        timeout=args.ctl_timeout,
    )


class FleetOptions(TypedDict):
    """The options both kinds of fleet take from the command line (typed, for ``**``)."""

    interval_s: float
    ramp_s: float
    service_interval_s: float | None
    service_faults: int


def make_fleet(
    args: argparse.Namespace,
    stack: stack_mod.Stack,
    state: Path,
    release: scenarios.UpgradeRelease | None = None,
) -> SimFleet:
    """The gateways, in this process or in ``--workers`` processes (started by the caller);
    with ``release``, each trusts its operations key (the upgrade scenario's, one process)."""
    where = (args.gateways, stack.host, stack.ports, state)
    opts = FleetOptions(
        interval_s=args.interval,
        ramp_s=args.ramp,
        service_interval_s=args.service_interval,
        service_faults=args.service_faults,
    )
    if args.workers > 1:
        return WorkerFleet(*where, workers=args.workers, light=args.light, **opts)
    if args.light:
        return LightFleet(*where, **opts)
    trusted = (release.public,) if release is not None else ()
    return SimulatedFleet(*where, trusted_keys=trusted, **opts)


def fleet_memory(fleet: SimFleet, rss0: int, n: int) -> dict[str, object]:
    """Resident memory of the fleet's processes, per gateway, and the most open files one of
    them holds (what the open-files limit bounds)."""
    if isinstance(fleet, WorkerFleet):
        rss, files = 0, 0
        for pid in fleet.pids():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                rss += proc.memory_info().rss
                files = max(files, proc.num_fds())
        return {
            "rss_mb": round((rss + rss_bytes()) / 2**20),
            "kb_per_gateway": round(rss / 1024 / n, 1),
            "open_files": files,
            "workers": fleet.workers,
        }
    return {
        "rss_mb": round(rss_bytes() / 2**20),
        "kb_per_gateway": round((rss_bytes() - rss0) / 1024 / n, 1),
        "open_files": len(os.listdir("/proc/self/fd")),
    }


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
            "  titik-sim --gateways 2000 --store postgresql --scenario steady,outage\n"
            "  titik-sim --gateways 50000 --store postgresql --scenario steady,outage\n"
            "            (past 17,000: edge brokers bridged to a core, and worker processes)\n"
            "  titik-sim --gateways 50000 --light --store postgresql --scenario outage\n"
            "            (light gateways: the agents' traffic without the agents' CPU)\n"
            "scenarios:\n"
            "  steady          run as is: connections, msg/s sent and stored, lag p50/p95\n"
            "  outage          stop the broker for --outage-minutes, start it again: backlog,\n"
            "                  reconnect storm, drain time, broker/central CPU, records lost\n"
            "  flap            a tenth of the gateways lose their connection at random\n"
            "  canary          titik-ctl config push --group G --canary BATCH of a Wi-Fi config\n"
            "  failing-canary  the same with the canaries' firmware failing: it must halt\n"
            "  rollout         central rolls a Wi-Fi config out to --rollout-group in waves\n"
            "                  (1/5/25/100 %) with --failing-pct % of the firmware refusing\n"
            "                  it: it must halt and restore\n"
            "  upgrade         central upgrades the agent of --rollout-group in waves\n"
            "                  (--upgrade-waves, each in --upgrade-steps commands) with\n"
            "                  --failing-pct % of the gateways failing to install: it must\n"
            "                  halt above --max-failure-pct, the later waves never sent\n"
            "  chaos           for --minutes: 5% of the gateways' state disks full and 5%\n"
            "                  of their clocks a day off, 3 extra clients sending poison\n"
            "                  messages, the broker restarted, central killed (SIGKILL) and\n"
            "                  restarted; then every record of every gateway must be stored\n"
            "                  once (full disks need root: a small tmpfs per gateway)\n"
            "  service         with --service-interval and --service-faults: wait for every\n"
            "                  gateway's service report, then check that central's worst-APs\n"
            "                  list starts with the planted faults, each with its reason\n"
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
    ap.add_argument(
        "--edges",
        type=int,
        metavar="K",
        help="start K edge Mosquittos bridged to one core Mosquitto (central connects to the "
        "core, the gateways are spread over the edges; docs/simulator.md). Default: 0 up to "
        f"{PER_EDGE:,} gateways, else one edge per {PER_EDGE:,} (one Mosquitto may hold no "
        "more sockets than its open-files limit)",
    )
    ap.add_argument(
        "--workers",
        type=positive_int,
        metavar="W",
        help="run the gateways in W processes (each its own event loop and sockets). Default: "
        f"1 up to {PER_EDGE:,} gateways, else one per {PER_EDGE:,}. Only steady and outage "
        "run with more than one",
    )
    ap.add_argument(
        "--light",
        action="store_true",
        help="light gateways: each sends what an agent sends (its session, Will, status, "
        "samples, buffered batches), paced as an agent paces it (backoff, replay jitter and "
        "rate), without running an agent, for a fifth to a quarter of the CPU: to measure the "
        "brokers, central and PostgreSQL at a city's scale on one machine. Steady and outage "
        'only; docs/simulator.md, "Light gateways"',
    )
    ap.add_argument("--central-db", type=Path, help="with --broker: central's SQLite, to count")
    ap.add_argument(
        "--store",
        choices=stack_mod.STORES,
        help="central's store: sqlite (a file in --workdir, the default) or postgresql (a "
        "throwaway PostgreSQL started in /tmp and stopped at the end, or the server of "
        "--store-url); records lost are counted from it",
    )
    ap.add_argument(
        "--store-url",
        metavar="postgresql://USER@HOST:PORT/DB",
        help="an existing PostgreSQL (implies --store postgresql): central uses it, or, with "
        "--broker, the central there does and the sim counts from it. Its database should "
        "be empty (a previous run's gateways would be counted as this run's)",
    )
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
        "--ctl-timeout",
        type=float,
        default=300.0,
        help="canary: titik-ctl's --timeout; rollout: the longest it may take",
    )
    ap.add_argument(
        "--rollout-group", default="city", help="rollout: the group (default: city, everyone)"
    )
    ap.add_argument(
        "--failing-pct",
        type=float,
        default=2.0,
        help="rollout: the share of the group whose firmware refuses the config (default: 2)",
    )
    ap.add_argument(
        "--soak", type=float, default=30.0, help="rollout: each wave's soak, seconds (default: 30)"
    )
    ap.add_argument(
        "--upgrade-waves", default="1,10,50,100", metavar="P,P,...",
        help="upgrade: the waves' cohort percentages (default: 1,10,50,100)",
    )  # fmt: skip
    ap.add_argument(
        "--upgrade-steps", type=positive_int, default=2, metavar="N",
        help="upgrade: commands per wave, the cohort raised in N steps (default: 2)",
    )  # fmt: skip
    ap.add_argument(
        "--upgrade-spread", type=float, default=20.0, metavar="S",
        help="upgrade: seconds from a wave's first command to its last (default: 20)",
    )  # fmt: skip
    ap.add_argument(
        "--health-timeout", type=float, metavar="S",
        help="upgrade: the gateways' health gate (default: 2 x --interval + 30, at least 10); "
        "the soak is at least this",
    )  # fmt: skip
    ap.add_argument(
        "--max-failure-pct", type=float, default=1.0, metavar="PCT",
        help="upgrade: halt a wave above PCT %% failed of those that answered (default: 1)",
    )  # fmt: skip
    ap.add_argument(
        "--service-interval",
        type=float,
        metavar="S",
        help="turn the gateways' service-health report on ([service], issue 20), one every S "
        "seconds (at least 30; default: off)",
    )
    ap.add_argument(
        "--service-faults",
        type=int,
        default=0,
        metavar="N",
        help="with --service-interval: N gateways each get a saturated channel, an exhausted "
        "DHCP pool and a dead portal, for the dashboard's worst-APs list to find (logged at "
        "start; default: 0)",
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
) -> chaos.ChaosPlan | None:
    """With the chaos scenario: who it hits, and the disk-full gateways' own small state
    filesystems, mounted before the fleet is built (unmounted when the run ends)."""
    if "chaos" not in args.scenario:
        return None
    ids = [str(d["id"]) for d in gateway_plan(args.gateways)]
    plan = chaos.chaos_plan(args.gateways)
    return stack.enter_context(chaos.small_disks(plan, [state / i for i in ids]))


def run_all(
    args: argparse.Namespace,
    fleet: SimFleet,
    stack: stack_mod.Stack,
    run_dir: Path,
    report: scenarios.Report,
    mem: dict[str, object],
    plan: chaos.ChaosPlan | None = None,
    base: scenarios.RolloutBase | None = None,
    release: scenarios.UpgradeRelease | None = None,
) -> None:
    """The scenarios in order, each one's figures logged and (with --report) written."""
    for name in args.scenario:
        log.info("scenario %s", name)
        result = run_scenario(name, args, fleet, stack, run_dir, plan, base, release)
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
    """titik-sim's own handler on stderr: its lines, and of thousands of agents (each sets the
    "titik" level itself) only their errors. Other handlers are left as they are (a caller's,
    e.g. a test's, keeps every record)."""
    root = logging.getLogger()
    if not any(getattr(h, "titik_sim", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        handler.addFilter(lambda r: r.name == log.name or r.levelno >= logging.ERROR)
        handler.titik_sim = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    log.setLevel(logging.INFO)


def check_service_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.service_interval is not None and args.service_interval < 30:
        parser.error("--service-interval: at least 30 seconds (the agent's [service] interval_s)")
    if args.service_faults < 0:
        parser.error("--service-faults: 0 or more")
    if args.service_faults and args.service_interval is None:
        parser.error("--service-faults needs --service-interval (the report that shows them)")
    if 3 * args.service_faults > args.gateways:
        parser.error(
            f"--service-faults {args.service_faults}: three faults need "
            f"{3 * args.service_faults} gateways; --gateways is {args.gateways}"
        )


def rollout_setup(
    args: argparse.Namespace, stack: stack_mod.Stack, state: Path
) -> scenarios.RolloutBase | None:
    """With the rollout scenario: the group's current config, seeded on its gateways."""
    if "rollout" not in args.scenario or stack.samples is None:
        return None
    log.info("seeding group %s's current config on its gateways", args.rollout_group)
    return scenarios.seed_rollout_base(stack, state, args.gateways, args.rollout_group)


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Combinations the scenarios cannot run with (exit 2, naming the option)."""
    if "chaos" in args.scenario and args.broker:
        parser.error("the chaos scenario restarts the broker and central: run it without --broker")
    check_store_args(parser, args)
    check_service_args(parser, args)
    if "service" in args.scenario and (args.service_interval is None or args.broker):
        parser.error(
            "the service scenario needs --service-interval (and --service-faults), and "
            "central's API: run it without --broker"
        )
    if args.outage_minutes is None:
        args.outage_minutes = args.minutes
    check_scale_args(parser, args)


def check_scale_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """--edges and --workers, or their defaults for --gateways."""
    if args.edges is not None and args.edges < 0:
        parser.error("--edges: 0 (the gateways connect to one broker) or more")
    if args.edges and args.broker:
        parser.error("--edges starts the brokers: run it without --broker")
    if args.edges is None:
        args.edges = 0 if args.broker else edges_for(args.gateways)
    if args.workers is None:
        args.workers = workers_for(args.gateways)
    if args.workers > args.gateways:
        parser.error(f"--workers {args.workers}: more than the {args.gateways} gateways")
    if args.edges > args.gateways:
        parser.error(f"--edges {args.edges}: more than the {args.gateways} gateways")
    if args.light and args.service_interval is not None:
        parser.error("--service-interval: light gateways send no service report; drop --light")
    if args.light:
        other = [n for n in args.scenario if n not in WORKER_SCENARIOS]
        if other:
            parser.error(
                f"the {', '.join(other)} scenario reaches into the gateways' agents, and "
                f"--light runs none: with --light only {' and '.join(WORKER_SCENARIOS)} run"
            )
    if args.workers > 1:
        other = [n for n in args.scenario if n not in WORKER_SCENARIOS]
        if other:
            parser.error(
                f"the {', '.join(other)} scenario reaches into the gateways' agents, which "
                f"must then be in this one process: with {args.workers} worker processes only "
                f"{' and '.join(WORKER_SCENARIOS)} run. Run it with --workers 1 and at most "
                f"{PER_EDGE:,} gateways"
            )


def check_store_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.store_url is not None:
        if args.store == "sqlite":
            parser.error("--store-url is a PostgreSQL url: drop --store sqlite")
        if not args.store_url.startswith(("postgresql://", "postgres://")):
            parser.error(f"--store-url {args.store_url!r}: write postgresql://USER@HOST:PORT/DB")
        args.store = "postgresql"
    if args.store is None:
        args.store = "sqlite"
    if args.store == "postgresql" and args.central_db:
        parser.error("--central-db is central's SQLite: with PostgreSQL give --store-url")
    if args.broker and args.store == "postgresql" and not args.store_url:
        parser.error("--broker with --store postgresql: give the central's --store-url to count")
    if args.store == "postgresql" and "chaos" in args.scenario:
        parser.error("the chaos scenario reads central's SQLite: run it with --store sqlite")


def start_stack(
    args: argparse.Namespace, run_dir: Path, stack_cm: contextlib.ExitStack
) -> stack_mod.Stack:
    """The stack of --broker, or Mosquitto (with --edges, a core and its edges) and central
    started in ``run_dir`` (stopped by ``stack_cm``)."""
    if args.broker:
        host, port = args.broker
        return stack_mod.Stack(host, port, db=args.central_db, store_url=args.store_url)
    log.info("starting Mosquitto and central (on %s) in %s", args.store, run_dir)
    stack = stack_cm.enter_context(
        stack_mod.local_stack(
            run_dir / "stack",
            store=args.store,
            store_url=args.store_url,
            gateways=args.gateways,
            edges=args.edges,
        )
    )
    if stack.edges:
        log.info("%d edge brokers bridged to the core (port %d)", len(stack.edges), stack.port)
    if len(stack.ports) > 1:
        log.info("the broker listens on ports %s", ", ".join(map(str, stack.ports)))
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    setup_logging()
    # A socket per gateway in its worker process and in its broker (each inherits the limit).
    busiest = max(-(-args.gateways // args.workers), -(-args.gateways // max(1, args.edges)))
    soft, hard = raise_nofile(busiest + 1024)
    log.info("open files limit raised to %d (hard limit %d)", soft, hard)
    if busiest + 100 > soft:
        # Past it every further connection fails (EMFILE), in the fleet's process and in the
        # broker: a run would measure that, not the fleet.
        parser.error(
            f"--gateways {args.gateways} needs about {busiest + 100} open files in each of "
            f"its {args.workers} process(es) and {max(1, args.edges)} broker(s) (a socket "
            f"per gateway); a process may have {soft} here. Spread them: more "
            f"--workers and --edges (about {soft - 3000:,} gateways each), or raise the limit "
            "where titik-sim starts (ulimit -Hn, docker run --ulimit nofile, systemd "
            "LimitNOFILE)"
        )
    run_dir = args.workdir.resolve() / time.strftime("run-%Y%m%dT%H%M%S")
    report = scenarios.Report(
        " ".join(["titik-sim", *(argv if argv is not None else sys.argv[1:])])
    )

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    with contextlib.ExitStack() as stack_cm:
        stack = start_stack(args, run_dir, stack_cm)
        rss0 = rss_bytes()
        state = gateway_state(args, run_dir, stack_cm)
        plan = chaos_setup(args, state, stack_cm)
        base = rollout_setup(args, stack, state)
        # The upgrade scenario's operations key: trusted by every gateway from the start.
        release = scenarios.UpgradeRelease.new() if "upgrade" in args.scenario else None
        fleet = make_fleet(args, stack, state, release)
        for device, fault in sorted(fleet.faults.items()):
            log.info("service fault planted: %s has %s", device, fault)
        if isinstance(fleet, WorkerFleet):
            log.info("%d worker processes building their gateways", fleet.workers)
        stop = threading.Event()
        ticker = threading.Thread(target=progress, args=(fleet, stack.samples, stop), daemon=True)
        fleet.start()
        log.info("%d gateways built; event loop(s) running", args.gateways)
        ticker.start()
        try:
            wait_connected(fleet, max(60.0, args.ramp + 60))
            log.info("%d/%d connected", fleet.connected, args.gateways)
            mem = fleet_memory(fleet, rss0, args.gateways)
            mem["broker_ports"] = len(stack.ports)
            mem["gateway_kind"] = "light" if args.light else "agent"
            if stack.edges:
                mem["edge_brokers"] = len(stack.edges)
            run_all(args, fleet, stack, run_dir, report, mem, plan, base, release)
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
