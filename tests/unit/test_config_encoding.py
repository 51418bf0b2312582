"""An agent.toml that is not UTF-8 (issue 16): exit 2 with a clear message, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


def test_a_latin1_config_names_the_byte_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes('[mqtt]\nhost = "broker"\n[device]\nsite = "Café"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as exc:
        load_config(path, environ={})
    assert str(exc.value) == (
        f"{path}: not UTF-8 text (byte 0xe9 on line 4); TOML files must be UTF-8: "
        "save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
    )


@pytest.mark.parametrize("command", [["check-config"], ["run", "--config"]])
def test_the_cli_exits_2_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[mqtt]\nhost = "\xff\xfe"\n')
    res = subprocess.run(
        [sys.executable, "-m", "agent", *command, str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "not UTF-8 text (byte 0xff on line 2)" in res.stderr
