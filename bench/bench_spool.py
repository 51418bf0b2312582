"""Spool benchmark: flash bytes written per record, and append throughput.

Compares agent.spool.Spool with the naive baseline of one SQLite row committed per
record (the approach of ThingsBoard IoT Gateway's sqlite storage and AWS Greengrass's
disk spooler): stdlib sqlite3, WAL, one INSERT + COMMIT per record, and a DELETE +
COMMIT per ack when online.

Bytes are measured by the kernel: the delta of ``write_bytes`` in /proc/self/io, which
ext4 (and every page-cache filesystem) charges to the writing process one whole page at
a time, when the page is dirtied. os.sync() runs before and after each phase so nothing
leaks between phases. Metadata (inodes, directory entries, the ext4 journal) is written
by kernel threads and is not in write_bytes; the whole-device sector count from
/sys/block/<dev>/stat is shown beside it for that reason (it includes other processes'
writes, so it is noisy, but the machine is otherwise idle).

Run: .venv/bin/python bench/bench_spool.py [--dir DIR] [--records N] [--quick]
Prints a markdown table on stdout and progress on stderr.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import shlex
import shutil
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import agent.spool.store as spool_store  # noqa: E402
from agent.spool import Record, Spool  # noqa: E402

SAMPLE_INTERVAL_S = 1.0
TICK_S = 0.5
FLUSH_INTERVAL_S = 10.0
GRACE_S = 5.0
WALL0 = 1_732_700_000.0


def progress(msg: str) -> None:
    print(f"[bench_spool] {msg}", file=sys.stderr, flush=True)


# -- workload --------------------------------------------------------------------------


def telemetry(seq: int, ts: float, rng: random.Random) -> bytes:
    """One ~400-byte gateway sample, shaped like Titik's telemetry JSON."""
    body = {
        "v": 1,
        "seq": seq,
        "ts": round(ts, 3),
        "gw": "gw-a4f3c21b",
        "health": {
            "load1": round(rng.random() * 2, 2),
            "mem_free_kb": rng.randint(18_000, 60_000),
            "uptime_s": 86_400 + seq,
            "temp_c": round(45 + rng.random() * 10, 1),
        },
        "radios": [
            {
                "radio": f"radio{i}",
                "band": band,
                "ch": ch,
                "noise": -95 + rng.randint(-3, 3),
                "util": rng.randint(0, 100),
                "clients": rng.randint(0, 40),
                "retries": rng.randint(0, 5000),
            }
            for i, (band, ch) in enumerate((("2g", 6), ("5g", 36)))
        ],
        "wan": {
            "iface": "wan",
            "up": True,
            "rtt_ms": round(rng.random() * 80, 1),
            "loss_pct": round(rng.random() * 2, 2),
            "rx": rng.randint(10**8, 10**10),
            "tx": rng.randint(10**7, 10**9),
        },
        "errors": [],
    }
    return json.dumps(body, separators=(",", ":")).encode()


def workload(n: int) -> list[Record]:
    rng = random.Random(20241127)
    return [Record(seq, WALL0 + seq, telemetry(seq, WALL0 + seq, rng)) for seq in range(1, n + 1)]


class FakeClock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- measuring -------------------------------------------------------------------------


class HandedToWrite:
    """Counts the bytes the spool passes to write(2), through its one write seam."""

    def __init__(self) -> None:
        self.total = 0
        self.calls = 0
        self._real = spool_store.write_all
        spool_store.write_all = self._write

    def _write(self, fd: int, data: bytes) -> None:
        self.total += len(data)
        self.calls += 1
        self._real(fd, data)


HANDED = HandedToWrite()


def proc_write_bytes() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    raise RuntimeError("no write_bytes in /proc/self/io")


def block_device(path: Path) -> str | None:
    """The /sys/block name of the disk under ``path`` (e.g. vda), if it can be found."""
    try:
        dev = os.stat(path).st_dev
        sys_dev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}").resolve()
    except OSError:
        return None
    for p in (sys_dev, sys_dev.parent):
        if (Path("/sys/block") / p.name).exists():
            return p.name
    return None


