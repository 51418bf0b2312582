"""agent.toml: one pydantic model per section, every key defaulted except the broker host.

Loading order: defaults < TOML file < ``TITIK_<SECTION>_<KEY>`` environment variables (how
secrets are passed, e.g. ``TITIK_MQTT_PASSWORD``). Every failure is a :class:`ConfigError` whose
message names the key path, e.g. ``mqtt.port: Input should be less than or equal to 65535``.

Which ``TITIK_*`` variables are config (:func:`env_overrides`): those whose first word after
``TITIK_`` is a section of agent.toml (``device``, ``mqtt``, ``telemetry`` ...). Such a variable
must name a key of that section, or the config is invalid, so that a typo such as
``TITIK_MQTT_PASSWROD`` never passes silently. Every other ``TITIK_*`` variable belongs to
another program and is ignored: the launcher's ``TITIK_VENDOR`` and ``TITIK_LAUNCHER_DEBUG``,
titik-ctl's ``TITIK_BROKER`` and ``TITIK_SIGNING_KEY``, ``TITIK_CONFIG`` (the config file's
path), the hooks' ``TITIK_ROOT``. titik-ctl also reads ``TITIK_MQTT_USERNAME`` and
``TITIK_MQTT_PASSWORD``: they are the agent's keys too, with the same meaning.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    Field,
    IPvAnyAddress,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from agent.protocol.collectors import REGISTRY as COLLECTORS
from agent.protocol.collectors import CollectorName as CollectorName  # noqa: PLC0414

# The sections central shares are defined once, in the protocol; re-exported for agent code.
from agent.protocol.overlay import deep_merge as deep_merge  # noqa: PLC0414
from agent.protocol.settings import ConfigError as ConfigError  # noqa: PLC0414
from agent.protocol.settings import LogConfig, MqttConnection
from agent.protocol.settings import LogLevel as LogLevel  # noqa: PLC0414
from agent.protocol.settings import Port as Port  # noqa: PLC0414
from agent.protocol.settings import Section as Section  # noqa: PLC0414
from agent.protocol.settings import TlsConfig as TlsConfig  # noqa: PLC0414
from agent.protocol.settings import (
    format_validation_error as format_validation_error,  # noqa: PLC0414
)
from agent.protocol.topics import TopicName

if TYPE_CHECKING:
    from agent.service_config import ServiceConfig


#: The collectors that run when ``telemetry.collectors`` is not set.
DEFAULT_COLLECTORS: tuple[str, ...] = tuple(name for name, on in COLLECTORS.items() if on)

ENV_PREFIX = "TITIK_"
#: Variables that start with a section's name but are not config keys: the config file's path
#: (TITIK_CONFIG, read by agent.cli; "config" is also the section of remote-config settings).
ENV_NOT_KEYS = frozenset({"TITIK_CONFIG"})


class DeviceConfig(Section):
    id: TopicName | None = Field(
        default=None,
        description="Unique gateway id; default gw-<primary MAC>, e.g. gw-0011223344aa",
    )
    site: str = Field(default="", max_length=128, description="Human name of the site")
    region: str = Field(default="", max_length=64, description="Administrative region")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    groups: list[TopicName] = Field(default_factory=list, description="Config/command groups")


class MqttConfig(MqttConnection):
    protocol: Literal["5", "3.1.1"] = "5"
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600)
    # 60 s: after a city-wide outage 9,000 gateways come back within a minute (about 150
    # connects/s, which one Mosquitto takes; docs/benchmarks.md) and their backlog drains
    # within two. Longer spreads the load thinner but keeps the city dark longer.
    reconnect_max_s: float = Field(default=60.0, gt=0, le=86400)
    # 7 days, the longest a command may live (agent/remote/commands.py MAX_LIFETIME_S): the
    # broker keeps the gateway's session, and queues the commands sent to it while it is
    # offline, that long; each command also carries its own MQTT message expiry, so the
    # broker drops it when it expires. 0: a clean session on every connection (commands sent
    # while offline are lost).
    session_expiry_s: int = Field(default=604800, ge=0, le=604800)
    # The local address the connection to the broker leaves from (an address of this
    # gateway). Unset: the kernel picks one by the routing table. For a gateway with several
    # uplinks whose management traffic must leave by one of them; the fleet simulator gives
    # its gateways several loopback addresses (one address's outgoing ports end near 28,000).
    source_address: IPvAnyAddress | None = None


class TelemetryConfig(Section):
    interval_s: float = Field(default=60.0, gt=0, le=86400)
    collectors: list[CollectorName] = Field(
        default_factory=lambda: list(DEFAULT_COLLECTORS),
        description="Which collectors run; each is isolated from the others",
    )
    interfaces: list[str] = Field(
        default_factory=list, description="Interfaces reported in net; empty = all but loopback"
    )


class StateConfig(Section):
    dir: Path | None = Field(
        default=None,
        description="Counters and buffer; default /etc/titik/state on OpenWrt, else /var/lib/titik",
    )


class BufferConfig(Section):
    path: Path | None = Field(
        default=None, description="Directory of the offline buffer; default <state.dir>/buffer"
    )
    max_bytes: int = Field(default=16 * 2**20, ge=64 * 1024, description="Cap on buffered data")
    max_age_s: float = Field(default=7 * 86400, gt=0, description="Records older than this go")
    flush_interval_s: float = Field(
        default=10.0, gt=0, le=600, description="Spill unacked records to disk this often"
    )
    grace_s: float = Field(
        default=5.0, ge=0, le=600, description="How long an unacked record may stay in RAM only"
    )
    replay_rate: float = Field(
        default=50.0, gt=0, description="Buffered records sent per second after a reconnect"
    )
    replay_jitter_s: float = Field(
        default=10.0, ge=0, description="Replay starts at a random moment within this window"
    )
    batch_records: int = Field(
        default=50, ge=1, le=1000, description="Most buffered records in one MQTT message"
    )


class PlatformConfig(Section):
    kind: Literal["auto", "openwrt", "raspberrypi", "linux", "simulated"] = "auto"
    root: Path = Field(default=Path("/"), description="Where /proc, /sys and /etc are read from")
    seed: int | None = Field(default=None, description="Seed of the simulated platform")


class RemoteConfigSettings(Section):
    rollback_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Broker contact needed this soon after an apply"
    )
    hooks_dir: Path | None = Field(
        default=None, description="Firmware hooks; default: the firmware_hooks shipped with Titik"
    )
    hook_timeout_s: float = Field(default=60.0, gt=0, le=600)


class SecurityConfig(Section):
    trusted_keys: list[str] = Field(
        default_factory=list, description="Operations' Ed25519 public keys, 'ed25519:<base64>'"
    )
    require_signature: bool = Field(
        default=False, description="Refuse unsigned configs and commands (production: true)"
    )

    @model_validator(mode="after")
    def _keys_parse(self) -> SecurityConfig:
        from agent.protocol.signing import parse_public_key

        for i, key in enumerate(self.trusted_keys):
            try:
                parse_public_key(key)
            except ValueError as exc:
                raise ValueError(f"trusted_keys[{i}]: {exc}") from None
        if self.require_signature and not self.trusted_keys:
            raise ValueError("require_signature: needs at least one key in trusted_keys")
        return self


def _service_section(value: Any) -> ServiceConfig | None:
    """``[service]`` validated only when it is there: a gateway whose config has no such
    section never imports :mod:`agent.service_config` (~60 KiB of allocations)."""
    if value is None:
        return None
    from agent.service_config import ServiceConfig

    if isinstance(value, ServiceConfig):
        return value
    try:
        return ServiceConfig.model_validate(value)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc).replace("\n", "; ")) from None


class AgentConfig(Section):
    device: DeviceConfig = Field(default_factory=DeviceConfig)
    mqtt: MqttConfig
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    # A ServiceConfig or None: typed Any, since naming the model here would import it.
    service: Annotated[Any, WithJsonSchema({"type": "object"})] = Field(
        default=None, description="The service-health report ([service]); absent: off"
    )
    state: StateConfig = Field(default_factory=StateConfig)
    buffer: BufferConfig = Field(default_factory=BufferConfig)
    config: RemoteConfigSettings = Field(default_factory=RemoteConfigSettings)
    security: SecurityConfig = Field(default_factory=SecurityConfig)
    platform: PlatformConfig = Field(default_factory=PlatformConfig)
    log: LogConfig = Field(default_factory=LogConfig)

    _service = field_validator("service", mode="before")(_service_section)


def _env_path(name: str, model: type[BaseModel]) -> list[str] | None:
    """Map ``mqtt_tls_ca`` onto ``["mqtt", "tls", "ca"]`` by walking the model's fields."""
    for field_name, field in model.model_fields.items():
        if name == field_name:
            return [field_name]
        sub = field.annotation
        if (
            name.startswith(field_name + "_")
            and isinstance(sub, type)
            and issubclass(sub, BaseModel)
        ):
            rest = _env_path(name[len(field_name) + 1 :], sub)
            if rest is not None:
                return [field_name, *rest]
    return None


