from __future__ import annotations

import re
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
    overrides, unknown = env_overrides({"TITIK_MQTT_PASWORD": "x"})
    assert unknown == ["TITIK_MQTT_PASWORD"]
    assert overrides == {}
    with pytest.raises(ConfigError, match="TITIK_MQTT_PASWORD"):
        parse_config({"mqtt": {"host": "b"}}, {"TITIK_MQTT_PASWORD": "x"})


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
    out = []
    for name, field in model.model_fields.items():
        sub = field.annotation
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
