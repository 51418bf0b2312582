"""Topics are spelled only in agent/protocol/topics.py (issue 17, point 2).

Every string literal of the product code (agent/, central/, scripts/, bench/), f-string parts
included and docstrings excluded, is checked for something that can only be part of a topic:
a ``/gw/`` or ``/group/`` level, a two-level leaf (``config/desired``, ``telemetry/batch``,
``cmd/result`` ...), a shared subscription, or a string ending in a gateway leaf. A module
that builds a topic by hand fails here and names the line; it should call
``agent.protocol.topics`` instead.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL = ROOT / "agent" / "protocol" / "topics.py"
SCANNED = ("agent", "central", "scripts", "bench")

TOPIC_LIKE = re.compile(
    r"/(gw|group|ctl)/"  # a level after the prefix
    r"|^(gw|group)/[+%{]"  # a wildcard or pattern where a device or group goes
    r"|(config/(desired|reported)|telemetry/batch|cmd/result)"  # a two-level leaf
    r"|\$share/"  # a shared subscription
    r"|^/(telemetry|status|cmd)$"  # a leaf appended to a base topic
)


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def topic_literals(path: Path) -> list[tuple[int, str]]:
    """``(line, literal)`` of every string literal in ``path`` that looks like a topic."""
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and TOPIC_LIKE.search(node.value)
        ):
            found.append((node.lineno, node.value))
    return found


def product_modules() -> list[Path]:
    return sorted(
        p
        for top in SCANNED
        for p in (ROOT / top).rglob("*.py")
        if p != PROTOCOL and "__pycache__" not in p.parts
    )


def test_no_module_but_the_protocol_spells_a_topic() -> None:
    offenders = [
        f"{p.relative_to(ROOT)}:{line}: {text!r}"
        for p in product_modules()
        for line, text in topic_literals(p)
    ]
    assert not offenders, "topics spelled outside agent/protocol/topics.py:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize(
    "source",
    [
        'T = f"{prefix}/gw/{device}/telemetry"',
        'T = prefix + "/group/" + g + "/cmd"',
        'T = "titik/gw/+/status"',
        'T = f"{base}/status"',
        'T = ("config/reported", 1)',
        'T = f"$share/{g}/x"',
        'T = f"{p}/ctl/{user}/#"',
    ],
)
def test_the_check_catches_a_hand_built_topic(tmp_path: Path, source: str) -> None:
    # The check itself must fail on the ways topics were spelled before issue 17.
    mod = tmp_path / "m.py"
    mod.write_text(source + "\n")
    assert topic_literals(mod), source


def test_the_check_reads_the_protocol_module() -> None:
    # The one place topics are spelled is found by the same rule (so the rule is not blind).
    assert topic_literals(PROTOCOL)
