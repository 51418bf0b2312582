"""Benchmark the agent against its budget: memory, CPU per sample, bytes per message.

One run measures, side by side:

* the floor: a bare interpreter that only imports the agent's dependencies
  (``import paho.mqtt.client, psutil, pydantic, tenacity``) and sleeps;
* the agent: ``python -m agent run`` (the config in TITIK_CONFIG, as both services start it)
  against a throwaway Mosquitto, with a subscriber on
  ``<prefix>/#`` counting what it publishes.

Memory is read from ``/proc/<pid>/status`` (VmRSS, VmHWM) every ``--sample-every`` seconds,
CPU from ``/proc/<pid>/stat`` (utime+stime, and cutime+cstime for the tools collectors run).
The "warm" mark (default minute 2) separates start-up from steady state: growth and CPU per
sample are measured between the warm mark and the end.

    .venv/bin/python bench/bench_agent.py --minutes 10 --interval 1 --platform linux \\
        --out /tmp/bench_agent_linux.md

Linux only (it reads /proc). Progress goes to stderr every 30 s; the report (markdown) to
stdout and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import importlib.metadata
import json
import os
import platform as pyplatform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # central.sim.localbroker, when titik is not installed

from agent_probes import (  # noqa: E402
    CpuTicks,
    Subscriber,
    Traffic,
    publish_wire_size,
    read_cpu_ticks,
    read_mem_kib,
)

from agent.protocol.topics import TELEMETRY, gw_topic  # noqa: E402

#: The floor: the agent's dependencies imported, then blocked until SIGTERM.
FLOOR_CODE = (
    "import paho.mqtt.client, psutil, pydantic, tenacity, threading; threading.Event().wait()"
)
PACKAGES = ("paho-mqtt", "pydantic", "pydantic-core", "psutil", "tenacity")

TARGET_PEAK_RATIO = 1.3
TARGET_CPU_MS = 5.0
TARGET_WIRE_BYTES = 600
PROGRESS_EVERY_S = 30.0
STOP_TIMEOUT_S = 10.0


# -- processes ----------------------------------------------------------------------------


def write_config(
    path: Path,
    *,
    host: str,
    port: int,
    interval: float,
    platform: str,
    protocol: str,
    device: str,
    prefix: str,
    collectors: list[str] | None = None,
) -> None:
    """Same layout as tests/agentproc.py write_config, with the bench's knobs."""
    state = path.parent / "state"
    state.mkdir(parents=True, exist_ok=True)
    chosen = "" if collectors is None else f"collectors = {json.dumps(collectors)}\n"
    path.write_text(
        f"""
[device]
id = "{device}"
site = "Bench site"
region = "Jakarta Pusat"
lat = -6.1754
lon = 106.8272
groups = ["bench"]

[mqtt]
host = "{host}"
port = {port}
protocol = "{protocol}"
topic_prefix = "{prefix}"
reconnect_min_s = 0.1
reconnect_max_s = 0.5

[telemetry]
interval_s = {interval}
{chosen}
[state]
dir = "{state}"

[platform]
kind = "{platform}"
seed = 42

[log]
level = "info"
"""
    )


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, then SIGKILL: for processes this script started."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the run ------------------------------------------------------------------------------


@dataclass
class Mark:
    """One snapshot of both processes and the traffic."""

    elapsed: float
    agent_mem: dict[str, int]
    agent_cpu: CpuTicks
    floor_mem: dict[str, int]
    telemetry: int


@dataclass
class Result:
    args: argparse.Namespace
    warm: Mark | None = None
    end: Mark | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (elapsed s, VmRSS KiB)
    traffic: Traffic | None = None
    topic: str = ""
    interrupted: str | None = None
    agent_rc: int | None = None
    agent_log_tail: list[str] = field(default_factory=list)
    agent_log_warnings: int = 0
    broker_version: str = ""


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(signal.Signals(signum).name)


def _sleep_until(t: float) -> None:
    while (left := t - time.monotonic()) > 0:
        time.sleep(min(left, 1.0))


