"""The stack the simulator runs against (Mosquitto + central) and how it is measured.

Records lost are counted from central's SQLite: for every gateway, the sequence numbers it
drew (each :class:`~central.sim.fleet.TrackedAgent` keeps them per ``sid``) that have no row
in ``samples``. Lag comes from central's /metrics, load from psutil, connection storms from
Mosquitto's log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import psutil
from prometheus_client.parser import text_string_to_metric_families

from agent.mqtt import poll_io
from agent.protocol import AgentInfo, Telemetry, Topics, encode
from agent.protocol.client import make_client
from agent.protocol.topics import (
    TELEMETRY,
    gw_filter,
)
from central.sim.fleet import SimulatedFleet
from central.sim.localbroker import LocalBroker, free_port, wait_until
from central.store.tokens import TokenStore

log = logging.getLogger("titik.sim")

Result = dict[str, object]


@dataclass
class Stack:
    """Where the fleet publishes, and central's database if the sim can read it."""

    host: str
    port: int
    db: Path | None = None
    broker: LocalBroker | None = None  # set when the sim started it (outage needs it)
    central: subprocess.Popen[bytes] | None = None
    api: str | None = None  # central's HTTP base URL, for its /metrics
    #: A viewer token's ``Authorization`` header for ``api`` (the sim makes it in ``db``).
    api_headers: dict[str, str] = field(default_factory=dict)
    central_argv: list[str] = field(default_factory=list)  # how the sim started central
    central_log: Path | None = None

    def start_central(self) -> None:
        """Start central (again) as the sim first did, its output appended to its log."""
        if not self.central_argv or self.central_log is None:
            raise ValueError("central was not started by the sim: run without --broker")
        with self.central_log.open("ab") as out:
            self.central = subprocess.Popen(  # noqa: S603 - our own interpreter and module
                self.central_argv, stdout=out, stderr=subprocess.STDOUT
            )

    def stop_central(self, *, kill: bool = False) -> None:
        """SIGTERM (SIGKILL after 20 s), or with ``kill`` SIGKILL at once, as a crash would."""
        proc, self.central = self.central, None
        if proc is None or proc.poll() is not None:
            return
        if kill:
            proc.kill()
        else:
            proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def wait_api(self, timeout: float) -> None:
        """Until central's HTTP API answers (it has opened its store and started ingest)."""

        def up() -> bool:
            if self.central is not None and self.central.poll() is not None:
                raise RuntimeError(f"central exited {self.central.returncode}: {self.central_log}")
            try:
                with urllib.request.urlopen(f"{self.api}/healthz", timeout=2):  # noqa: S310
                    return True
            except OSError:
                return False

        wait_until(up, timeout, "central's API", poll=0.2)


