"""The consumer: MQTT 5 shared subscriptions -> validated -> one SQLite transaction -> acks.

Threads: paho's network thread (``loop_start``) only queues incoming messages. The writer
thread (whoever calls :meth:`Consumer.run`) builds a batch, commits it and only then acks
its messages with ``client.ack(mid, qos)``. paho's ``ack`` only appends a PUBACK to the
client's outgoing deque and wakes the network thread through its socket pair
(``Client._packet_queue``), which is safe from another thread when the loop runs in its own
thread (the same path ``publish`` takes). A crash before the commit loses nothing: the broker
redelivers unacked QoS 1 messages to the persistent session, and ``UNIQUE(device, sid, seq)``
drops what was already stored.
"""

from __future__ import annotations

import bisect
import json
import logging
import queue
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from pydantic import BaseModel, ConfigDict, ValidationError

from agent.protocol import Status, Telemetry, TelemetryBatch
from central.config import CentralConfig
from central.fleet import Fleet, Rules
from central.store.base import DesiredDoc, ReportedDoc, Sample, Store, WriteBatch

log = logging.getLogger("titik.central.ingest")

#: Bad input reasons, each counted in :attr:`IngestStats.bad`.
BAD_REASONS = ("oversized", "json", "schema", "device_mismatch", "topic")
LOG_EVERY_S = 60.0
CHECK_EVERY_S = 1.0
#: Device rows changed only by live samples are written this often (not per batch).
FLUSH_EVERY_S = 1.0
PRUNE_EVERY_S = 300.0
#: Upper bounds (s) of the end-to-end lag histogram: a live sample's ``ts`` to its commit.
LAG_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)  # fmt: skip


@dataclass
class IngestStats:
    """Counters for /metrics (plain numbers; the API turns them into Prometheus metrics)."""

    received: int = 0
    stored: int = 0
    duplicates: int = 0
    acked: int = 0
    stale_status: int = 0
    bad: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAD_REASONS, 0))
    batches: int = 0
    commit_errors: int = 0
    commit_seconds_total: float = 0.0
    commit_seconds_max: float = 0.0
    commit_seconds_last: float = 0.0
    connected: bool = False
    pruned: int = 0
    #: Live samples committed, by lag bucket (``LAG_BUCKETS``, then +Inf); not cumulative.
    lag_counts: list[int] = field(default_factory=lambda: [0] * (len(LAG_BUCKETS) + 1))
    lag_sum: float = 0.0

    def observe_lag(self, lag: float) -> None:
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag


@dataclass(frozen=True, slots=True)
class Incoming:
    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int


