"""The consumer: MQTT 5 shared subscriptions -> validated -> one SQLite transaction -> acks.

Threads: paho's network thread (``loop_start``) only queues incoming messages. The writer
thread (whoever calls :meth:`Consumer.run`) builds a batch, commits it and only then acks
its messages, all of a batch's PUBACKs at once (``BufferedClient.ack_many``,
agent/protocol/client.py). That only appends them to paho's outgoing deque and wakes the
network thread through its socket pair (``Client._packet_queue``, as paho's own ``ack``),
which is safe from another thread when the loop runs in its own thread (the same path
``publish`` takes). A crash before the commit loses nothing: the broker
redelivers unacked QoS 1 messages to the persistent session, and ``UNIQUE(device, sid, seq)``
drops what was already stored.

No message holds up another: one that cannot be taken is quarantined (kept in the store with
its reason, counted, acked). The wire models refuse what they can name (reasons ``json``,
``schema``, ...); if a batch that passed them still fails to commit, it is written again in
halves down to the one message the store refuses (reason ``store``). Only a store that takes
no row at all (disk full, I/O error: :class:`StoreUnavailable`) makes the writer wait.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.protocol import ConfigDesired, ConfigReported, Status, Telemetry, TelemetryBatch, topics
from agent.protocol.client import BufferedClient, client_for
from agent.protocol.service import ServiceReport
from central.config import CentralConfig
from central.ingest.decode import (
    Built,
    Incoming,
    QuarantinedMessage,
    QuarantineLimit,
    clean_text,
    parse_topic,
    subscriptions,
    to_sample,
    validate_payload,
)
from central.ingest.fleet import LIVE_OUTCOMES, FleetState, Rules
from central.store.base import (
    AlertChange,
    DesiredDoc,
    DeviceState,
    Quarantined,
    ReportedDoc,
    Sample,
    Store,
    StoreUnavailable,
    WriteBatch,
    WriteResult,
)
from central.store.service import to_row as to_service_row

log = logging.getLogger("titik.central.ingest")


#: refused it although it passed the model; central failed on it (a bug, kept for replay).
BAD_REASONS = ("oversized", "json", "schema", "device_mismatch", "topic", "store", "internal")
#: Messages taken, by kind (``cleared``: an empty retained payload).
KINDS = (
    "telemetry", "batch", "status", "reported", "desired", "group_desired", "service", "cleared",
)  # fmt: skip
#: Quarantine rows kept per gateway (or topic) per minute; the rest are counted only.
LOG_EVERY_S = 60.0
CHECK_EVERY_S = 1.0
#: How long :meth:`Consumer.stop` waits for a job aside (the alert engine's tick) to end.
STOP_ASIDE_S = 3.0
#: Device rows changed only by live samples are written this often (not per batch).
FLUSH_EVERY_S = 1.0
PRUNE_EVERY_S = 300.0
RETRY_S = 1.0
#: Upper bounds (s) of the end-to-end lag histogram: a live sample's ``ts`` to its commit.
LAG_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
)  # fmt: skip


@dataclass
class IngestStats:
    """Counters for /metrics (plain numbers; the API turns them into Prometheus metrics).

    Every message received is either taken (``accepted``, by kind) or quarantined (``bad``,
    by reason): ``received == sum(accepted) + sum(bad)`` once the writer is idle.
    """

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
    #: Messages taken, by kind (``KINDS``).
    accepted: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    #: Live samples by what they did to current state (``fleet.LIVE_OUTCOMES``).
    live: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIVE_OUTCOMES, 0))
    #: Bad messages kept in the quarantine, and those only counted (over the rate limit).
    quarantined: int = 0
    quarantine_skipped: int = 0
    #: Batches that failed as a whole and were written again in parts.
    split_batches: int = 0
    #: Roll-up, retention or staleness rounds that failed (logged; tried again next round).
    maintenance_errors: int = 0
    #: This instance evaluates what runs once per fleet (central/store/pg/leader.py).
    leader: bool = True

    def observe_lag(self, lag: float) -> None:
        self.lag_counts[bisect.bisect_left(LAG_BUCKETS, lag)] += 1
        self.lag_sum += lag


class Processor:
    """Turns messages into a :class:`WriteBatch` and fleet changes; no I/O."""

    def __init__(
        self,
        config: CentralConfig,
        fleet: FleetState,
        stats: IngestStats,
        clock: Callable[[], float],
    ) -> None:
        self.prefix = config.mqtt.topic_prefix
        self.max_payload = config.ingest.max_payload_bytes
        self.keep_bytes = config.ingest.quarantine_payload_bytes
        self.limit = QuarantineLimit(config.ingest.quarantine_per_minute)
        self.fleet = fleet
        self.stats = stats
        self.clock = clock
        self._last_log: dict[str, float] = {}
        #: A status or config report was applied: its device row goes in this batch.
        self.urgent = False

    def build(self, msgs: Sequence[Incoming], *, flush_devices: bool = True) -> Built:
        """The batch for ``msgs``. Device rows changed by live samples only are written when
        ``flush_devices`` (the caller throttles that); status, config and alert changes
        always go with their messages, since those are acked after this commit."""
        batch = WriteBatch()
        built = Built(batch, msgs)
        ends, accepted = built.ends, self.stats.accepted
        now = self.clock()
        for i, m in enumerate(msgs):
            self.stats.received += 1
            where = parse_topic(self.prefix, m.topic)
            try:
                if where is None:
                    raise QuarantinedMessage(
                        "topic",
                        "not a topic central takes (or its device/group id is not 1-64 "
                        "letters, digits, '.', '_' or '-')",
                    )
                if len(m.payload) > self.max_payload:
                    raise QuarantinedMessage(
                        "oversized", f"{len(m.payload)} bytes > {self.max_payload}"
                    )
                take = self._service if where[0] == "service" else self._one
                accepted[take(where[0], where[1], m.payload, now, built, i)] += 1
            except Exception as exc:
                # Whatever the message appended goes; the message itself is quarantined.
                del batch.samples[ends[-1] if ends else 0 :]
                for rows, of in ((batch.desired, built.desired_of), (batch.reported, built.reported_of), (batch.service, built.service_of)):  # fmt: skip
                    if of and of[-1] == i:
                        del rows[-1], of[-1]
                bad = exc if isinstance(exc, QuarantinedMessage) else self._internal(exc, m.topic)
                self.quarantine(built, i, where, bad, now)
            ends.append(len(batch.samples))
        if flush_devices or self.urgent or self.fleet.changes:
            devices, alerts = self.fleet.take()
            batch.devices += devices
            batch.alerts += alerts
            self.urgent = False
        return built

    def quarantine(
        self,
        built: Built,
        i: int,
        where: tuple[str, str] | None,
        bad: QuarantinedMessage,
        now: float,
    ) -> None:
        """Count message ``i`` as bad, log it (once a minute per source) and, within the rate
        limit, keep it in the batch's quarantine rows."""
        m = built.msgs[i]
        self.stats.bad[bad.reason] = self.stats.bad.get(bad.reason, 0) + 1
        source = where[1] if where else m.topic
        self._log_bad(source, m.topic, bad)
        if not self.limit.allow(source, now):
            self.stats.quarantine_skipped += 1
            return
        device = where[1] if where and where[0] != "group_desired" else None
        built.batch.quarantined.append(
            self.row(m.topic, device, bad.reason, str(bad), m.payload, now)
        )
        built.quarantined_of.append(i)
        self.stats.quarantined += 1

    def row(
        self, topic: str, device: str | None, reason: str, detail: str, payload: bytes, now: float
    ) -> Quarantined:
        return Quarantined(
            at=now,
            reason=reason,
            topic=clean_text(topic, 2000),
            device=clean_text(device, 200) if device is not None else None,
            detail=clean_text(detail),
            payload=payload[: self.keep_bytes],
            size=len(payload),
        )

    def _one(self, kind: str, name: str, payload: bytes, now: float, built: Built, i: int) -> str:
        """Validate and apply message ``i``; return what it was taken as (``KINDS``)."""
        batch = built.batch
        if kind == "telemetry":
            t = validate_payload(Telemetry, payload)
            if t.device != name:
                raise QuarantinedMessage("device_mismatch", f"device {t.device!r} in payload")
            s = to_sample(t, historical=False)
            batch.samples.append(s)
            self.stats.live[self.fleet.apply_live(s, now)] += 1
        elif kind == "batch":
            b = validate_payload(TelemetryBatch, payload)
            wrong = [r.device for r in b.records if r.device != name]
            if b.device != name or wrong:
                raise QuarantinedMessage(
                    "device_mismatch", f"device {(wrong or [b.device])[0]!r} in payload"
                )
            for rec in b.records:
                s = to_sample(rec, historical=True)
                batch.samples.append(s)
                self.fleet.apply_historical(s)
        elif kind == "status":
            if not payload:
                return "cleared"  # a cleared retained status
            st = validate_payload(Status, payload)
            if not self.fleet.apply_status(name, st, now):
                self.stats.stale_status += 1
            # Its device row goes with it, unless the status changed nothing (a repeat).
            self.urgent = self.urgent or name in self.fleet.dirty
        elif kind == "reported":
            if not payload:
                return "cleared"
            r = validate_payload(ConfigReported, payload)
            doc = ReportedDoc(device=name, report=r, doc=payload.decode())
            batch.reported.append(doc)
            built.reported_of.append(i)
            self.fleet.apply_reported(doc, now)
            self.urgent = True
        else:  # desired, group_desired
            target = topics.gw_target(name) if kind == "desired" else topics.group_target(name)
            if not payload:  # the retained document was cleared
                batch.desired.append(DesiredDoc(target, None, "", now))
                built.desired_of.append(i)
                return "cleared"
            version = validate_payload(ConfigDesired, payload).version
            batch.desired.append(DesiredDoc(target, version, payload.decode(), now))
            built.desired_of.append(i)
        return kind

    def _service(
        self, kind: str, name: str, payload: bytes, now: float, built: Built, i: int
    ) -> str:
        """A service report (issue 20): scored with the agent's own function, stored in this
        batch's transaction, and its alerts raised or cleared."""
        row = to_service_row(name, validate_payload(ServiceReport, payload), now)
        built.batch.service.append(row)
        built.service_of.append(i)
        self.fleet.apply_service(row, now)
        return kind

    def _internal(self, exc: Exception, topic: str) -> QuarantinedMessage:
        """An exception no rule names: a bug in central. Its traceback is logged (once a
        minute per exception type) and the message quarantined, for a replay once fixed."""
        key = f"internal:{type(exc).__name__}"
        now = time.monotonic()
        if now - self._last_log.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[key] = now
            log.error("failed on a message on %s; quarantined", clean_text(topic), exc_info=exc)
        return QuarantinedMessage("internal", f"{type(exc).__name__}: {exc}")

    def _log_bad(self, name: str, topic: str, bad: QuarantinedMessage) -> None:
        now = time.monotonic()
        if len(self._last_log) > 10_000:  # names come from the network: keep the map small
            self._last_log = {k: t for k, t in self._last_log.items() if now - t < LOG_EVERY_S}
        if now - self._last_log.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._last_log[name] = now
            log.warning("quarantined a message on %s (%s): %s", clean_text(topic), bad.reason, bad)


