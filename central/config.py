"""central.toml: one pydantic model per section, every key defaulted except the broker host.

Every failure is a :class:`ConfigError` whose message names the key path, e.g.
``store.raw_days: Input should be greater than or equal to 1`` (same format as the agent's).
"""

from __future__ import annotations

import socket
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, AliasChoices, Field, ValidationError, model_validator

from agent.protocol.settings import (
    ConfigError,
    LogConfig,
    MqttConnection,
    Section,
    format_validation_error,
)
from agent.protocol.signing import parse_public_key
from agent.protocol.topics import TopicName


def _default_client_id() -> str:
    return f"titik-central-{socket.gethostname()}"[:64]


class CentralMqttConfig(MqttConnection):
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    protocol: Literal["5"] = Field(
        default="5", description="MQTT 5 only: shared subscriptions and session expiry"
    )
    client_id: str = Field(default_factory=_default_client_id, min_length=1, max_length=64)
    share_group: TopicName | Literal[""] = Field(
        default="titik-central",
        description="Shared-subscription group of all central instances; '' = plain subscriptions",
    )
    session_expiry_s: int = Field(
        default=3600, ge=0, le=2**32 - 1, description="Broker keeps our queue this long offline"
    )


def _postgres_url(value: str) -> str:
    if value and not value.startswith(("postgresql://", "postgres://")):
        raise ValueError(
            'must be a PostgreSQL url, postgresql://USER@HOST:PORT/DBNAME (or "" for SQLite at '
            "store.path); keep the password out of it: ~/.pgpass or PGPASSWORD"
        )
    return value


class StoreConfig(Section):
    path: Path = Field(
        default=Path("/var/lib/titik-central/titik.db"),
        description="The SQLite file (not used when url is set)",
    )
    url: Annotated[str, AfterValidator(_postgres_url)] = Field(
        default="",
        max_length=2000,
        repr=False,  # it may carry a password after all
        description="postgresql://... : everything in PostgreSQL instead (docs/central.md, "
        "'Central on PostgreSQL'); '' = SQLite at path",
    )
    pool_size: int = Field(
        default=8, ge=2, le=200, description="PostgreSQL connections this central may open"
    )
    raw_days: float = Field(default=7, gt=0, description="Raw samples are kept this long")
    rollup_days: float = Field(default=90, gt=0, description="5-minute rollups are kept this long")
    batch_max: int = Field(default=500, ge=1, le=100_000, description="Messages per transaction")
    batch_interval_s: float = Field(
        default=0.2, gt=0, le=60, description="Longest wait to fill a batch before committing"
    )


class IncidentsConfig(Section):
    """Gateways going down together become one incident (docs/alerts.md, "Incidents")."""

    by: Literal["region", "site"] = Field(
        default="region", description="Group offline gateways by their region or their site"
    )
    window_s: float = Field(
        default=120, gt=0, le=86400, description="Down within this many seconds of each other"
    )
    min_count: int = Field(default=3, ge=2, le=100_000, description="Gateways that make one")
    group_wait_s: float = Field(
        default=30,
        ge=0,
        le=3600,
        description="Hold a new offline alert (or incident) this long before notifying, so the "
        "others going down with it join first (Alertmanager's group_wait)",
    )
    update_interval_s: float = Field(
        default=300,
        ge=0,
        le=86400,
        description="At most one 'more gateways joined' notification per incident this often",
    )


class WebhookConfig(Section):
    """Notifications to one HTTP(S) endpoint (docs/alerts.md, "Webhook")."""

    url: str = Field(
        default="",
        max_length=2000,
        pattern=r"^(|https?://\S+)$",
        description="POST JSON here; '' = no notifications",
    )
    timeout_s: float = Field(default=5, gt=0, le=120)
    retries: int = Field(default=5, ge=0, le=50, description="Attempts after the first")
    backoff_s: float = Field(
        default=1, gt=0, le=600, description="First wait between attempts; doubles each time"
    )
    backoff_max_s: float = Field(default=60, gt=0, le=3600)
    queue_max: int = Field(
        default=1000, ge=1, le=1_000_000, description="Notifications waiting; beyond, dropped"
    )
    secret: str = Field(
        default="",
        max_length=500,
        description="HMAC-SHA256 key: each request carries X-Titik-Signature (never logged)",
    )
    header: str = Field(
        default="",
        max_length=2000,
        pattern=r"^(|[A-Za-z0-9-]+: .+)$",
        description="One extra header, 'Name: value' (e.g. an Authorization the receiver "
        "wants; never logged)",
    )


