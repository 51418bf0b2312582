"""packaging/openwrt/uci2toml: /etc/config/titik becomes a valid agent.toml, under busybox sh and
dash, anonymous sections (`uci add titik ...`) included, and the agent starts with it.

OpenWrt's `uci` and /lib/functions.sh are STAND-INS here (tests/hooks/uci_standin.py and
tests/hooks/functions.sh), because this machine has no OpenWrt userland; both behave as the
real ones do (their facts are tested in tests/unit/firmware_hooks/test_openwrt_standins.py).
So uci2toml reads the config as on a gateway: config_load runs `uci -S -n export titik`, and
an anonymous section arrives under the name uci gives it (cfgXXXXXX). The temp dir stands for
"/" (STANDIN_ROOT); UCI2TOML_FUNCTIONS points uci2toml at the functions.sh stand-in.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.config import ConfigError, parse_config
from agent.protocol import Telemetry
from tests.agentproc import AgentProcess
from tests.broker import Broker, subscriber
from tests.hooks import shells
from tests.hooks.shells import Shell
from tests.packaging.conftest import ROOT

UCI2TOML = ROOT / "packaging/openwrt/uci2toml"
INIT = ROOT / "packaging/openwrt/titik.init"
STANDINS = ROOT / "tests/hooks"

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


@pytest.fixture(scope="session")
def python_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shells.python_dir(tmp_path_factory.mktemp("python"))


@pytest.fixture(params=shells.SHELLS)
def shell(
    request: pytest.FixtureRequest, python_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Shell:
    bb = shells.busybox_dir(tmp_path_factory.mktemp("bb")) if request.param == "busybox" else None
    return shells.make_shell(request.param, python_dir, bb)


@dataclass
class Gateway:
    """A temp root standing for an OpenWrt gateway's "/", with its /etc/config/titik."""

    root: Path
    shell: Shell

    def env(self, **extra: str) -> dict[str, str]:
        path = [str(STANDINS / "bin"), *self.shell.path_dirs, "/usr/bin:/bin"]
        return {
            "PATH": os.pathsep.join(path),
            "STANDIN_ROOT": str(self.root),
            "UCI2TOML_FUNCTIONS": str(STANDINS / "functions.sh"),
            **extra,
        }

    def uci(self, *args: str) -> str:
        """uci as an admin types it on the gateway (the stand-in, under this root)."""
        res = subprocess.run(
            [str(STANDINS / "bin/uci"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
        )
        assert res.returncode == 0, (args, res.stderr)
        return res.stdout

    def uci2toml(self, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.shell.path, str(UCI2TOML)],
            capture_output=True,
            text=True,
            env=self.env(**env),
            check=False,
        )

    def render(self) -> str:
        res = self.uci2toml()
        assert res.returncode == 0, res.stderr
        assert res.stderr == ""
        return res.stdout


@pytest.fixture
def gateway(tmp_path: Path, shell: Shell) -> Callable[[str], Gateway]:
    def make(titik: str) -> Gateway:
        root = tmp_path / "root"
        (root / "etc/config").mkdir(parents=True)
        (root / "tmp").mkdir()
        (root / "etc/config/titik").write_text(titik)
        return Gateway(root, shell)

    return make


def shipped() -> str:
    return (ROOT / "packaging/openwrt/titik.config").read_text()


def test_uci_renders_to_a_valid_agent_config(gateway: Callable[[str], Gateway]) -> None:
    cfg = parse_config(tomllib.loads(gateway(UCI).render()), {})
    assert cfg.device.id == "gw-test"
    assert cfg.device.site == 'Pole "14", Jl. Thamrin'
    assert cfg.device.lat == -6.19
    assert list(cfg.device.groups) == ["jakarta-pusat", "rollout-2026"]
    assert cfg.mqtt.port == 8883
    assert cfg.mqtt.protocol == "5"
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == 'p\\a"ss'
    assert cfg.mqtt.tls.ca is not None
    assert cfg.security.require_signature is True
    assert len(cfg.security.trusted_keys) == 1


def test_shipped_uci_default_renders_to_a_valid_config(gateway: Callable[[str], Gateway]) -> None:
    cfg = parse_config(tomllib.loads(gateway(shipped()).render()), {})
    assert cfg.mqtt.host == "broker.example.net"


def anonymous_config(gw: Gateway, host: str = "broker.example.net", port: int = 8883) -> None:
    """Replace every named table section of the shipped config by one made with `uci add`,
    as an admin (or a provisioning script) would, and commit."""
    for name in ("device", "mqtt", "mqtt_tls", "telemetry", "security", "log"):
        gw.uci("delete", f"titik.{name}")
    sections = {t: gw.uci("add", "titik", t).strip() for t in ("device", "mqtt", "telemetry")}
    assert all(s.startswith("cfg") and len(s) == 9 for s in sections.values()), sections
    gw.uci("set", "titik.@device[0].id=gw-anon")
    gw.uci("add_list", "titik.@device[0].groups=jakarta-pusat")
    gw.uci("add_list", "titik.@device[0].groups=rollout-2026")
    gw.uci("set", f"titik.@mqtt[0].host={host}")
    gw.uci("set", f"titik.@mqtt[0].port={port}")
    gw.uci("set", "titik.@telemetry[-1].interval_s=0.5")
    gw.uci("add", "titik", "security")
    gw.uci("set", "titik.@security[0].require_signature=no")
    gw.uci("commit", "titik")


def test_anonymous_sections_render_and_validate(gateway: Callable[[str], Gateway]) -> None:
    gw = gateway(shipped())
    anonymous_config(gw)
    # as uci shows them, and as they are in the file now: no names
    shown = gw.uci("show", "titik")
    assert "titik.@telemetry[0].interval_s='0.5'" in shown
    assert "\nconfig telemetry\n" in (gw.root / "etc/config/titik").read_text()
    toml = gw.render()
    assert "cfg" not in toml  # no table named after a generated section name
    cfg = parse_config(tomllib.loads(toml), {})
    assert cfg.device.id == "gw-anon"
    assert list(cfg.device.groups) == ["jakarta-pusat", "rollout-2026"]
    assert cfg.mqtt.port == 8883
    assert cfg.telemetry.interval_s == 0.5
    assert cfg.security.require_signature is False


@pytest.mark.parametrize(
    ("add", "shown"),
    [
        # the shipped named section plus an anonymous one
        (1, "titik.telemetry and titik.@telemetry[1]"),
        # two anonymous ones
        (2, "titik.@telemetry[0] and titik.@telemetry[1]"),
    ],
)
def test_two_sections_of_one_type_are_an_error_that_names_both(
    gateway: Callable[[str], Gateway], add: int, shown: str
) -> None:
    gw = gateway(shipped())
    if add == 2:
        gw.uci("delete", "titik.telemetry")
    for _ in range(add):
        gw.uci("add", "titik", "telemetry")
    gw.uci("commit", "titik")
    res = gw.uci2toml()
    assert res.returncode == 1
    assert res.stderr.startswith(
        f'titik-uci2toml: /etc/config/titik has two sections of type "telemetry" ({shown})'
    ), res.stderr
    assert "uci delete titik.@telemetry[1]; uci commit titik" in res.stderr


def test_a_section_type_the_agent_does_not_know_is_named_by_the_agent(
    gateway: Callable[[str], Gateway],
) -> None:
    gw = gateway(shipped())
    gw.uci("add", "titik", "telemetri")  # a typo
    gw.uci("commit", "titik")
    with pytest.raises(ConfigError, match=r"telemetri: unknown key"):
        parse_config(tomllib.loads(gw.render()), {})
    gw.uci("add", "titik", "bad.type")  # uci takes it as a type; it is no TOML table name
    gw.uci("commit", "titik")
    res = gw.uci2toml()
    assert res.returncode == 1
    assert 'section type "bad.type" is not a table' in res.stderr


@pytest.mark.parametrize(
    ("option", "error"),
    [
        ("titik.mqtt.port=88 83", "mqtt.port: Input should be a valid integer"),
        ("titik.mqtt.port=0x22b3", "mqtt.port: Input should be a valid integer"),
        ("titik.security.require_signature=maybe", "security.require_signature: Input should"),
        ("titik.telemetry.interval_s=1.2.3", "telemetry.interval_s: Input should"),
    ],
)
def test_a_bad_value_reaches_the_agent_which_names_the_key(
    gateway: Callable[[str], Gateway], option: str, error: str
) -> None:
    gw = gateway(shipped())
    gw.uci("set", option)
    gw.uci("commit", "titik")
    toml = gw.render()  # still valid TOML: the value became a string
    with pytest.raises(ConfigError, match=error):
        parse_config(tomllib.loads(toml), {})


def test_uci2toml_refuses_to_run_under_ipkg_instroot(gateway: Callable[[str], Gateway]) -> None:
    """OpenWrt's config_load returns at once when IPKG_INSTROOT is set: uci2toml would print
    an empty config, and the agent would start with none. It says so instead."""
    res = gateway(UCI).uci2toml(IPKG_INSTROOT="/build/root")
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith("titik-uci2toml: IPKG_INSTROOT is set")


def test_uci2toml_says_when_there_is_no_config(gateway: Callable[[str], Gateway]) -> None:
    gw = gateway(UCI)
    (gw.root / "etc/config/titik").unlink()
    res = gw.uci2toml()
    assert res.returncode == 1
    assert "cannot read /etc/config/titik" in res.stderr


@pytest.mark.broker
def test_the_agent_starts_and_publishes_with_a_uci_add_config(
    broker: Broker, tmp_path: Path, python_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """End to end, under OpenWrt's shell: sections made with `uci add`, committed, rendered
    by uci2toml as the init script does, and the real agent runs with the result."""
    shell = shells.make_shell(
        "busybox", python_dir, shells.busybox_dir(tmp_path_factory.mktemp("bb"))
    )
    root = tmp_path / "root"
    (root / "etc/config").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "etc/config/titik").write_text(shipped())
    gw = Gateway(root, shell)
    anonymous_config(gw, host=broker.host, port=broker.port)
    gw.uci("set", "titik.@mqtt[0].reconnect_min_s=0.1")
    gw.uci("set", "titik.@mqtt[0].reconnect_max_s=0.5")
    gw.uci("set", "titik.@telemetry[0].interval_s=0.2")
    gw.uci("add", "titik", "state")
    gw.uci("set", f"titik.@state[0].dir={tmp_path / 'state'}")
    gw.uci("add", "titik", "platform")
    gw.uci("set", "titik.@platform[0].kind=simulated")
    gw.uci("commit", "titik")
    config = tmp_path / "agent.toml"
    config.write_text(gw.render())
    with subscriber(broker, "titik/gw/gw-anon/telemetry") as sub:
        agent = AgentProcess(config)
        try:
            sample = Telemetry.model_validate_json(sub.next(timeout=15).payload)
        finally:
            agent.stop()
    assert sample.device == "gw-anon", agent.output()


# The init script's start_service, sourced as rc.common does. procd is not here: its
# procd_* calls, `logger` (logd) and `mkdir` of the gateway's absolute paths are recorded
# by shell functions instead; config_load is the functions.sh stand-in's, uci2toml the real one.
START = """
. "$UCI2TOML_FUNCTIONS"
. "$INIT"
UCI2TOML="$RENDER"
CONF="$OUT/agent.toml"
mkdir() { :; }
logger() { echo "logger $*" >>"$OUT/calls"; cat >>"$OUT/calls"; }
procd_open_instance() { echo "procd_open_instance $*" >>"$OUT/calls"; }
procd_set_param() { echo "procd_set_param $*" >>"$OUT/calls"; }
procd_close_instance() { echo "procd_close_instance" >>"$OUT/calls"; }
start_service
"""


def start_service(gw: Gateway, out: Path) -> tuple[subprocess.CompletedProcess[str], str]:
    render = out / "render"
    render.write_text(f'#!/bin/sh\nexec {gw.shell.path} {UCI2TOML} "$@"\n')
    render.chmod(0o755)
    env = gw.env(INIT=str(INIT), RENDER=str(render), OUT=str(out))
    res = subprocess.run(
        [gw.shell.path, "-c", START], capture_output=True, text=True, env=env, check=False
    )
    calls = out / "calls"
    return res, calls.read_text() if calls.exists() else ""


def test_init_script_starts_the_agent_with_the_rendered_config(
    gateway: Callable[[str], Gateway], tmp_path: Path
) -> None:
    res, calls = start_service(gateway(UCI), tmp_path)
    assert res.returncode == 0, res.stderr
    assert "procd_set_param command /usr/bin/titik-agent run" in calls
    assert f"procd_set_param env TITIK_CONFIG={tmp_path}/agent.toml" in calls
    cfg = parse_config(tomllib.loads((tmp_path / "agent.toml").read_text()), {})
    assert cfg.device.id == "gw-test"
    assert not (tmp_path / "agent.toml.err").exists()


def test_init_script_logs_a_refused_config_to_logread_and_starts_nothing(
    gateway: Callable[[str], Gateway], tmp_path: Path
) -> None:
    """procd keeps an init script's stderr nowhere an operator looks: the reason must be in
    logread (logger -t titik), and no instance is started with an old or empty config."""
    gw = gateway(shipped())
    gw.uci("add", "titik", "telemetry")
    gw.uci("commit", "titik")
    res, calls = start_service(gw, tmp_path)
    assert res.returncode == 1
    assert "logger -t titik -p daemon.err" in calls
    assert 'has two sections of type "telemetry"' in calls
    assert "procd_open_instance" not in calls
    assert not (tmp_path / "agent.toml").exists()
    assert not (tmp_path / "agent.toml.tmp").exists()


def _scalar_fields(model: type, kinds: tuple[type, ...]) -> set[str]:
    """Names of the fields, in every section, whose type is one of ``kinds`` (or optional)."""
    import typing

    from pydantic import BaseModel

    found: set[str] = set()
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            found |= _scalar_fields(ann, kinds)
            continue
        args = typing.get_args(ann) or (ann,)
        if any(a in kinds for a in args) and not any(a is str for a in args):
            found.add(name)
    return found


def test_every_number_and_flag_of_the_agent_config_is_typed_by_uci2toml() -> None:
    # uci stores every option as a string; uci2toml writes the names it lists in NUMBERS and
    # BOOLS bare, the rest quoted. A numeric key missing there reaches the agent as a string.
    from agent.config import AgentConfig

    text = UCI2TOML.read_text()
    numbers = set(text.split('NUMBERS="')[1].split('"')[0].split())
    bools = set(text.split('BOOLS="')[1].split('"')[0].split())
    assert _scalar_fields(AgentConfig, (int, float)) <= numbers
    assert _scalar_fields(AgentConfig, (bool,)) <= bools
