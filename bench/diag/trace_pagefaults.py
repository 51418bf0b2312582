"""Run the agent with a page-fault tracer: which Python code touches new pages, and when.

A diagnostic for the agent's RSS after start-up (docs/benchmarks.md, agent section, "4."),
not a benchmark. It builds ``pagefaults.c`` (needs a C compiler and the Python headers:
``apt-get install gcc python3-dev``) into a temporary directory, installs it in front of
CPython's allocators, runs ``titik-agent`` with the arguments given, and from ``--start``
seconds on writes one line per new page to ``--out``: time, RSS in pages, and the Python stack.

    .venv/bin/python bench/diag/trace_pagefaults.py --out /tmp/faults.txt --start 120 -- \\
        run --config /path/to/agent.toml

Lines after the start mark, grouped by their first frames, show where the pages go, e.g.
``awk '$1 >= 120' /tmp/faults.txt | cut -d' ' -f5-7 | sort | uniq -c | sort -rn``.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def build(workdir: Path) -> Path:
    """Compile the tracer for this interpreter; the path of the extension module."""
    target = workdir / ("pagefaults" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    include = sysconfig.get_paths()["include"]
    cmd = ["cc", "-O2", "-shared", "-fPIC", f"-I{include}", str(HERE / "pagefaults.c")]
    subprocess.run([*cmd, "-o", str(target)], check=True)
    return target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="where the new pages are written")
    p.add_argument("--start", type=float, default=120.0, help="seconds before tracing (120)")
    p.add_argument("agent_args", nargs="+", help="titik-agent's arguments, after --")
    args = p.parse_args()
    so = build(Path(tempfile.mkdtemp(prefix="titik-pagefaults-")))
    sys.path.insert(0, str(so.parent))
    tracer = importlib.import_module("pagefaults")
    tracer.install(str(args.out))
    threading.Timer(args.start, tracer.start).start()
    sys.path.insert(0, str(ROOT))
    from agent.cli import main as agent_main

    return agent_main(args.agent_args)


if __name__ == "__main__":
    sys.exit(main())
