"""titik-agent's command line: the services' exact command line skips argparse, nothing else does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import cli

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from agent import cli
code = cli.main(sys.argv[1:])
print("argparse" in sys.modules, file=sys.stderr)
sys.exit(code)
"""


def _probe(argv: list[str], config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TITIK_")}
    env["TITIK_CONFIG"] = str(config)
    return subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_service_command_line_means_what_argparse_makes_of_it() -> None:
    parsed = cli.build_parser().parse_args(list(cli.SERVICE_ARGV))
    assert parsed.command == "run"
    assert parsed.config == cli.DEFAULT_CONFIG
    assert parsed.func is cli.cmd_run
    assert vars(parsed).keys() == {"command", "config", "func"}


@pytest.mark.parametrize(
    ("argv", "argparse_loaded"),
    [(["run"], False), (["run", "--config", "{cfg}"], True), (["check-config", "{cfg}"], True)],
)
def test_only_the_service_command_line_skips_argparse(
    tmp_path: Path, argv: list[str], argparse_loaded: bool
) -> None:
    # A config with an unknown key: every path must load it and refuse it the same way.
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[telemetry]\nintervall_s = 5\n")
    proc = _probe([a.format(cfg=cfg) for a in argv], cfg)
    assert proc.returncode == cli.EXIT_CONFIG, proc.stderr
    assert "telemetry.intervall_s" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == str(argparse_loaded)


def test_help_and_errors_still_come_from_argparse(tmp_path: Path) -> None:
    proc = _probe(["run", "--help"], tmp_path / "none.toml")
    assert proc.returncode == 0 and "--config" in proc.stdout
    proc = _probe(["run", "--bogus"], tmp_path / "none.toml")
    assert proc.returncode == 2 and "unrecognized arguments: --bogus" in proc.stderr
