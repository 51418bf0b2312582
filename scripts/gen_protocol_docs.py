"""Regenerate the JSON Schema in docs/ from the models (protocol.md, remote-config.schema.json).

Usage: .venv/bin/python scripts/gen_protocol_docs.py [--check]
A block is ``<!-- schema:Name -->`` ... ``<!-- /schema -->``; Name is a model in agent.protocol,
or ``module.Name`` for one of a module of agent.protocol that its ``__init__`` does not import
(``upgrade.Manifest``: the gateway imports it only when an upgrade comes).
``<!-- bounds -->`` ... ``<!-- /bounds -->`` is a table of every number the models accept.
tests/unit/test_protocol_docs.py fails when the docs drift from the models.
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import protocol

DOC = ROOT / "docs" / "protocol.md"
REMOTE_SCHEMA = ROOT / "docs" / "remote-config.schema.json"
BLOCK = re.compile(r"(<!-- schema:([\w.]+) -->\n)(.*?)(<!-- /schema -->)", re.DOTALL)


def schema_block(name: str) -> str:
    module, _, attr = name.rpartition(".")
    where = importlib.import_module(f"agent.protocol.{module}") if module else protocol
    model = getattr(where, attr)
    # Validation mode: what a receiver accepts (bounds included). Serialization mode would
    # lose Telemetry's fields behind its wrap serializer.
    schema = model.model_json_schema(mode="validation")
    return "```json\n" + json.dumps(schema, indent=2, ensure_ascii=False) + "\n```\n"


def remote_schema() -> str:
    from agent.protocol.remote_schema import RemoteConfig

    schema = RemoteConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Titik remote config (the config member of a desired document)"
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


#: The models whose numbers the bounds table lists, in the order of the page.
BOUNDED = ("Telemetry", "TelemetryBatch", "Status", "ConfigDesired", "ConfigReported")
BOUNDS = re.compile(r"(<!-- bounds -->\n)(.*?)(<!-- /bounds -->)", re.DOTALL)


def _numbers(schema: dict[str, Any], defs: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """``(path, range)`` of every number and integer under ``schema``."""
    if "$ref" in schema:
        return _numbers(defs[schema["$ref"].split("/")[-1]], defs, path)
    out: list[tuple[str, str]] = []
    for alt in schema.get("anyOf", []):
        out += _numbers(alt, defs, path)
    kind = schema.get("type")
    if kind in ("integer", "number"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        word = "JSON integer" if kind == "integer" else "finite number"
        if lo is not None and hi is not None:
            span = f", {_num(lo)} to {_num(hi)}"
        elif lo is not None:
            span = f", {_num(lo)} or more"
        else:
            span = ""
        out.append((path, word + span))
    for name, sub in schema.get("properties", {}).items():
        out += _numbers(sub, defs, f"{path}.{name}" if path else name)
    if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
        out += _numbers(schema["additionalProperties"], defs, f"{path}.<name>")
    if kind == "array" and isinstance(schema.get("items"), dict):
        out += _numbers(schema["items"], defs, f"{path}[]")
    return out


def _num(x: float) -> str:
    if x == protocol.WIRE_INT_MAX:
        return "2^53 - 1"
    if float(x).is_integer():
        return f"{int(x):,}"
    return f"{x:g}"


def bounds_block() -> str:
    rows = ["| model | field | accepted |", "| --- | --- | --- |"]
    for name in BOUNDED:
        schema = getattr(protocol, name).model_json_schema(mode="validation")
        if name == "TelemetryBatch":  # its records are Telemetry, listed above
            schema = {
                **schema,
                "properties": {k: v for k, v in schema["properties"].items() if k != "records"},
            }
        seen: set[str] = set()
        for path, span in _numbers(schema, schema.get("$defs", {}), ""):
            if path not in seen:
                seen.add(path)
                rows.append(f"| {name} | `{path}` | {span} |")
    return "\n".join(rows) + "\n"


def render(text: str) -> str:
    text = BLOCK.sub(lambda m: m.group(1) + schema_block(m.group(2)) + m.group(4), text)
    return BOUNDS.sub(lambda m: m.group(1) + bounds_block() + m.group(3), text)


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
