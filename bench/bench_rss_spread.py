"""How often does the agent's RSS still rise after the warm mark? Many agents side by side.

One ``bench_agent.py`` run says whether *that* run touched a new page after minute 2. Whether
the agent does so is a matter of chance (which allocation happens to set a new high in some
pool of CPython's small-object allocator), so one run cannot tell a fix from luck. This runs
``--agents`` agents at once, each its own process with its own state, against one local
Mosquitto, at ``--interval`` for ``--minutes``, and reports for each how much its VmRSS rose
between the warm mark and the end, and when.

    .venv/bin/python bench/bench_rss_spread.py --agents 10 --minutes 10

The agents are the same code and config as bench_agent.py's (``linux`` platform, 1 s). Ten
agents use about 3 % of one core, so running them together does not slow them; CPU per sample
is not measured here (bench_agent.py does that). ``--where`` also names the memory mapping
that grew (a pymalloc arena, glibc's heap, a library), from ``/proc/PID/smaps``. Progress goes
to stderr every 60 s; the report (markdown) to stdout and, with ``--out``, to a file.
"""

from __future__ import annotations

import argparse
import compileall
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from agent_probes import read_mem_kib  # noqa: E402
from bench_agent import stop_process, write_config  # noqa: E402

from central.sim.localbroker import LocalBroker  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=10, help="agents side by side (default 10)")
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument("--interval", type=float, default=1.0, help="telemetry.interval_s (default 1)")
    p.add_argument("--warm", type=float, default=120.0, help="warm mark, s (default 120)")
    p.add_argument(
        "--where",
        action="store_true",
        help="also read each agent's /proc/PID/smaps every second and name the mapping that grew"
        " (a pymalloc arena is an anonymous mapping of whole MiB; [heap] is glibc's malloc)",
    )
    p.add_argument("--out", type=Path, help="also write the markdown report here")
    args = p.parse_args(argv)
    if args.minutes * 60 <= args.warm or args.agents < 1:
        p.error("--minutes must end after --warm, and --agents must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    compileall.compile_dir(ROOT / "agent", quiet=1)  # as a package install does
    work = Path(tempfile.mkdtemp(prefix="titik-rss-spread-"))
    (work / "broker").mkdir()
    broker = LocalBroker(work / "broker")
    broker.start()
    agents: list[subprocess.Popen[bytes]] = []
    history: list[list[tuple[float, int]]] = []
    maps: list[dict[str, int]] = []  # --where: each agent's last smaps (mapping -> Rss KiB)
    grew_in: list[list[str]] = []  # --where: what grew after the warm mark, per agent
    try:
        for i in range(args.agents):
            cfg = work / f"agent{i}" / "agent.toml"
            cfg.parent.mkdir()
            write_config(
                cfg,
                host=broker.host,
                port=broker.port,
                interval=args.interval,
                platform="linux",
                protocol="5",
                device=f"gw-spread{i:02d}",
                prefix="titik",
            )
            with (cfg.parent / "log").open("wb") as log:
                agents.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        cwd=ROOT,
                    )
                )
            history.append([])
            maps.append({})
            grew_in.append([])
        t0 = time.monotonic()
        next_progress = 60.0
        while (t := time.monotonic() - t0) < args.minutes * 60:
            for i, (proc, hist) in enumerate(zip(agents, history, strict=True)):
                if proc.poll() is not None:
                    raise RuntimeError(f"an agent exited early (log in {work})")
                hist.append((t, read_mem_kib(proc.pid)["VmRSS"]))
                if args.where:
                    now = read_smaps_rss(proc.pid)
                    if t >= args.warm and maps[i]:
                        grew_in[i] += [
                            f"{t / 60:.1f} min {name} +{kib - maps[i].get(name, 0)} KiB"
                            for name, kib in now.items()
                            if kib > maps[i].get(name, 0)
                        ]
                    maps[i] = now
            if t >= next_progress:
                grown = sum(1 for h in history if _growth(h, args.warm)[0] > 0)
                print(
                    f"{t / 60:4.1f} min: {grown} of {args.agents} above their warm-mark RSS",
                    file=sys.stderr,
                )
                next_progress += 60.0
            time.sleep(1.0)
    finally:
        for proc in agents:
            stop_process(proc)
        broker.stop()
    report = render(args, history, grew_in)
    print(report)
    if args.out:
        args.out.write_text(report)
    return 0


def _growth(hist: list[tuple[float, int]], warm: float) -> tuple[int, list[float]]:
    """KiB gained from the warm mark to the last reading, and when each rise came."""
    after = [(t, rss) for t, rss in hist if t >= warm]
    if not after:
        return 0, []
    rises = [t for (t, rss), (_, prev) in zip(after[1:], after, strict=False) if rss > prev]
    return after[-1][1] - after[0][1], rises


def read_smaps_rss(pid: int) -> dict[str, int]:
    """Rss (KiB) of each mapping of ``pid``, keyed ``start-end name`` (anonymous: ``[anon]``)."""
    out: dict[str, int] = {}
    key = ""
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split(maxsplit=6)
            if "-" in head[0] and not head[0].endswith(":"):
                start, end = (int(x, 16) for x in head[0].split("-"))
                name = head[5].strip() if len(head) > 5 else "[anon]"
                key = f"{head[0]} {name} ({(end - start) // 1024:,} KiB)"
            elif head[0] == "Rss:":
                out[key] = int(head[1])
    return out


def render(
    args: argparse.Namespace, history: list[list[tuple[float, int]]], grew_in: list[list[str]]
) -> str:
    rows = []
    grown = 0
    for i, hist in enumerate(history):
        kib, rises = _growth(hist, args.warm)
        grown += kib > 0
        at_warm = next(rss for t, rss in hist if t >= args.warm)
        when = ", ".join(f"{t / 60:.1f}" for t in rises) or "-"
        rows.append(f"| {i} | {at_warm:,} | {hist[-1][1]:,} | {kib:+d} | {when} |")
    where = [f"- agent {i}: {g}" for i, grown_in in enumerate(grew_in) for g in grown_in]
    if args.where:
        where = ["", "Mappings that grew after the warm mark:", *(where or ["- none"])]
    return "\n".join(
        [
            f"{args.agents} agents side by side, {args.minutes:g} min at {args.interval:g} s,"
            f" warm mark {args.warm:g} s: **{grown} of {args.agents} grew after the warm mark**.",
            "",
            "| agent | VmRSS at warm mark (KiB) | at end (KiB) | growth (KiB) | rises at (min) |",
            "|---|---|---|---|---|",
            *rows,
            *where,
            "",
            f"Reproduce: `.venv/bin/python bench/bench_rss_spread.py --agents {args.agents}"
            f" --minutes {args.minutes:g} --interval {args.interval:g} --warm {args.warm:g}"
            f"{' --where' if args.where else ''}`",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
