"""Store-and-forward against a real Mosquitto: outages, broker restarts, kill -9, SIGTERM.

The test subscriber holds a persistent session on a persistent broker, so it misses nothing
across broker restarts, and de-duplicates on (device, seq) as a consumer would.
"""

from __future__ import annotations

import json
import queue
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol import Telemetry, TelemetryBatch
from agent.spool import Spool
from tests.agentproc import AgentProcess, write_config
from tests.broker import Broker, Subscriber, wait_until

pytestmark = [pytest.mark.broker, pytest.mark.slow]

DEV = "gw-test01"
BUFFER = """
[buffer]
flush_interval_s = 0.3
grace_s = 0.3
replay_jitter_s = 0.5
replay_rate = {rate}
batch_records = {batch}
"""


class Tracker:
    """Everything the consumer saw, split into live and historical streams."""

    def __init__(self, sub: Subscriber) -> None:
        self.sub = sub
        self.live: list[int] = []
        self.hist: list[int] = []

    def pump(self) -> None:
        while True:
            try:
                msg = self.sub.messages.get_nowait()
            except queue.Empty:
                return
            if msg.topic.endswith("/telemetry/batch"):
                batch = TelemetryBatch.model_validate_json(msg.payload)
                assert batch.historical
                assert batch.device == DEV
                self.hist += [r.seq for r in batch.records]
            else:
                sample = Telemetry.model_validate_json(msg.payload)
                assert sample.device == DEV
                self.live.append(sample.seq)

    @property
    def seen(self) -> set[int]:
        self.pump()
        return set(self.live) | set(self.hist)

    @property
    def historical(self) -> set[int]:
        self.pump()
        return set(self.hist)

    def wait_for(self, seqs: set[int], timeout: float = 30) -> None:
        wait_until(lambda: seqs <= self.seen, timeout, f"{len(seqs - self.seen)} missing seqs")

    def wait_count(self, n: int, timeout: float = 30) -> None:
        wait_until(lambda: len(self.seen) >= n, timeout, f"{n} samples")

    def assert_in_order(self) -> None:
        """Each stream is in seq order once duplicates (at-least-once) are set aside."""
        for stream in (self.live, self.hist):
            firsts = list(dict.fromkeys(stream))
            assert firsts == sorted(firsts)


@pytest.fixture
def pbroker(tmp_path: Path) -> Iterator[Broker]:
    (tmp_path / "broker").mkdir()
    b = Broker(tmp_path / "broker", persistence=True)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def tracker(pbroker: Broker) -> Iterator[Tracker]:
    sub = Subscriber(
        pbroker,
        f"titik/gw/{DEV}/telemetry",
        f"titik/gw/{DEV}/telemetry/batch",
        client_id="consumer",
        persistent=True,
    )
    try:
        yield Tracker(sub)
    finally:
        sub.close()


def start_agent(tmp_path: Path, broker: Broker, rate: float = 500, batch: int = 20) -> AgentProcess:
    cfg = write_config(
        tmp_path / "agent.toml", broker, interval=0.05, extra=BUFFER.format(rate=rate, batch=batch)
    )
    return AgentProcess(cfg)


def on_disk(tmp_path: Path) -> set[int]:
    """What the agent had written to its buffer (read from a copy, as a stopped agent left it)."""
    copy = tmp_path / "buffer-copy"
    shutil.copytree(tmp_path / "state" / "buffer", copy)
    spool = Spool(copy)
    seqs = {r.seq for r in spool.take(10**6, 1 << 30)}
    spool.close()
    shutil.rmtree(copy)
    return seqs


def outage(broker: Broker, agent: AgentProcess, seconds: float) -> None:
    broker.stop()
    time.sleep(seconds)  # the outage itself, not a synchronisation
    assert agent.proc.poll() is None, agent.output()


def test_outage_then_restart_loses_nothing(
    pbroker: Broker, tracker: Tracker, tmp_path: Path
) -> None:
    agent = start_agent(tmp_path, pbroker)
    try:
        tracker.wait_count(5)
        outage(pbroker, agent, 3)  # ~60 samples while the broker is down
        pbroker.start()
        top = max(tracker.seen) + 80
        tracker.wait_for(set(range(min(tracker.seen), top)))
        agent.signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    finally:
        agent.stop()
    assert len(tracker.hist) >= 40, "the outage's samples came back as historical batches"
    tracker.assert_in_order()


