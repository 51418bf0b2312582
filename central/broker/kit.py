"""The broker kit's state: ``kit.json`` and its directory (``titik-ctl broker``).

The kit is one directory. ``kit.json`` is the source of truth (hostname, ports, identities,
revoked certificate serials); ``mosquitto.conf``, ``acl`` and the CRL are regenerated from it
on every change, so they never drift. Private keys and the password file are written 0600.

Layout::

    DIR/kit.json            settings + identities (no secrets)
    DIR/ca/ca.pem ca.key    the CA (ECDSA P-256); ca.key is 0600 and belongs offline
    DIR/ca/crl.pem          revoked client certificates (Mosquitto's crlfile)
    DIR/server/server.pem server.key
    DIR/issued/ID.pem       every client certificate issued (for revocation by serial)
    DIR/passwd              made by ``mosquitto_passwd`` (never hashed here)
    DIR/acl                 Mosquitto ACL: patterns for a gateway's own topics, per-gateway
                            blocks for its groups, per-user blocks for operators and central
    DIR/mosquitto.conf      two TLS listeners: client certificates, and passwords
    DIR/bundles/ID/         what an installer copies onto the gateway (agent.toml, ca.pem,
                            client.pem/client.key, mqtt.env, uci.txt)

docs/security.md explains the choices and the threat model.
The certificates are in :mod:`central.broker.pki`, the generated files in
:mod:`central.broker.files`, the operations and the command line in :mod:`central.broker.cli`.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.protocol.atomicfile import write_atomic

Role = Literal["gateway", "operator", "central"]
ROLES: tuple[Role, ...] = ("gateway", "operator", "central")

KIT_FILE = "kit.json"
KIT_VERSION = 1
PASSWORD_ENV = "TITIK_MQTT_PASSWORD"  # noqa: S105 - a variable name, not a secret
#: Ids and group names end up in topics, ACL lines and file names: keep them plain.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CA_DAYS = 3650
SERVER_DAYS = 825
CLIENT_DAYS = 3650
#: The CRL lives on the broker only (no distribution point an attacker could replay an old
#: one through); an expired CRL would lock every certificate client out, so it is long-lived
#: and re-signed on every revocation.
CRL_DAYS = 3650
RELOAD_HINT = "reload the broker now: kill -HUP $(pidof mosquitto)  (or systemctl reload mosquitto)"


class KitError(Exception):
    """A failure to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- the kit's state ---------------------------------------------------------------------


@dataclass
class Identity:
    id: str
    role: Role
    groups: list[str] = field(default_factory=list)
    password: bool = False
    cert_serials: list[int] = field(default_factory=list)


@dataclass
class Kit:
    hostname: str
    prefix: str = "titik"
    cert_port: int = 8883
    password_port: int = 8884
    bind: str = ""
    sans: list[str] = field(default_factory=list)
    run_as: str = "mosquitto"
    log_file: str = "/var/log/mosquitto/mosquitto.log"
    persistence_dir: str = "/var/lib/mosquitto/"
    install_dir: str = "/etc/titik"
    max_queued_messages: int = 10000
    max_inflight_messages: int = 20
    max_packet_size: int = 1048576
    persistent_client_expiration: str = "14d"
    trusted_keys: list[str] = field(default_factory=list)
    identities: dict[str, Identity] = field(default_factory=dict)
    revoked_serials: list[int] = field(default_factory=list)
    #: Revoked identities get ``topic deny #``: a reload does not end a live TLS session
    #: made with a (now revoked) certificate, but the deny makes it useless at once.
    revoked_ids: list[str] = field(default_factory=list)
    version: int = KIT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Kit:
        data: dict[str, Any] = json.loads(text)
        idents = {k: Identity(**v) for k, v in data.pop("identities", {}).items()}
        return cls(**data, identities=idents)


def check_name(what: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise KitError(
            f"{what} {name!r}: use 1-64 letters, digits, '.', '_' or '-' "
            "(it becomes a topic level, an MQTT user name and a file name)",
            2,
        )
    return name


def check_prefix(prefix: str) -> str:
    if not prefix or any(c in prefix for c in "+#$\0") or prefix.startswith("/"):
        raise KitError(f"--prefix {prefix!r}: not a usable topic prefix", 2)
    return prefix


class KitDir:
    """The files of one kit directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @property
    def kit_file(self) -> Path:
        return self.root / KIT_FILE

    @property
    def ca_pem(self) -> Path:
        return self.root / "ca" / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca" / "ca.key"

    @property
    def crl_pem(self) -> Path:
        return self.root / "ca" / "crl.pem"

    @property
    def server_pem(self) -> Path:
        return self.root / "server" / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.root / "server" / "server.key"

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    def issued(self, ident: str) -> Path:
        return self.root / "issued" / f"{ident}.pem"

    def bundle(self, ident: str) -> Path:
        return self.root / "bundles" / ident

    def load(self) -> Kit:
        try:
            return Kit.from_json(self.kit_file.read_text())
        except FileNotFoundError:
            raise KitError(
                f"{self.root}: no {KIT_FILE}; create the kit with `titik-ctl broker init`", 2
            ) from None
        except (ValueError, TypeError) as exc:
            raise KitError(f"{self.kit_file}: unreadable ({exc})") from None

    def save(self, kit: Kit) -> None:
        write_file(self.kit_file, kit.to_json(), 0o644)


def write_file(path: Path, data: str | bytes, mode: int) -> None:
    """Write atomically with ``mode`` from the first byte (no window with wider access),
    through the project's one atomic writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data.encode() if isinstance(data, str) else data, mode=mode)


# -- passwords (mosquitto_passwd does the hashing) ----------------------------------------


def find_mosquitto_passwd() -> str:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate and Path(candidate).exists():
            return candidate
    raise KitError("mosquitto_passwd not found: install the `mosquitto` package")


def _passwd_lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [ln for ln in path.read_text().splitlines() if ln.strip()]


def set_password(passwd: Path, user: str, password: str) -> None:
    """Hash with ``mosquitto_passwd -U`` on a 0600 temp file (the password never sits in
    an argv where ``ps`` would show it), then merge the line into ``passwd``."""
    if ":" in password or "\n" in password or not password:
        raise KitError("the password must be non-empty, without ':' or newlines", 2)
    tool = find_mosquitto_passwd()
    with tempfile.TemporaryDirectory(dir=passwd.parent) as tmp:
        plain = Path(tmp) / "one"
        write_file(plain, f"{user}:{password}\n", 0o600)
        done = subprocess.run(  # noqa: S603 - fixed argv, our own temp file
            [tool, "-U", str(plain)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise KitError(f"mosquitto_passwd failed: {done.stderr.strip() or done.stdout.strip()}")
        hashed = [ln for ln in plain.read_text().splitlines() if ln.startswith(f"{user}:")]
    if len(hashed) != 1 or hashed[0] == f"{user}:{password}":
        raise KitError("mosquitto_passwd did not hash the password")
    keep = [ln for ln in _passwd_lines(passwd) if not ln.startswith(f"{user}:")]
    write_file(passwd, "\n".join([*keep, hashed[0]]) + "\n", 0o600)


def remove_password(passwd: Path, user: str) -> bool:
    lines = _passwd_lines(passwd)
    keep = [ln for ln in lines if not ln.startswith(f"{user}:")]
    if len(keep) == len(lines):
        return False
    write_file(passwd, "\n".join(keep) + ("\n" if keep else ""), 0o600)
    return True
