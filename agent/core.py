"""The agent: one gateway's sampling, delivery, status and remote control, wired together.

:class:`Agent` holds no global state and never blocks: :meth:`Agent.tick` does whatever is
due and says how long the caller may wait. A gateway runs one in :func:`agent.daemon.run`;
the fleet simulator drives thousands of them through the same methods. The work itself is
done by :class:`agent.sampling.Sampler` (collectors -> Telemetry), :class:`agent.delivery.Delivery`
(spool, publish, replay, acks) and :mod:`agent.remote` (configs and commands); this module
keeps the status topic true, routes the link's events and holds the runtime config.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic

from typing_extensions import TypeVar  # a TypeVar with a default (PEP 696); pydantic needs it too

from agent import __version__
from agent.config import AgentConfig, ConfigError, MqttConfig
from agent.delivery import Counts, Delivery, open_spool
from agent.link import Link, LinkEvents, Will
from agent.mqtt import MqttLink, make_link
from agent.platforms import Platform
from agent.protocol import Status, Telemetry, Topics, encode
from agent.protocol.atomicfile import WriteFaults
from agent.protocol.signing import Verifier
from agent.remote.controller import ConfigController, Hooks
from agent.runner import CommandError
from agent.sampling import Sampler
from agent.spool import Spool
from agent.state import AgentState

if TYPE_CHECKING:
    from pathlib import Path

    from agent.remote.commands import CommandProcessor
    from agent.remote.upgrade import Upgrader
    from agent.service.report import ServiceReporter

log = logging.getLogger("titik.agent")

#: Longest a SIGTERM waits for the broker to acknowledge the offline status.
SHUTDOWN_ACK_TIMEOUT_S = 3.0
#: Incoming configs and commands waiting to be handled (a flood drops the oldest).
INBOX_MAX = 256
#: At most one "inbox full" warning per this many seconds (a flood must not flood the log).
INBOX_WARN_INTERVAL_S = 60.0

__all__ = ["Agent", "bad_response_topic", "open_spool", "resolve_device_id"]

#: The agent's link: any :class:`~agent.link.Link`; an :class:`~agent.mqtt.MqttLink` by default.
L = TypeVar("L", bound=Link, default=MqttLink)
_DEFAULT_LINK: Any = make_link  # typed Any: the default of a factory generic in L


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


def _hook_runner(cfg: AgentConfig, platform: str, remote_dir: Path) -> Hooks:
    from agent.remote.hooks import HookRunner

    return HookRunner(
        cfg.config.hooks_dir,  # None: the firmware_hooks shipped with Titik
        platform,
        root=cfg.platform.root,
        snapshot_dir=remote_dir / "snapshots",
        timeout_s=cfg.config.hook_timeout_s,
    )


class HooksOnFirstUse:
    """The firmware hook runner, made at its first use. Hooks run only while a new config is
    applied or rolled back (a retained document already applied runs none), so a gateway
    whose config is settled never imports :mod:`agent.remote.hooks` (~40 KiB of RSS,
    docs/benchmarks.md)."""

    def __init__(self, make: Callable[[], Hooks]) -> None:
        self._make = make
        self._runner: Hooks | None = None

    def _get(self) -> Hooks:
        if self._runner is None:
            self._runner = self._make()
        return self._runner

    def has(self, section: str) -> bool:
        return self._get().has(section)

    def validate(self, section: str, data: Mapping[str, Any]) -> None:
        self._get().validate(section, data)

    def snapshot(self, section: str) -> None:
        self._get().snapshot(section)

    def apply(self, section: str, data: Mapping[str, Any]) -> bool:
        return self._get().apply(section, data)

    def restore(self, section: str) -> None:
        self._get().restore(section)

    def call(self, section: str, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        runner: Any = self._get()  # a HookRunner (the config controller's port lacks call)
        result: dict[str, Any] = runner.call(section, action, data)
        return result


class Agent(Generic[L]):
    """One gateway. Implements :class:`agent.link.LinkEvents` for its link, which
    ``link_factory`` makes from (mqtt config, client id, events, subscriptions, clock):
    :func:`agent.mqtt.make_link` unless a test passes another."""

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
        link_factory: Callable[
            [MqttConfig, str, LinkEvents, list[str], Callable[[], float]], L
        ] = _DEFAULT_LINK,
    ) -> None:
        if not cfg.device.id:
            raise ConfigError("device.id: must be resolved before the agent starts")
        self.cfg = cfg
        self.device_id = cfg.device.id
        self.platform = platform
        self.state = state
        self.spool = spool
        self.topics = Topics(cfg.mqtt.topic_prefix, self.device_id)
        self.clock = clock
        self.wall = wall
        self._next_sample = clock()
        self._status_mids: set[int] = set()
        self.base_cfg = cfg  # the config file; remote config overlays it at run time
        self.stop_requested = False
        self._reboot_at: float | None = None
        self.maintenance: dict[str, Any] = {}
        # Messages are handled in tick(), outside paho's callbacks: handling may reconnect,
        # and paho's loop must not be re-entered from its own callback.
        self._inbox: deque[Any] = deque(maxlen=INBOX_MAX)
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
        self.sampler = Sampler(
            self.device_id, platform, state, spool, self.faults, clock=clock, wall=wall
        )
        subscriptions = [*self._desired_sources, *sorted(self._cmd_topics)]
        self.link: L = link_factory(cfg.mqtt, self.device_id, self, subscriptions, clock)
        self.delivery = Delivery(
            spool, self.link, self.topics, lambda: self.cfg.buffer, clock=clock, rng=rng
        )
        self._state_dir = cfg.state.dir or platform.state_dir()
        remote_dir = self._state_dir / "remote"
        verifier = Verifier(cfg.security.trusted_keys) if cfg.security.trusted_keys else None
        self.remote = ConfigController(
            remote_dir,
            groups,
            HooksOnFirstUse(lambda: _hook_runner(cfg, platform.name, remote_dir)),
            self,
            rollback_timeout_s=cfg.config.rollback_timeout_s,
            verifier=verifier,
            require_signature=cfg.security.require_signature,
            clock=clock,
            wall=wall,
            faults=self.faults,
            device=self.topics.device,
        )
        self._remote_dir, self._verifier, self._wall = remote_dir, verifier, wall
        self._require_signature = cfg.security.require_signature
        self._commands: CommandProcessor | None = None
        #: The service-health report, when ``[service] enabled``: imported only then (its
        #: models and probes cost ~400 KiB; docs/architecture.md, "Service health").
        #: Made by apply_runtime when [service] (the file's, or the remote config's) says so.
        self.service: ServiceReporter | None = None
        self._service_waiting: bytes | None = None  # made while offline: the newest only
        self._rng = rng
        #: Upgrades (agent/remote/upgrade.py): made at the first ``upgrade`` command, or at
        #: start when a journal says an upgrade waits for its health gate or report.
        self._upgrader: Upgrader | None = None
        if (self._state_dir / "upgrade" / "journal.json").exists():
            _ = self.upgrader
        self.apply_runtime(self.remote.applied)
        if self._move_to is not None:  # a broker move that was verified and committed earlier
            self.link.cfg, self._move_to = self._move_to, None

    @property
    def commands(self) -> CommandProcessor:
        """The command processor, made (its modules imported, its id memory read from flash)
        at the first command: a gateway that is never sent one does not pay for it (about
        90 KiB of RSS, docs/benchmarks.md)."""
        if self._commands is None:
            from agent.remote import actions
            from agent.remote.commands import CommandProcessor

            self._commands = CommandProcessor(
                self._remote_dir,
                actions.handlers(self),
                verifier=self._verifier,
                require_signature=self._require_signature,
                wall=self._wall,
                harmless=actions.HARMLESS,
                faults=self.faults,
            )
        return self._commands

    @property
    def upgrader(self) -> Upgrader:
        if self._upgrader is None:
            from agent.remote.upgrade import Upgrader

            cfg, remote_dir = self.cfg, self._remote_dir
            self._upgrader = Upgrader(
                self._state_dir,
                HooksOnFirstUse(lambda: _hook_runner(cfg, self.platform.name, remote_dir)),
                device=self.device_id,
                platform=self.platform.name,
                verifier=self._verifier,
                connected=lambda: self.link.connected,
                acked=lambda: self.delivery.counts.acked,
                sim_state=cfg.platform.root / "var/lib/titik-sim",
                wall=self._wall,
            )
        return self._upgrader

    def start_upgrade(self, args: dict[str, Any]) -> dict[str, Any]:
        running = self.commands.running
        return self.upgrader.start(running.id if running else "-", args)

    def _upgrade_tick(self, upgrader: Upgrader) -> None:
        upgrader.tick()
        for report in upgrader.take_reports():
            if not self.link.connected:
                upgrader.put_back(report)
                break
            payload = json.dumps(report, separators=(",", ":")).encode()
            if self.link.publish(self.topics.cmd_result, payload, qos=1) is None:
                upgrader.put_back(report)
                break

    @property
    def counts(self) -> Counts:
        return self.delivery.counts

    # -- sampling
    def sample(self, seq: int | None = None) -> Telemetry:
        """Collect one sample. ``seq`` None draws the next persistent sequence number."""
        return self.sampler.sample(self.cfg.telemetry.collectors, seq)

    def publish_sample(self, sample: Telemetry) -> None:
        self.delivery.publish_sample(sample)

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
            self.delivery.publish_sample(self.sample())
        service = self.service
        if service is not None and service.due(now):
            self._service_report(service)
        while self._inbox:
            self._handle(self._inbox.popleft())
        if self._move_to is not None:
            target, self._move_to = self._move_to, None
            log.info("moving to broker %s:%d", target.host, target.port)
            self.link.reconnect(target)
        wait = self.delivery.replay(now)
        self.spool.tick()
        self.remote.tick()
        if self._upgrader is not None:
            self._upgrade_tick(self._upgrader)
        if self.state.unsaved:  # a counters write failed: try again now and then
            self.state.retry(now)
        if self._reboot_at is not None and now >= self._reboot_at:
            self._reboot_at = None
            self._reboot()
        if service is not None:
            wait = min(wait, service.next_at - self.clock())
        return max(0.0, min(self._next_sample - self.clock(), wait))

    def _service_report(self, service: ServiceReporter) -> None:
        """Make and publish a service report (QoS 1, not spooled: a report made offline waits
        in memory, the newest replacing the older, until the next connection)."""
        from agent.protocol.service import encode_report

        try:
            payload = encode_report(service.report())
        except Exception:  # a bug in the report must not stop the agent's samples
            log.exception(
                "service report failed; the next one is due in %.0fs",
                service.next_at - self.clock(),
            )
            return
        self._service_waiting = payload
        self._send_service_report()

    def _send_service_report(self) -> None:
        payload, service = self._service_waiting, self.service
        if payload is None or service is None or not self.link.connected:
            return
        mid = self.link.publish(self.topics.service, payload, qos=1)
        if mid is not None:
            self._service_waiting = None
            service.sent(mid)

    def kick(self) -> None:
        """Reconnect now if disconnected, and replay the buffer at once (no jitter)."""
        self.delivery.kick()
        self.link.kick()

    # -- status and session (the link's events)
    def status(self, online: bool, reason: str | None = None) -> Status:
        if not online:
            return self._offline(self.state.boot, ts=round(self.wall(), 3), reason=reason)
        d = self.cfg.device
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

    def _offline(self, boot: int, *, ts: float | None = None, reason: str | None = None) -> Status:
        """An offline status, the Will included, keeps where the gateway is and its groups, so
        a retained offline status still answers "which gateways of region R are down"."""
        d = self.cfg.device
        return Status(
            online=False,
            boot=boot,
            ts=ts,
            reason=reason,
            site=d.site or None,
            region=d.region or None,
            lat=d.lat,
            lon=d.lon,
            groups=list(d.groups),
        )

    def before_connect(self) -> Will:
        boot = self.state.next_boot()
        return Will(self.topics.status, encode(self._offline(boot)), qos=1, retain=True)

    def on_connected(self) -> None:
        mid = self.link.publish(self.topics.status, encode(self.status(True)), qos=1, retain=True)
        if mid is not None:
            self._status_mids.add(mid)
        self.delivery.on_connected()
        self.remote.on_connected()
        self._send_service_report()

    def on_ack(self, mid: int) -> None:
        if self.service is not None:
            self.service.acked(mid)
        self.remote.on_ack(mid)
        self._status_mids.discard(mid)
        self.delivery.on_ack(mid)

    def on_nack(self, mid: int, reason: str) -> None:
        self._status_mids.discard(mid)
        self.delivery.on_nack(mid)
        log.warning("broker refused message %d: %s", mid, reason)

    def on_disconnected(self) -> None:
        self.delivery.on_disconnected()
        self._status_mids.clear()

    # -- remote config and commands
    def on_message(self, msg: Any) -> None:
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

    def _handle(self, msg: Any) -> None:
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

    def _on_command(self, msg: Any) -> None:
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
        self._apply_service(applied.get("service") or {})

    def service_interval(self) -> float | None:
        """Seconds between service reports, None while the report is off."""
        return self.service.cfg.interval_s if self.service is not None else None

    def _apply_service(self, remote: Mapping[str, Any]) -> None:
        """``[service]`` of the config file with the remote config's ``enabled`` and
        ``interval_s`` over it: the reporter is made, dropped, or given its new interval (the
        next report comes no later than one new interval from now)."""
        base = self.base_cfg.service
        if base is None and not remote:
            self.service = None  # nothing imported: the report's ~400 KiB stay unpaid
            return
        from agent.service_config import ServiceConfig

        svc = (base or ServiceConfig()).model_copy(
            update={k: v for k, v in remote.items() if k in ("enabled", "interval_s")}
        )
        if not svc.enabled:
            self.service, self._service_waiting = None, None
        elif self.service is None:
            from agent.service.report import ServiceReporter

            self.service = ServiceReporter(
                svc, self.platform, clock=self.clock, wall=self._wall, rng=self._rng
            )
        elif self.service.cfg != svc:
            self.service.cfg = svc
            self.service.next_at = min(self.service.next_at, self.clock() + svc.interval_s)

    def collect_now(self) -> int:
        sample = self.sample()
        self.delivery.publish_sample(sample)
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
