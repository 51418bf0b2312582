"""Issue 19, point 3: webhook notifications with retries, against the real test receiver
(``titik-central webhook-receiver`` as a subprocess, a real HTTP server on loopback).

- a receiver that fails twice then succeeds: delivered on the third attempt, signed;
- a receiver that is down: retried, given up, counted, recorded; ``submit`` never blocks
  and a full queue drops (counted) instead of waiting;
- the secret, the extra header and the URL's path never reach the log.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from central.alerting.webhook import WebhookNotifier
from central.config import WebhookConfig
from central.sim.localbroker import free_port
from central.store.alerting import AlertingStore
from central.store.pg import PgStore
from central.store.pg.tables import PgAlertingStore
from central.store.sqlite import SqliteStore

SECRET = "s3cret-hmac-key-do-not-log"  # noqa: S105 (a test secret)
TOKEN = "tok-in-the-path-do-not-log"  # noqa: S105


class ReceiverProc:
    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "central.cli", "webhook-receiver", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()  # blocks until it listens (or dies)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert m, f"receiver did not start: {first!r}"
        self.port = int(m.group(1))

    def lines(self, n: int, timeout: float = 20) -> list[dict[str, Any]]:
        """The first ``n`` notifications it printed (reads its stdout, which blocks until
        each arrives; the timeout is the test's own, through the process being killed)."""
        assert self.proc.stdout is not None
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(n):
            line = self.proc.stdout.readline()
            assert line, "receiver ended"
            out.append(json.loads(line))
            assert time.monotonic() < deadline
        return out

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture(params=["sqlite", "postgresql"])
def life(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AlertingStore]:
    """The deliveries' table on SQLite, or on PostgreSQL (issue 21)."""
    store: AlertingStore
    if request.param == "sqlite":
        SqliteStore(tmp_path / "t.db").close()
        store = AlertingStore(tmp_path / "t.db")
    else:
        url = request.getfixturevalue("pg_url")
        PgStore(url).close()
        store = PgAlertingStore(url)
    yield store
    store.close()


def payload(n: int) -> dict[str, Any]:
    return {"type": "alert", "subject": f"alert/offline/gw-{n}/1.000", "event": "raised"}


def test_fails_twice_then_delivered_signed(
    life: AlertingStore, caplog: pytest.LogCaptureFixture
) -> None:
    rx = ReceiverProc("--fail-first", "2", "--secret-env", "HOOK_SECRET",
                      env={"HOOK_SECRET": SECRET})  # fmt: skip
    caplog.set_level(logging.DEBUG)
    try:
        cfg = WebhookConfig(
            url=f"http://127.0.0.1:{rx.port}/hook/{TOKEN}", retries=4, backoff_s=0.05,
            secret=SECRET, header=f"Authorization: Bearer {TOKEN}",
        )  # fmt: skip
        n = WebhookNotifier(cfg, life)
        assert n.submit(payload(1))
        got = rx.lines(3)
        assert n.wait_idle(10)
    finally:
        rx.stop()
        n.stop()
    assert [g["ok"] for g in got] == [False, False, True]
    assert {g["signature"] for g in got} == {"valid"}
    assert got[2]["body"] == payload(1)
    assert n.stats.delivered == 1
    assert n.stats.retries == 2
    assert n.stats.failed == 0
    [row] = life.deliveries()
    assert (row["status"], row["attempts"], row["subject"]) == (
        "delivered",
        3,
        "alert/offline/gw-1/1.000",
    )
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text


def test_a_receiver_that_is_down_is_given_up_counted_and_never_blocks(
    life: AlertingStore, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    cfg = WebhookConfig(
        url=f"http://127.0.0.1:{port}/hook?token={TOKEN}", retries=2, backoff_s=0.2,
        queue_max=2, secret=SECRET,
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    n = WebhookNotifier(cfg, life)
    try:
        t0 = time.perf_counter()
        accepted = [n.submit(payload(i)) for i in range(10)]
        took = time.perf_counter() - t0
        # The first is taken by the thread (or waits), two more fit the queue; the rest are
        # dropped at once: submitting ten took no retry's time.
        assert took < 0.1
        assert accepted.count(True) in (2, 3)
        assert n.stats.dropped == 10 - accepted.count(True)
        assert n.wait_idle(30)
    finally:
        n.stop()
    assert n.stats.failed == accepted.count(True)
    assert n.stats.delivered == 0
    assert n.stats.retries == 2 * accepted.count(True)
    assert n.stats.last_error is not None
    assert "ConnectionRefusedError" in n.stats.last_error
    rows = life.deliveries()
    assert {(r["status"], r["attempts"]) for r in rows} == {("failed", 3)}
    assert "gave up" in caplog.text
    assert "queue full" in caplog.text
    assert f"http://127.0.0.1:{port}" in caplog.text
    assert SECRET not in caplog.text
    assert TOKEN not in caplog.text


def test_receiver_refuses_a_bad_signature(life: AlertingStore) -> None:
    rx = ReceiverProc("--secret-env", "HOOK_SECRET", env={"HOOK_SECRET": SECRET})
    try:
        cfg = WebhookConfig(url=f"http://127.0.0.1:{rx.port}/", retries=3, backoff_s=0.05,
                            secret="another-secret")  # noqa: S106  # fmt: skip
        n = WebhookNotifier(cfg, life)
        n.submit(payload(1))
        [got] = rx.lines(1)
        assert n.wait_idle(10)
    finally:
        rx.stop()
        n.stop()
    assert got["signature"] == "invalid"
    assert got["ok"] is False
    # a 401 is the receiver refusing this payload: not retried
    assert (n.stats.failed, n.stats.retries) == (1, 0)


def test_receiver_help_and_bad_secret_env() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "central.cli", "webhook-receiver", "--help"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert r.returncode == 0
    assert "--fail-first" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "central.cli", "webhook-receiver", "--port", "0",
         "--secret-env", "TITIK_NO_SUCH_VAR"],
        capture_output=True, text=True, check=False, env={**os.environ, "TITIK_NO_SUCH_VAR": ""},
    )  # fmt: skip
    assert r.returncode == 2
    assert "--secret-env" in r.stderr
