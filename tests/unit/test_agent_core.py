"""The agent's own bookkeeping, without a broker: the link is never connected here."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import main
from agent.config import parse_config
from agent.core import Agent, open_spool
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
        agent._publish_sample(sample)
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
        agent._publish_sample(agent.sample())
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
