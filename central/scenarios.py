"""The fleet simulator's scenarios and the stack they run against (Mosquitto + central).

Each scenario is a function of a running :class:`~central.sim.Fleet` and a :class:`Stack`
that returns its figures as a :class:`Result`; ``titik-sim`` and the tests call the same
functions. Records lost are counted from central's SQLite: for every gateway, the sequence
numbers it drew (each :class:`~central.sim.TrackedAgent` keeps them per ``sid``) that have no
row in ``samples``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
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
from paho.mqtt.enums import CallbackAPIVersion
from prometheus_client.parser import text_string_to_metric_families

from agent.mqtt import poll_io
from agent.protocol import AgentInfo, Telemetry, encode
from central import rollout
from central.localbroker import LocalBroker, free_port, wait_until
from central.sim import Fleet

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
    stack = Stack(
        broker.host,
        broker.port,
        db,
        broker,
        api=f"http://127.0.0.1:{http_port}",
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
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="titik-sim-probe")
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
            client.publish("titik/gw/gw-sim-probe/telemetry", encode(probe), qos=1)
            time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()


def _db(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def stored_rows(db: Path, device: str | None = None) -> int:
    """Rows in central's ``samples`` (of one device); 0 while the database does not exist."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(_db(db)) as conn:
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
    with contextlib.closing(_db(db)) as conn:
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


def expected_seqs(fleet: Fleet, skip: frozenset[str] = frozenset()) -> Expected:
    return {
        (a.device_id, sid): list(r)
        for a in fleet.agents
        if a.device_id not in skip
        for sid, r in a.drawn.items()
    }


def records_lost(fleet: Fleet, stack: Stack, timeout: float = 120.0) -> int:
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


def pending(fleet: Fleet) -> int:
    """Buffered records not yet handed to the broker."""
    return sum(a.spool.pending for a in fleet.agents)


def wait_drained(fleet: Fleet, timeout: float) -> float | None:
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
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="titik-sim-lag")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(f"{prefix}/gw/+/telemetry", 0)
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


def lag_histogram(api: str) -> dict[float, float]:
    """Central's ``titik_ingest_lag_seconds`` buckets: upper bound -> cumulative count."""
    with urllib.request.urlopen(f"{api}/metrics", timeout=30) as resp:  # noqa: S310 - our URL
        text = resp.read().decode()
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "titik_ingest_lag_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    out[float(sample.labels["le"])] = sample.value
    return out


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


def steady(fleet: Fleet, stack: Stack, seconds: float) -> Result:
    """Run as is: connections held, messages/s sent and ingested, lag p50/p95."""
    probe = LagProbe(stack)
    try:
        hist0 = lag_histogram(stack.api) if stack.api else {}
        sent0, rows0, t0 = fleet.sent, stored_rows(stack.db) if stack.db else 0, time.monotonic()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        lags = probe.take()
        hist1 = lag_histogram(stack.api) if stack.api else {}
        held = fleet.connected
        rows = stored_rows(stack.db) if stack.db else 0
        result: Result = {
            "gateways": len(fleet.agents),
            "connected": held,
            "seconds": round(dt, 1),
            "sent_per_s": round((fleet.sent - sent0) / dt, 1),
            # ts to the broker's delivery to a plain subscriber
            "lag_samples": len(lags),
            "lag_p50_s": percentile(lags, 50),
            "lag_p95_s": percentile(lags, 95),
        }
        if hist1:  # ts to central's commit (its titik_ingest_lag_seconds histogram)
            result["central_lag_samples"] = int(hist1[float("inf")] - hist0.get(float("inf"), 0))
            result["central_lag_p50_s"] = histogram_quantile(0.5, hist0, hist1)
            result["central_lag_p95_s"] = histogram_quantile(0.95, hist0, hist1)
        if stack.db is not None:
            result["ingested_per_s"] = round((rows - rows0) / dt, 1)
            result["devices_stored"] = _devices_stored(stack.db, fleet)
            result["records_lost"] = records_lost(fleet, stack)
        return result
    finally:
        probe.close()