class AlertsConfig(Section):
    offline_after_min: float = Field(default=10, gt=0)
    temp_c: float = Field(default=80)
    # Named as the wire, store and API name the figure; the names before issue 17 (disk_pct,
    # mem_pct) are still read, so existing central.toml files keep working.
    disk_used_pct: float = Field(
        default=90, ge=0, le=100, validation_alias=AliasChoices("disk_used_pct", "disk_pct")
    )
    mem_used_pct: float = Field(
        default=90, ge=0, le=100, validation_alias=AliasChoices("mem_used_pct", "mem_pct")
    )
    console_url: str = Field(
        default="",
        max_length=500,
        pattern=r"^(|https?://\S+)$",
        description="The console's address as operators reach it, for links in notifications",
    )
    incidents: IncidentsConfig = Field(default_factory=IncidentsConfig)
    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    service_score_below: int = Field(
        default=60,
        ge=0,
        le=100,
        description="A service report scoring under this raises a service_score alert; the "
        "roll-ups and /metrics count the APs under it",
    )


class IngestConfig(Section):
    max_payload_bytes: int = Field(default=262144, ge=1024)
    future_tolerance_s: float = Field(
        default=300,
        ge=0,
        le=86400,
        description="Live samples stamped further ahead of central's clock are stored, "
        "never current state",
    )
    quarantine_payload_bytes: int = Field(
        default=4096, ge=0, le=262144, description="Bytes of each quarantined payload kept"
    )
    quarantine_rows: int = Field(
        default=10_000,
        ge=100,
        le=10_000_000,
        description="The quarantine keeps the newest this many",
    )
    quarantine_per_minute: int = Field(
        default=600,
        ge=1,
        le=1_000_000,
        description="Quarantine rows written per minute, in all; beyond it, counted only",
    )


class HttpTlsConfig(Section):
    cert: Path | None = Field(default=None, description="PEM certificate chain: serve HTTPS")
    key: Path | None = Field(default=None, description="Its private key (PEM)")


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    trusted_proxies: list[str] = Field(
        default_factory=lambda: ["127.0.0.1"],
        description="Addresses whose X-Forwarded-Proto/For are believed (a reverse proxy)",
    )
    tls: HttpTlsConfig = Field(default_factory=HttpTlsConfig)
    releases_dir: Path | None = Field(
        default=None,
        description="A directory of agent packages served at /releases/<file>, without a "
        "token, for upgrade manifests' URLs (docs/upgrades.md)",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> HttpConfig:
        if (self.tls.cert is None) != (self.tls.key is None):
            raise ValueError("tls: cert and key go together (both or neither)")
        return self


class AuthConfig(Section):
    session_hours: float = Field(
        default=12, gt=0, le=24 * 30, description="A dashboard session lasts this long"
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without a token (only on a closed network)"
    )


def _public_key(value: str) -> str:
    parse_public_key(value)  # ValueError names what is wrong
    return value


class ConsoleConfig(Section):
    """Actions from the web console (docs/central.md, "Console actions")."""

    signing_keys: list[Annotated[str, AfterValidator(_public_key)]] = Field(
        default_factory=list,
        description="Public keys (ed25519:<base64>) whose signatures central publishes; the "
        "same lines as the gateways' security.trusted_keys. Empty: web actions are refused",
    )
    action_ttl_s: float = Field(
        default=600, ge=10, le=86400, description="A prepared action must be signed within this"
    )


class MetricsConfig(Section):
    device_series: bool = Field(
        default=False,
        description="Per-gateway health series on /metrics (about 9 series a gateway)",
    )
    device_series_max_age_s: float = Field(
        default=15,
        ge=1,
        le=300,
        description="How old the per-gateway series may be: rebuilt in the background this "
        "often while /metrics is scraped, so a scrape does not pay for 10,000 gateways' rows",
    )


class MapConfig(Section):
    """The console's map (central/api/web/map.js). Without ``tile_url`` it draws no tiles:
    the access points on a plain background with a scale, so it works on a closed network."""

    tile_url: str = Field(
        default="",
        max_length=500,
        pattern=r"^(|https?://[^\s\"'<>]+|/[^\s\"'<>]*)$",
        description="Leaflet tile URL template, e.g. https://tiles.example.net/{z}/{x}/{y}.png "
        "or a path on this server; '' = no tiles",
    )
    attribution: str = Field(
        default="", max_length=500, description="Shown in the map's corner (the tiles' licence)"
    )
    max_zoom: int = Field(default=19, ge=1, le=22, description="The tiles' deepest zoom level")


class RolloutConfig(Section):
    tick_s: float = Field(
        default=5,
        ge=0.5,
        le=60,
        description="How often the rollout runner steps every running rollout (publishes the "
        "next wave, checks a gate, takes pause/resume/abort requests)",
    )


class CentralConfig(Section):
    mqtt: CentralMqttConfig
    store: StoreConfig = Field(default_factory=StoreConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    console: ConsoleConfig = Field(default_factory=ConsoleConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    map: MapConfig = Field(default_factory=MapConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    log: LogConfig = Field(default_factory=LogConfig)


def parse_config(text: str) -> CentralConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}") from None
    try:
        return CentralConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def load_config(path: Path) -> CentralConfig:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    return parse_config(text)