def _section_of(name: str) -> str | None:
    """The section of agent.toml that ``name`` (lower case, without TITIK_) starts with."""
    for section in AgentConfig.model_fields:
        if name == section or name.startswith(section + "_"):
            return section
    return None


def _is_table(path: list[str]) -> bool:
    model: type[BaseModel] = AgentConfig
    for part in path:
        sub = model.model_fields[part].annotation
        if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
            return False
        model = sub
    return True


@dataclass(frozen=True)
class EnvOverrides:
    """What the environment says about the config (see the module's docstring for the rule)."""

    values: dict[str, Any]  # nested, as in agent.toml
    errors: list[str]  # one line per bad variable, naming it and what to do
    ignored: list[str]  # TITIK_* variables of other programs


def env_overrides(environ: Mapping[str, str]) -> EnvOverrides:
    """Nested overrides from ``TITIK_<SECTION>_<KEY>`` variables; errors; the ones ignored."""
    out: dict[str, Any] = {}
    errors: list[str] = []
    ignored: list[str] = []
    for var, value in sorted(environ.items()):
        if not var.startswith(ENV_PREFIX):
            continue
        name = var[len(ENV_PREFIX) :].lower()
        section = _section_of(name)
        if section is None or var in ENV_NOT_KEYS:
            ignored.append(var)
            continue
        path = _env_path(name, AgentConfig)
        if path is None:
            errors.append(f"{var}: environment variable names no key of [{section}]")
            continue
        if _is_table(path):
            table = ".".join(path)
            errors.append(
                f"{var}: environment variable names the table [{table}], not a key; use {var}_<KEY>"
            )
            continue
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        # Lists come as comma-separated text; pydantic coerces the scalars.
        node[path[-1]] = (
            [v.strip() for v in value.split(",") if v.strip()]
            if (path[-1] in {"groups", "collectors", "interfaces", "trusted_keys", "targets"})
            else value
        )
    return EnvOverrides(out, errors, ignored)


def parse_config(data: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Validate a config mapping, overlaid by ``TITIK_*`` variables; raises ConfigError."""
    env = env_overrides(environ or {})
    if env.errors:
        raise ConfigError("\n".join(env.errors))
    try:
        return AgentConfig.model_validate(deep_merge(data, env.values))
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read and validate ``path``; ``environ`` defaults to the process environment."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file first
        raw = exc.object[: exc.start]
        line = raw.count(b"\n") + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} on line {line}); "
            "TOML files must be UTF-8: save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    return parse_config(data, os.environ if environ is None else environ)
