"""titik-central run's stop (central/cli.py, Stopping): every wait bounded. The writer here is a
stand-in whose commit never returns; the real one, blocked on a PostgreSQL row lock, is
tests/integration/test_central_pg.py's test_a_stop_waits_on_no_row_lock..."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from central import cli


class StuckWriter:
    """A writer whose commit never ends; it sends itself ``signals`` SIGTERMs when it starts."""

    def __init__(self, signals: int) -> None:
        self.signals = signals
        self.interrupted = False

    def run(self, stop: threading.Event) -> None:
        for _ in range(self.signals):
            os.kill(os.getpid(), signal.SIGTERM)
        try:
            threading.Event().wait(60)  # a commit waiting on a lock nobody releases
        except cli.StopOverdue:
            self.interrupted = True
            raise


@pytest.fixture
def stopping(monkeypatch: pytest.MonkeyPatch) -> Iterator[cli.Stopping]:
    monkeypatch.setattr(cli, "STOP_WRITER_S", 0.3)
    s = cli.Stopping(threading.Event())
    before = signal.signal(signal.SIGTERM, s.on_signal)
    try:
        yield s
    finally:
        signal.signal(signal.SIGTERM, before)
        s.done()  # the stop's watchdog would otherwise end this process later


def test_a_writer_still_writing_after_the_grace_is_interrupted(stopping: cli.Stopping) -> None:
    writer = StuckWriter(signals=1)
    t0 = time.monotonic()
    stopping.write(writer)
    took = time.monotonic() - t0
    assert writer.interrupted and stopping.stop.is_set()
    assert 0.3 <= took < 5, took
    assert not stopping.writing


def test_a_second_signal_interrupts_at_once(stopping: cli.Stopping) -> None:
    stopping.write(StuckWriter(signals=2))
    assert stopping.stop.is_set()


def test_a_signal_after_the_writer_returned_interrupts_nothing(stopping: cli.Stopping) -> None:
    class Done:
        def run(self, stop: threading.Event) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    stopping.write(Done())
    os.kill(os.getpid(), signal.SIGTERM)  # late, during the stop's own steps
    os.kill(os.getpid(), signal.SIGTERM)
    assert stopping.stop.is_set()


def test_sigusr1_dumps_every_thread_and_the_process_goes_on() -> None:
    code = (
        "import os, signal, threading\n"
        "from central.cli import dump_stacks_on\n"
        "dump_stacks_on(signal.SIGUSR1)\n"
        "t = threading.Thread(target=threading.Event().wait, args=(5,), name='other')\n"
        "t.start()\n"
        "os.kill(os.getpid(), signal.SIGUSR1)\n"
        "print('still running', flush=True)\n"
        "os._exit(0)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert p.returncode == 0 and p.stdout == "still running\n", p.stderr
    assert p.stderr.count("(most recent call first)") >= 2, p.stderr  # both threads
