"""Hostile input and failing flash against a real Mosquitto and a real agent process (issue 16).

- Garbage (hypothesis: arbitrary bytes and JSON) on every topic the agent subscribes to,
  through the broker: the process stays up, every refusal is named, and a valid document or
  command sent after the garbage is still applied or run.
- The state directory on a real tmpfs that fills up (ENOSPC), and on a real ext4 whose
  device fails (EIO; tests/faultfs.py): a desired config or a command that arrives then
  costs no crash and no sample, says why, and goes through once the disk is back.
- Reconnect attempts during an outage do not write the state file each time.
"""

from __future__ import annotations

import json
import queue
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.protocol import WIRE_INT_MAX, Telemetry, TelemetryBatch
from agent.remote.desired import peek_version
from agent.state import BOOT_BLOCK, STATE_FILE
from tests.agentproc import AgentProcess
from tests.broker import Broker, Message, Subscriber, wait_until
from tests.faultfs import failing_ext4, full_tmpfs
from tests.integration.test_remote import (
    BASE,
    CMD,
    DESIRED,
    GROUP_DESIRED,
    REPORTED,
    RESULT,
    SSID,
    Ops,
    agent_config,
)
from tests.unit.test_inbound_fuzz import (
    NAMED,
    command_like,
    desired_like,
    numbers_fit,
    payloads,
)

pytestmark = pytest.mark.broker

GROUP_CMD = "titik/group/test/cmd"
TELEMETRY = f"{BASE}/telemetry"
BATCH = f"{BASE}/telemetry/batch"


@pytest.fixture
def ops(broker: Broker) -> Iterator[Ops]:
    o = Ops(broker)
    yield o
    o.close()


def online(ops: Ops, timeout: float = 20) -> dict[str, Any]:
    return dict(
        ops.sub.next(lambda m: m.topic.endswith("/status") and m.json()["online"], timeout).json()
    )


def test_garbage_on_every_topic_through_a_real_broker(
    broker: Broker, tmp_path: Path, ops: Ops
) -> None:
    agent = AgentProcess(agent_config(tmp_path, broker))
    try:
        online(ops)
        top = [0]  # the highest version the agent may have seen per desired topic
        tops = {DESIRED: 0, GROUP_DESIRED: 0}

        @settings(max_examples=25, deadline=None, database=None)
        @given(
            topic=st.sampled_from([DESIRED, GROUP_DESIRED, CMD, GROUP_CMD]),
            garbage=st.lists(payloads(desired_like | command_like), min_size=1, max_size=3),
        )
        def one(topic: str, garbage: list[bytes]) -> None:
            desired = topic in tops
            for payload in garbage:
                ops.pub.publish(topic, payload, qos=1, retain=desired).wait_for_publish(5)
                v = peek_version(payload)
                if desired and v is not None:
                    tops[topic] = max(tops[topic], v)
            mark = len(ops.sub.seen)
            if desired:
                if tops[topic] >= WIRE_INT_MAX:
                    return
                tops[topic] += 1
                top[0] += 1
                ops.send(
                    topic,
                    {"version": tops[topic], "config": {"telemetry": {"interval_s": 5 + top[0]}}},
                    retain=True,
                )
                source = "gw" if topic == DESIRED else "group/test"
                ops.report(
                    lambda r: r["state"] == "applied" and r["versions"].get(source) == tops[topic],
                    timeout=30,
                )
            else:
                res = ops.command("collect_now")
                assert res["ok"], res
            assert agent.proc.poll() is None, agent.output()[-2000:]
            for m in ops.sub.seen[mark:]:
                body = m.json()
                assert numbers_fit(body), body
                if m.topic == REPORTED and body["state"] in ("rejected", "rolled_back"):
                    assert NAMED.match(body["error"]), body
                if m.topic == RESULT and not body["ok"]:
                    assert NAMED.match(body["error"]), body
                if m.topic.endswith("/status"):
                    assert body["online"], body  # never went down

        one()
        assert "Traceback" not in agent.output()
    finally:
        agent.stop()


def samples_of(messages: list[Message]) -> list[Telemetry]:
    """Live samples and replayed ones (batches), as a consumer stores them."""
    out = []
    for msg in messages:
        if msg.topic == TELEMETRY:
            out.append(Telemetry.model_validate_json(msg.payload))
        elif msg.topic == BATCH:
            out += TelemetryBatch.model_validate_json(msg.payload).records
    return out


def drain(sub: Subscriber) -> list[Message]:
    while True:
        try:
            sub.seen.append(sub.messages.get_nowait())
        except queue.Empty:
            return sub.seen


def wait_sample(sub: Subscriber, pred: Any, timeout: float = 20) -> Telemetry:
    m: Message = sub.next(
        lambda m: m.topic == TELEMETRY and pred(Telemetry.model_validate_json(m.payload)),
        timeout,
    )
    return Telemetry.model_validate_json(m.payload)