def device_bytes(dev: str | None) -> int | None:
    if dev is None:
        return None
    fields = Path(f"/sys/block/{dev}/stat").read_text().split()
    return int(fields[6]) * 512  # sectors written


@dataclass
class Written:
    process: int = 0
    device: int | None = None


@contextmanager
def measure(dev: str | None) -> Iterator[Written]:
    out = Written()
    os.sync()
    p0, d0 = proc_write_bytes(), device_bytes(dev)
    yield out
    os.sync()
    out.process = proc_write_bytes() - p0
    d1 = device_bytes(dev)
    out.device = d1 - d0 if d0 is not None and d1 is not None else None


def fs_type(path: Path, dev: str | None) -> str:
    best, kind = "", "?"
    for line in Path("/proc/mounts").read_text().splitlines():
        parts = line.split()
        mnt = parts[1]
        if str(path).startswith(mnt) and len(mnt) > len(best):
            best, kind = mnt, parts[2]
    opts = Path(f"/proc/fs/ext4/{dev}/options")
    if kind == "ext4" and dev and opts.exists():
        # Without a journal, ext4 charges inode, bitmap and directory blocks to the
        # writing process; with one, jbd2 writes them and write_bytes shows data only.
        data = [o for o in opts.read_text().split() if o.startswith("data=")]
        kind += f" (journal, {data[0]})" if data else " (no journal)"
    return kind


# -- the contenders --------------------------------------------------------------------


def spool_offline(directory: Path, recs: list[Record]) -> None:
    """Offline: every sample appended with inflight=False, the agent ticking at 2 Hz."""
    clock, wall = FakeClock(0.0), FakeClock(WALL0)
    spool = Spool(
        directory,
        flush_interval_s=FLUSH_INTERVAL_S,
        grace_s=GRACE_S,
        clock=clock,
        wall=wall,
        max_bytes=1 << 30,
    )
    for rec in recs:
        spool.append(rec)
        for _ in range(int(SAMPLE_INTERVAL_S / TICK_S)):
            clock.t += TICK_S
            wall.t += TICK_S
            spool.tick()
    spool.close()


def spool_online(directory: Path, recs: list[Record]) -> None:
    """Online: each sample appended in flight and PUBACKed 0.1-2 s later (< grace)."""
    clock, wall = FakeClock(0.0), FakeClock(WALL0)
    spool = Spool(
        directory, flush_interval_s=FLUSH_INTERVAL_S, grace_s=GRACE_S, clock=clock, wall=wall
    )
    rng = random.Random(7)
    waiting: list[tuple[float, int]] = []
    for rec in recs:
        spool.append(rec, inflight=True)
        waiting.append((clock.t + rng.uniform(0.1, 2.0), rec.seq))
        for _ in range(int(SAMPLE_INTERVAL_S / TICK_S)):
            clock.t += TICK_S
            wall.t += TICK_S
            spool.ack(s for due, s in waiting if due <= clock.t)
            waiting = [(due, s) for due, s in waiting if due > clock.t]
            spool.tick()
    spool.ack(s for _, s in waiting)  # the last PUBACKs arrive before shutdown
    spool.close()


def sqlite_open(path: Path, synchronous: str) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    db.execute("CREATE TABLE IF NOT EXISTS messages(id INTEGER PRIMARY KEY, ts REAL, data BLOB)")
    return db


def sqlite_offline(path: Path, recs: list[Record], synchronous: str) -> None:
    db = sqlite_open(path, synchronous)
    for rec in recs:
        db.execute("BEGIN")
        db.execute("INSERT INTO messages VALUES (?, ?, ?)", (rec.seq, rec.ts, rec.data))
        db.execute("COMMIT")
    db.close()


def sqlite_online(path: Path, recs: list[Record], synchronous: str) -> None:
    db = sqlite_open(path, synchronous)
    for rec in recs:
        db.execute("BEGIN")
        db.execute("INSERT INTO messages VALUES (?, ?, ?)", (rec.seq, rec.ts, rec.data))
        db.execute("COMMIT")
        db.execute("BEGIN")
        db.execute("DELETE FROM messages WHERE id = ?", (rec.seq,))
        db.execute("COMMIT")
    db.close()