def _devices_stored(db: Path, fleet: Fleet) -> int:
    ids = {a.device_id for a in fleet.agents}
    with contextlib.closing(_db(db)) as conn:
        return sum(1 for (d,) in conn.execute("SELECT DISTINCT device FROM samples") if d in ids)


def outage(fleet: Fleet, stack: Stack, down_s: float, drain_timeout: float = 300.0) -> Result:
    """The broker down for ``down_s``, then back: every gateway buffers, reconnects with
    jitter and replays. Needs a broker the sim started (it is stopped and started again).

    Measured from the restart: the reconnect storm (CONNACKs per second as the gateways saw
    them, and clients accepted per second in the broker's log), the drain (until
    no gateway has a record left to hand over), when central has stored every record, and
    the broker's and central's CPU meanwhile."""
    if stack.broker is None:
        raise ValueError("the outage scenario stops the broker: run without --broker")
    stack.broker.stop()
    t_down = time.monotonic()
    wait_until(lambda: fleet.connected == 0, 60, "every gateway to notice the outage")
    time.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
    backlog = pending(fleet)
    stack.broker.start()
    back, back_mono = time.time(), time.monotonic()
    load = LoadSampler(stack)
    try:
        drain = wait_drained(fleet, drain_timeout)
        lost = records_lost(fleet, stack) if stack.db is not None else None
        stored_all = round(time.monotonic() - back_mono, 1) if lost == 0 else None
    finally:
        cpu = load.stop()
    result: Result = {
        "gateways": len(fleet.agents),
        "down_s": round(down_s, 1),
        "backlog_records": backlog,
        "drain_s": drain,
        **storm(fleet.stats.connects, back),
        **broker_connects(stack.broker.log, back),
    }
    if lost is not None:
        result["central_stored_all_s"] = stored_all
        result["records_lost"] = lost
    return result | cpu


def flap(fleet: Fleet, stack: Stack, seconds: float, share: float = 0.1, seed: int = 7) -> Result:
    """A ``share`` of the gateways lose their connection at random moments for ``seconds``."""
    rng = random.Random(seed)
    n = len(fleet.agents)
    flappers = rng.sample(range(n), max(1, int(n * share)))
    drops = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i in flappers:
            if rng.random() < 0.2:
                fleet.call_soon(lambda i=i: fleet.drop(i))  # type: ignore[misc]
                drops += 1
        time.sleep(1.0)
    drain = wait_drained(fleet, 120)
    result: Result = {
        "gateways": n,
        "flapping": len(flappers),
        "drops": drops,
        "drain_s": drain,
    }
    if stack.db is not None:
        result["records_lost"] = records_lost(fleet, stack)
    return result


def canary(
    fleet: Fleet,
    stack: Stack,
    group: str,
    workdir: Path,
    *,
    batch: str = "2",
    fail: bool = False,
    timeout: float = 60.0,
) -> Result:
    """``titik-ctl config push --group G --canary BATCH`` of a Wi-Fi config; with ``fail`` the
    canaries' simulated firmware refuses to apply it and the rollout must halt."""
    members = [a.device_id for a in fleet.agents if group in a.cfg.device.groups]
    canaries, _ = rollout.select_canaries(members, rollout.parse_batch(batch))
    by_id = {a.device_id: root for a, root in zip(fleet.agents, fleet.roots, strict=True)}
    markers = [by_id[d] / "etc/titik-sim/fail-apply" for d in canaries] if fail else []
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    ssid = f"Titik {'never' if fail else 'canary'} {int(time.time())}"
    cfg = workdir / f"canary-{group}.json"
    cfg.write_text(
        json.dumps({"wifi": {"ssids": {"public": {"ssid": ssid, "radios": ["radio0"]}}}})
    )
    t0 = time.monotonic()
    # titik-ctl in its own process, as an operator runs it (and since this one holds a socket
    # per gateway, where paho's select() in titik-ctl's client would fail).
    argv = [
        sys.executable, "-m", "central.ctl",
        "--broker", f"{stack.host}:{stack.port}", "--timeout", str(timeout),
        "config", "push", "--group", group, "--file", str(cfg), "--canary", batch,
    ]  # fmt: skip
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            argv,
            capture_output=True,
            text=True,
            timeout=timeout * 4 + 60,
            check=False,
        )
    finally:
        for m in markers:
            m.unlink()
    code, text = proc.returncode, proc.stdout + proc.stderr
    return {
        "group": group,
        "members": len(members),
        "canaries": len(canaries),
        "failing": fail,
        "exit": code,
        "halted": "HALTED" in text,
        "seconds": round(time.monotonic() - t0, 1),
        "applied": _applied(fleet, ssid),
        "output": text,
    }


