"""Regenerate the JSON Schema in docs/ from the models (protocol.md, remote-config.schema.json).

Usage: .venv/bin/python scripts/gen_protocol_docs.py [--check]
A block is ``<!-- schema:Name -->`` ... ``<!-- /schema -->``; Name is a model in agent.protocol.
tests/unit/test_protocol_docs.py fails when the docs drift from the models.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import protocol

DOC = ROOT / "docs" / "protocol.md"
REMOTE_SCHEMA = ROOT / "docs" / "remote-config.schema.json"
BLOCK = re.compile(r"(<!-- schema:(\w+) -->\n)(.*?)(<!-- /schema -->)", re.DOTALL)


def schema_block(name: str) -> str:
    model = getattr(protocol, name)
    # Validation mode: what a receiver accepts (bounds included). Serialization mode would
    # lose Telemetry's fields behind its wrap serializer.
    schema = model.model_json_schema(mode="validation")
    return "```json\n" + json.dumps(schema, indent=2, ensure_ascii=False) + "\n```\n"


def remote_schema() -> str:
    from agent.remote.schema import RemoteConfig

    schema = RemoteConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Titik remote config (the config member of a desired document)"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + schema_block(m.group(2)) + m.group(4), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the docs are stale")
    args = ap.parse_args()
    text = DOC.read_text()
    new = render(text)
    schema = remote_schema()
    stale = new != text or not REMOTE_SCHEMA.exists() or REMOTE_SCHEMA.read_text() != schema
    if args.check:
        if stale:
            print("docs are stale: run scripts/gen_protocol_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    REMOTE_SCHEMA.write_text(schema)
    print(f"updated {DOC} and {REMOTE_SCHEMA}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
