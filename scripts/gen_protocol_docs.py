"""Regenerate the JSON Schema blocks in docs/protocol.md from the wire models.

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
BLOCK = re.compile(r"(<!-- schema:(\w+) -->\n)(.*?)(<!-- /schema -->)", re.DOTALL)


def schema_block(name: str) -> str:
    model = getattr(protocol, name)
    schema = model.model_json_schema(mode="serialization")
    return "```json\n" + json.dumps(schema, indent=2, ensure_ascii=False) + "\n```\n"


def render(text: str) -> str:
    return BLOCK.sub(lambda m: m.group(1) + schema_block(m.group(2)) + m.group(4), text)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the docs are stale")
    args = ap.parse_args()
    text = DOC.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print("docs/protocol.md is stale: run scripts/gen_protocol_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"updated {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
