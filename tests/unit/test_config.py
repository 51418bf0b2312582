from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from agent.config import AgentConfig, ConfigError, env_overrides, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "agent" / "agent.example.toml"


def test_only_the_broker_host_is_required() -> None:
    cfg = parse_config({"mqtt": {"host": "b"}})
    assert cfg.mqtt.port == 1883
    assert cfg.mqtt.topic_prefix == "titik"
    assert cfg.telemetry.interval_s == 60
    assert cfg.platform.kind == "auto"
    assert cfg.device.id is None
    assert cfg.device.groups == []


def test_missing_host_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^mqtt: required key is missing$"):
        parse_config({})
    with pytest.raises(ConfigError, match=r"mqtt\.host: required key is missing"):
        parse_config({"mqtt": {}})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"mqtt": {"host": "b", "port": 0}}, r"mqtt\.port: Input should be greater than"),
        ({"mqtt": {"host": "b", "prot": "5"}}, r"mqtt\.prot: unknown key"),
        ({"mqtt": {"host": "b"}, "device": {"id": "gw/1"}}, r"device\.id: must be 1-64"),
        ({"mqtt": {"host": "b"}, "device": {"id": "gw+#"}}, r"device\.id: must be 1-64"),
        ({"mqtt": {"host": "b"}, "device": {"groups": ["ok", "no/"]}}, r"device\.groups\[1\]"),
        ({"mqtt": {"host": "b"}, "device": {"lat": 91}}, r"device\.lat"),
        ({"mqtt": {"host": "b"}, "telemetry": {"interval_s": 0}}, r"telemetry\.interval_s"),
        ({"mqtt": {"host": "b"}, "telemetry": {"collectors": ["gps"]}}, r"collectors\[0\]"),
        ({"mqtt": {"host": "b"}, "platform": {"kind": "windows"}}, r"platform\.kind"),
    ],
)
def test_bad_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data)


def test_fractional_interval_is_allowed() -> None:
    assert (
        parse_config({"mqtt": {"host": "b"}, "telemetry": {"interval_s": 0.2}}).telemetry.interval_s
        == 0.2
    )


def test_environment_overrides_file_including_nested_and_lists() -> None:
    env = {
        "TITIK_MQTT_PASSWORD": "s3cret",
        "TITIK_MQTT_PORT": "8883",
        "TITIK_MQTT_TLS_CA": "/etc/titik/ca.pem",
        "TITIK_DEVICE_GROUPS": "a, b",
        "TITIK_TELEMETRY_INTERVAL_S": "0.5",
        "TITIK_CONFIG": "/somewhere.toml",  # not a key, and not an error
        "PATH": "/bin",
    }
    cfg = parse_config({"mqtt": {"host": "b", "port": 1883}}, env)
    assert cfg.mqtt.port == 8883
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret"
    assert str(cfg.mqtt.tls.ca) == "/etc/titik/ca.pem"
    assert cfg.device.groups == ["a", "b"]
    assert cfg.telemetry.interval_s == 0.5


def test_unknown_environment_key_is_named() -> None:
    env = env_overrides({"TITIK_MQTT_PASWORD": "x"})
    assert env.errors == ["TITIK_MQTT_PASWORD: environment variable names no key of [mqtt]"]
    assert env.values == {}
    with pytest.raises(ConfigError, match="TITIK_MQTT_PASWORD"):
        parse_config({"mqtt": {"host": "b"}}, {"TITIK_MQTT_PASWORD": "x"})