# -- phases ----------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    process_per_rec: float
    ratio: float
    device_per_rec: float | None
    handed_per_rec: float | None = None
    files: int | None = None


def bytes_phase(
    label: str,
    run: Callable[[Path], None],
    base: Path,
    n: int,
    data_per_rec: float,
    dev: str | None,
) -> Row:
    work = Path(tempfile.mkdtemp(prefix="phase-", dir=base))
    progress(f"{label}: {n} records")
    handed, calls = HANDED.total, HANDED.calls
    with measure(dev) as w:
        run(work)
    dev_per = w.device / n if w.device is not None else None
    row = Row(label, w.process / n, w.process / n / data_per_rec, dev_per)
    if HANDED.calls != calls:
        row.handed_per_rec = (HANDED.total - handed) / n
        row.files = HANDED.calls - calls
    return row


def floor_phase(
    base: Path, ops: int, size: int, n: int, data_per_rec: float, dev: str | None
) -> Row:
    """The least an fsync-per-interval design can cost here: ``ops`` writes of ``size``
    bytes, each fdatasync'd, into a file preallocated beforehand (no new file, no framing)."""
    path = Path(tempfile.mkdtemp(prefix="floor-", dir=base)) / "prealloc"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, ops * 4096)
        os.fsync(fd)
        payload = os.urandom(size)
        progress(f"floor: {ops} fdatasync'd writes of {size} bytes")
        with measure(dev) as w:
            for i in range(ops):
                os.pwrite(fd, payload, i * 4096)
                os.fdatasync(fd)
    finally:
        os.close(fd)
    dev_per = w.device / n if w.device is not None else None
    label = f"reference floor: {ops} fdatasync'd {size}-byte writes, preallocated file"
    return Row(label, w.process / n, w.process / n / data_per_rec, dev_per)


def append_rate(recs: list[Record], directory: Path, max_bytes: int, repeat: int = 3) -> float:
    best = 0.0
    for i in range(repeat):
        spool = Spool(directory / f"rate-{max_bytes}-{i}", max_bytes=max_bytes)
        t0 = time.perf_counter()
        for rec in recs:
            spool.append(rec)
        best = max(best, len(recs) / (time.perf_counter() - t0))
    return best