class BadInput(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class ReportedWire(BaseModel):
    """``config/reported`` as documented in docs/remote-config.md (unknown keys kept)."""

    model_config = ConfigDict(extra="allow")
    version: int | None = None
    source: str | None = None
    versions: dict[str, int] = {}
    state: str
    error: str | None = None
    hash: str | None = None
    ts: float | None = None


def parse_topic(prefix: str, topic: str) -> tuple[str, str] | None:
    """``(kind, name)``: kind is telemetry, batch, status, reported, desired or group_desired."""
    parts = topic.split("/")
    if len(parts) < 4 or parts[0] != prefix:
        return None
    tail = "/".join(parts[3:])
    if parts[1] == "gw":
        kind = {
            "telemetry": "telemetry",
            "telemetry/batch": "batch",
            "status": "status",
            "config/reported": "reported",
            "config/desired": "desired",
        }.get(tail)
    elif parts[1] == "group":
        kind = "group_desired" if tail == "config/desired" else None
    else:
        kind = None
    return (kind, parts[2]) if kind else None


def subscriptions(prefix: str, group: str) -> list[str]:
    """The consumer's topic filters; an empty ``group`` means plain (not shared) subscriptions.

    Mosquitto 2.0 does not restore shared subscriptions from its persistence file: after a
    broker restart, messages published before central subscribes again are lost. Plain
    subscriptions of a persistent session are restored, so a single instance loses nothing
    (docs/central.md, "Known limits").
    """
    share = f"$share/{group}/" if group else ""
    return [
        share + f"{prefix}/gw/+/telemetry",
        share + f"{prefix}/gw/+/telemetry/batch",
        share + f"{prefix}/gw/+/status",
        share + f"{prefix}/gw/+/config/reported",
        share + f"{prefix}/gw/+/config/desired",
        share + f"{prefix}/group/+/config/desired",
    ]


def to_sample(t: Telemetry, raw: str, *, historical: bool) -> Sample:
    h = t.health
    return Sample(
        device=t.device,
        sid=t.sid,
        seq=t.seq,
        ts=t.ts,
        historical=historical,
        boot=t.boot,
        clients=t.clients.total if t.clients else None,
        cpu=h.cpu_pct if h else None,
        mem=h.mem_used_pct if h else None,
        temp=h.temp_c if h else None,
        disk=h.disk_used_pct if h else None,
        version=t.agent.version,
        raw=raw,
    )


M = TypeVar("M", bound=BaseModel)


def _validate(model: type[M], payload: bytes) -> M:
    try:
        return model.model_validate_json(payload)
    except ValidationError as exc:
        errs = exc.errors(include_url=False, include_input=False)
        if errs and errs[0]["type"] == "json_invalid":
            raise BadInput("json", f"not JSON: {errs[0]['msg']}") from None
        if not errs:
            raise BadInput("schema", str(exc)) from None
        loc = ".".join(str(p) for p in errs[0]["loc"]) or "(document)"
        raise BadInput("schema", f"{loc}: {errs[0]['msg']}") from None


class Processor:
    """Turns messages into a :class:`WriteBatch` and fleet changes; no I/O."""

    def __init__(
        self, config: CentralConfig, fleet: Fleet, stats: IngestStats, clock: Callable[[], float]
    ) -> None:
        self.prefix = config.mqtt.topic_prefix
        self.max_payload = config.ingest.max_payload_bytes
        self.fleet = fleet
        self.stats = stats
        self.clock = clock
        self._last_log: dict[str, float] = {}
        #: A status or config report was applied: its device row goes in this batch.
        self.urgent = False

    def build(self, msgs: Sequence[Incoming], *, flush_devices: bool = True) -> WriteBatch:
        """The batch for ``msgs``. Device rows changed by live samples only are written when
        ``flush_devices`` (the caller throttles that); status, config and alert changes
        always go with their messages, since those are acked after this commit."""
        batch = WriteBatch()
        now = self.clock()
        for m in msgs:
            self.stats.received += 1
            where = parse_topic(self.prefix, m.topic)
            name = where[1] if where else m.topic
            try:
                if where is None:
                    raise BadInput("topic", "not a topic central subscribes to")
                if len(m.payload) > self.max_payload:
                    raise BadInput("oversized", f"{len(m.payload)} bytes > {self.max_payload}")
                self._one(where[0], name, m.payload, now, batch)
            except BadInput as bad:
                self.stats.bad[bad.reason] = self.stats.bad.get(bad.reason, 0) + 1
                self._log_bad(name, m.topic, bad)
        if flush_devices or self.urgent or self.fleet.changes:
            devices, alerts = self.fleet.take()
            batch.devices += devices
            batch.alerts += alerts
            self.urgent = False
        return batch

    def _one(self, kind: str, name: str, payload: bytes, now: float, batch: WriteBatch) -> None:
        if kind == "telemetry":
            t = _validate(Telemetry, payload)
            if t.device != name:
                raise BadInput("device_mismatch", f"device {t.device!r} in payload")
            s = to_sample(t, payload.decode(), historical=False)
            batch.samples.append(s)
            self.fleet.apply_live(s, now)
        elif kind == "batch":
            b = _validate(TelemetryBatch, payload)
            wrong = [r.device for r in b.records if r.device != name]
            if b.device != name or wrong:
                raise BadInput("device_mismatch", f"device {(wrong or [b.device])[0]!r} in payload")
            for rec in b.records:
                s = to_sample(rec, rec.model_dump_json(), historical=True)
                batch.samples.append(s)
                self.fleet.apply_historical(s)
        elif kind == "status":
            if not payload:
                return  # a cleared retained status
            st = _validate(Status, payload)
            if not self.fleet.apply_status(name, st, now):
                self.stats.stale_status += 1
            self.urgent = True
        elif kind == "reported":
            if not payload:
                return
            r = _validate(ReportedWire, payload)
            doc = ReportedDoc(
                device=name,
                version=r.version,
                source=r.source,
                versions=r.versions,
                state=r.state,
                error=r.error,
                hash=r.hash,
                ts=r.ts,
                doc=payload.decode(),
            )
            batch.reported.append(doc)
            self.fleet.apply_reported(doc, now)
            self.urgent = True
        else:  # desired, group_desired
            target = f"gw/{name}" if kind == "desired" else f"group/{name}"
            batch.desired.append(
                DesiredDoc(target, _desired_version(payload), payload.decode(), now)
            )

    def _log_bad(self, name: str, topic: str, bad: BadInput) -> None:
        now = time.monotonic()
        if now - self._last_log.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[name] = now
            log.warning("dropped message on %s (%s): %s", topic, bad.reason, bad)


def _desired_version(payload: bytes) -> int | None:
    if not payload:
        return None  # the retained document was cleared
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput("json", f"not JSON: {exc}") from None
    version = doc.get("version") if isinstance(doc, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise BadInput("schema", "version: must be a whole number")
    return version


class Consumer:
    """Subscribes, batches, commits, acks. :meth:`start` connects; :meth:`run` is the writer."""

    def __init__(
        self, config: CentralConfig, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.stats = IngestStats()
        a = config.alerts
        rules = Rules(a.offline_after_min * 60, a.temp_c, a.disk_pct, a.mem_pct)
        self.fleet = Fleet.restore(rules, store.load_devices(), store.alerts(open_only=True))
        self.processor = Processor(config, self.fleet, self.stats, clock)
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self._generation = 0
        self._next_flush = 0.0
        self._gen_lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = self._make_client()

    # --- MQTT (network thread) ----------------------------------------------------------

    def _make_client(self) -> paho.Client:
        m = self.config.mqtt
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=m.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if m.username is not None:
            client.username_pw_set(
                m.username, m.password.get_secret_value() if m.password else None
            )
        if m.tls.ca is not None:
            client.tls_set(
                ca_certs=str(m.tls.ca),
                certfile=str(m.tls.cert) if m.tls.cert else None,
                keyfile=str(m.tls.key) if m.tls.key else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.reconnect_delay_set(1, 5)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = lambda *_: self.subscribed.set()
        return client

    def start(self) -> None:
        m = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        # Lets the broker send a whole batch or more before we ack (Mosquitto's default is 20).
        props.ReceiveMaximum = min(65535, max(1000, self.config.store.batch_max * 4))
        self.client.connect_async(
            m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        if not flags.session_present:
            # A new session: packet ids of unacked messages from before mean nothing now.
            with self._gen_lock:
                self._generation += 1
        self.stats.connected = True
        log.info("connected (session present: %s)", flags.session_present)
        opts = SubscribeOptions(qos=1)
        m = self.config.mqtt
        client.subscribe([(t, opts) for t in subscriptions(m.topic_prefix, m.share_group)])

    def _on_disconnect(self, *args: Any) -> None:
        self.stats.connected = False

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.inbox.put(Incoming(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))

    # --- writer thread ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Commit and ack until ``stop`` is set; then commit and ack what is queued."""
        next_check = next_prune = 0.0
        pruning = False
        while not stop.is_set():
            msgs = self._collect(stop)
            self._commit(msgs, stop)
            now = self.clock()
            if now >= next_check:
                next_check = now + CHECK_EVERY_S
                self.fleet.check(now)
                self._commit([], stop, flush=True)
                self.store.roll_up()
            if pruning or now >= next_prune:
                # One small chunk per round, so ingest never waits long on retention.
                n = self.store.prune(now)
                self.stats.pruned += n
                pruning = n > 0
                if not pruning:
                    next_prune = now + PRUNE_EVERY_S
        self._commit(self._drain(), stop, flush=True)
        self.store.roll_up()

    def stop(self) -> None:
        """Disconnect cleanly (call after :meth:`run` returned)."""
        self.client.disconnect()
        self.client.loop_stop()

    def _collect(self, stop: threading.Event) -> list[Incoming]:
        cfg = self.config.store
        try:
            first = self.inbox.get(timeout=0.1)
        except queue.Empty:
            return []
        msgs = [first]
        deadline = time.monotonic() + cfg.batch_interval_s
        while len(msgs) < cfg.batch_max and not stop.is_set():
            left = deadline - time.monotonic()
            try:
                msgs.append(self.inbox.get_nowait() if left <= 0 else self.inbox.get(timeout=left))
            except queue.Empty:
                break
        return msgs

    def _drain(self) -> list[Incoming]:
        msgs = []
        while True:
            try:
                msgs.append(self.inbox.get_nowait())
            except queue.Empty:
                return msgs

    def _commit(self, msgs: list[Incoming], stop: threading.Event, *, flush: bool = False) -> None:
        flush = flush or time.monotonic() >= self._next_flush
        if flush:
            self._next_flush = time.monotonic() + FLUSH_EVERY_S
        batch = self.processor.build(msgs, flush_devices=flush)
        if batch:
            while True:
                t0 = time.perf_counter()
                try:
                    result = self.store.write(batch)
                    break
                except Exception:
                    # Not acked, so not lost: retry, or let the broker redeliver after a restart.
                    self.stats.commit_errors += 1
                    log.exception("commit failed; retrying")
                    if stop.wait(1.0):
                        return
            took = time.perf_counter() - t0
            s = self.stats
            s.batches += 1
            s.stored += result.stored
            s.duplicates += result.duplicates
            s.commit_seconds_last = took
            s.commit_seconds_total += took
            s.commit_seconds_max = max(s.commit_seconds_max, took)
            committed = self.clock()
            for sample in batch.samples:
                if not sample.historical:  # replayed records are late on purpose
                    s.observe_lag(committed - sample.ts)
        with self._gen_lock:
            gen = self._generation
            for m in msgs:
                if m.qos > 0 and m.generation == gen:
                    self.client.ack(m.mid, m.qos)
                    self.stats.acked += 1
