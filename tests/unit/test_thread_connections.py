"""Per-thread SQLite connections are closed by close() (every thread's, also threads that are
still running) and when their owner is collected."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from central.store.audit import AuditLog
from central.store.sqlite import SqliteStore


def open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_an_owner_nobody_holds_closes_every_threads_connection(tmp_path: Path) -> None:
    gc.collect()
    before = open_files()
    log, store = AuditLog(tmp_path / "a.db"), SqliteStore(tmp_path / "s.db")
    owners: list[AuditLog | SqliteStore] = [log, store]
    del log, store
    release = threading.Event()
    opened = threading.Barrier(13)

    def use() -> None:  # the threads live on, as an API's worker threads do
        owners[0].head()  # type: ignore[union-attr]
        owners[1].summary()  # type: ignore[union-attr]
        opened.wait()
        release.wait(10)

    threads = [threading.Thread(target=use) for _ in range(12)]
    for t in threads:
        t.start()
    opened.wait()
    assert open_files() >= before + 24  # each thread opened its own, for each owner
    owners.clear()
    gc.collect()
    assert open_files() <= before + 1
    release.set()
    for t in threads:
        t.join()
    gc.collect()
    assert open_files() <= before + 1


def test_close_reaches_every_threads_connection(tmp_path: Path) -> None:
    gc.collect()
    before = open_files()
    log = AuditLog(tmp_path / "a.db")
    barrier = threading.Barrier(8)
    done = threading.Event()

    def hold() -> None:  # the threads outlive close(): their slots still hold the holders
        log.head()
        barrier.wait()
        done.wait(10)

    threads = [threading.Thread(target=hold) for _ in range(7)]
    for t in threads:
        t.start()
    barrier.wait()
    log.close()
    assert open_files() <= before + 1
    done.set()
    for t in threads:
        t.join()