@contextlib.contextmanager
def local_stack(workdir: Path) -> Iterator[Stack]:
    """A persistent Mosquitto (as production runs it: central's session and queue survive a
    restart) and ``titik-central run`` as a subprocess, both stopped on exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = LocalBroker(workdir, "max_connections -1\n", persistence=True)
    broker.start()
    db = workdir / "central.db"
    conf = workdir / "central.toml"
    http_port = free_port()
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\nclient_id = "titik-central-sim"\n'
        # One instance on Mosquitto: plain subscriptions survive a broker restart, shared ones
        # do not (docs/central.md, "Known limits").
        'share_group = ""\n'
        f'[store]\npath = "{db}"\n[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
    )
    # Each run its own name: the work directory (and its database) may be a previous run's.
    _, secret = TokenStore(db).create(f"titik-sim-{os.getpid()}-{int(time.time())}", "viewer")
    stack = Stack(
        broker.host,
        broker.port,
        db,
        broker,
        api=f"http://127.0.0.1:{http_port}",
        api_headers={"Authorization": f"Bearer {secret}"},
        central_argv=[sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
        central_log=workdir / "central.log",
    )
    try:
        stack.start_central()
        wait_ingesting(stack, 30)
        yield stack
    finally:
        stack.stop_central()
        broker.stop()


def wait_ingesting(stack: Stack, timeout: float) -> None:
    """Publish a probe sample until central has stored it: then its session is subscribed."""
    if stack.db is None:
        raise ValueError("waiting for central needs its database")
    client = make_client("titik-sim-probe", protocol="3.1.1")
    client.connect(stack.host, stack.port)
    client.loop_start()
    probe = Telemetry(
        device="gw-sim-probe",
        seq=0,
        boot=1,
        sid="probe",
        ts=time.time(),
        agent=AgentInfo(version="sim"),
    )
    deadline = time.monotonic() + timeout
    try:
        while stored_rows(stack.db, "gw-sim-probe") == 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"central stored nothing within {timeout}s")
            client.publish(Topics("titik", "gw-sim-probe").telemetry, encode(probe), qos=1)
            time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()


def open_db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def stored_rows(db: Path, device: str | None = None) -> int:
    """Rows in central's ``samples`` (of one device); 0 while the database does not exist."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(open_db(db)) as conn:
            if device is None:
                row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM samples").fetchone()
            else:
                row = conn.execute(
                    "SELECT COUNT(*) FROM samples WHERE device=?", (device,)
                ).fetchone()
            return int(row[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


Expected = dict[tuple[str, str], list[int]]  # (device, sid) -> [first seq, last seq, count]


def missing_per_device(db: Path, expected: Expected) -> dict[str, int]:
    """Per device, how many of the seqs it drew central has not stored (devices missing none
    are left out)."""
    out: dict[str, int] = {}
    with contextlib.closing(open_db(db)) as conn:
        for (device, sid), (first, last, count) in expected.items():
            row = conn.execute(
                "SELECT COUNT(*) FROM samples WHERE device=? AND sid=? AND seq BETWEEN ? AND ?",
                (device, sid, first, last),
            ).fetchone()
            if count - int(row[0]) > 0:
                out[device] = out.get(device, 0) + count - int(row[0])
    return out


def missing(db: Path, expected: Expected) -> int:
    """How many of the expected seqs central has not stored."""
    return sum(missing_per_device(db, expected).values())


def expected_seqs(fleet: SimulatedFleet, skip: frozenset[str] = frozenset()) -> Expected:
    return {
        (a.device_id, sid): list(r)
        for a in fleet.agents
        if a.device_id not in skip
        for sid, r in a.drawn.items()
    }


def records_lost(fleet: SimulatedFleet, stack: Stack, timeout: float = 120.0) -> int:
    """Samples drawn so far that central has not stored within ``timeout``."""
    if stack.db is None:
        raise ValueError("records lost needs central's database")
    expected = expected_seqs(fleet)
    deadline = time.monotonic() + timeout
    lost = missing(stack.db, expected)
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = missing(stack.db, expected)
    return lost


def pending(fleet: SimulatedFleet) -> int:
    """Buffered records not yet handed to the broker."""
    return sum(a.spool.pending for a in fleet.agents)


def wait_drained(fleet: SimulatedFleet, timeout: float) -> float | None:
    """Seconds until no gateway has a backlog left to send, or None at the timeout (then the
    gateways still behind are logged, with what their links last said)."""
    t0 = time.monotonic()
    while pending(fleet) or fleet.connected < len(fleet.agents):
        if time.monotonic() - t0 > timeout:
            behind = [a for a in fleet.agents if a.spool.pending or not a.link.connected]
            for a in behind[:20]:
                log.warning(
                    "not drained after %.0fs: %s connected=%s pending=%d last error: %s",
                    timeout,
                    a.device_id,
                    a.link.connected,
                    a.spool.pending,
                    a.link.last_error,
                )
            return None
        time.sleep(0.2)
    return round(time.monotonic() - t0, 1)


class LagProbe:
    """A plain subscriber to the live telemetry: lag = its receive time minus the sample's ts.

    Its client is driven by its own thread through ``poll()``, not paho's ``loop_start()``:
    in a process holding thousands of sockets its descriptor is above 1023, where paho's
    ``select()`` fails (that is why an earlier version saw no samples at 2,000 gateways)."""

    def __init__(self, stack: Stack, prefix: str = "titik") -> None:
        self.lags: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = make_client("titik-sim-lag", protocol="3.1.1")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(gw_filter(prefix, TELEMETRY), 0)
        self.client.on_message = self._on_message
        self.client.connect(stack.host, stack.port)
        self._thread = threading.Thread(target=self._drive, name="titik-sim-lag", daemon=True)
        self._thread.start()

    def _drive(self) -> None:
        """Until closed, or until the broker goes away (a probe only measures what it saw)."""
        while not self._stop.is_set() and self.client.socket() is not None:
            poll_io(self.client, 0.2)

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        now = time.time()
        try:
            ts = float(json.loads(msg.payload)["ts"])
        except (ValueError, KeyError, TypeError):
            return
        with self._lock:
            self.lags.append(now - ts)

    def take(self) -> list[float]:
        with self._lock:
            out, self.lags = self.lags, []
        return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.client.disconnect()


def lag_histogram(api: str, headers: dict[str, str] | None = None) -> dict[float, float]:
    """Central's ``titik_ingest_lag_seconds`` buckets: upper bound -> cumulative count.
    ``headers``: the credential (/metrics needs a viewer token)."""
    req = urllib.request.Request(f"{api}/metrics", headers=headers or {})  # noqa: S310 - our URL
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our URL
        text = resp.read().decode()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "titik_ingest_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    out[float(sample.labels["le"])] = sample.value
    return out


def api_get(stack: Stack, path: str) -> Any:
    """GET central's JSON API with the sim's viewer token."""
    if stack.api is None:
        raise ValueError("central's API is not known: run without --broker")
    req = urllib.request.Request(stack.api + path, headers=stack.api_headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - our loopback URL
        return json.loads(resp.read())


def histogram_quantile(
    q: float, before: dict[float, float], after: dict[float, float]
) -> float | None:
    """The q-quantile of what was observed between two scrapes, interpolated within its
    bucket as Prometheus' ``histogram_quantile`` does (so it is at most the bucket's bound)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, cum in zip(bounds, counts, strict=True):
        if cum >= rank and cum > 0:
            if bound == float("inf"):
                return lower  # beyond the last finite bucket: all we can say is "above this"
            inside = cum - below
            return round(lower + (bound - lower) * ((rank - below) / inside if inside else 1), 3)
        lower, below = bound, cum
    return None


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1], 3)


class LoadSampler:
    """Once a second, the CPU use of the broker and central (when the sim started them):
    the peak and the mean, in % of one core."""

    def __init__(self, stack: Stack, every_s: float = 1.0) -> None:
        self.procs: dict[str, psutil.Process] = {}
        broker = stack.broker.proc if stack.broker is not None else None
        for name, proc in (("broker", broker), ("central", stack.central)):
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    self.procs[name] = psutil.Process(proc.pid)
                    self.procs[name].cpu_percent()  # the first call starts the count
        self.samples: dict[str, list[float]] = {n: [] for n in self.procs}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.samples[name].append(proc.cpu_percent())

    def stop(self) -> Result:
        self._stop.set()
        self._thread.join(5)
        out: Result = {}
        for name, values in self.samples.items():
            if values:
                out[f"{name}_cpu_peak_pct"] = round(max(values))
                out[f"{name}_cpu_mean_pct"] = round(statistics.fmean(values))
        return out


def broker_connects(log: Path, since: float) -> Result:
    """The broker's own view of the storm: clients it accepted per second since ``since``
    (from Mosquitto's "New client connected" log lines, stamped in whole seconds)."""
    per_s: dict[int, int] = {}
    with contextlib.suppress(OSError), log.open(errors="replace") as f:
        for line in f:
            stamp, _, text = line.partition(": ")
            if text.startswith("New client connected") and stamp.isdigit():
                t = int(stamp)
                if t >= int(since):
                    per_s[t] = per_s.get(t, 0) + 1
    if not per_s:
        return {}
    return {"broker_peak_connects_per_s": max(per_s.values())}


def storm(connects: list[float], since: float) -> Result:
    """The reconnect storm from CONNACK times: how long it lasted and its peak rate."""
    times = sorted(t for t in connects if t >= since)
    if not times:
        return {"reconnects": 0}
    per_s: dict[int, int] = {}
    for t in times:
        per_s[int(t)] = per_s.get(int(t), 0) + 1
    return {
        "reconnects": len(times),
        "storm_s": round(times[-1] - since, 1),
        "storm_p95_s": round(times[int(0.95 * (len(times) - 1))] - since, 1),
        "peak_connects_per_s": max(per_s.values()),
    }


# -- scenarios -----------------------------------------------------------------------------