def _applied(fleet: Fleet, ssid: str) -> int:
    """Gateways whose simulated firmware now has ``ssid``."""
    n = 0
    for root in fleet.roots:
        state = root / "var/lib/titik-sim/wifi.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state.read_text()).get("ssids.public.ssid") == ssid:
                n += 1
    return n


# -- chaos ---------------------------------------------------------------------------------

DAY_S = 86400.0
#: How large each disk-full gateway's own state filesystem is (a tmpfs, filled and freed).
CHAOS_DISK_SIZE = "4m"


@dataclass
class ChaosPlan:
    """Who the chaos scenario hits. ``disk`` and ``clock`` index the fleet (disjoint);
    ``poison`` clients are extra, not gateways of the fleet, and send only bad messages."""

    disk: list[int]
    clock: list[int]
    poison: int
    disks: list[Path] = field(default_factory=list)  # mounted state dirs (needs root)
    note: str = ""


def chaos_plan(n: int, share: float = 0.05, poison: int = 3, seed: int = 11) -> ChaosPlan:
    """A ``share`` of the fleet for full disks, another for clock jumps (at least one each)."""
    rng = random.Random(seed)
    k = max(1, int(n * share)) if n >= 4 else 0
    picked = rng.sample(range(n), 2 * k)
    return ChaosPlan(disk=sorted(picked[:k]), clock=sorted(picked[k:]), poison=poison)


@contextlib.contextmanager
def small_disks(plan: ChaosPlan, state_dirs: list[Path]) -> Iterator[ChaosPlan]:
    """Mount a small tmpfs on each disk-full gateway's state directory, before the fleet is
    built, and unmount them at the end. Mounting needs root: without it the plan's disk part
    is dropped and ``note`` says so."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or mount is None or umount is None:
        plan.note = "disk full skipped: mounting a small tmpfs per gateway needs root"
        log.warning("chaos: %s", plan.note)
        plan.disk = []
        yield plan
        return
    mounted: list[Path] = []
    try:
        for i in plan.disk:
            where = state_dirs[i]
            where.mkdir(parents=True, exist_ok=True)
            subprocess.run(  # noqa: S603 - fixed argv
                [
                    mount,
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={CHAOS_DISK_SIZE},mode=0700",
                    "tmpfs",
                    str(where),
                ],
                check=True,
                capture_output=True,
            )
            mounted.append(where)
        plan.disks = mounted
        yield plan
    finally:
        for where in mounted:
            subprocess.run(  # noqa: S603 - fixed argv, umount from PATH
                [umount, "-l", str(where)], check=False, capture_output=True
            )


def fill_disk(where: Path) -> int:
    """Write a filler file until the filesystem says ENOSPC; returns the bytes written."""
    written = 0
    with (where / ".chaos-filler").open("wb", buffering=0) as f:
        for chunk in (65536, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def free_disk(where: Path) -> None:
    (where / ".chaos-filler").unlink(missing_ok=True)


def poison_payloads(device: str, victim: str) -> list[tuple[str, bytes]]:
    """What a hostile or broken gateway sends on its own topics: each is refused by central
    with a named reason (docs/security.md), none may touch another gateway's records."""
    good = Telemetry(
        device=device, seq=1, boot=1, sid="poison", ts=time.time(), agent=AgentInfo(version="x")
    ).model_dump(mode="json", exclude_none=True)
    big = 2**70
    return [
        ("telemetry", b"\xff\xfe\x00 not json"),
        ("telemetry", json.dumps(good | {"seq": big}).encode()),
        ("telemetry", json.dumps(good).replace(f'"ts": {good["ts"]}', '"ts": NaN').encode()),
        ("telemetry", b"[" * 3000 + b"]" * 3000),
        ("telemetry", json.dumps(good | {"seq": "12"}).encode()),
        ("telemetry", json.dumps(good | {"device": victim}).encode()),  # impersonation
        ("telemetry/batch", b'{"records": "nope"}'),
        ("status", b'{"online": "yes", "boot": -1}'),
        ("config/reported", json.dumps({"version": big, "versions": {}}).encode()),
    ]


