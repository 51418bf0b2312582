"""The agent: sample on schedule, publish, keep the status topic true.

:class:`Agent` holds no global state and never blocks: :meth:`Agent.tick` does whatever is
due and says how long the caller may wait. A gateway runs one in :func:`run`; the fleet
simulator drives thousands of them through the same methods.
"""

from __future__ import annotations

import json
import logging
import random
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paho.mqtt.client import MQTTMessage

from agent import __version__
from agent.atomicfile import WriteFaults
from agent.collectors import Context, run_collectors
from agent.config import AgentConfig, ConfigError, MqttConfig
from agent.mqtt import MqttLink, Will
from agent.platforms import Platform
from agent.protocol import (
    AgentInfo,
    Clients,
    Health,
    Net,
    Status,
    Telemetry,
    Topics,
    batch_payload,
    encode,
)
from agent.protocol.signing import Verifier
from agent.remote import actions
from agent.remote.commands import CommandProcessor
from agent.remote.controller import ConfigController
from agent.remote.hooks import DEFAULT_HOOKS_DIR, HookRunner
from agent.runner import CommandError
from agent.spool import Record, Spool
from agent.state import AgentState

log = logging.getLogger("titik.agent")

#: Longest a SIGTERM waits for the broker to acknowledge the offline status.
SHUTDOWN_ACK_TIMEOUT_S = 3.0
#: Longest one step of the loop blocks, so signals and schedules are served promptly.
MAX_STEP_S = 0.5
#: Incoming configs and commands waiting to be handled (a flood drops the oldest).
INBOX_MAX = 256
#: At most one "inbox full" warning per this many seconds (a flood must not flood the log).
INBOX_WARN_INTERVAL_S = 60.0
#: Replay batches awaiting PUBACK at once; bounds paho's queue and the broker's inflight window.
MAX_INFLIGHT_BATCHES = 4
#: Most bytes of records in one replay message (Mosquitto's default limit is far above).
BATCH_MAX_BYTES = 256 * 1024


def bad_response_topic(topic: str) -> str | None:
    """Why an MQTT 5 response topic cannot be published to, or None. paho raises ValueError
    for wildcards and empty or oversized topics, which would stop the agent."""
    if not isinstance(topic, str) or not topic:
        return "empty"
    if "+" in topic or "#" in topic:
        return "it contains a wildcard"
    if "\0" in topic:
        return "it contains a NUL character"
    try:
        size = len(topic.encode())
    except UnicodeEncodeError:
        return "not valid UTF-8"
    return "longer than 65535 bytes" if size > 65535 else None


def resolve_device_id(cfg: AgentConfig, platform: Platform) -> AgentConfig:
    """Fill ``device.id`` from the primary MAC when the config leaves it out."""
    if cfg.device.id:
        return cfg
    mac = platform.primary_mac()
    if mac is None:
        raise ConfigError("device.id: not set, and no MAC address was found to derive it; set it")
    device = cfg.device.model_copy(update={"id": f"gw-{mac}"})
    return cfg.model_copy(update={"device": device})


@dataclass
class Counts:
    samples: int = 0
    published: int = 0  # live samples handed to the broker
    replayed: int = 0  # buffered records sent in batches
    acked: int = 0  # records acknowledged by the broker