def test_broker_restarted_twice_during_replay(
    pbroker: Broker, tracker: Tracker, tmp_path: Path
) -> None:
    agent = start_agent(tmp_path, pbroker, rate=40, batch=5)  # slow replay: ~3 s for 100
    try:
        tracker.wait_count(5)
        first = min(tracker.seen)
        outage(pbroker, agent, 5)  # ~100 samples
        pbroker.start()
        wait_until(lambda: len(tracker.historical) >= 10, 20, "replay to start")
        pbroker.restart()
        wait_until(lambda: len(tracker.historical) >= 40, 20, "replay to resume")
        pbroker.restart()
        top = max(tracker.seen) + 40
        tracker.wait_for(set(range(first, top)), timeout=60)
    finally:
        agent.stop()
    tracker.assert_in_order()


def test_kill_9_while_offline_keeps_every_flushed_record(
    pbroker: Broker, tracker: Tracker, tmp_path: Path
) -> None:
    agent = start_agent(tmp_path, pbroker)
    try:
        tracker.wait_count(5)
        outage(pbroker, agent, 2)
        agent.signal(signal.SIGKILL)
        agent.wait(5)
    finally:
        agent.stop()
    flushed = on_disk(tmp_path)
    assert len(flushed) >= 20
    # Only the tail (at most one flush interval) may be missing: nothing before it.
    assert set(range(min(tracker.seen), max(flushed) + 1)) <= tracker.seen | flushed
    pbroker.start()
    agent = start_agent(tmp_path, pbroker)
    try:
        tracker.wait_for(flushed)
    finally:
        agent.stop()


def test_sigterm_while_offline_loses_nothing(
    pbroker: Broker, tracker: Tracker, tmp_path: Path
) -> None:
    agent = start_agent(tmp_path, pbroker)
    try:
        tracker.wait_count(5)
        first = min(tracker.seen)
        outage(pbroker, agent, 2)
        agent.signal(signal.SIGTERM)
        assert agent.wait(5) == 0, agent.output()
    finally:
        agent.stop()
    kept = on_disk(tmp_path)
    last = max(kept)
    everything = set(range(first, last + 1))
    assert everything <= tracker.seen | kept  # nothing lost between the first and last sample
    pbroker.start()
    agent = start_agent(tmp_path, pbroker)
    try:
        tracker.wait_for(everything)
        agent.signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    finally:
        agent.stop()
    assert "buffered samples to replay" in agent.output()
    assert json.loads((tmp_path / "state" / "counters.json").read_text())["boot"] >= 2


def test_kick_reconnects_and_drains_at_once(stopped_broker: Broker, tmp_path: Path) -> None:
    """With a long backoff and a long replay jitter, only the kick can explain a fast drain."""
    cfg = write_config(
        tmp_path / "agent.toml",
        stopped_broker,
        interval=0.1,
        extra="[buffer]\nreplay_jitter_s = 600\nflush_interval_s = 0.5\n",
    )
    text = cfg.read_text().replace("reconnect_min_s = 0.1", "reconnect_min_s = 120")
    cfg.write_text(text.replace("reconnect_max_s = 0.5", "reconnect_max_s = 600"))
    agent = AgentProcess(cfg)
    try:
        wait_until(lambda: "retry 1 in" in agent.output(), 10, "the first failed attempt")
        wait_until(lambda: (tmp_path / "state" / "counters.json").exists(), 10, "state")
        stopped_broker.start()
        sub = Subscriber(stopped_broker, f"titik/gw/{DEV}/telemetry/batch", client_id="c")
        try:
            kick = subprocess.run(
                [sys.executable, "-m", "agent", "kick", "--config", str(cfg)],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert kick.returncode == 0, kick.stderr
            batch = TelemetryBatch.model_validate_json(sub.next(timeout=10).payload)
        finally:
            sub.close()
    finally:
        agent.stop()
    assert batch.historical
    assert batch.records[0].seq == 0  # oldest first: the samples taken while offline


def test_kick_without_a_running_agent_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[mqtt]\nhost = "localhost"\n[state]\ndir = "{tmp_path}"\n')
    res = subprocess.run(
        [sys.executable, "-m", "agent", "kick", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert res.returncode == 1
    assert "no running agent" in res.stderr