class Poisoner:
    """``n`` MQTT clients, each publishing one bad message every ``every_s`` (QoS 1) on its own
    device's topics, reconnecting when the broker goes away. Driven by one thread through
    ``poll()`` (this process holds a socket per gateway; see :class:`LagProbe`)."""

    def __init__(
        self,
        stack: Stack,
        devices: list[str],
        victim: str,
        every_s: float = 0.5,
        prefix: str = "titik",
    ) -> None:
        self.stack = stack
        self.acked = 0
        self.sent = 0
        self._every = every_s
        self._stop = threading.Event()
        self._clients: list[tuple[paho.Client, str, list[tuple[str, bytes]]]] = []
        for device in devices:
            c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"titik-sim-{device}")
            c.on_publish = self._on_publish
            with contextlib.suppress(OSError):
                c.connect(stack.host, stack.port)
            self._clients.append((c, f"{prefix}/gw/{device}/", poison_payloads(device, victim)))
        self._thread = threading.Thread(target=self._run, name="titik-sim-poison", daemon=True)
        self._thread.start()

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        self.acked += 1

    def _run(self) -> None:
        k, next_at, retry_at = 0, time.monotonic(), 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            for c, topic, payloads in self._clients:
                if c.socket() is None:
                    if now >= retry_at:
                        with contextlib.suppress(OSError):
                            c.reconnect()
                    continue
                if now >= next_at and c.is_connected():
                    suffix, payload = payloads[k % len(payloads)]
                    c.publish(topic + suffix, payload, qos=1)
                    self.sent += 1
                poll_io(c, 0.01)
            if now >= next_at:
                next_at, k = now + self._every, k + 1
            if now >= retry_at:
                retry_at = now + 1.0
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for c, _, _ in self._clients:
            with contextlib.suppress(Exception):
                c.disconnect()


def _api(stack: Stack, path: str) -> Any:
    with urllib.request.urlopen(f"{stack.api}{path}", timeout=30) as resp:  # noqa: S310 - ours
        return json.loads(resp.read())


def _offline(stack: Stack, ids: set[str]) -> int:
    """How many of ``ids`` central shows offline."""
    doc = _api(stack, "/api/devices?status=offline&limit=10000")
    return sum(1 for d in doc["items"] if d["id"] in ids)


def _quarantined(db: Path) -> dict[str, dict[str, int]]:
    """Quarantined rows per device and reason."""
    out: dict[str, dict[str, int]] = {}
    with contextlib.closing(_db(db)) as conn:
        for device, reason, n in conn.execute(
            "SELECT COALESCE(device, ''), reason, COUNT(*) FROM quarantine GROUP BY 1, 2"
        ):
            out.setdefault(device, {})[reason] = int(n)
    return out


