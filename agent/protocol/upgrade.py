"""The agent's upgrade manifest and the ``upgrade`` command's arguments (docs/upgrades.md).

A release is described by one **manifest**, signed once by operations' Ed25519 key with the
scheme of configs and commands (:mod:`agent.protocol.signing`), over the fixed context
:data:`MANIFEST_CONTEXT` instead of a topic: the same signed manifest is carried by every
``upgrade`` command of a rollout, to any gateway or group, and a signature made for a config or a
command (which bind a topic, always with a ``/``) can never pass as a manifest's, nor the reverse.

    {"version": "0.2.0", "min_from": "0.1.0",
     "packages": [{"format": "deb", "arch": "arm64", "url": "https://...", "size": 8123456,
                   "sha256": "<64 hex>"}, ...],
     "sig": {"alg": "ed25519", "kid": "...", "value": "..."}}

Everything here is pure: central's console can check a manifest exactly as a gateway will.
The gateway checks the signature (:func:`verify_manifest`) before it looks at anything else in
the manifest, and so before it fetches anything.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agent.protocol.cohort import ROLLOUT_ID, in_cohort
from agent.protocol.signing import SignatureError, Verifier

#: What a manifest's signature binds instead of a topic (a topic always holds a '/').
MANIFEST_CONTEXT = "titik-agent-upgrade-manifest"
#: The largest package a manifest may describe: the agent refuses to download more.
MAX_PACKAGE_BYTES = 64 * 1024 * 1024
MAX_URL = 1024
MAX_PACKAGES = 32
#: ``major.minor.patch`` (a fourth part allowed), each a number: compared as numbers.
VERSION_RE = re.compile(r"(0|[1-9][0-9]{0,5})(\.(0|[1-9][0-9]{0,5})){1,3}")
ARCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
#: Package formats: the platform's package manager decides which one a gateway takes.
Format = Literal["deb", "ipk", "apk", "sim"]
FORMATS: tuple[str, ...] = ("deb", "ipk", "apk", "sim")
#: The health gate's bounds (``args.health_timeout_s``) and its default.
HEALTH_TIMEOUT_S = 300.0
HEALTH_TIMEOUT_MIN_S = 10.0
HEALTH_TIMEOUT_MAX_S = 3600.0


class UpgradeRefused(Exception):
    """Why this gateway will not take this upgrade (a clear, one-line reason)."""


def parse_version(text: str) -> tuple[int, ...]:
    """``"0.2.10"`` -> ``(0, 2, 10)``; ValueError if it is not a plain dotted version."""
    if not isinstance(text, str) or not VERSION_RE.fullmatch(text):
        raise ValueError(f"{text!r} is not a version like 1.2.3")
    parts = tuple(int(p) for p in text.split("."))
    return parts + (0,) * (4 - len(parts))


def redact_url(url: str) -> str:
    """A URL as it may be logged or reported: no user or password, no query (tokens live
    there), no fragment."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparseable URL)"
    if ":" in host:
        host = f"[{host}]"
    return urlunsplit((parts.scheme, host + port, parts.path, "", ""))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Package(_Strict):
    format: Format = Field(description="Package format: deb, ipk (opkg), apk (apk-tools 3), sim")
    arch: str = Field(
        description="The package manager's architecture name (dpkg --print-architecture, "
        "opkg's DISTRIB_ARCH, apk --print-arch), or 'all'"
    )
    url: str = Field(max_length=MAX_URL, description="http(s) URL the gateway downloads it from")
    size: int = Field(gt=0, le=MAX_PACKAGE_BYTES, description="Exact size in bytes")
    sha256: str = Field(description="SHA-256 of the file, 64 lowercase hex digits")

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        if not ARCH_RE.fullmatch(v):
            raise ValueError("must be 1-64 letters, digits or . _ + -")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            raise ValueError("not a URL") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in v):
            raise ValueError("must not contain spaces or control characters")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str) -> str:
        if not SHA256_RE.fullmatch(v):
            raise ValueError("must be 64 lowercase hex digits")
        return v


