"""The connection dying inside a publish: paho reports the loss (on_disconnect) from within
``publish()``, before it returns the message id. Found by titik-sim's flap scenario, where
sockets are cut at random: the record was then registered as in flight on a connection that
was already gone, so it was neither acked nor replayed (lost until the agent restarted)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from agent.config import parse_config
from agent.core import Agent, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import Telemetry, TelemetryBatch
from agent.state import AgentState
from tests.broker import Broker, subscriber

pytestmark = pytest.mark.broker


def make_agent(broker: Broker, tmp_path: Path) -> Agent:
    cfg = parse_config(
        {
            "mqtt": {"host": broker.host, "port": broker.port, "reconnect_max_s": 0.2},
            "device": {"id": "gw-loss"},
            "telemetry": {"interval_s": 3600},
            "platform": {"kind": "simulated", "root": str(tmp_path / "root")},
            "state": {"dir": str(tmp_path / "state")},
            "buffer": {"replay_jitter_s": 0},
        }
    )
    return Agent(
        cfg,
        SimulatedPlatform("gw-loss"),
        AgentState(tmp_path / "state"),
        open_spool(cfg, tmp_path / "state"),
    )


def run_until(agent: Agent, cond: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        agent.tick()
        agent.link.step(0.05)


def test_a_sample_published_as_the_link_dies_is_replayed(broker: Broker, tmp_path: Path) -> None:
    agent = make_agent(broker, tmp_path)
    with subscriber(broker, "titik/gw/gw-loss/#") as sub:
        run_until(agent, lambda: agent.link.connected and agent.spool.buffered == 0)
        # The backhaul dies under the agent: the next write fails inside paho's publish().
        agent.link.socket().shutdown(socket.SHUT_RDWR)
        seq = agent.collect_now()
        assert not agent.link.connected
        assert agent.spool.pending == 1  # back in the queue, not stuck "in flight"
        run_until(agent, lambda: agent.link.connected and agent.spool.buffered == 0)
        seen: set[int] = set()
        deadline = time.monotonic() + 10
        while seq not in seen and time.monotonic() < deadline:
            msg = sub.next(timeout=5)
            if msg.topic.endswith("/telemetry"):
                seen.add(Telemetry.model_validate_json(msg.payload).seq)
            elif msg.topic.endswith("/telemetry/batch"):
                seen |= {r.seq for r in TelemetryBatch.model_validate_json(msg.payload).records}
    agent.shutdown()
    assert seq in seen
