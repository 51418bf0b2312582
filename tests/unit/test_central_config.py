"""central.toml: defaults, the example file, and errors that name the key."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel

from central.cli import main
from central.config import CentralConfig, ConfigError, load_config, parse_config

EXAMPLE = Path(__file__).resolve().parents[2] / "central" / "central.example.toml"


def test_defaults() -> None:
    cfg = parse_config('[mqtt]\nhost = "b"\n')
    assert cfg.mqtt.port == 1883 and cfg.mqtt.topic_prefix == "titik"
    assert cfg.mqtt.client_id.startswith("titik-central-")
    assert cfg.mqtt.share_group == "titik-central" and cfg.mqtt.session_expiry_s == 3600
    assert cfg.store.path == Path("/var/lib/titik-central/titik.db")
    assert (cfg.store.raw_days, cfg.store.rollup_days, cfg.store.batch_max) == (7, 90, 500)
    assert cfg.alerts.offline_after_min == 10 and cfg.alerts.temp_c == 80
    assert cfg.ingest.max_payload_bytes == 262144
    assert (cfg.http.host, cfg.http.port) == ("127.0.0.1", 8080)


def test_example_documents_every_key() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.mqtt.host == "broker.example.net"
    text = EXAMPLE.read_text()
    # Commented-out keys ("# username = ...") count too.
    uncommented = tomllib.loads(re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE))

    def keys(model: type[BaseModel], prefix: str = "") -> set[str]:
        out = set()
        for name, f in model.model_fields.items():
            sub = f.annotation
            if isinstance(sub, type) and issubclass(sub, BaseModel):
                out |= keys(sub, f"{prefix}{name}.")
            else:
                out.add(prefix + name)
        return out

    def present(data: dict[str, object], prefix: str = "") -> set[str]:
        out = set()
        for k, v in data.items():
            out |= present(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k}
        return out

    assert keys(CentralConfig) <= present(uncommented)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "mqtt: required key is missing"),
        ('[mqtt]\nhost = "b"\nport = 0', "mqtt.port: Input should be greater than or equal to 1"),
        ('[mqtt]\nhost = "b"\nprotocol = "3.1.1"', "mqtt.protocol: Input should be '5'"),
        ('[mqtt]\nhost = "b"\n[store]\nbogus = 1', "store.bogus: unknown key"),
        ('[mqtt]\nhost = "b"\n[store]\nbatch_max = 0', "store.batch_max: Input should be greater"),
        ('[mqtt]\nhost = "b"\ntopic_prefix = "a/b"', "mqtt.topic_prefix: must be 1-64"),
        ('[mqtt]\nhost = "b"\n[alerts]\ndisk_pct = 101', "alerts.disk_pct: Input should be less"),
        (
            '[mqtt]\nhost = "b"\n[alerts]\ndisk_used_pct = 101',
            "alerts.disk_used_pct: Input should be less",
        ),
        ("[mqtt", "not valid TOML"),
        (
            '[mqtt]\nhost = "b"\n[store]\nurl = "mysql://u:hunter2@db/x"',
            "store.url: must be a PostgreSQL url, postgresql://USER@HOST:PORT/DBNAME",
        ),
    ],
)
def test_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert message in str(err.value)


def test_password_is_secret() -> None:
    cfg = parse_config('[mqtt]\nhost = "b"\nusername = "u"\npassword = "hunter2"')
    assert "hunter2" not in repr(cfg)
    pg = parse_config('[mqtt]\nhost = "b"\n[store]\nurl = "postgresql://u:hunter3@db/x"')
    assert pg.store.url == "postgresql://u:hunter3@db/x" and "hunter3" not in repr(pg)
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "hunter2"


def test_cli_exit_2_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[mqtt]\nhost = "b"\n[log]\nlevel = "loud"\n')
    assert main(["check-config", str(bad)]) == 2
    assert "log.level" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2
    assert main(["check-config", str(EXAMPLE)]) == 0


def test_alert_thresholds_take_the_wire_names_and_still_read_the_old_ones() -> None:
    new = parse_config('[mqtt]\nhost = "b"\n[alerts]\ndisk_used_pct = 70\nmem_used_pct = 60')
    old = parse_config('[mqtt]\nhost = "b"\n[alerts]\ndisk_pct = 70\nmem_pct = 60')
    assert (new.alerts.disk_used_pct, new.alerts.mem_used_pct) == (70, 60)
    assert old.alerts == new.alerts