def _foreign_rows(db: Path, fleet: Fleet) -> int:
    """Rows stored for the fleet's devices under a (sid, seq) they never drew. The rows are
    read first: each was drawn before it was stored, so the ranges taken after hold it."""
    ids = {a.device_id for a in fleet.agents}
    with contextlib.closing(_db(db)) as conn:
        rows = [r for r in conn.execute("SELECT device, sid, seq FROM samples") if r[0] in ids]
    ranges: dict[tuple[str, str], list[int]] = expected_seqs(fleet)
    n = 0
    for device, sid, seq in rows:
        r = ranges.get((device, sid))
        if r is None or not r[0] <= seq <= r[1]:
            n += 1
            if n <= 10:
                log.warning("foreign row: %s sid %s seq %d (drawn: %s)", device, sid, seq, r)
    return n


def chaos(
    fleet: Fleet,
    stack: Stack,
    seconds: float,
    plan: ChaosPlan,
    *,
    down_s: float | None = None,
    drain_timeout: float = 300.0,
) -> Result:
    """Everything at once, in four equal phases of ``seconds / 4``, with ``plan.poison``
    clients sending bad messages throughout:

    1. the disk-full gateways' state filesystems are filled (ENOSPC on every write) and the
       clock-jump gateways' clocks jump a day ahead (half of them) or a day back;
    2. the broker stops for ``down_s`` and starts again (every gateway buffers, reconnects);
    3. central is killed with SIGKILL, left down for ``down_s``, and started again;
    4. the disks are freed and the clocks put right.

    Then, once every gateway has drained, central's SQLite must hold every (sid, seq) every
    gateway of the fleet drew, once, and nothing else under their names; the poison
    clients' messages must all be refused with a reason, none under an honest name."""
    if stack.broker is None or not stack.central_argv or stack.db is None:
        raise ValueError("the chaos scenario restarts the broker and central: run without --broker")
    t0 = time.monotonic()
    down = min(30.0, seconds / 8) if down_s is None else down_s
    poison_ids = [f"gw-poison-{k}" for k in range(plan.poison)]
    poison = Poisoner(stack, poison_ids, victim=fleet.agents[0].device_id)
    try:
        played = _play_chaos(fleet, stack, plan, seconds / 4, down)
    finally:
        poison.stop()
        for d in plan.disks:
            free_disk(d)
        for i in plan.clock:
            fleet.skew[i] = 0.0
    result: Result = {
        "gateways": len(fleet.agents),
        "disk_full_gateways": len(plan.disk),
        "clock_jump_gateways": len(plan.clock),
        **played,
        "broker_down_s": round(down, 1),
        "central_down_s": round(down, 1),
        "poison_clients": plan.poison,
        "poison_sent": poison.sent,
        "poison_acked_by_broker": poison.acked,
        "drain_s": wait_drained(fleet, drain_timeout),
    }
    result |= _chaos_outcome(fleet, stack, stack.db, plan, poison_ids)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if plan.note:
        result["note"] = plan.note
    return result


def _play_chaos(fleet: Fleet, stack: Stack, plan: ChaosPlan, phase: float, down: float) -> Result:
    """The four phases of :func:`chaos`; returns what was seen on the way."""
    assert stack.broker is not None  # noqa: S101 - checked by chaos()
    t0 = time.monotonic()
    ids = [a.device_id for a in fleet.agents]
    filled = [fill_disk(d) for d in plan.disks]
    ahead = {ids[i] for j, i in enumerate(plan.clock) if j % 2 == 0}
    for j, i in enumerate(plan.clock):
        fleet.skew[i] = DAY_S if j % 2 == 0 else -DAY_S
    log.info(
        "chaos: %d state disks full (%d KiB of filler), %d clocks a day off",
        len(filled),
        sum(filled) // 1024,
        len(plan.clock),
    )
    time.sleep(phase)
    alerts = _api(stack, "/api/alerts?open=true")["items"]
    clock_alerts = sum(1 for a in alerts if a["kind"] == "clock" and a["device"] in ahead)
    log.info("chaos: broker down for %.0f s", down)
    stack.broker.stop()
    wait_until(lambda: fleet.connected == 0, 60, "every gateway to notice the broker is down")
    time.sleep(down)
    backlog = pending(fleet)
    stack.broker.start()
    time.sleep(max(0.0, t0 + 2 * phase - time.monotonic()))
    log.info("chaos: central killed (SIGKILL), down for %.0f s", down)
    stack.stop_central(kill=True)
    time.sleep(down)
    stack.start_central()
    stack.wait_api(60)
    time.sleep(max(0.0, t0 + 3 * phase - time.monotonic()))
    log.info("chaos: disks freed, clocks put right")
    for d in plan.disks:
        free_disk(d)
    for i in plan.clock:
        fleet.skew[i] = 0.0
    time.sleep(max(0.0, t0 + 4 * phase - time.monotonic()))
    return {"clock_alerts_opened": clock_alerts, "backlog_at_broker_restart": backlog}


