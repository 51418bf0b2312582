"""The daemon loop of a gateway: one :class:`~agent.core.Agent`, signals, a clean stop."""

from __future__ import annotations

import logging
import signal
import threading

from agent import __version__
from agent.core import Agent
from agent.delivery import MAX_STEP_S

log = logging.getLogger("titik.agent")


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
