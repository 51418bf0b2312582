"""The command-runner port: how collectors run firmware tools.

Collectors never call :mod:`subprocess` themselves; they receive a
:class:`CommandRunner`, so tests can feed them recorded output and the
simulated platform can run without any tool installed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from typing import Protocol


class CommandError(Exception):
    """A tool is missing, failed, or timed out; the message says which."""


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


class CommandRunner(Protocol):
    def __call__(self, argv: list[str], timeout: float = 5.0) -> CommandResult: ...


def run_command(argv: list[str], timeout: float = 5.0) -> CommandResult:
    """Run ``argv`` without a shell; a missing tool or a timeout is a CommandError."""
    try:
        proc = subprocess.run(  # noqa: S603 - argv is built by the agent, never by a shell
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            errors="replace",
        )
    except FileNotFoundError as exc:
        raise CommandError(f"{argv[0]}: not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandError(f"{argv[0]}: timed out after {timeout:g}s") from exc
    except OSError as exc:
        raise CommandError(f"{argv[0]}: {exc.strerror or exc}") from exc
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def run_checked(runner: CommandRunner, argv: list[str], timeout: float = 5.0) -> str:
    """Run and return stdout, or raise CommandError naming the tool and its exit code."""
    res = runner(argv, timeout)
    if res.returncode != 0:
        detail = (res.stderr or res.stdout).strip().splitlines()
        why = detail[0][:120] if detail else "no output"
        raise CommandError(f"{argv[0]}: exit {res.returncode}: {why}")
    return res.stdout