def _chaos_outcome(
    fleet: Fleet, stack: Stack, db: Path, plan: ChaosPlan, poison_ids: list[str]
) -> Result:
    """What central's store holds once the fleet has drained: per honest gateway, the
    records lost, duplicated or foreign; the poison's refusals by reason."""
    expected = expected_seqs(fleet)
    deadline = time.monotonic() + 120
    lost = missing_per_device(db, expected)
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = missing_per_device(db, expected)
    with contextlib.closing(_db(db)) as conn:
        (dupes,) = conn.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT device || ' ' || sid || ' ' || seq) FROM samples"
        ).fetchone()
    ids = [a.device_id for a in fleet.agents]
    honest = set(ids)
    quarantined = _quarantined(db)
    poison_q: dict[str, int] = {}
    for d in poison_ids:
        for reason, k in quarantined.get(d, {}).items():
            poison_q[reason] = poison_q.get(reason, 0) + k
    disk_ids = {ids[i] for i in plan.disk}
    clock_ids = {ids[i] for i in plan.clock}
    # Central shows a gateway offline after 3 intervals without a current sample; those whose
    # clock was ahead become current with their first sample stamped right.
    deadline = time.monotonic() + 3 * fleet.interval_s + 30
    offline = _offline(stack, honest)
    while offline and time.monotonic() < deadline:
        time.sleep(1.0)
        offline = _offline(stack, honest)
    full = [a for a in fleet.agents if a.device_id in disk_ids]
    failed = [a.faults.total + a.state.faults.total + a.spool.faults.total for a in full]
    return {
        "samples_drawn": sum(r[2] for r in expected.values()),
        # each counted in the agent and reported in its next sample's errors (write.*)
        "write_failures_on_full_disks": sum(failed),
        "full_disk_gateways_that_saw_enospc": sum(1 for f in failed if f),
        "records_lost": sum(lost.values()),
        "gateways_with_loss": len(lost),
        "records_lost_disk_full": sum(v for d, v in lost.items() if d in disk_ids),
        "records_lost_clock_jump": sum(v for d, v in lost.items() if d in clock_ids),
        "records_duplicated": int(dupes),
        "foreign_rows_under_honest_names": _foreign_rows(db, fleet),
        "honest_quarantined": sum(sum(v.values()) for d, v in quarantined.items() if d in honest),
        "poison_quarantined": sum(poison_q.values()),
        "poison_quarantined_by_reason": ", ".join(f"{r} {k}" for r, k in sorted(poison_q.items())),
        "offline_at_end": offline,
    }


@dataclass
class Report:
    """Markdown of every scenario's figures, in the order they ran."""

    command: str
    sections: list[tuple[str, Result]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["# titik-sim report", "", f"`{self.command}`", ""]
        for name, result in self.sections:
            lines += [f"## {name}", "", "| measure | value |", "| --- | --- |"]
            lines += [f"| {k} | {v} |" for k, v in result.items() if k != "output"]
            if "output" in result:
                lines += ["", "```", str(result["output"]).strip(), "```"]
            lines.append("")
        return "\n".join(lines)