@pytest.mark.parametrize(
    "var",
    [
        "TITIK_MQTT_PASSWROD",  # the typo the rule exists for
        "TITIK_TELEMETRY_INTERVAL",
        "TITIK_LOG_LEVL",
        "TITIK_CONFIG_ROLLBACK",  # [config] is a section too (remote-config settings)
        "TITIK_MQTT_TLS_CAFILE",
    ],
)
def test_a_section_with_an_unknown_key_is_an_error(var: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{var}: environment variable names no key of \["):
        parse_config({"mqtt": {"host": "b"}}, {var: "x"})


@pytest.mark.parametrize(("var", "table"), [("TITIK_MQTT", "mqtt"), ("TITIK_MQTT_TLS", "mqtt.tls")])
def test_a_table_is_not_a_key(var: str, table: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{var}: .*names the table \[{table}\], not a key"):
        parse_config({"mqtt": {"host": "b"}}, {var: "x"})


# Variables other programs read, with values they would really have: the launcher's switches,
# titik-ctl's connection and signing key, the config file's path, what the hooks are given.
OTHER_PROGRAMS = {
    "TITIK_VENDOR": "always",
    "TITIK_LAUNCHER_DEBUG": "1",
    "TITIK_BROKER": "broker.example.net:8883",
    "TITIK_SIGNING_KEY": "-----BEGIN PRIVATE KEY-----\nMC4CAQ...\n-----END PRIVATE KEY-----",
    "TITIK_CONFIG": "/etc/titik/agent.toml",
    "TITIK_ROOT": "/",
    "TITIK_SNAPSHOT_DIR": "/var/lib/titik/snapshots",
    "TITIK_TEST_ROOTS": "/var/cache/titik-test-roots",
}


@pytest.mark.parametrize("var", sorted(OTHER_PROGRAMS))
def test_other_programs_variables_are_ignored(var: str) -> None:
    env = env_overrides({var: OTHER_PROGRAMS[var]})
    assert env.errors == []
    assert env.values == {}
    assert env.ignored == [var]
    assert parse_config({"mqtt": {"host": "b"}}, {var: OTHER_PROGRAMS[var]}) == parse_config(
        {"mqtt": {"host": "b"}}, {}
    )


def test_exported_titik_broker_leaves_the_agents_broker_alone() -> None:
    env = {"TITIK_BROKER": "ops.example.net:1884", "TITIK_MQTT_PASSWORD": "s3cret"}
    cfg = parse_config({"mqtt": {"host": "b", "port": 1883}}, env)
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("b", 1883)
    # The password is shared with titik-ctl on purpose: the same key, the same meaning.
    assert cfg.mqtt.password is not None
    assert cfg.mqtt.password.get_secret_value() == "s3cret"


ROOT = EXAMPLE.parents[1]
TITIK_VAR = re.compile(r"\bTITIK_[A-Z0-9_]*[A-Z0-9]\b")


def variables_read_by_the_tools() -> set[str]:
    """Every TITIK_ name in titik-ctl, titik-central, titik-sim, the launcher and the hooks."""
    sources = [
        *sorted((ROOT / "central").rglob("*.py")),
        ROOT / "packaging" / "launcher" / "titik-agent",
        ROOT / "agent" / "cli.py",
        ROOT / "agent" / "remote" / "hooks.py",
        *sorted((ROOT / "firmware_hooks").rglob("*.sh")),
    ]
    return {m for path in sources for m in TITIK_VAR.findall(path.read_text())}


def test_no_variable_of_the_tools_stops_the_agent() -> None:
    found = variables_read_by_the_tools()
    # The scan works: the launcher's and titik-ctl's switches are among what it finds.
    assert {"TITIK_VENDOR", "TITIK_LAUNCHER_DEBUG", "TITIK_BROKER", "TITIK_SIGNING_KEY"} <= found
    env = env_overrides(dict.fromkeys(found, "1"))
    assert env.errors == [], env.errors
    # The only ones read as config are real keys (shared with titik-ctl on purpose).
    config_vars = sorted(set(found) - set(env.ignored))
    assert config_vars == ["TITIK_MQTT_PASSWORD", "TITIK_MQTT_USERNAME"]


def test_the_agent_starts_with_the_switches_and_refuses_a_typo(tmp_path: Path) -> None:
    """Through the command line, as systemd starts it: exit 0, or 2 naming the variable."""
    toml = tmp_path / "agent.toml"
    toml.write_text('[mqtt]\nhost = "b"\n')
    base = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)}

    def check(extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent", "check-config", str(toml)],
            env={**base, **extra},
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    res = check(OTHER_PROGRAMS)
    assert res.returncode == 0, res.stderr
    res = check({**OTHER_PROGRAMS, "TITIK_MQTT_PASSWROD": "s3cret"})
    assert res.returncode == 2
    assert "TITIK_MQTT_PASSWROD: environment variable names no key of [mqtt]" in res.stderr
    assert "s3cret" not in res.stderr


def test_secrets_never_print() -> None:
    cfg = parse_config({"mqtt": {"host": "b", "password": "s3cret"}})
    assert "s3cret" not in repr(cfg)
    assert "s3cret" not in cfg.model_dump_json()


def test_file_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml", {})
    bad = tmp_path / "bad.toml"
    bad.write_text("[mqtt\nhost=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, {})


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    from agent.service_config import ServiceConfig

    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if model is AgentConfig and name == "service":  # typed Any: validated on first use
            sub = ServiceConfig
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += _keys(sub, f"{prefix}{name}.")
        else:
            out.append(f"{prefix}{name}")
    return out


def test_example_config_is_valid_and_documents_every_key() -> None:
    text = EXAMPLE.read_text()
    parse_config(tomllib.loads(text), {})
    # Uncomment every "# key = value" line: the result must still be a valid config.
    uncommented = re.sub(r"^# (\w+ = .*)$", r"\1", text, flags=re.MULTILINE)
    parse_config(tomllib.loads(uncommented), {})
    sections: dict[str, set[str]] = {}
    section = ""
    for line in uncommented.splitlines():
        if m := re.match(r"^\[([\w.]+)\]$", line):
            section = m.group(1)
        elif m := re.match(r"^(\w+) = ", line):
            sections.setdefault(section, set()).add(m.group(1))
    documented = {f"{s}.{k}" for s, keys in sections.items() for k in keys}
    assert set(_keys(AgentConfig)) == documented


def test_production_example_requires_signatures() -> None:
    cfg = parse_config(tomllib.loads((EXAMPLE.parent / "agent.production.toml").read_text()), {})
    assert cfg.security.require_signature
    assert cfg.mqtt.tls.ca is not None


def test_bad_trusted_key_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"security: .*trusted_keys\[0\]: must start with"):
        parse_config({"mqtt": {"host": "b"}, "security": {"trusted_keys": ["rsa:abc"]}})
    with pytest.raises(ConfigError, match="require_signature: needs at least one key"):
        parse_config({"mqtt": {"host": "b"}, "security": {"require_signature": True}})


def test_trusted_keys_from_the_environment_are_a_list() -> None:
    key = "ed25519:49OKRFL7LLJ1YYkIgmXwiqtpIfhheqXw0oFNEAGDCO0="
    cfg = parse_config({"mqtt": {"host": "b"}}, {"TITIK_SECURITY_TRUSTED_KEYS": f"{key},{key}"})
    assert cfg.security.trusted_keys == [key, key]


def test_source_address_is_an_ip_address() -> None:
    cfg = parse_config({"mqtt": {"host": "b", "source_address": "192.0.2.10"}})
    assert str(cfg.mqtt.source_address) == "192.0.2.10"
    assert parse_config({"mqtt": {"host": "b"}}).mqtt.source_address is None
    with pytest.raises(
        ConfigError, match=r"mqtt\.source_address: value is not a valid IPv4 or IPv6"
    ):
        parse_config({"mqtt": {"host": "b", "source_address": "eth0"}})
