"""Stopping a ``titik-central run`` subprocess in a test.

SIGTERM, then wait for the exit. One that does not end in time first gets SIGUSR1: central
dumps every thread's stack to its stderr (faulthandler, central/cli.py), so the test's log
shows where the stop hung (a flaky one is not seen again on demand); then SIGKILL.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from pathlib import Path

from tests.broker import wait_until

#: The end of a dump: faulthandler writes the main thread last, and its stack ends in the
#: module ``python -m central.cli`` runs.
DUMP_END = "in <module>"


def stop_central(proc: subprocess.Popen[bytes], log: Path, timeout: float = 15.0) -> int:
    """SIGTERM ``proc`` (its stderr goes to ``log``) and return its exit code once it ends
    within ``timeout`` s. Otherwise dump its threads' stacks into ``log``, SIGKILL it and
    raise AssertionError with the dump."""
    if proc.poll() is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    dump = dump_stacks(proc, log)
    proc.kill()
    proc.wait()
    raise AssertionError(
        f"central did not stop within {timeout:g} s of SIGTERM; its threads:\n{dump}"
    )


def dump_stacks(proc: subprocess.Popen[bytes], log: Path) -> str:
    """SIGUSR1 to a running central; what it wrote to ``log`` since: its threads' stacks, as
    far as they came within 5 s."""
    size = log.stat().st_size
    proc.send_signal(signal.SIGUSR1)

    def since() -> str:
        with log.open("rb") as f:
            f.seek(size)
            return f.read().decode(errors="replace")

    with contextlib.suppress(AssertionError):  # the caller kills it all the same
        wait_until(lambda: DUMP_END in since(), 5, "central's stack dump", poll=0.05)
    return since()
