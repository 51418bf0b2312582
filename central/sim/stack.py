"""The stack the simulator runs against (Mosquitto + central, on SQLite or PostgreSQL) and
how it is measured.

Records lost are counted from central's store, SQLite or PostgreSQL alike
(:mod:`central.sim.stored`): for every gateway, the sequence numbers it drew (each
:class:`~central.sim.fleet.TrackedAgent` keeps them per ``sid``) that have no row in
``samples``. Lag comes from central's /metrics, load from psutil, connection storms from
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
from central.sim.fleet import SimFleet
from central.sim.localbroker import (
    INFLIGHT_CONF,
    LocalBroker,
    bridge_conf,
    free_port,
    listeners_for,
    wait_until,
)
from central.sim.localpg import LocalPostgres
from central.sim.stored import Expected, PgSamples, SqliteSamples, StoredSamples
from central.store.pg.tables import PgRolloutStore, PgTokenStore
from central.store.rollouts import RolloutStore
from central.store.tokens import TokenStore

log = logging.getLogger("titik.sim")

Result = dict[str, object]


#: The stores ``titik-sim --store`` can start central on.
STORES = ("sqlite", "postgresql")


@dataclass
class Stack:
    """Where the fleet publishes, and central's database if the sim can read it: ``db`` is
    its SQLite file, ``store_url`` its PostgreSQL (one or neither); :attr:`samples` counts
    what either stored."""

    host: str
    port: int
    db: Path | None = None
    store_url: str | None = None
    broker: LocalBroker | None = None  # set when the sim started it (outage needs it)
    central: subprocess.Popen[bytes] | None = None
    api: str | None = None  # central's HTTP base URL, for its /metrics
    #: A viewer token's ``Authorization`` header for ``api`` (the sim makes it in ``db``).
    api_headers: dict[str, str] = field(default_factory=dict)
    central_argv: list[str] = field(default_factory=list)  # how the sim started central
    central_log: Path | None = None
    #: Every port the broker listens on (the gateways are spread over them; :attr:`port` is
    #: the first): one port cannot take 50,000 connections from loopback.
    ports: list[int] = field(default_factory=list)
    postgres: LocalPostgres | None = None  # set when the sim started PostgreSQL
    #: Edge brokers bridged to ``broker`` (the core), when the sim started them: the
    #: gateways connect to these (:attr:`ports` are theirs), central to the core.
    edges: list[LocalBroker] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.ports:
            self.ports = [self.port]

    @property
    def gateway_brokers(self) -> list[LocalBroker]:
        """The brokers the gateways connect to: the edges, else the broker (if started here)."""
        return self.edges or ([self.broker] if self.broker is not None else [])

    def stop_brokers(self) -> None:
        """Every broker the sim started down: the edges, then the core."""
        if self.broker is None:
            raise ValueError("the broker was not started by the sim: run without --broker")
        for edge in self.edges:
            edge.stop()
        self.broker.stop()

    def start_brokers(self) -> None:
        """The core, then the edges side by side (their bridges connect at once); each edge
        loads its share of the city's persisted sessions, as separate machines would."""
        if self.broker is None:
            raise ValueError("the broker was not started by the sim: run without --broker")
        self.broker.start()
        for edge in self.edges:
            edge.spawn()
        for edge in self.edges:
            edge.wait_accepting()

    @property
    def samples(self) -> StoredSamples | None:
        """Central's ``samples``, to count (None when the sim cannot read central's store)."""
        if self.store_url:
            return PgSamples(self.store_url)
        if self.db is not None:
            return SqliteSamples(self.db)
        return None

    @property
    def store_kind(self) -> str:
        return "postgresql" if self.store_url else "sqlite"

    def rollouts(self) -> RolloutStore:
        """Central's rollout table, where the rollout scenario starts one."""
        if self.store_url:
            return PgRolloutStore(self.store_url)
        if self.db is None:
            raise ValueError("the rollouts are in central's store: run without --broker")
        return RolloutStore(self.db)

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
def local_stack(
    workdir: Path,
    *,
    store: str = "sqlite",
    store_url: str | None = None,
    gateways: int = 0,
    edges: int = 0,
    rollout_tick_s: float | None = None,
) -> Iterator[Stack]:
    """A persistent Mosquitto (as production runs it: central's session and queue survive a
    restart) and ``titik-central run`` as a subprocess, both stopped on exit.

    ``store``: central's store, ``sqlite`` (a file in ``workdir``) or ``postgresql``: then
    central uses ``store_url`` if given (an existing server; its database should be empty),
    else a throwaway PostgreSQL started here (central/sim/localpg.py, stopped on exit).
    ``gateways``: how many will connect, for the broker's listener ports
    (:func:`~central.sim.localbroker.listeners_for`). ``edges``: that many edge Mosquittos
    bridged to the broker (the core; :func:`~central.sim.localbroker.bridge_conf`), each
    persistent too, the gateways spread over them; 0: the gateways connect to the core.
    ``rollout_tick_s``: central's ``[rollout] tick_s`` (its default, 5 s, when None)."""
    if store not in STORES:
        raise ValueError(f"store {store!r}: choose from {', '.join(STORES)}")
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as cleanup:
        pg: LocalPostgres | None = None
        if store == "postgresql" and not store_url:
            pg = start_postgres(workdir)
            cleanup.callback(stop_postgres, pg, workdir)
            store_url = pg.create_database("titik")
        broker = LocalBroker(
            workdir,
            INFLIGHT_CONF if edges else "",  # the bridges' window (localbroker.BRIDGE_INFLIGHT)
            persistence=True,
            listeners=1 if edges else listeners_for(gateways),
        )
        broker.start()
        cleanup.callback(broker.stop)
        edge_brokers = start_edges(workdir, broker, edges, gateways, cleanup)
        db = workdir / "central.db"
        conf = workdir / "central.toml"
        http_port = free_port()
        where = f'url = "{store_url}"' if store == "postgresql" else f'path = "{db}"'
        conf.write_text(
            f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n'
            'client_id = "titik-central-sim"\n'
            # One instance on Mosquitto: plain subscriptions survive a broker restart, shared
            # ones do not (docs/central.md, "Known limits").
            'share_group = ""\n'
            f'[store]\n{where}\n[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
            + (f"[rollout]\ntick_s = {rollout_tick_s}\n" if rollout_tick_s else "")
        )
        url = store_url if store == "postgresql" else None
        # Each run its own name: the work directory (and its database) may be a previous run's.
        name = f"titik-sim-{os.getpid()}-{int(time.time())}"
        tokens = PgTokenStore(url) if url else TokenStore(db)
        try:
            _, secret = tokens.create(name, "viewer")
        finally:
            tokens.close()
        stack = Stack(
            broker.host,
            broker.port,
            None if url else db,
            url,
            broker,
            api=f"http://127.0.0.1:{http_port}",
            api_headers={"Authorization": f"Bearer {secret}"},
            central_argv=[sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
            central_log=workdir / "central.log",
            ports=[p for e in edge_brokers for p in e.ports] if edges else broker.ports,
            postgres=pg,
            edges=edge_brokers,
        )
        cleanup.callback(stack.stop_central)
        stack.start_central()
        wait_ingesting(stack, 30)
        yield stack


#: Listener ports per edge broker, at least (see start_edges).
EDGE_LISTENERS = 3


def start_edges(
    workdir: Path, core: LocalBroker, edges: int, gateways: int, cleanup: contextlib.ExitStack
) -> list[LocalBroker]:
    """``edges`` persistent Mosquittos in ``workdir/edge-K``, each bridged to ``core`` and
    listening on as many ports as its share of ``gateways`` needs from loopback (each
    stopped by ``cleanup``)."""
    out: list[LocalBroker] = []
    for k in range(1, edges + 1):
        where = workdir / f"edge-{k}"
        where.mkdir(exist_ok=True)
        edge = LocalBroker(
            where,
            bridge_conf(f"titik-edge-{k}", core.host, core.port),
            persistence=True,
            # At least EDGE_LISTENERS accept queues (Mosquitto listens with a backlog of 100):
            # a city's reconnect storm after an outage overflowed one per edge.
            listeners=max(EDGE_LISTENERS, listeners_for(-(-gateways // edges))),
        )
        cleanup.callback(edge.stop)
        edge.start()
        out.append(edge)
    return out


#: The simulator's PostgreSQL: durable (fsync on, as production), more shared buffers than
#: the tests' clusters (50,000 gateways' devices rows and indexes stay in memory), and enough
#: connections for central's pools and the simulator's counting.
SIM_PG_MAX_CONNECTIONS = 100
SIM_PG_SHARED_BUFFERS = "256MB"


def start_postgres(workdir: Path) -> LocalPostgres:
    log.info("starting a throwaway PostgreSQL (its log is kept in %s)", workdir)
    return LocalPostgres(
        durable=True,
        max_connections=SIM_PG_MAX_CONNECTIONS,
        shared_buffers=SIM_PG_SHARED_BUFFERS,
    ).start()


def stop_postgres(pg: LocalPostgres, workdir: Path) -> None:
    """Stop it, keeping its log beside central's for a look."""
    with contextlib.suppress(OSError):
        (workdir / "postgres.log").write_bytes(pg.log.read_bytes())
    pg.stop()


def wait_ingesting(stack: Stack, timeout: float) -> None:
    """Publish a probe sample until central has stored it: then its session is subscribed."""
    samples = stack.samples
    if samples is None:
        raise ValueError("waiting for central needs its database")
    client = make_client("titik-sim-probe", protocol="3.1.1")
    client.connect(stack.host, stack.port)
    client.loop_start()
    # An existing database (--store-url) may hold an earlier run's probes: wait for a new one.
    before = samples.rows("gw-sim-probe")
    probe = Telemetry(
        device="gw-sim-probe",
        seq=0,
        boot=1,
        sid=f"probe-{os.getpid()}-{time.time():.0f}",
        ts=time.time(),
        agent=AgentInfo(version="sim"),
    )
    deadline = time.monotonic() + timeout
    try:
        while samples.rows("gw-sim-probe") <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"central stored nothing in {samples.where} within {timeout}s: "
                    f"see {stack.central_log}"
                )
            client.publish(Topics("titik", "gw-sim-probe").telemetry, encode(probe), qos=1)
            time.sleep(0.5)
    finally:
        client.loop_stop()
        client.disconnect()


def open_db(path: Path) -> sqlite3.Connection:
    """Central's SQLite, read-only (for what only the SQLite scenarios read: chaos)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def stored_rows(db: Path, device: str | None = None) -> int:
    """Rows in a SQLite store's ``samples`` (:meth:`StoredSamples.rows`)."""
    return SqliteSamples(db).rows(device)


def missing_per_device(samples: StoredSamples, expected: Expected) -> dict[str, int]:
    """Per device, how many of the seqs it drew central has not stored (devices missing none
    are left out)."""
    stored = samples.stored_in(expected)
    out: dict[str, int] = {}
    for (device, sid), (_first, _last, count) in expected.items():
        short = count - stored.get((device, sid), 0)
        if short > 0:
            out[device] = out.get(device, 0) + short
    return out


def missing(samples: StoredSamples, expected: Expected) -> int:
    """How many of the expected seqs central has not stored."""
    return sum(missing_per_device(samples, expected).values())


def expected_seqs(fleet: SimFleet, skip: frozenset[str] = frozenset()) -> Expected:
    return fleet.expected(skip)


def records_lost(fleet: SimFleet, stack: Stack, timeout: float = 120.0) -> int:
    """Samples drawn so far that central has not stored within ``timeout``."""
    samples = stack.samples
    if samples is None:
        raise ValueError("records lost needs central's database")
    expected = expected_seqs(fleet)
    deadline = time.monotonic() + timeout
    lost = missing(samples, expected)
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = missing(samples, expected)
    return lost


def pending(fleet: SimFleet) -> int:
    """Buffered records not yet handed to the broker."""
    return fleet.pending()


def census_poll(fleet: SimFleet) -> float:
    """How often to count the whole fleet (every gateway's link and spool, under the loop's
    interpreter lock): 5 times a second up to 4,000 gateways, once a second from 20,000, so
    that counting 50,000 does not take a quarter of the loop's time during a storm."""
    return min(1.0, max(0.2, fleet.size / 20_000))


def wait_drained(fleet: SimFleet, timeout: float) -> float | None:
    """Seconds until no gateway has a backlog left to send, or None at the timeout (then the
    gateways still behind are logged, with what their links last said)."""
    t0 = time.monotonic()
    poll = census_poll(fleet)
    while pending(fleet) or fleet.connected < fleet.size:
        if time.monotonic() - t0 > timeout:
            for device, connected, left, error in fleet.behind(20):
                log.warning(
                    "not drained after %.0fs: %s connected=%s pending=%d last error: %s",
                    timeout,
                    device,
                    connected,
                    left,
                    error,
                )
            return None
        time.sleep(poll)
    return round(time.monotonic() - t0, 1)


class LagProbe:
    """A plain subscriber to the live telemetry: lag = its receive time minus the sample's ts.

    Its client is driven by its own thread through ``poll()``, not paho's ``loop_start()``:
    in a process holding thousands of sockets its descriptor is above 1023, where paho's
    ``select()`` fails (that is why an earlier version saw no samples at 2,000 gateways).

    ``devices``: only these gateways' telemetry (else every gateway's). Each message costs
    this process, which also runs the fleet, about as much as a gateway's sample does: at
    50,000 gateways a probe of them all would take a quarter of the loop's core, for a
    distribution a sample of them gives as well (:func:`lag_sample`)."""

    def __init__(
        self, stack: Stack, prefix: str = "titik", devices: list[str] | None = None
    ) -> None:
        self.lags: list[float] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.client = make_client("titik-sim-lag", protocol="3.1.1")
        filters = (
            [(Topics(prefix, d).telemetry, 0) for d in devices]
            if devices is not None
            else [(gw_filter(prefix, TELEMETRY), 0)]
        )
        self.filters = filters
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(filters)
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


#: The most gateways the lag probe follows (:func:`lag_sample`).
LAG_PROBE_MAX = 1000


def lag_sample(fleet: SimFleet, most: int = LAG_PROBE_MAX) -> list[str]:
    """Every k-th gateway, at most ``most`` of them, spread over the fleet's regions alike."""
    ids = fleet.device_ids()
    return ids[:: max(1, -(-len(ids) // most))]


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
    """Once a second, the CPU use of the broker, central and PostgreSQL (when the sim started
    them; PostgreSQL's is its server and every backend together): the peak and the mean, in
    % of one core, and the CPU seconds each used while sampled (``{name}_cpu_s``: what a
    storm cost each part, to set against the cores' seconds in the same time)."""

    def __init__(self, stack: Stack, every_s: float = 1.0) -> None:
        self.procs: dict[str, psutil.Process] = {}
        broker = stack.broker.proc if stack.broker is not None else None
        edges = [(f"edge{k}", e.proc) for k, e in enumerate(stack.edges, 1)]
        for name, proc in (("broker", broker), ("central", stack.central), *edges):
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    self.procs[name] = psutil.Process(proc.pid)
                    self.procs[name].cpu_percent()  # the first call starts the count
        self.samples: dict[str, list[float]] = {n: [] for n in self.procs}
        self._every_s = every_s
        self._pg: dict[int, psutil.Process] = {}
        self._pg_root: psutil.Process | None = None
        pid = stack.postgres.server_pid() if stack.postgres is not None else None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                self._pg_root = psutil.Process(pid)
                self.samples["postgres"] = []
                self._postgres_cpu()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every_s,), daemon=True)
        self._thread.start()

    def _postgres_cpu(self) -> float:
        """The server's and its backends' CPU since the last call (a backend seen for the
        first time counts from now)."""
        assert self._pg_root is not None  # noqa: S101 - only called when there is one
        procs = [self._pg_root, *self._pg_root.children()]
        total = 0.0
        seen: dict[int, psutil.Process] = {}
        for proc in procs:
            known = self._pg.get(proc.pid, proc)
            with contextlib.suppress(psutil.Error):
                pct = known.cpu_percent()
                total += pct if proc.pid in self._pg else 0.0
                seen[proc.pid] = known
        self._pg = seen
        return total

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for name, proc in self.procs.items():
                with contextlib.suppress(psutil.Error):
                    self.samples[name].append(proc.cpu_percent())
            if self._pg_root is not None:
                with contextlib.suppress(psutil.Error):
                    self.samples["postgres"].append(self._postgres_cpu())

    def stop(self) -> Result:
        self._stop.set()
        self._thread.join(5)
        out: Result = {}
        for name, values in self.samples.items():
            if values:
                out[f"{name}_cpu_peak_pct"] = round(max(values))
                out[f"{name}_cpu_mean_pct"] = round(statistics.fmean(values))
                out[f"{name}_cpu_s"] = round(sum(values) * self._every_s / 100, 1)
        return out


def broker_connects(logs: Path | list[Path], since: float) -> Result:
    """The brokers' own view of the storm: clients they accepted per second since ``since``
    (from Mosquitto's "New client connected" log lines, stamped in whole seconds; with
    several brokers, every log's together)."""
    per_s: dict[int, int] = {}
    for path in [logs] if isinstance(logs, Path) else logs:
        with contextlib.suppress(OSError), path.open(errors="replace") as f:
            for line in f:
                stamp, _, text = line.partition(": ")
                if text.startswith("New client connected") and stamp.isdigit():
                    t = int(stamp)
                    if t >= int(since):
                        per_s[t] = per_s.get(t, 0) + 1
    if not per_s:
        return {}
    return {"broker_peak_connects_per_s": max(per_s.values())}


def listen_overflows(netstat: Path = Path("/proc/net/netstat")) -> int | None:
    """Connections this machine's accept queues have dropped since boot (the kernel's TcpExt
    ``ListenOverflows``, every listener's): each dropped SYN costs its sender a retry a
    second or more later. None where the kernel does not say (no such file or counter)."""
    try:
        lines = netstat.read_text().splitlines()
    except OSError:
        return None
    # Pairs of lines: "TcpExt: Name Name ...", then "TcpExt: 1 2 ...".
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            counters = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            value = counters.get("ListenOverflows", "")
            return int(value) if value.isdigit() else None
    return None


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
