"""docs/protocol.md embeds JSON Schema generated from agent.protocol; they must not drift."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from agent import protocol
from agent.protocol import Topics

ROOT = Path(__file__).resolve().parents[2]


def _gen() -> object:
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts/gen_protocol_docs.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_docs_match_the_models() -> None:
    gen = _gen()
    text = (ROOT / "docs/protocol.md").read_text()
    assert gen.render(text) == text, "docs/protocol.md is stale: run scripts/gen_protocol_docs.py"  # type: ignore[attr-defined]


def test_remote_config_schema_is_published_and_current() -> None:
    gen = _gen()
    published = (ROOT / "docs/remote-config.schema.json").read_text()
    assert gen.remote_schema() == published, "run scripts/gen_protocol_docs.py"  # type: ignore[attr-defined]


def test_every_wire_model_is_documented() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    documented = set(re.findall(r"<!-- schema:(\w+) -->", text))
    assert {
        "Telemetry",
        "TelemetryBatch",
        "Status",
        "ConfigDesired",
        "ConfigReported",
    } <= documented
    assert "<!-- bounds -->\n| model | field | accepted |" in text
    assert "| Telemetry | `seq` | JSON integer, 0 to 2^53 - 1 |" in text
    for name in documented:
        assert hasattr(protocol, name)


def test_every_topic_is_documented() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    t = Topics("{prefix}", "{id}")
    for topic in (
        t.telemetry,
        t.telemetry_batch,
        t.status,
        t.config_desired,
        t.config_reported,
        t.cmd,
        t.cmd_result,
        t.service,
        t.group_config_desired("{group}"),
        t.group_cmd("{group}"),
    ):
        assert f"`{topic}`" in text


def test_batch_payload_is_a_valid_batch() -> None:
    from agent.protocol import AgentInfo, Telemetry, TelemetryBatch, batch_payload, encode

    recs = [
        Telemetry(device="gw-1", seq=i, boot=1, sid="s", ts=1.0 + i, agent=AgentInfo(version="x"))
        for i in range(3)
    ]
    batch = TelemetryBatch.model_validate_json(batch_payload("gw-1", [encode(r) for r in recs]))
    assert batch.historical
    assert [r.seq for r in batch.records] == [0, 1, 2]
