"""Central has no atomic-write code of its own (issue 17, point 5): it writes through
agent.protocol.atomicfile, the agent's helper, the one place that does temp file, fsync,
rename and directory fsync. (The agent's spool keeps its own segment store, docs/spool.md.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RENAMES = {("os", "replace"), ("os", "rename"), ("tempfile", "mkstemp")}


def renames_in(path: Path) -> list[int]:
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in RENAMES
    ]


def test_central_writes_files_only_through_the_one_helper() -> None:
    found = {
        str(p.relative_to(ROOT)): lines
        for p in sorted((ROOT / "central").rglob("*.py"))
        if (lines := renames_in(p))
    }
    assert not found, f"use agent.protocol.atomicfile.write_atomic: {found}"


def test_the_check_sees_the_helper_itself() -> None:
    assert renames_in(ROOT / "agent" / "protocol" / "atomicfile.py")