def open_spool(
    cfg: AgentConfig,
    state_dir: Path,
    clock: Callable[[], float] = time.monotonic,
    wall: Callable[[], float] = time.time,
) -> Spool:
    b = cfg.buffer
    return Spool(
        b.path or state_dir / "buffer",
        max_bytes=b.max_bytes,
        max_age_s=b.max_age_s,
        flush_interval_s=b.flush_interval_s,
        grace_s=b.grace_s,
        clock=clock,
        wall=wall,
        log=logging.getLogger("titik.spool"),
    )


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        platform: Platform,
        state: AgentState,
        spool: Spool,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if not cfg.device.id:
            raise ConfigError("device.id: must be resolved before the agent starts")
        self.cfg = cfg
        self.device_id = cfg.device.id
        self.platform = platform
        self.state = state
        self.spool = spool
        self.rng = rng or random.Random()
        self.topics = Topics(cfg.mqtt.topic_prefix, self.device_id)
        self.clock = clock
        self.wall = wall
        self.counts = Counts()
        self._memo: dict[str, Any] = {}
        self._next_sample = clock()
        self._mids: dict[int, list[int]] = {}  # in-flight publish -> the seqs it carries
        self._batch_mids: set[int] = set()
        self._status_mids: set[int] = set()
        self._replay_at: float | None = None  # None: not connected, or not yet scheduled
        self._kicked = False
        self._tokens = 0.0
        self._tokens_at = clock()
        self.base_cfg = cfg  # the config file; remote config overlays it at run time
        self.stop_requested = False
        self._reboot_at: float | None = None
        self.maintenance: dict[str, Any] = {}
        # Messages are handled in tick(), outside paho's callbacks: handling may reconnect,
        # and paho's loop must not be re-entered from its own callback.
        self._inbox: deque[MQTTMessage] = deque(maxlen=INBOX_MAX)
        self.inbox_dropped = 0
        self._inbox_warned_at = float("-inf")
        #: Failed writes of the remote config and the command ids (the state and the spool
        #: keep their own); the sample's ``errors`` carries all three.
        self.faults = WriteFaults()
        self._move_to: MqttConfig | None = None
        t = self.topics
        groups = list(cfg.device.groups)
        self._desired_sources = {t.config_desired: "gw"} | {
            t.group_config_desired(g): f"group/{g}" for g in groups
        }
        self._cmd_topics = {t.cmd, *(t.group_cmd(g) for g in groups)}
        self.link = MqttLink(
            cfg.mqtt,
            self.device_id,
            before_connect=self._before_connect,
            on_connected=self._on_connected,
            on_ack=self._on_ack,
            on_nack=self._on_nack,
            on_disconnected=self._on_disconnected,
            on_message=self._on_message,
            subscriptions=[*self._desired_sources, *sorted(self._cmd_topics)],
            clock=clock,
        )
        remote_dir = (cfg.state.dir or platform.state_dir()) / "remote"
        verifier = Verifier(cfg.security.trusted_keys) if cfg.security.trusted_keys else None
        self.remote = ConfigController(
            remote_dir,
            groups,
            HookRunner(
                cfg.config.hooks_dir or DEFAULT_HOOKS_DIR,
                platform.name,
                root=cfg.platform.root,
                snapshot_dir=remote_dir / "snapshots",
                timeout_s=cfg.config.hook_timeout_s,
            ),
            self,
            rollback_timeout_s=cfg.config.rollback_timeout_s,
            verifier=verifier,
            require_signature=cfg.security.require_signature,
            clock=clock,
            wall=wall,
            faults=self.faults,
        )
        self.commands = CommandProcessor(
            remote_dir,
            actions.handlers(self),
            verifier=verifier,
            require_signature=cfg.security.require_signature,
            wall=wall,
            harmless=actions.HARMLESS,
            faults=self.faults,
        )
        self.apply_runtime(self.remote.applied)
        if self._move_to is not None:  # a broker move that was verified and committed earlier
            self.link.cfg, self._move_to = self._move_to, None

    # -- sampling
    def sample(self, seq: int | None = None) -> Telemetry:
        """Collect one sample. ``seq`` None draws the next persistent sequence number."""
        ctx = Context(wall=self.wall(), mono=self.clock(), memo=self._memo)
        sections = run_collectors(self.platform, list(self.cfg.telemetry.collectors), ctx)
        health, net, clients = (
            sections.get("health"),
            sections.get("network"),
            sections.get("clients"),
        )
        sp = self.spool
        if self.faults.entries or self.state.faults.entries or sp.faults.entries:
            self._add_write_faults(ctx.errors)
        dropped = sp.dropped
        if sp.lost:  # records lost with a damaged buffer file count as dropped too
            dropped += sp.lost
        return Telemetry(
            device=self.device_id,
            seq=self.state.next_seq() if seq is None else seq,
            boot=self.state.boot,
            sid=self.state.sid,
            ts=round(ctx.wall, 3),
            health=health if isinstance(health, Health) else None,
            net=net if isinstance(net, Net) else None,
            clients=clients if isinstance(clients, Clients) else None,
            agent=AgentInfo(version=__version__, buffered=sp.buffered, dropped=dropped),
            errors=ctx.errors or None,
        )

    def _add_write_faults(self, errors: dict[str, str]) -> None:
        """``write.<kind>`` entries: writes to flash that failed since start (docs/protocol.md)."""
        for faults in (self.state.faults, self.spool.faults, self.faults):
            errors.update(faults.entries)

    @property
    def messages_waiting(self) -> int:
        """Config documents and commands received, for the next :meth:`tick` to handle
        (which may run firmware hooks: seconds, not microseconds)."""
        return len(self._inbox)

    def tick(self) -> float:
        """Do what is due; return how long the caller may wait before calling again."""
        now = self.clock()
        if now >= self._next_sample:
            interval = self.cfg.telemetry.interval_s
            # Keep the cadence, but after a long stall skip missed slots instead of bursting.
            self._next_sample = max(self._next_sample + interval, now + interval / 2)
            self._publish_sample(self.sample())
        while self._inbox:
            self._handle(self._inbox.popleft())
        if self._move_to is not None:
            target, self._move_to = self._move_to, None
            log.info("moving to broker %s:%d", target.host, target.port)
            self.link.reconnect(target)
        wait = self._replay(now)
        self.spool.tick()
        self.remote.tick()
        if self.state.unsaved:  # a counters write failed: try again now and then
            self.state.retry(now)
        if self._reboot_at is not None and now >= self._reboot_at:
            self._reboot_at = None
            self._reboot()
        return max(0.0, min(self._next_sample - self.clock(), wait))

    def _publish_sample(self, sample: Telemetry) -> None:
        """Every sample goes through the spool; live ones are published at once as well."""
        self.counts.samples += 1
        rec = Record(sample.seq, sample.ts, encode(sample))
        if not self.link.connected:
            self.spool.append(rec)
            return
        self.spool.append(rec, inflight=True)
        mid = self.link.publish(self.topics.telemetry, rec.data, qos=1)
        if mid is None:
            self.spool.release([rec.seq])
            return
        self.counts.published += 1
        self._mids[mid] = [rec.seq]

    def _replay(self, now: float) -> float:
        """Send buffered records, oldest first, rate-limited; returns the wait until more."""
        b = self.cfg.buffer
        if self._replay_at is None or not self.link.connected or not self.spool.pending:
            return float("inf")
        if now < self._replay_at:
            return self._replay_at - now
        # Token bucket: replay_rate records/s, bursts of at most one batch.
        burst = max(float(b.batch_records), b.replay_rate * MAX_STEP_S)
        self._tokens = min(burst, self._tokens + (now - self._tokens_at) * b.replay_rate)
        self._tokens_at = now
        while self.spool.pending and len(self._batch_mids) < MAX_INFLIGHT_BATCHES:
            n = min(b.batch_records, int(self._tokens))
            if n < 1:
                return (1 - self._tokens) / b.replay_rate
            records = self.spool.take(n, BATCH_MAX_BYTES)
            if not records:
                break
            seqs = [r.seq for r in records]
            mid = self.link.publish(
                self.topics.telemetry_batch,
                batch_payload(self.device_id, [r.data for r in records]),
                qos=1,
            )
            if mid is None:
                self.spool.release(seqs)
                break
            self._tokens -= len(records)
            self._mids[mid] = seqs
            self._batch_mids.add(mid)
            self.counts.replayed += len(records)
        return float("inf")  # the next PUBACK or the next tick brings more

    def kick(self) -> None:
        """Reconnect now if disconnected, and replay the buffer at once (no jitter)."""
        self._kicked = True
        if self.link.connected:
            self._replay_at = self.clock()
        self.link.kick()

    # -- status and session
    def status(self, online: bool, reason: str | None = None) -> Status:
        d = self.cfg.device
        if not online:
            return Status(
                online=False, boot=self.state.boot, ts=round(self.wall(), 3), reason=reason
            )
        return Status(
            online=True,
            boot=self.state.boot,
            ts=round(self.wall(), 3),
            version=__version__,
            platform=self.platform.name,
            model=self.platform.model(),
            site=d.site or None,
            region=d.region or None,
            lat=d.lat,
            lon=d.lon,
            groups=list(d.groups),
            boot_id=self.platform.boot_id(),
        )

    def _before_connect(self) -> Will:
        boot = self.state.next_boot()
        return Will(self.topics.status, encode(Status(online=False, boot=boot)), qos=1, retain=True)

    def _on_connected(self) -> None:
        mid = self.link.publish(self.topics.status, encode(self.status(True)), qos=1, retain=True)
        if mid is not None:
            self._status_mids.add(mid)
        now = self.clock()
        # Jitter the replay start so a city's gateways reconnecting together don't replay
        # together; a kick (the WAN just came up on this gateway) starts at once.
        jitter = 0.0 if self._kicked else self.rng.uniform(0, self.cfg.buffer.replay_jitter_s)
        self._kicked = False
        self._replay_at = now + jitter
        self._tokens, self._tokens_at = 0.0, now
        if self.spool.pending:
            log.info("%d buffered samples to replay, starting in %.1fs", self.spool.pending, jitter)
        self.remote.on_connected()

    def _on_ack(self, mid: int) -> None:
        self.remote.on_ack(mid)
        self._status_mids.discard(mid)
        self._batch_mids.discard(mid)
        seqs = self._mids.pop(mid, None)
        if seqs:
            self.spool.ack(seqs)
            self.counts.acked += len(seqs)

    def _on_nack(self, mid: int, reason: str) -> None:
        self._status_mids.discard(mid)
        self._batch_mids.discard(mid)
        seqs = self._mids.pop(mid, None)
        if seqs:
            self.spool.release(seqs)  # kept, and tried again on the next replay
        log.warning("broker refused message %d: %s", mid, reason)

    def _on_disconnected(self) -> None:
        # The connection took its unacked publishes with it: back to the spool, to replay.
        for seqs in self._mids.values():
            self.spool.release(seqs)
        self._mids.clear()
        self._batch_mids.clear()
        self._status_mids.clear()
        self._replay_at = None

    # -- remote config and commands
    def _on_message(self, msg: MQTTMessage) -> None:
        if len(self._inbox) == self._inbox.maxlen:
            self.inbox_dropped += 1
            now = self.clock()
            if now - self._inbox_warned_at >= INBOX_WARN_INTERVAL_S:
                self._inbox_warned_at = now
                log.warning(
                    "too many messages waiting; dropping the oldest (%s); %d dropped since start",
                    self._inbox[0].topic,
                    self.inbox_dropped,
                )
        self._inbox.append(msg)

    def _handle(self, msg: MQTTMessage) -> None:
        source = self._desired_sources.get(msg.topic)
        try:
            if source is not None:
                if msg.payload:  # an empty retained message clears a document: nothing to apply
                    self.remote.on_desired(source, msg.topic, bytes(msg.payload))
            elif msg.topic in self._cmd_topics:
                self._on_command(msg)
        except Exception:  # a bug must cost this one message, not the agent and its buffer
            log.exception(
                "internal error handling a message on %s; the message is dropped", msg.topic
            )

    def _on_command(self, msg: MQTTMessage) -> None:
        result = self.commands.handle(msg.topic, bytes(msg.payload))
        payload = json.dumps(result, separators=(",", ":")).encode()
        self.link.publish(self.topics.cmd_result, payload, qos=1)
        props = msg.properties
        response = getattr(props, "ResponseTopic", None) if props is not None else None
        if response:  # MQTT 5 request/response: answer where asked, with its correlation data
            why = bad_response_topic(response)
            if why is not None:
                log.warning(
                    "command %s: response topic refused (%s); answered on %s only",
                    result.get("id"),
                    why,
                    self.topics.cmd_result,
                )
                return
            corr = getattr(props, "CorrelationData", None) or b""
            self.link.publish(response, payload, qos=1, correlation=bytes(corr))

    def publish_reported(self, payload: bytes) -> int | None:
        return self.link.publish(self.topics.config_reported, payload, qos=1, retain=True)

    def apply_runtime(self, applied: Mapping[str, Any]) -> None:
        """Overlay the agent's own sections of the remote config on the config file."""
        base = self.base_cfg
        tel = applied.get("telemetry") or {}
        mq = applied.get("mqtt") or {}
        level = (applied.get("agent") or {}).get("log_level") or base.log.level
        telemetry = base.telemetry.model_copy(
            update={k: v for k, v in tel.items() if k in ("interval_s", "collectors")}
        )
        mqtt = base.mqtt.model_copy(update={k: v for k, v in mq.items() if k in ("host", "port")})
        interval_changed = telemetry.interval_s != self.cfg.telemetry.interval_s
        self.cfg = self.cfg.model_copy(update={"telemetry": telemetry, "mqtt": mqtt})
        self.maintenance = dict(applied.get("maintenance") or {})
        logging.getLogger("titik").setLevel(level.upper())
        if interval_changed:
            self._next_sample = min(self._next_sample, self.clock() + telemetry.interval_s)
        if (mqtt.host, mqtt.port) != (self.link.cfg.host, self.link.cfg.port):
            self._move_to = mqtt  # done by tick(), outside any paho callback

    def collect_now(self) -> int:
        sample = self.sample()
        self._publish_sample(sample)
        return sample.seq

    def schedule_reboot(self, delay_s: float) -> None:
        self._reboot_at = self.clock() + delay_s

    def _reboot(self) -> None:
        log.warning("rebooting, as operations asked")
        if self.platform.name == "simulated":
            self.platform.reboot()  # nothing goes down: a new session shows it
            self.link.reconnect()
            return
        self.shutdown("reboot")
        self.stop_requested = True
        try:
            self.platform.reboot()
        except CommandError as exc:
            log.error("reboot failed: %s; exiting so the service manager restarts us", exc)

    # -- stopping
    def shutdown(self, reason: str = "shutdown") -> None:
        """Say goodbye: retained offline status, wait briefly for its ack, clean disconnect."""
        if self.link.connected:
            mid = self.link.publish(
                self.topics.status, encode(self.status(False, reason)), qos=1, retain=True
            )
            if mid is not None:
                self._status_mids.add(mid)
                deadline = self.clock() + SHUTDOWN_ACK_TIMEOUT_S
                while mid in self._status_mids and self.link.connected and self.clock() < deadline:
                    self.link.step(0.05)
        self.link.close()
        self.spool.close()  # everything unacked is on disk now
        log.info("stopped (%s); %d samples buffered for later", reason, self.spool.buffered)


def run(agent: Agent, stop: threading.Event | None = None) -> None:
    """The daemon loop: SIGTERM/SIGINT stop it cleanly; SIGUSR1 reconnects at once."""
    stop = stop or threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:

        def on_stop(signum: int, frame: object) -> None:
            stop.set()
            agent.link.kick()  # wake a sleeping step

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, lambda s, f: agent.kick())
    log.info(
        "titik-agent %s starting: device %s, platform %s, broker %s:%d, every %gs",
        __version__,
        agent.device_id,
        agent.platform.name,
        agent.cfg.mqtt.host,
        agent.cfg.mqtt.port,
        agent.cfg.telemetry.interval_s,
    )
    while not stop.is_set() and not agent.stop_requested:
        wait = agent.tick()
        agent.link.step(min(wait, MAX_STEP_S))
    if not agent.stop_requested:  # a reboot has said goodbye already
        agent.shutdown("shutdown")