def test_a_desired_config_while_the_state_disk_is_full(
    broker: Broker, tmp_path: Path, ops: Ops
) -> None:
    """Issue 16: the journal write raised ENOSPC and the agent died, losing the samples in
    RAM, and crash-looped while the document stayed retained. Here the state directory is a
    real 256 KiB tmpfs, filled up while the agent runs."""
    samples = Subscriber(broker, TELEMETRY, BATCH, client_id="samples")
    with full_tmpfs(tmp_path / "state") as fs:
        cfg = agent_config(tmp_path, broker)
        cfg.write_text(cfg.read_text().replace("interval_s = 1.0", "interval_s = 0.2"))
        agent = AgentProcess(cfg)
        try:
            online(ops)
            first = wait_sample(samples, lambda s: True)
            fs.fill()
            ops.desire(1, SSID)
            rep = ops.report(lambda r: r["version"] == 1)
            assert rep["state"] == "rejected"
            assert rep["error"].startswith("(state): cannot write applying.json (ENOSPC")
            flagged = wait_sample(samples, lambda s: "write.remote" in (s.errors or {}))
            assert "ENOSPC" in (flagged.errors or {})["write.remote"]
            # A restart while the document is still retained and the disk still full: no loop.
            agent.signal(signal.SIGTERM)
            assert agent.wait(10) == 0
            agent.stop()
            agent = AgentProcess(cfg)
            online(ops)
            rep = ops.report(lambda r: r["version"] == 1)
            assert rep["state"] == "rejected"
            assert agent.proc.poll() is None
            fs.free()
            rep = ops.report(lambda r: r["version"] == 1, timeout=60)  # retried by itself
            assert rep["state"] == "applied", rep
            last = wait_sample(samples, lambda s: True)
            # What the second run took before it connected is replayed (jitter <= 10 s).
            wait_until(lambda: 1000 in {t.seq for t in samples_of(drain(samples))}, 30, "seq 1000")
            assert agent.proc.poll() is None
            assert "Traceback" not in agent.output()
        finally:
            agent.stop()
            samples.close()
    seen = samples_of(drain(samples))
    by_sid: dict[str, set[int]] = {}
    for t in seen:
        by_sid.setdefault(t.sid, set()).add(t.seq)
    # Run 1: one lifetime, every sample arrived (SIGTERM found nothing unacked to lose).
    run1 = sorted(by_sid.pop(first.sid))
    assert run1 == list(range(run1[0], run1[-1] + 1))
    # Run 2 started on a full disk: its first seq reservation could not be written, so it
    # numbers under a new sid (the architecture's promise: never a repeat), from 1000.
    assert list(by_sid) == [last.sid] != [first.sid]
    run2 = sorted(by_sid[last.sid])
    assert run2 == list(range(1000, run2[-1] + 1))


def test_failing_flash_eio(broker: Broker, tmp_path: Path, ops: Ops) -> None:
    """A real EIO: the state directory's ext4 loses the tail of its device while the agent
    runs. A config cannot be journalled, a command that changes something cannot have its
    id saved: both are refused, saying EIO; a harmless command runs; samples keep coming
    and report the failed writes."""
    samples = Subscriber(broker, TELEMETRY, client_id="samples")
    with failing_ext4(tmp_path / "state", tmp_path / "state.img") as fs:
        agent = AgentProcess(agent_config(tmp_path, broker))
        try:
            online(ops)
            assert ops.command("collect_now")["ok"]
            fs.fail()
            ops.desire(1, SSID)
            rep = ops.report(lambda r: r["version"] == 1)
            assert rep["state"] == "rejected"
            assert "EIO" in rep["error"]
            res = ops.command("restart_wifi")
            assert not res["ok"]
            assert res["error"].startswith("(state): cannot save the command id")
            assert "EIO" in res["error"]
            assert ops.command("get_config")["ok"]
            flagged = wait_sample(samples, lambda s: "write.commands" in (s.errors or {}))
            assert "EIO" in (flagged.errors or {})["write.remote"]
            assert agent.proc.poll() is None
        finally:
            agent.stop()
            samples.close()


def test_reconnect_attempts_do_not_write_the_state_each_time(
    stopped_broker: Broker, tmp_path: Path
) -> None:
    """Issue 16: boot 23 after 10 s offline meant 23 writes and fsyncs of counters.json."""
    agent = AgentProcess(agent_config(tmp_path, stopped_broker))
    state = tmp_path / "state" / STATE_FILE
    inodes: set[int] = set()

    def retried(n: int) -> bool:
        if state.exists():
            inodes.add(state.stat().st_ino)  # every atomic write is a new inode
        return agent.output().count("; retry ") >= n

    try:
        wait_until(lambda: retried(10), 30, "ten failed connection attempts")
        stopped_broker.start()
        ops = Ops(stopped_broker)
        try:
            status = online(ops)
        finally:
            ops.close()
    finally:
        agent.stop()
    assert status["boot"] >= 10, status  # that many connection attempts
    assert json.loads(state.read_bytes())["boot"] == BOOT_BLOCK  # one reservation
    assert len(inodes) <= 2  # the seq and the boot reservation, not one write per attempt
