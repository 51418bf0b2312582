"""`pip install titik` without the central extra: the central tools say how to get it.

A fresh venv gets the project (``--no-deps``, from a copy of the sources, so the worktree is not
touched) and only the base requirements read from pyproject.toml. titik-central, titik-ctl and
titik-sim then print one line naming the pip command and exit 2, also for ``--help``. Running
that very command makes all three work.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two pip runs (about 20 s with a warm pip cache)

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ("titik-central", "titik-ctl", "titik-sim")


def pip(venv: Path, *args: str) -> None:
    res = subprocess.run(
        [
            str(venv / "bin/python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_central_tools_without_the_extra_say_how_to_install_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("agent", "central"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    base = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pip(venv, "--no-deps", str(src))
    pip(venv, *base)

    for tool in TOOLS:
        for args in (["--help"], [], ["run"]):
            res = subprocess.run(
                [str(venv / "bin" / tool), *args],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert res.returncode == 2, (tool, args, res.stdout, res.stderr)
            assert res.stdout == ""
            lines = res.stderr.splitlines()
            assert len(lines) == 1, res.stderr  # one line, no traceback
            assert lines[0].startswith(f"{tool}: needs titik's central extra ("), lines[0]
            assert "prometheus-client" in lines[0]
            # The exact command, for this venv and where titik was installed from.
            command = lines[0].split("install it with: ", 1)[1]
            assert command == f"{venv / 'bin/python'} -m pip install '{src}[central]'"

    argv = shlex.split(command)
    assert argv[:4] == [str(venv / "bin/python"), "-m", "pip", "install"]
    pip(venv, *argv[4:])
    for tool in TOOLS:
        res = subprocess.run(
            [str(venv / "bin" / tool), "--help"],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert res.returncode == 0, (tool, res.stderr)
        assert res.stdout.startswith(f"usage: {tool}"), res.stdout
