"""central.entry: the central extra it checks is pyproject's, and the pip command it suggests."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest

from central import entry

ROOT = Path(__file__).resolve().parents[2]


def test_the_checked_extra_is_pyprojects() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [re.match(r"[A-Za-z0-9._-]+", r)[0] for r in extras["optional-dependencies"]["central"]]  # type: ignore[index]
    assert sorted(names) == sorted(entry.CENTRAL_EXTRA)
    scripts = extras["scripts"]
    assert scripts["titik-central"] == "central.entry:central"
    assert scripts["titik-ctl"] == "central.entry:ctl"
    assert scripts["titik-sim"] == "central.entry:sim"


class FakeDist:
    def __init__(self, direct_url: dict[str, object] | None) -> None:
        self.text = None if direct_url is None else json.dumps(direct_url)

    def read_text(self, name: str) -> str | None:
        assert name == "direct_url.json"
        return self.text


@pytest.mark.parametrize(
    ("direct_url", "tail"),
    [
        (None, "'titik[central]'"),  # from an index
        ({"url": "file:///srv/titik", "dir_info": {}}, "'/srv/titik[central]'"),
        (
            {"url": "file:///home/ops/my%20titik", "dir_info": {"editable": True}},
            "-e '/home/ops/my titik[central]'",
        ),
        (
            {"url": "file:///tmp/titik-0.1.0-py3-none-any.whl", "archive_info": {}},
            "'/tmp/titik-0.1.0-py3-none-any.whl[central]'",
        ),
        ({"url": "https://example.org/titik.tar.gz", "archive_info": {}}, "'titik[central]'"),
    ],
)
def test_install_command_follows_where_titik_came_from(
    monkeypatch: pytest.MonkeyPatch, direct_url: dict[str, object] | None, tail: str
) -> None:
    monkeypatch.setattr(entry, "distribution", lambda name: FakeDist(direct_url))
    assert entry.install_command() == f"{sys.executable} -m pip install {tail}"


def test_missing_extra_stops_before_importing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(entry, "missing_extra", lambda: ["uvicorn"])
    monkeypatch.setattr(entry.importlib, "import_module", lambda m: pytest.fail(f"imported {m}"))
    assert entry.sim() == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("titik-sim: needs titik's central extra (uvicorn not installed); ")


def test_with_the_extra_the_tool_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["titik-ctl", "--help"])
    with pytest.raises(SystemExit) as exc:
        # argparse's --help exits 0 from inside titik-ctl's main (or it returns 0).
        sys.exit(entry.ctl())
    assert exc.value.code == 0
