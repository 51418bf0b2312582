"""Config sections both sides share, defined once: the broker connection, its TLS, the log.

``agent.toml``'s ``[mqtt]`` and ``central.toml``'s ``[mqtt]`` extend :class:`MqttConnection`
with what only they have (the agent's reconnect window, central's session and share group).
:func:`format_validation_error` turns pydantic's errors into one ``key.path: reason`` line
each, the same on both sides, and :class:`ConfigError` carries them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from agent.protocol.topics import TopicName

#: Log levels, in the config files (``log.level``) and the remote config (``agent.log_level``).
LogLevel = Literal["debug", "info", "warning", "error"]
#: A TCP port.
Port = Annotated[int, Field(ge=1, le=65535)]


class ConfigError(Exception):
    """A config that cannot be used; the message names the key and says why."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(Section):
    ca: Path | None = Field(default=None, description="CA bundle; setting it turns TLS on")
    cert: Path | None = Field(default=None, description="Client certificate (PEM)")
    key: Path | None = Field(default=None, description="Client private key (PEM)")
    insecure: bool = Field(default=False, description="Skip hostname verification (tests only)")


class LogConfig(Section):
    level: LogLevel = "info"


class MqttConnection(Section):
    """Where the broker is and who we are to it."""

    host: str = Field(min_length=1, description="Broker host name or address (required)")
    port: Port = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig = Field(default_factory=TlsConfig)
    keepalive_s: int = Field(default=60, ge=5, le=3600)
    topic_prefix: TopicName = "titik"


def _key_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(top level)"


def format_validation_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "value_error":
            msg = str(err["ctx"]["error"])
        lines.append(f"{_key_path(err['loc'])}: {msg}")
    return "\n".join(lines)
