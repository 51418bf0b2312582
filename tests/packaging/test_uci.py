"""packaging/openwrt/uci2toml: /etc/config/titik becomes a valid agent.toml, under ash and dash."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from agent.config import parse_config
from tests.packaging.conftest import ROOT

FUNCTIONS_SH = r"""
# A stand-in for OpenWrt's /lib/functions.sh: config_load evaluates the UCI file with the
# same callbacks (config_cb, option_cb, list_cb) as the real one.
config() { config_cb "$1" "$2"; }
option() { n=$1; shift; option_cb "$n" "$*"; }
list() { list_cb "$1" "$2"; }
config_load() { . "$IPKG_INSTROOT/etc/config/$1"; }
"""

UCI = """
config service 'service'
	option enabled '1'

config device 'device'
	option id 'gw-test'
	option site 'Pole "14", Jl. Thamrin'
	option lat '-6.19'
	list groups 'jakarta-pusat'
	list groups 'rollout-2026'

config mqtt 'mqtt'
	option host 'broker.example.net'
	option port '8883'
	option protocol '5'
	option password 'p\\a"ss'

config mqtt_tls 'mqtt_tls'
	option ca '/etc/titik/ca.pem'

config security 'security'
	list trusted_keys 'ed25519:49OKRFL7LLJ1YYkIgmXwiqtpIfhheqXw0oFNEAGDCO0='
	option require_signature '1'
"""


@pytest.mark.parametrize("shell", ["busybox sh", "dash"])
def test_uci_renders_to_a_valid_agent_config(tmp_path: Path, shell: str) -> None:
    if not shutil.which(shell.split()[0]):
        pytest.skip(f"{shell} not installed")
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/functions.sh").write_text(FUNCTIONS_SH)
    (tmp_path / "etc/config").mkdir(parents=True)
    (tmp_path / "etc/config/titik").write_text(UCI)
    res = subprocess.run(
        [*shell.split(), str(ROOT / "packaging/openwrt/uci2toml")],
        env={"IPKG_INSTROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    cfg = parse_config(tomllib.loads(res.stdout), {})
    assert cfg.device.id == "gw-test"
    assert cfg.device.site == 'Pole "14", Jl. Thamrin'
    assert list(cfg.device.groups) == ["jakarta-pusat", "rollout-2026"]
    assert cfg.mqtt.port == 8883
    assert cfg.mqtt.protocol == "5"
    assert cfg.mqtt.tls.ca is not None
    assert cfg.security.require_signature is True
    assert len(cfg.security.trusted_keys) == 1


def test_shipped_uci_default_renders_to_a_valid_config(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib/functions.sh").write_text(FUNCTIONS_SH)
    (tmp_path / "etc/config").mkdir(parents=True)
    shutil.copy(ROOT / "packaging/openwrt/titik.config", tmp_path / "etc/config/titik")
    res = subprocess.run(
        ["busybox", "sh", str(ROOT / "packaging/openwrt/uci2toml")],
        env={"IPKG_INSTROOT": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert parse_config(tomllib.loads(res.stdout), {}).mqtt.host == "broker.example.net"
