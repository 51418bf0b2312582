"""No two classes of the product share a name (issue 17, point 6): a reader who meets
``Fleet`` or ``Link`` must know which one it is without looking at the import."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def class_names() -> dict[str, list[str]]:
    found: dict[str, list[str]] = defaultdict(list)
    for top in ("agent", "central"):
        for path in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ClassDef):
                    found[node.name].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_no_two_classes_share_a_name() -> None:
    dupes = {name: where for name, where in class_names().items() if len(where) > 1}
    assert not dupes, "rename so each name says what it is: " + repr(dupes)


def test_the_renamed_ones_stay_renamed() -> None:
    # Three classes were named Fleet, and titik-ctl had a Link beside the agent's MQTT link.
    names = class_names()
    assert "Fleet" not in names
    assert {"FleetState", "RetainedFleet", "SimulatedFleet", "BrokerSession"} <= set(names)
