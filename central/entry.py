"""The console scripts titik-central, titik-ctl and titik-sim: the central extra comes first.

The three programs are installed with every ``pip install titik``, but they belong to central
and need ``titik[central]`` (FastAPI, uvicorn, prometheus-client, psycopg; docs/architecture.md says why
each). Without it each prints one line, with the pip command that installs it into the same
environment, and exits 2, even for ``--help``: never a ModuleNotFoundError traceback. Nothing
here imports more than the standard library before the check.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import shlex
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from urllib.parse import unquote, urlparse

EXIT_MISSING = 2
#: The central extra (pyproject.toml's [project.optional-dependencies] central), as the module
#: each distribution provides; tests/unit/test_entry.py keeps the two lists the same.
CENTRAL_EXTRA = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "prometheus-client": "prometheus_client",
    "psycopg": "psycopg",
    "psycopg-pool": "psycopg_pool",
}


def missing_extra() -> list[str]:
    """The central extra's distributions whose modules cannot be imported here."""
    return [dist for dist, module in CENTRAL_EXTRA.items() if not importlib.util.find_spec(module)]


def install_command() -> str:
    """The pip command that adds the central extra to this environment, as titik came into it."""
    pip = f"{shlex.quote(sys.executable)} -m pip install"
    try:
        text = distribution("titik").read_text("direct_url.json")
    except PackageNotFoundError:
        text = None
        tree = Path(__file__).resolve().parents[1]
        if (tree / "pyproject.toml").exists():  # run from a source tree
            return f"{pip} -e {shlex.quote(f'{tree}[central]')}"
    if text:
        # PEP 610: installed from a local directory or file, not from an index.
        info = json.loads(text)
        url = urlparse(info.get("url", ""))
        if url.scheme == "file":
            where = unquote(url.path)
            editable = "-e " if info.get("dir_info", {}).get("editable") else ""
            return f"{pip} {editable}{shlex.quote(f'{where}[central]')}"
    return f"{pip} 'titik[central]'"


def _start(prog: str, module: str) -> int:
    missing = missing_extra()
    if missing:
        print(
            f"{prog}: needs titik's central extra ({', '.join(missing)} not installed); "
            f"install it with: {install_command()}",
            file=sys.stderr,
        )
        return EXIT_MISSING
    main: Callable[[], int] = importlib.import_module(module).main
    return main()


def central() -> int:
    return _start("titik-central", "central.cli")


def ctl() -> int:
    return _start("titik-ctl", "central.ctl.cli")


def sim() -> int:
    return _start("titik-sim", "central.sim.cli")