def sqlite_rate(recs: list[Record], path: Path, synchronous: str, budget_s: float) -> float:
    db = sqlite_open(path, synchronous)
    t0 = time.perf_counter()
    n = 0
    for rec in recs:
        db.execute("BEGIN")
        db.execute("INSERT INTO messages VALUES (?, ?, ?)", (rec.seq, rec.ts, rec.data))
        db.execute("COMMIT")
        n += 1
        if time.perf_counter() - t0 > budget_s:
            break
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def index_memory(n: int, directory: Path) -> float:
    """Python heap per spilled record (the in-memory index), via tracemalloc.

    Records are made on the fly and dropped after append, as the agent does, so what
    the index keeps alive (the seq int, for one) is counted."""
    clock = FakeClock(0.0)
    spool = Spool(directory, clock=clock, wall=FakeClock(WALL0), max_bytes=1 << 30)
    rng = random.Random(3)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq in range(1, n + 1):
        ts = WALL0 + seq
        spool.append(Record(seq, ts, telemetry(seq, ts, rng)))
        clock.t += 1.0
        spool.tick()
    clock.t += 3 * FLUSH_INTERVAL_S
    spool.tick()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    if spool.stats().memory_bytes:
        raise RuntimeError("records still in memory after the spill")
    spool.close()
    return (after - before) / n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, help="where to write (must be disk-backed)")
    ap.add_argument("--records", type=int, default=3600, help="records per bytes phase")
    ap.add_argument("--quick", action="store_true", help="fewer records, for a smoke run")
    args = ap.parse_args()
    n = 300 if args.quick else args.records

    base = Path(tempfile.mkdtemp(prefix="bench-spool-", dir=args.dir))
    try:
        return run(args, n, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run(args: argparse.Namespace, n: int, base: Path) -> int:
    dev = block_device(base)
    kind = fs_type(base.resolve(), dev)
    if kind in ("tmpfs", "ramfs"):
        progress(f"warning: {base} is on {kind}; write_bytes will be 0. Use --dir on a disk.")

    command = " ".join(
        [".venv/bin/python", "bench/bench_spool.py", *map(shlex.quote, sys.argv[1:])]
    )
    machine = (
        f"{os.cpu_count()} CPUs ({platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"{kind} on {dev or '?'}, page size {os.sysconf('SC_PAGE_SIZE')}"
    )
    progress(machine)

    recs = workload(max(n, 1))
    data_per_rec = sum(len(r.data) for r in recs[:n]) / n
    progress(f"records: {n}, mean data {data_per_rec:.0f} bytes")

    spool_row = bytes_phase(
        "spool, offline", lambda d: spool_offline(d, recs[:n]), base, n, data_per_rec, dev
    )
    flushes = spool_row.files or 1
    per_flush = int((spool_row.handed_per_rec or 0) * n / flushes)
    rows = [
        spool_row,
        floor_phase(base, flushes, per_flush, n, data_per_rec, dev),
        bytes_phase(
            "sqlite WAL synchronous=FULL, offline",
            lambda d: sqlite_offline(d / "spool.db", recs[:n], "FULL"),
            base,
            n,
            data_per_rec,
            dev,
        ),
        bytes_phase(
            "sqlite WAL synchronous=NORMAL, offline",
            lambda d: sqlite_offline(d / "spool.db", recs[:n], "NORMAL"),
            base,
            n,
            data_per_rec,
            dev,
        ),
        bytes_phase(
            "spool, online (acked within grace)",
            lambda d: spool_online(d, recs[:n]),
            base,
            n,
            data_per_rec,
            dev,
        ),
        bytes_phase(
            "sqlite WAL synchronous=FULL, online (insert, delete on ack)",
            lambda d: sqlite_online(d / "spool.db", recs[:n], "FULL"),
            base,
            n,
            data_per_rec,
            dev,
        ),
    ]

    rate_recs = workload(200_000 if not args.quick else 50_000)
    progress("append throughput: spool")
    rate_cap = append_rate(rate_recs, base, 16 * 2**20)
    rate_free = append_rate(rate_recs, base, 1 << 30)
    progress("append throughput: sqlite")
    budget = 1.0 if args.quick else 5.0
    rate_full = sqlite_rate(rate_recs, base / "rate-full.db", "FULL", budget)
    rate_normal = sqlite_rate(rate_recs, base / "rate-normal.db", "NORMAL", budget)
    progress("index memory per spilled record")
    per_index = index_memory(n, base / "index")

    print(f"Command: `{command}`  ")
    print(f"Machine: {machine}  ")
    print(
        f"Workload: {n} JSON records, mean {data_per_rec:.0f} bytes, one per "
        f"{SAMPLE_INTERVAL_S:g} s (simulated clock), spool flush interval "
        f"{FLUSH_INTERVAL_S:g} s, grace {GRACE_S:g} s, tick every {TICK_S:g} s\n"
    )
    print(
        "| (a) bytes written per record | kernel write_bytes / record | ratio to data "
        "| handed to write() / record | files written | whole device / record |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        devcol = f"{r.device_per_rec:,.0f}" if r.device_per_rec is not None else "n/a"
        handed = f"{r.handed_per_rec:,.0f}" if r.handed_per_rec is not None else "n/a"
        files = str(r.files) if r.files is not None else "n/a"
        print(
            f"| {r.what} | {r.process_per_rec:,.0f} | {r.ratio:.2f} | {handed} | {files} "
            f"| {devcol} |"
        )
    print()
    print("| (c) append throughput | records/s |")
    print("| --- | ---: |")
    print(f"| spool, at the 16 MiB cap (dropping the oldest) | {rate_cap:,.0f} |")
    print(f"| spool, below the cap | {rate_free:,.0f} |")
    print(f"| sqlite WAL synchronous=FULL, INSERT+COMMIT | {rate_full:,.0f} |")
    print(f"| sqlite WAL synchronous=NORMAL, INSERT+COMMIT | {rate_normal:,.0f} |")
    print()
    print(
        f"Index memory per spilled record (tracemalloc, {n} records spilled): "
        f"{per_index:,.0f} bytes, for {data_per_rec:.0f} bytes of data"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
