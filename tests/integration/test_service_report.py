"""The service report end to end: a real agent process (simulated platform) with
``[service] enabled`` publishes it on its own topic to a real Mosquitto, and it validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.protocol import Topics
from agent.protocol.score import score
from agent.protocol.service import ServiceReport
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, subscriber

pytestmark = pytest.mark.broker

DEV = "gw-test01"


def test_the_report_arrives_on_its_own_topic(broker: Broker, tmp_path: Path) -> None:
    extra = "[service]\nenabled = true\ninterval_s = 30\njitter_s = 0\n"
    cfg = write_config(tmp_path / "agent.toml", broker, interval=1.0, extra=extra)
    with subscriber(broker, Topics("titik", DEV).service) as sub:
        agent = AgentProcess(cfg)
        try:
            msg = sub.next(timeout=15)
        finally:
            agent.stop()
    assert not msg.retain
    assert len(msg.payload) < 1024
    report = ServiceReport.model_validate_json(msg.payload)
    assert len(report.radios) == 2 and len(report.ssids) == 2
    assert 0 <= score(report).score <= 100


def test_the_citizen_path_rides_in_the_report_when_on(broker: Broker, tmp_path: Path) -> None:
    """With ``citizen_path = true`` the report carries the walk (on the simulated platform, a
    passing one: the real walk is tests/integration/test_citizen_path.py's)."""
    extra = "[service]\nenabled = true\ninterval_s = 30\njitter_s = 0\ncitizen_path = true\n"
    cfg = write_config(tmp_path / "agent.toml", broker, interval=1.0, extra=extra)
    with subscriber(broker, Topics("titik", DEV).service) as sub:
        agent = AgentProcess(cfg)
        try:
            msg = sub.next(timeout=15)
        finally:
            agent.stop()
    report = ServiceReport.model_validate_json(msg.payload)
    assert report.citizen_path is not None
    assert report.citizen_path.lease and report.citizen_path.fail is None
    assert len(report.citizen_path.ms) == 4
    assert len(msg.payload) < 1024  # two radios and two SSIDs, with the walk
