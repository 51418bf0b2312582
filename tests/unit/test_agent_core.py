"""The agent's own bookkeeping, without a broker: the link is never connected here."""

from __future__ import annotations

import errno
import json
import os
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.cli import main
from agent.config import parse_config
from agent.core import Agent, bad_response_topic, open_spool
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import TelemetryBatch, batch_payload
from agent.state import AgentState


def make_agent(tmp_path: Path, **buffer: object) -> Agent:
    cfg = parse_config(
        {
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "device": {"id": "gw-unit"},
            "platform": {"kind": "simulated", "root": str(tmp_path)},
            "state": {"dir": str(tmp_path / "state")},
            "buffer": {"max_bytes": 64 * 1024, **buffer},
        }
    )
    return Agent(
        cfg,
        SimulatedPlatform("gw-unit"),
        AgentState(tmp_path / "state"),
        open_spool(cfg, tmp_path / "state"),
    )


def test_offline_samples_are_buffered_and_the_cap_drop_is_counted_exactly(tmp_path: Path) -> None:
    agent = make_agent(tmp_path)
    sizes = []
    for _ in range(300):  # ~600 B each: far more than 64 KiB
        sample = agent.sample()
        agent.publish_sample(sample)
        sizes.append(len(sample.model_dump_json()))
    kept = agent.spool.buffered
    assert agent.spool.dropped == 300 - kept
    assert sum(sizes[-kept:]) <= 64 * 1024 < sum(sizes[-kept - 1 :])  # the oldest went
    report = agent.sample()
    assert report.agent.buffered == kept
    assert report.agent.dropped == 300 - kept
    agent.spool.close()


def test_sigterm_path_keeps_everything_for_the_next_run(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, max_bytes=1 << 20)
    for _ in range(20):
        agent.publish_sample(agent.sample())
    agent.shutdown("test")
    again = make_agent(tmp_path, max_bytes=1 << 20)
    records = again.spool.take(100, 1 << 20)
    assert [r.seq for r in records] == list(range(20))
    batch = TelemetryBatch.model_validate_json(batch_payload("gw-unit", [r.data for r in records]))
    assert batch.historical
    assert batch.records[0].seq == 0
    assert again.sample().seq >= 1000  # a restart continues after the reserved block
    again.spool.close()