def _run_job(job: Callable[[float], None], now: float) -> int:
    job(now)
    return 0


class _Stopped(Exception):
    """Stop was asked for while waiting on the store: nothing more is written or acked."""


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
        rules = Rules(
            a.offline_after_min * 60,
            a.temp_c,
            a.disk_used_pct,
            a.mem_used_pct,
            future_s=config.ingest.future_tolerance_s,
            service_score_below=a.service_score_below,
        )
        self.fleet = FleetState.restore(rules, store.load_devices(), store.alerts(open_only=True))
        self.processor = Processor(config, self.fleet, self.stats, clock)
        # SimpleQueue (C): put and get ~0.3 us against queue.Queue's ~2.8 us a message.
        self.inbox: queue.SimpleQueue[Incoming] = queue.SimpleQueue()
        self._generation = 0
        self._next_flush = 0.0
        self._gen_lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = self._make_client()
        #: Jobs run in this writer thread after each fleet check, with the time: what must see
        #: the fleet's state as ingest leaves it (central.rollout's runner). A job that fails
        #: is logged and run again next time; ingest goes on. They run once per fleet: only
        #: while :attr:`leader` says so, as the fleet check, roll-ups and retention do.
        self.periodic: list[Callable[[float], None]] = []
        #: Jobs on a thread of their own (``aside``), every :data:`CHECK_EVERY_S` with the
        #: time, while this instance leads: what reads only what ingest committed, on its own
        #: connection, and may take long (the alert lifecycle: 50,000 alerts when a city goes
        #: down); the writer never waits for them. One that fails is logged and run again.
        self.aside: list[Callable[[float], None]] = []
        self._aside: threading.Thread | None = None
        #: Whether this instance is the fleet's evaluator, asked before each round
        #: (central/store/pg/leader.py's ``Leadership.check``); alone, always.
        self.leader: Callable[[], bool] = lambda: True
        #: Several instances share the messages (central on PostgreSQL): each sees only part
        #: of every gateway's, so the evaluator first takes in what the others stored
        #: (``FleetState.merge``), at most every this many seconds, and checks after it.
        #: 0: this instance sees every message (SQLite), its memory is the fleet's state.
        self.reconcile_s = 0.0
        self._next_reconcile = 0.0
        #: How many instances share the store (central/store/pg/leader.py): alone, the
        #: leader's memory is the fleet's state and it merges only once after taking over.
        self.instances: Callable[[], int] = lambda: 1
        #: The stored news of every gateway, and the rows of those named (PgStore's
        #: ``device_news``, ``devices_named``): the merge reads only the rows newer than its
        #: own. Unset: every row (``load_devices``).
        self.stored_news: Callable[[], Mapping[str, float]] | None = None
        self.stored_rows: Callable[[list[str]], list[DeviceState]] | None = None
        self._must_merge = True
        #: Called by :meth:`stop` after the disconnect (the leadership's lock is given up).
        self.on_stop: list[Callable[[], object]] = []

    # --- MQTT (network thread) ----------------------------------------------------------

    def _make_client(self) -> paho.Client:
        m = self.config.mqtt
        client = client_for(m, m.client_id, manual_ack=True, buffered=True)
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
        # Retained messages only with a new subscription: with the session present we have
        # them already (and a retained message central quarantined would come again on every
        # restart). Mosquitto 2.0.11 sends retained messages on shared subscriptions too.
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        m = self.config.mqtt
        client.subscribe([(t, opts) for t in subscriptions(m.topic_prefix, m.share_group)])

    def _on_disconnect(self, *args: Any) -> None:
        self.stats.connected = False

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # brokers check topics are UTF-8; this one did not
            topic = msg._topic.decode("utf-8", "backslashreplace")
        self.inbox.put(Incoming(topic, bytes(msg.payload), msg.mid, msg.qos, self._generation))

    # --- writer thread ------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Commit and ack until ``stop`` is set; then commit and ack what is queued."""
        if self.aside and self._aside is None:
            self._aside = threading.Thread(
                target=self._run_aside, args=(stop,), name="aside", daemon=True
            )
            self._aside.start()
        next_check = next_prune = 0.0
        pruning = False
        while not stop.is_set():
            msgs = self._collect(stop)
            self._commit(msgs, stop)
            now = self.clock()
            if now >= next_check:
                next_check = now + CHECK_EVERY_S
                leading = bool(self._maintain("leadership", self._leading))
                if leading and not self.stats.leader:
                    self._must_merge = True  # taking over: this one's memory is partial
                self.stats.leader = leading
                if leading:
                    self._maintain("fleet check", functools.partial(self._check, now, stop))
                self._commit([], stop, flush=True)
                if leading:
                    self._maintain("roll-up", self.store.roll_up)
                    for job in self.periodic:
                        self._maintain("periodic job", functools.partial(_run_job, job, now))
            if not self.stats.leader:
                pruning = False
            elif pruning or now >= next_prune:
                # One small chunk per round, so ingest never waits long on retention.
                n = self._maintain("retention", functools.partial(self.store.prune, now))
                self.stats.pruned += n
                pruning = n > 0
                if not pruning:
                    next_prune = now + PRUNE_EVERY_S
        self._commit(self._drain(), stop, flush=True)
        if self.stats.leader:
            self._maintain("roll-up", self.store.roll_up)

    def _run_aside(self, stop: threading.Event) -> None:
        while not stop.wait(CHECK_EVERY_S):
            if not self.stats.leader:
                continue
            now = self.clock()
            for job in self.aside:
                if stop.is_set():
                    return
                self._maintain("job aside", functools.partial(_run_job, job, now))

    def _leading(self) -> int:
        return int(self.leader())

    def _check(self, now: float, stop: threading.Event) -> int:
        """The fleet's staleness and offline rules (the evaluator's). With several instances,
        first write what this one holds and take in what the others stored."""
        if self.reconcile_s > 0:
            if now < self._next_reconcile:
                return 0
            self._next_reconcile = now + self.reconcile_s
            shared = self.instances() > 1
            if shared or self._must_merge:
                self._merge(now, stop)
            # Once more after the others went: what they stored last is merged then.
            self._must_merge = shared
        self.fleet.check(now)
        return 0

    def _merge(self, now: float, stop: threading.Event) -> None:
        self._commit([], stop, flush=True)
        if self.stored_news is None or self.stored_rows is None:
            rows = self.store.load_devices()
        else:
            rows = self.stored_rows(self.fleet.newer_stored(self.stored_news()))
        self.fleet.merge(rows, self.store.alerts(open_only=True), now)

    def _maintain(self, what: str, job: Callable[[], int]) -> int:
        """Run a roll-up or retention round; a failure is logged and the round tried again
        later, never allowed to stop ingest."""
        try:
            return job()
        except Exception:
            self.stats.maintenance_errors += 1
            log.exception("%s failed; trying again next round", what)
            return 0

    def stop(self) -> None:
        """Disconnect cleanly (call after :meth:`run` returned); a job aside still running
        gets :data:`STOP_ASIDE_S` to end (a daemon: one still running is left behind, its
        transaction never committed)."""
        if self._aside is not None:
            self._aside.join(STOP_ASIDE_S)
            if self._aside.is_alive():
                log.warning("stopping: a job aside (the alert engine) did not end; leaving it")
        self.client.disconnect()
        self.client.loop_stop()
        for done in self.on_stop:
            done()

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
        built = self.processor.build(msgs, flush_devices=flush)
        batch = built.batch
        if batch:
            t0 = time.perf_counter()
            try:
                try:
                    result = self._write(batch, stop)
                    bad: set[int] = set()
                except _Stopped:
                    raise
                except Exception as exc:
                    # Something in the batch cannot be stored (the wire models let it through):
                    # find it, set it aside, store the rest.
                    result, bad = self._write_apart(built, exc, stop)
            except _Stopped:
                return  # not acked, so not lost: the broker sends them again
            took = time.perf_counter() - t0
            s = self.stats
            s.batches += 1
            s.stored += result.stored
            s.duplicates += result.duplicates
            s.commit_seconds_last = took
            s.commit_seconds_total += took
            s.commit_seconds_max = max(s.commit_seconds_max, took)
            committed = self.clock()
            horizon = committed + self.fleet.rules.future_s
            samples = batch.samples if not bad else self._samples_except(built, bad)
            for sample in samples:
                # Replayed records are late on purpose; future-stamped ones are not live.
                if not sample.historical and sample.ts <= horizon:
                    s.observe_lag(committed - sample.ts)
        with self._gen_lock:
            gen = self._generation
            mine = [m for m in msgs if m.qos > 0 and m.generation == gen]
            acks = [m.mid for m in mine if m.qos == 1]
            if isinstance(self.client, BufferedClient):
                self.client.ack_many(acks)  # one write for the batch
            else:
                for mid in acks:
                    self.client.ack(mid, 1)
            for m in mine:  # QoS 2: never with our QoS 1 subscriptions, but as paho would
                if m.qos == 2:
                    self.client.ack(m.mid, 2)
            self.stats.acked += len(mine)

    def _write(self, batch: WriteBatch, stop: threading.Event) -> WriteResult:
        """``store.write``, again every second while the store cannot write at all (not acked,
        so not lost); :class:`_Stopped` if ``stop`` is set meanwhile. Any other exception (a
        row the store refuses) goes to the caller."""
        while True:
            try:
                return self.store.write(batch)
            except StoreUnavailable:
                self.stats.commit_errors += 1
                log.exception("the store cannot write; trying again in %.0f s", RETRY_S)
                if stop.wait(RETRY_S):
                    raise _Stopped from None

    def _write_apart(
        self, built: Built, exc: Exception, stop: threading.Event
    ) -> tuple[WriteResult, set[int]]:
        """Write a failed batch in halves, down to the messages the store refuses; those are
        quarantined (reason ``store``). Device rows and alert changes go one by one if they
        fail together. Returns what was stored and the indexes of the messages set aside."""
        self.stats.split_batches += 1
        log.warning("a batch failed (%s: %s); writing it in parts", type(exc).__name__, exc)
        while True:  # a store that refuses known-good rows is down, not fed a bad row
            try:
                self.store.probe()
                break
            except StoreUnavailable:
                self.stats.commit_errors += 1
                log.exception("the store cannot write; trying again in %.0f s", RETRY_S)
                if stop.wait(RETRY_S):
                    raise _Stopped from None
        bad: dict[int, Exception] = {}
        stored = duplicates = 0
        n = len(built.msgs)
        # The whole failed already (perhaps only through its device rows): start at halves.
        pending = [(n // 2, n), (0, n // 2)] if n > 1 else [(0, n)] if n else []
        while pending:
            lo, hi = pending.pop()
            part = built.part(lo, hi)
            if not part:
                continue
            try:
                r = self._write(part, stop)
            except _Stopped:
                raise
            except Exception as err:
                if hi - lo == 1:
                    bad[lo] = err
                else:
                    mid = (lo + hi) // 2
                    pending += [(mid, hi), (lo, mid)]
                continue
            stored += r.stored
            duplicates += r.duplicates
        if bad:
            self._set_aside(built, bad, stop)
        self._write_fleet_rows(built.batch, stop)
        return WriteResult(stored, duplicates), set(bad)

    def _set_aside(self, built: Built, bad: dict[int, Exception], stop: threading.Event) -> None:
        now = self.clock()
        rows = []
        for i, err in sorted(bad.items()):
            m = built.msgs[i]
            kind = built.kind(i, self.processor.prefix)
            if kind is not None:
                self.stats.accepted[kind] -= 1
            self.stats.bad["store"] += 1
            detail = f"{type(err).__name__}: {err}"
            log.error(
                "the store refused a message on %s; quarantined: %s", clean_text(m.topic), detail
            )
            where = parse_topic(self.processor.prefix, m.topic)
            device = where[1] if where and where[0] != "group_desired" else None
            rows.append(self.processor.row(m.topic, device, "store", detail, m.payload, now))
        try:
            self._write(WriteBatch(quarantined=rows), stop)
            self.stats.quarantined += len(rows)
        except _Stopped:
            raise
        except Exception:
            self.stats.quarantine_skipped += len(rows)
            log.exception("could not keep %d quarantined messages; counted only", len(rows))

    def _write_fleet_rows(self, batch: WriteBatch, stop: threading.Event) -> None:
        """Device rows and alert changes of a failed batch: together, else one by one; a row
        the store refuses is quarantined and the fleet's memory of it put back."""
        if not (batch.devices or batch.alerts):
            return
        try:
            self._write(WriteBatch(devices=batch.devices, alerts=batch.alerts), stop)
        except _Stopped:
            raise
        except Exception as exc:
            log.warning("device rows or alerts failed together (%s); one by one now", exc)
        else:
            return
        now = self.clock()
        refused: list[Quarantined] = []
        rows: list[DeviceState | AlertChange] = [*batch.devices, *batch.alerts]
        for row in rows:
            one = (
                WriteBatch(devices=[row])
                if isinstance(row, DeviceState)
                else WriteBatch(alerts=[row])
            )
            try:
                self._write(one, stop)
                continue
            except _Stopped:
                raise
            except Exception as err:
                detail = f"{type(err).__name__}: {err}"
            what = "device row" if isinstance(row, DeviceState) else "alert"
            log.error("the store refused the %s of %s; quarantined: %s", what, row.device, detail)
            if isinstance(row, DeviceState):
                self.fleet.reset(row.device, self.store.device(row.device))
            else:
                self.fleet.forget_alert(row)
            payload = json.dumps(asdict(row), default=repr).encode("utf-8", "backslashreplace")
            refused.append(self.processor.row("", row.device, "store", detail, payload, now))
            self.stats.bad["store"] += 1
        if refused:
            try:
                self._write(WriteBatch(quarantined=refused), stop)
                self.stats.quarantined += len(refused)
            except _Stopped:
                raise
            except Exception:
                self.stats.quarantine_skipped += len(refused)
                log.exception("could not keep %d quarantined rows; counted only", len(refused))

    @staticmethod
    def _samples_except(built: Built, bad: set[int]) -> list[Sample]:
        out: list[Sample] = []
        for i in range(len(built.msgs)):
            if i not in bad:
                out += built.part(i, i + 1).samples
        return out