class Manifest(_Strict):
    version: str = Field(description="The agent version this release installs")
    min_from: str = Field(description="The lowest running version it may upgrade from")
    packages: list[Package] = Field(min_length=1, max_length=MAX_PACKAGES)

    @field_validator("version", "min_from")
    @classmethod
    def _version(cls, v: str) -> str:
        parse_version(v)
        return v

    def package_for(self, fmt: str, arch: str) -> Package:
        """The package for this gateway's format and architecture ('all' fits any)."""
        exact = [p for p in self.packages if p.format == fmt and p.arch == arch]
        fits = exact or [p for p in self.packages if p.format == fmt and p.arch == "all"]
        if not fits:
            have = ", ".join(sorted({f"{p.format}/{p.arch}" for p in self.packages}))
            raise UpgradeRefused(
                f"manifest: no package for {fmt}/{arch} (it has {have}); this gateway is left "
                "as it is"
            )
        return fits[0]


def _error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "manifest"
    return f"manifest.{where}: {err['msg']}"


def verify_manifest(raw: Any, verifier: Verifier | None) -> tuple[Manifest, str]:
    """Check a manifest's signature, then its shape: (the manifest, the signing key's id).

    The signature comes first and is always required, whatever ``require_signature`` says:
    an upgrade replaces the code that checks signatures. UpgradeRefused names what is wrong.
    """
    if not isinstance(raw, Mapping):
        raise UpgradeRefused("args.manifest: must be an object (a signed upgrade manifest)")
    if verifier is None:
        raise UpgradeRefused(
            "manifest: this gateway trusts no keys (security.trusted_keys), so it cannot "
            "check an upgrade's signature; upgrades are refused"
        )
    try:
        kid = verifier.verify(MANIFEST_CONTEXT, raw)
    except SignatureError as exc:
        raise UpgradeRefused(f"manifest {exc}") from None
    body = {k: v for k, v in raw.items() if k != "sig"}
    try:
        return Manifest.model_validate(body), kid
    except ValidationError as exc:
        raise UpgradeRefused(_error(exc)) from None


def check_versions(manifest: Manifest, running: str) -> None:
    """Refuse a downgrade, a reinstall of the running version, or a jump from below the floor."""
    new, floor = parse_version(manifest.version), parse_version(manifest.min_from)
    try:
        have = parse_version(running)
    except ValueError:
        raise UpgradeRefused(f"running version {running!r} cannot be compared") from None
    if new < have:
        raise UpgradeRefused(
            f"version: {manifest.version} is older than the running {running}; downgrades are "
            "refused (roll forward with a newer release)"
        )
    if new == have:
        raise UpgradeRefused(f"version: {running} is running already; nothing to do")
    if have < floor:
        raise UpgradeRefused(
            f"min_from: this release upgrades from {manifest.min_from} or later, and this "
            f"gateway runs {running}; install an intermediate release first"
        )


class Rollout(_Strict):
    """The wave an upgrade command is for: gateways outside the cohort answer and do nothing."""

    id: str
    percent: float = Field(ge=0, le=100)

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not ROLLOUT_ID.match(v):
            raise ValueError("must be 1-64 letters, digits, '.', '_' or '-'")
        return v

    @field_validator("percent", mode="before")
    @classmethod
    def _pct(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError("must be a number from 0 to 100")
        return float(v)

    def reaches(self, device: str) -> bool:
        return in_cohort(self.id, device, self.percent)


class UpgradeArgs(_Strict):
    """``args`` of the ``upgrade`` command."""

    manifest: dict[str, Any]
    health_timeout_s: float = Field(
        default=HEALTH_TIMEOUT_S, ge=HEALTH_TIMEOUT_MIN_S, le=HEALTH_TIMEOUT_MAX_S
    )
    rollout: Rollout | None = None

    @field_validator("health_timeout_s", mode="before")
    @classmethod
    def _num(cls, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise ValueError("must be a number of seconds")
        return float(v)


def parse_args(args: Mapping[str, Any]) -> UpgradeArgs:
    try:
        return UpgradeArgs.model_validate(dict(args))
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "args"
        raise UpgradeRefused(f"args.{where}: {err['msg']}") from None


#: The steps an upgrade reports on the command result topic, in order (docs/upgrades.md).
STEPS = (
    "verified",
    "skipped",
    "downloading",
    "downloaded",
    "preflight",
    "installing",
    "installed",
    "confirmed",
    "rolled_back",
    "failed",
)