def _schedule(duration: float, warm: float, every: float) -> list[float]:
    """Sample times (s after start): every ``every`` s, plus the warm mark and the end."""
    times = {round(k * every, 6) for k in range(1, int(duration // every) + 1)}
    times.update({warm, duration})
    return sorted(t for t in times if 0 < t <= duration)


class Bench:
    """The processes of one run; :meth:`cleanup` stops whatever was started, in order."""

    def __init__(self, args: argparse.Namespace, res: Result) -> None:
        from central.sim.localbroker import LocalBroker, find_mosquitto

        self.args = args
        self.res = res
        self.tmp = Path(tempfile.mkdtemp(prefix="titik-bench-"))
        self.broker = LocalBroker(self.tmp)
        self.floor: subprocess.Popen[bytes] | None = None
        self.agent: subprocess.Popen[bytes] | None = None
        self.sub: Subscriber | None = None
        self.agent_log = self.tmp / "agent.log"
        res.broker_version = _mosquitto_version(find_mosquitto())

    def start(self) -> None:
        args = self.args
        self.broker.start()
        self.floor = subprocess.Popen(
            [sys.executable, "-c", FLOOR_CODE],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,  # Ctrl-C reaches only this script, which stops it in order
        )
        self.sub = Subscriber(self.broker.host, self.broker.port, args.prefix)
        self.res.traffic = self.sub.traffic
        self.res.topic = gw_topic(args.prefix, args.device, TELEMETRY)
        cfg = self.tmp / "agent.toml"
        write_config(
            cfg,
            host=self.broker.host,
            port=self.broker.port,
            interval=args.interval,
            platform=args.platform,
            protocol=args.protocol,
            device=args.device,
            prefix=args.prefix,
            collectors=args.collectors,
        )
        with self.agent_log.open("ab") as logfh:
            self.agent = subprocess.Popen(
                # As both services start it: `titik-agent run`, the config in TITIK_CONFIG.
                [sys.executable, "-m", "agent", "run"],
                env={**os.environ, "TITIK_CONFIG": str(cfg)},
                stdout=logfh,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                process_group=0,
            )

    def measure(self) -> None:
        """Sample both processes on schedule until the end of the run."""
        args, res = self.args, self.res
        agent, floor, sub = self.agent, self.floor, self.sub
        if agent is None or floor is None or sub is None:
            raise RuntimeError("measure() before start()")
        duration = args.minutes * 60.0
        start = time.monotonic()
        next_progress = PROGRESS_EVERY_S
        for t in _schedule(duration, args.warm, args.sample_every):
            _sleep_until(start + t)
            for name, proc in (("agent", agent), ("floor process", floor)):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited early with status {proc.returncode}")
            mark = Mark(
                elapsed=time.monotonic() - start,
                agent_mem=read_mem_kib(agent.pid),
                agent_cpu=read_cpu_ticks(agent.pid),
                floor_mem=read_mem_kib(floor.pid),
                telemetry=sub.traffic.telemetry_count(),
            )
            res.samples.append((mark.elapsed, mark.agent_mem["VmRSS"]))
            if res.warm is None and t >= args.warm:
                res.warm = mark
            res.end = mark
            if mark.elapsed + 1e-6 >= next_progress or t >= duration:
                next_progress += PROGRESS_EVERY_S
                print(
                    f"[{mark.elapsed:6.0f}s] agent RSS {mark.agent_mem['VmRSS']} KiB"
                    f" (HWM {mark.agent_mem['VmHWM']}), floor RSS"
                    f" {mark.floor_mem['VmRSS']} KiB, telemetry {mark.telemetry},"
                    f" all messages {sub.traffic.messages}",
                    file=sys.stderr,
                    flush=True,
                )

    def cleanup(self) -> None:
        # Ignore further Ctrl-C/SIGTERM while cleaning up, so nothing is left running.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            stop_process(self.agent)  # first, so its offline status still reaches the broker
            self.res.agent_rc = self.agent.returncode if self.agent else None
            if self.sub:
                time.sleep(0.2)
                self.sub.stop()
            stop_process(self.floor)
            self.broker.stop()
            if self.agent_log.exists():
                text = self.agent_log.read_text(errors="replace").splitlines()
                self.res.agent_log_tail = text[-15:]
                self.res.agent_log_warnings = sum(
                    1 for line in text if line.startswith(("WARNING", "ERROR", "CRITICAL"))
                )
            if self.args.keep:
                print(f"kept {self.tmp}", file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)


def run_bench(args: argparse.Namespace, res: Result) -> None:
    bench = Bench(args, res)
    try:
        bench.start()
        bench.measure()
    except (Interrupted, KeyboardInterrupt) as exc:
        res.interrupted = str(exc) or "KeyboardInterrupt"
        print(f"interrupted ({res.interrupted}); stopping", file=sys.stderr)
    finally:
        bench.cleanup()


# -- the report ---------------------------------------------------------------------------


def _mosquitto_version(path: str) -> str:
    try:
        out = subprocess.run(
            [path, "-h"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    first = out.splitlines()[0] if out else ""
    return first.replace("mosquitto version", "").strip() or "unknown"


def machine_lines() -> list[str]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith(("model name", "Model", "Hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    for pkg in PACKAGES:
        try:
            versions.append(f"{pkg} {importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    return [
        f"- nproc: {len(os.sched_getaffinity(0))} (of {os.cpu_count()}); CPU: {cpu}",
        f"- kernel: {pyplatform.system()} {pyplatform.release()} {pyplatform.machine()}",
        f"- python: {pyplatform.python_implementation()} {pyplatform.python_version()}"
        f" ({sys.executable})",
        f"- packages: {', '.join(versions)}",
    ]


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _slope_kib_per_min(samples: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of RSS over time (KiB/min)."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mx = sum(t for t, _ in samples) / n
    my = sum(r for _, r in samples) / n
    sxx = sum((t - mx) ** 2 for t, _ in samples)
    if sxx == 0:
        return None
    sxy = sum((t - mx) * (r - my) for t, r in samples)
    return sxy / sxx * 60.0


def render(res: Result) -> str:
    args = res.args
    warm, end, traffic = res.warm, res.end, res.traffic
    lines = [
        f"# titik-agent benchmark: platform {args.platform}, interval {args.interval:g} s,"
        f" {args.minutes:g} min",
        "",
    ]
    if res.interrupted:
        lines += [f"**Interrupted ({res.interrupted}); partial results.**", ""]
    if warm is None or end is None or traffic is None or end.elapsed <= warm.elapsed:
        lines += ["No steady-state window was measured (the run ended before the warm mark).", ""]
        return "\n".join(lines + _footer(res))

    clk = os.sysconf("SC_CLK_TCK")
    window = end.elapsed - warm.elapsed
    n_msgs = end.telemetry - warm.telemetry
    expected = window / args.interval
    floor_hwm = end.floor_mem["VmHWM"]
    agent_hwm = end.agent_mem["VmHWM"]
    limit_kib = floor_hwm * TARGET_PEAK_RATIO
    growth = end.agent_mem["VmRSS"] - warm.agent_mem["VmRSS"]
    growth_pct = 100.0 * growth / warm.agent_mem["VmRSS"]
    steady = [(t, r) for t, r in res.samples if t >= warm.elapsed - 1e-6]
    slope = _slope_kib_per_min(steady)
    own_s = (end.agent_cpu.own - warm.agent_cpu.own) / clk
    child_s = (end.agent_cpu.children - warm.agent_cpu.children) / clk
    warm_min = f"{warm.elapsed / 60:.1f} min"
    end_min = f"{end.elapsed / 60:.1f} min"

    def per_msg_ms(seconds: float) -> float | None:
        return 1000.0 * seconds / n_msgs if n_msgs > 0 else None

    def ms(v: float | None) -> str:
        return "n/a (no messages)" if v is None else f"{v:.2f} ms"

    own_ms, child_ms, total_ms = per_msg_ms(own_s), per_msg_ms(child_s), per_msg_ms(own_s + child_s)
    with traffic.lock:
        sizes = list(traffic.telemetry_payload)
        topics = sorted(traffic.telemetry_topics)
        status_msgs = traffic.status
        all_msgs = traffic.messages
    topic = topics[0] if len(topics) == 1 else res.topic
    v5 = args.protocol == "5"
    if sizes:
        wire = [publish_wire_size(topic, s, qos=1, v5=v5) for s in sizes]
        p_mean, p_max = sum(sizes) / len(sizes), max(sizes)
        w_mean, w_max = sum(wire) / len(wire), max(wire)
        payload_cell = f"mean {p_mean:.0f} B, max {p_max} B"
        wire_cell = f"mean {w_mean:.0f} B, max {w_max} B (header {w_max - p_max} B)"
        wire_ok = w_max <= TARGET_WIRE_BYTES
    else:
        payload_cell = wire_cell = "n/a (no telemetry received)"
        wire_ok = False

    rows = [
        ("measure", "floor / baseline", "agent", "target", "verdict"),
        (
            "peak RSS (VmHWM, end)",
            f"{floor_hwm} KiB",
            f"{agent_hwm} KiB ({agent_hwm / floor_hwm:.2f}x floor)",
            f"<= {TARGET_PEAK_RATIO}x floor = {limit_kib:.0f} KiB",
            _verdict(agent_hwm <= limit_kib),
        ),
        (
            f"RSS at warm mark (VmRSS, {warm_min})",
            f"{warm.floor_mem['VmRSS']} KiB",
            f"{warm.agent_mem['VmRSS']} KiB",
            "-",
            "info",
        ),
        (
            f"RSS at end (VmRSS, {end_min})",
            f"{end.floor_mem['VmRSS']} KiB",
            f"{end.agent_mem['VmRSS']} KiB",
            "-",
            "info",
        ),
        (
            f"RSS growth {warm_min} -> {end_min}",
            f"{end.floor_mem['VmRSS'] - warm.floor_mem['VmRSS']:+d} KiB",
            f"{growth:+d} KiB ({growth_pct:+.2f}%); trend"
            + (f" {slope:+.1f} KiB/min" if slope is not None else " n/a"),
            f"no growth (<= {args.growth_tolerance_kib} KiB)",
            _verdict(growth <= args.growth_tolerance_kib),
        ),
        (
            "CPU per sample, agent (utime+stime)",
            "-",
            f"{ms(own_ms)} ({own_s:.2f} s / {n_msgs} msgs)",
            f"<= {TARGET_CPU_MS:g} ms",
            _verdict(own_ms is not None and own_ms <= TARGET_CPU_MS),
        ),
        (
            "CPU per sample, children (cutime+cstime)",
            "-",
            f"{ms(child_ms)} ({child_s:.2f} s)",
            "-",
            "info",
        ),
        (
            "CPU per sample, agent + children",
            "-",
            ms(total_ms),
            f"<= {TARGET_CPU_MS:g} ms",
            _verdict(total_ms is not None and total_ms <= TARGET_CPU_MS),
        ),
        ("telemetry payload", "-", payload_cell, "-", "info"),
        (
            f"telemetry PUBLISH on the wire (MQTT {args.protocol}, QoS 1)",
            "-",
            wire_cell,
            f"<= {TARGET_WIRE_BYTES} B (max)",
            _verdict(wire_ok),
        ),
        (
            f"telemetry messages {warm_min} -> {end_min}",
            f"expected ~{expected:.0f}",
            f"{n_msgs} ({n_msgs / window:.2f}/s)",
            "-",
            "info",
        ),
    ]
    lines += _table(rows)
    lines += [
        "",
        f"Whole run: {len(sizes)} telemetry messages, {status_msgs} status messages,"
        f" {all_msgs} messages in all on `{args.prefix}/#`; agent exit status {res.agent_rc},"
        f" {res.agent_log_warnings} warning/error lines in its log.",
        "Wire size = PUBLISH fixed header (1 byte + 1-4 byte remaining length) + 2-byte topic"
        " length + topic + 2-byte packet id"
        + (" + 1-byte properties length" if v5 else "")
        + f" + payload; topic `{topic}`. The broker's PUBACK (4 bytes) and TCP/IP headers are"
        " not counted.",
        "",
        "Agent VmRSS over time (KiB, every 30 s): " + _timeline(res.samples),
        "",
    ]
    return "\n".join(lines + _footer(res))


def _timeline(samples: list[tuple[float, int]], every: float = PROGRESS_EVERY_S) -> str:
    picked: list[str] = []
    next_t = every
    for i, (t, rss) in enumerate(samples):
        if t + 1e-6 >= next_t or i == len(samples) - 1:
            picked.append(f"{t:.0f}s {rss}")
            next_t = (t // every + 1) * every
    return ", ".join(picked)


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def _footer(res: Result) -> list[str]:
    out = ["Machine:", *machine_lines(), f"- mosquitto: {res.broker_version}", ""]
    out += [
        "Floor: `" + shlex.join([sys.executable, "-c", FLOOR_CODE]) + "`",
        "",
        "Command: `"
        + shlex.join(sys.orig_argv)
        + "`"
        + (f" (cwd {Path.cwd()})" if Path.cwd() != ROOT else ""),
    ]
    if res.agent_rc not in (0, None) or res.agent_log_warnings:
        out += ["", "Agent log (last lines):", "", "```", *res.agent_log_tail, "```"]
    return [*out, ""]


# -- main ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Measure the agent's RSS, CPU per sample and bytes per message."
    )
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="telemetry.interval_s (default 1)")
    p.add_argument(
        "--platform",
        default="linux",
        choices=["linux", "simulated", "openwrt", "raspberrypi", "auto"],
        help="platform.kind (default linux)",
    )
    p.add_argument(
        "--warm",
        type=float,
        default=120.0,
        help="seconds of start-up excluded from growth and CPU (default 120: minute 2)",
    )
    p.add_argument(
        "--sample-every", type=float, default=5.0, help="seconds between RSS samples (default 5)"
    )
    p.add_argument("--protocol", choices=["5", "3.1.1"], default="5", help="mqtt.protocol")
    p.add_argument(
        "--collectors",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="telemetry.collectors, comma-separated (default: the agent's default set), "
        "e.g. health,network,clients,radio to measure what the radio section costs",
    )
    p.add_argument("--device", default="gw-bench01", help="device.id")
    p.add_argument("--prefix", default="titik", help="mqtt.topic_prefix (default titik)")
    p.add_argument(
        "--growth-tolerance-kib",
        type=int,
        default=0,
        help="RSS growth after the warm mark still counted as 'no growth' (default 0)",
    )
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (config, logs)")
    args = p.parse_args(argv)
    if args.minutes * 60 <= args.warm:
        p.error(f"--minutes {args.minutes:g} ends before the warm mark (--warm {args.warm:g} s)")
    if args.interval <= 0 or args.sample_every <= 0:
        p.error("--interval and --sample-every must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    if not Path("/proc/self/status").exists():
        print("bench_agent: needs Linux /proc", file=sys.stderr)
        return 2
    args = parse_args(argv)
    # The floor's libraries run from the .pyc files pip compiled; so does a packaged agent.
    # Compile ours too, or the agent pays for compiling its own source (~1 MB of peak RSS).
    compileall.compile_dir(ROOT / "agent", quiet=1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    res = Result(args=args)
    try:
        run_bench(args, res)
    except RuntimeError as exc:
        print(f"bench_agent: {exc}", file=sys.stderr)
        if res.agent_log_tail:
            print("agent log tail:\n" + "\n".join(res.agent_log_tail), file=sys.stderr)
        return 1
    report = render(res)
    print(report)
    if args.out:
        args.out.write_text(report)
        print(f"wrote {args.out}", file=sys.stderr)
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