def test_once_touches_no_state_and_runs_no_recovery(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`once` is for debugging on a live gateway: an apply journal there must stay untouched."""
    state = tmp_path / "state"
    (state / "remote").mkdir(parents=True)
    journal = state / "remote" / "applying.json"
    journal.write_text('{"sections": ["wifi"], "hooked": ["wifi"], "versions": {"gw": 3}}')
    cfg = tmp_path / "agent.toml"
    cfg.write_text(
        f'[mqtt]\nhost = "x"\n[device]\nid = "gw-once"\n[state]\ndir = "{state}"\n'
        '[platform]\nkind = "simulated"\n'
    )
    assert main(["once", "--config", str(cfg), "--warmup", "0"]) == 0
    assert '"device": "gw-once"' in capsys.readouterr().out
    assert journal.exists()
    assert sorted(p.name for p in state.rglob("*")) == ["applying.json", "remote"]


def test_a_sample_reports_failed_writes_by_kind_and_nothing_when_all_is_well(
    tmp_path: Path,
) -> None:
    agent = make_agent(tmp_path)
    assert agent.sample().errors is None
    enospc = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    agent.state.faults.failed("state", "counters.json", enospc)
    agent.faults.failed("remote", "applying.json", enospc)
    agent.faults.ok("remote")
    errors = agent.sample().errors
    assert errors == {
        "write.state": "1 failed since start, still failing; last: ENOSPC: No space left on "
        "device (counters.json)",
        "write.remote": "1 failed since start, writing again; last: ENOSPC: No space left on "
        "device (applying.json)",
    }
    agent.spool.close()


def test_records_lost_with_a_damaged_buffer_file_count_as_dropped(tmp_path: Path) -> None:
    agent = make_agent(tmp_path, max_bytes=1 << 20)
    for _ in range(20):
        agent.publish_sample(agent.sample())
    agent.shutdown("test")
    (seg,) = (tmp_path / "state" / "buffer").glob("*.seg")
    os.truncate(seg, seg.stat().st_size - 40)  # cut inside the last record
    again = make_agent(tmp_path, max_bytes=1 << 20)
    assert again.spool.lost >= 1 and again.spool.corrupt == 1
    assert again.sample().agent.dropped == again.spool.dropped + again.spool.lost
    again.spool.close()


@pytest.mark.parametrize(
    ("topic", "why"),
    [
        ("ops/replies/#", "it contains a wildcard"),
        ("ops/+/x", "it contains a wildcard"),
        ("", "empty"),
        ("a\0b", "it contains a NUL character"),
        ("x" * 70000, "longer than 65535 bytes"),
        ("ops/\ud800", "not valid UTF-8"),
        ("ops/replies/42", None),
    ],
)
def test_response_topics_paho_would_raise_on_are_refused(topic: str, why: str | None) -> None:
    """paho raises ValueError publishing to these: the agent would have stopped."""
    assert bad_response_topic(topic) == why


def test_a_command_with_a_wildcard_response_topic_is_answered_on_cmd_result(
    tmp_path: Path,
) -> None:
    agent = make_agent(tmp_path)
    sent: list[str] = []

    def publish(topic: str, payload: bytes, **kw: object) -> int:
        paho_check = paho.Client(paho.CallbackAPIVersion.VERSION2)
        paho_check.publish(topic, payload)  # the real paho call: raises on a bad topic
        sent.append(topic)
        return len(sent)

    agent.link.publish = publish  # type: ignore[method-assign]
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = "ops/replies/#"
    msg = paho.MQTTMessage(topic=b"titik/gw/gw-unit/cmd")
    msg.payload = json.dumps(
        {"id": "c1", "name": "collect_now", "expires_at": time.time() + 60}
    ).encode()
    msg.properties = props
    agent.on_message(msg)
    agent.tick()
    assert "titik/gw/gw-unit/cmd/result" in sent
    assert "ops/replies/#" not in sent
    agent.spool.close()


def test_a_bug_handling_one_message_costs_that_message_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(tmp_path)

    def boom(*a: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(agent.remote, "on_desired", boom)
    msg = paho.MQTTMessage(topic=b"titik/gw/gw-unit/config/desired")
    msg.payload = b'{"version": 1, "config": {}}'
    agent.on_message(msg)
    agent.tick()  # does not raise
    assert any("internal error handling a message" in r.getMessage() for r in caplog.records)
    agent.spool.close()


def test_a_message_flood_drops_the_oldest_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    agent = make_agent(tmp_path)
    for i in range(300):
        msg = paho.MQTTMessage(topic=b"titik/gw/gw-unit/cmd")
        msg.payload = json.dumps({"id": f"c{i}"}).encode()
        agent.on_message(msg)
    assert agent.messages_waiting == 256
    assert agent.inbox_dropped == 44
    warnings = [r.getMessage() for r in caplog.records if "too many messages" in r.getMessage()]
    assert len(warnings) == 1
    agent.spool.close()


class MemoryLink:
    """A link.Link in memory: the port delivery uses, replaced as a test may (pure bookkeeping;
    the paho adapter itself is tested against a real Mosquitto in tests/integration)."""

    def __init__(self, cfg, client_id, events, subscriptions, clock):  # type: ignore[no-untyped-def]
        self.cfg, self.events, self.subscriptions = cfg, events, subscriptions
        self.connected = False
        self.sent: dict[int, tuple[str, bytes]] = {}
        self._mid = 0

    def publish(self, topic, payload, *, qos=1, retain=False, correlation=None):  # type: ignore[no-untyped-def]
        if not self.connected:
            return None
        self._mid += 1
        self.sent[self._mid] = (topic, payload)
        return self._mid

    def connect(self) -> None:
        self.events.before_connect()
        self.connected = True
        self.events.on_connected()

    def drop(self) -> None:
        self.connected = False
        self.events.on_disconnected()

    def step(self, timeout: float) -> None: ...
    def kick(self) -> None: ...
    def reconnect(self, cfg=None) -> None: ...  # type: ignore[no-untyped-def]

    def close(self) -> None:
        if self.connected:
            self.drop()


def test_the_link_is_a_port_a_test_can_replace(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "mqtt": {"host": "127.0.0.1", "port": 1},
            "device": {"id": "gw-port"},
            "platform": {"kind": "simulated", "root": str(tmp_path)},
            "state": {"dir": str(tmp_path / "state")},
        }
    )
    agent = Agent(
        cfg,
        SimulatedPlatform("gw-port"),
        AgentState(tmp_path / "state"),
        open_spool(cfg, tmp_path / "state"),
        link_factory=MemoryLink,
    )
    link = agent.link
    assert isinstance(link, MemoryLink)
    assert "titik/gw/gw-port/config/desired" in link.subscriptions
    link.connect()
    topic = link.sent[1][0]
    assert topic == "titik/gw/gw-port/status"
    agent.tick()  # the first sample is due at once
    mid, (topic, _payload) = max(link.sent.items())
    assert topic == "titik/gw/gw-port/telemetry"
    assert agent.spool.buffered == 1  # in flight until its PUBACK
    agent.on_ack(mid)
    assert agent.spool.buffered == 0 and agent.counts.acked == 1
    agent.publish_sample(agent.sample())
    link.drop()  # unacked: handed back to the spool, replayed after the next CONNACK
    assert agent.spool.pending == 1
    agent.shutdown()
