"""The agent: sample on schedule, publish, keep the status topic true.

:class:`Agent` holds no global state and never blocks: :meth:`Agent.tick` does whatever is
due and says how long the caller may wait. A gateway runs one in :func:`run`; the fleet
simulator drives thousands of them through the same methods.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent import __version__
from agent.collectors import Context, run_collectors
from agent.config import AgentConfig, ConfigError
from agent.mqtt import MqttLink, Will
from agent.platforms import Platform
from agent.protocol import AgentInfo, Clients, Health, Net, Status, Telemetry, Topics, encode
from agent.state import AgentState

log = logging.getLogger("titik.agent")

#: Longest a SIGTERM waits for the broker to acknowledge the offline status.
SHUTDOWN_ACK_TIMEOUT_S = 3.0
#: Longest one step of the loop blocks, so signals and schedules are served promptly.
MAX_STEP_S = 0.5


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
    published: int = 0
    acked: int = 0
    unsent: int = 0


class Agent:
    def __init__(
        self,
        cfg: AgentConfig,
        platform: Platform,
        state: AgentState,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not cfg.device.id:
            raise ConfigError("device.id: must be resolved before the agent starts")
        self.cfg = cfg
        self.device_id = cfg.device.id
        self.platform = platform
        self.state = state
        self.topics = Topics(cfg.mqtt.topic_prefix, self.device_id)
        self.clock = clock
        self.wall = wall
        self.counts = Counts()
        self._memo: dict[str, Any] = {}
        self._next_sample = clock()
        self._telemetry_mids: set[int] = set()
        self._status_mids: set[int] = set()
        self.link = MqttLink(
            cfg.mqtt,
            self.device_id,
            before_connect=self._before_connect,
            on_connected=self._on_connected,
            on_ack=self._on_ack,
            on_nack=self._on_nack,
            clock=clock,
        )

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
        return Telemetry(
            device=self.device_id,
            seq=self.state.next_seq() if seq is None else seq,
            boot=self.state.boot,
            sid=self.state.sid,
            ts=round(ctx.wall, 3),
            health=health if isinstance(health, Health) else None,
            net=net if isinstance(net, Net) else None,
            clients=clients if isinstance(clients, Clients) else None,
            agent=AgentInfo(version=__version__),
            errors=ctx.errors or None,
        )

    def tick(self) -> float:
        """Do what is due; return how long the caller may wait before calling again."""
        now = self.clock()
        if now >= self._next_sample:
            interval = self.cfg.telemetry.interval_s
            # Keep the cadence, but after a long stall skip missed slots instead of bursting.
            self._next_sample = max(self._next_sample + interval, now + interval / 2)
            self._publish_sample(self.sample())
        return max(0.0, self._next_sample - self.clock())

    def _publish_sample(self, sample: Telemetry) -> None:
        self.counts.samples += 1
        mid = self.link.publish(self.topics.telemetry, encode(sample), qos=1)
        if mid is None:
            self.counts.unsent += 1
            return
        self.counts.published += 1
        self._telemetry_mids.add(mid)

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

    def _on_ack(self, mid: int) -> None:
        if mid in self._telemetry_mids:
            self._telemetry_mids.discard(mid)
            self.counts.acked += 1
        self._status_mids.discard(mid)

    def _on_nack(self, mid: int, reason: str) -> None:
        self._telemetry_mids.discard(mid)
        self._status_mids.discard(mid)
        log.warning("broker refused message %d: %s", mid, reason)

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
        log.info("stopped (%s)", reason)


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
        signal.signal(signal.SIGUSR1, lambda s, f: agent.link.kick())
    log.info(
        "titik-agent %s starting: device %s, platform %s, broker %s:%d, every %gs",
        __version__,
        agent.device_id,
        agent.platform.name,
        agent.cfg.mqtt.host,
        agent.cfg.mqtt.port,
        agent.cfg.telemetry.interval_s,
    )
    while not stop.is_set():
        wait = agent.tick()
        agent.link.step(min(wait, MAX_STEP_S))
    agent.shutdown("shutdown")
