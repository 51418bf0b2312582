"""``titik-ctl broker``: a production Mosquitto setup (TLS, identities, topic ACLs).

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
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.protocol.signing import parse_public_key, public_key_text
from agent.protocol.topics import (
    CMD,
    CMD_RESULT,
    CONFIG_DESIRED,
    CONFIG_REPORTED,
    GATEWAY_PUBLISHES,
    GATEWAY_READS,
    GROUP_LEAVES,
    GW,
    KINDS,
    STATUS,
    ctl_filter,
    group_filter,
    group_topic,
    gw_everything,
    gw_filter,
    gw_topic,
)

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
    """Write atomically with ``mode`` from the first byte (no window with wider access)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# -- certificates --------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(
    common_name: str, days: int = CA_DAYS
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _san(entry: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(entry))
    except ValueError:
        return x509.DNSName(entry)


def issue(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    server_names: Sequence[str] = (),
    days: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A leaf certificate: a server one when ``server_names`` is given, else a client one."""
    key = new_key()
    now = _now()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server_names else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if server_names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_san(n) for n in server_names]), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def make_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    serials: Sequence[int],
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=days))
    )
    for serial in sorted(set(serials)):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(now - dt.timedelta(minutes=5))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def load_ca(kd: KitDir) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(kd.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(kd.ca_pem.read_bytes())
    except FileNotFoundError as exc:
        raise KitError(
            f"{exc.filename}: the CA is needed to issue or revoke certificates "
            "(bring ca/ca.key back from its offline store)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise KitError(f"{kd.ca_key}: not an ECDSA key")
    return key, cert


# -- generated files -----------------------------------------------------------------------


def render_conf(kit: Kit, kd: KitDir) -> str:
    """mosquitto.conf for Mosquitto 2.0 (global security settings, two TLS listeners)."""
    bind = f" {kit.bind}" if kit.bind else ""
    tls = [
        f"cafile {kd.ca_pem}",
        f"certfile {kd.server_pem}",
        f"keyfile {kd.server_key}",
        "tls_version tlsv1.2",
    ]
    lines = [
        "# Generated by `titik-ctl broker` from kit.json; edits are overwritten.",
        "# docs/security.md explains every setting.",
        "per_listener_settings false",
        "allow_anonymous false",
        f"password_file {kd.passwd}",
        f"acl_file {kd.acl}",
        "",
        "# Limits",
        f"max_queued_messages {kit.max_queued_messages}",
        f"max_inflight_messages {kit.max_inflight_messages}",
        f"max_packet_size {kit.max_packet_size}",
        "max_keepalive 3600",
        "",
        "# Persistent sessions (central's shared subscriptions keep queueing while it restarts)",
        "persistence true",
        f"persistence_location {kit.persistence_dir}",
        "autosave_interval 60",
        f"persistent_client_expiration {kit.persistent_client_expiration}",
        "",
        "# Logging",
        f"log_dest file {kit.log_file}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "",
        f"user {kit.run_as}",
    ]
    if kit.cert_port:
        lines += [
            "",
            "# Client certificates: the certificate's CN is the MQTT user name.",
            f"listener {kit.cert_port}{bind}",
            *tls,
            "require_certificate true",
            "use_identity_as_username true",
            f"crlfile {kd.crl_pem}",
        ]
    if kit.password_port:
        lines += [
            "",
            "# Passwords (password_file) over TLS; no client certificate asked for.",
            f"listener {kit.password_port}{bind}",
            *tls,
            "require_certificate false",
        ]
    return "\n".join(lines) + "\n"


def gateway_patterns(prefix: str) -> list[str]:
    """A gateway's own topics, by its user name (``%u``: a password user or a certificate CN,
    both authenticated). Never ``%c``: a client id is whatever the client says it is."""
    return [
        *(f"pattern write {gw_topic(prefix, '%u', leaf)}" for leaf in GATEWAY_PUBLISHES),
        *(f"pattern read {gw_topic(prefix, '%u', leaf)}" for leaf in GATEWAY_READS),
    ]


def role_topics(kit: Kit, ident: Identity) -> list[str]:
    """The ``user`` block of one identity: exactly the topics its program uses.

    Patterns apply to every user, so without the ``deny`` line an operator ``alice`` could
    publish "gateway" telemetry as ``{prefix}/gw/alice/telemetry``. Mosquitto checks a user's
    ``deny`` lines before anything else, patterns included (tests/integration/
    test_broker_roles.py shows it on the real broker).

    - operator (``titik-ctl``, central/ctl/): publishes desired documents and commands and
      reads them back (retained desired documents, to pick the next version); reads statuses,
      reports and command results; its snapshot marker and MQTT 5 reply topic live under
      ``{prefix}/ctl/{its user name}/`` (``BrokerSession.own_topic``), not under another operator's.
    - central (central/ingest/consumer.py ``subscriptions``): reads what it stores, publishes nothing.
    """
    p = kit.prefix
    if ident.role == "gateway":
        return [
            f"topic read {group_topic(p, g, leaf)}" for g in ident.groups for leaf in GROUP_LEAVES
        ]
    own = f"topic deny {gw_everything(p, ident.id)}"
    if ident.role == "operator":
        return [
            own,
            f"topic readwrite {gw_filter(p, CONFIG_DESIRED)}",
            f"topic readwrite {group_filter(p, CONFIG_DESIRED)}",
            f"topic write {gw_filter(p, CMD)}",
            f"topic write {group_filter(p, CMD)}",
            f"topic read {gw_filter(p, STATUS)}",
            f"topic read {gw_filter(p, CONFIG_REPORTED)}",
            f"topic read {gw_filter(p, CMD_RESULT)}",
            f"topic readwrite {ctl_filter(p, ident.id)}",
        ]
    # central: exactly what its consumer subscribes to (central/ingest/consumer.py).
    return [
        own,
        *(
            f"topic read {gw_filter(p, leaf) if level == GW else group_filter(p, leaf)}"
            for level, leaf in KINDS
        ),
    ]


def render_acl(kit: Kit) -> str:
    """The ACL. Nothing sits before the first ``user`` line, so anonymous gets nothing."""
    lines = [
        "# Generated by `titik-ctl broker` from kit.json; edits are overwritten.",
        "# A gateway's user name is its device id (password file or certificate CN).",
        "# Patterns: every gateway's own topics. Blocks below: groups and roles.",
        *gateway_patterns(kit.prefix),
    ]
    for ident in sorted(kit.identities.values(), key=lambda i: (ROLES.index(i.role), i.id)):
        topics = role_topics(kit, ident)
        if topics:
            lines += ["", f"# {ident.role}", f"user {ident.id}", *topics]
    for ident_id in sorted(set(kit.revoked_ids) - set(kit.identities)):
        lines += ["", "# revoked", f"user {ident_id}", "topic deny #"]
    return "\n".join(lines) + "\n"


def write_generated(kit: Kit, kd: KitDir) -> None:
    write_file(kd.conf, render_conf(kit, kd), 0o644)
    write_file(kd.acl, render_acl(kit), 0o644)
    if not kd.passwd.exists():
        write_file(kd.passwd, "", 0o600)


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


# -- bundles -------------------------------------------------------------------------------


def trusted_key_text(spec: str) -> str:
    """``ed25519:...``, or a file holding that line or an Ed25519 PEM key (private/public)."""
    text = spec.strip()
    if not text.startswith("ed25519:"):
        path = Path(spec)
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise KitError(f"--trusted-key {spec}: {exc.strerror}", 2) from None
        if b"-----BEGIN" in raw:
            try:
                if b"PRIVATE" in raw:
                    priv = serialization.load_pem_private_key(raw, password=None)
                    if not isinstance(priv, Ed25519PrivateKey):
                        raise ValueError("not an Ed25519 key")
                    text = public_key_text(priv.public_key())
                else:
                    pub = serialization.load_pem_public_key(raw)
                    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
                        Ed25519PublicKey,
                    )

                    if not isinstance(pub, Ed25519PublicKey):
                        raise ValueError("not an Ed25519 key")
                    text = public_key_text(pub)
            except (ValueError, TypeError) as exc:
                raise KitError(f"--trusted-key {spec}: {exc}", 2) from None
        else:
            text = raw.decode(errors="replace").strip()
    try:
        parse_public_key(text)
    except ValueError as exc:
        raise KitError(f"--trusted-key {spec}: {exc}", 2) from None
    return text


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def render_agent_toml(
    kit: Kit, ident: Identity, *, port: int, cert: bool, trusted: Sequence[str]
) -> str:
    inst = kit.install_dir.rstrip("/")
    lines = [
        "# Generated by `titik-ctl broker add-gateway`; merge into agent.toml.",
        f"# The password (if any) is in mqtt.env: export it as {PASSWORD_ENV}.",
        "[device]",
        f"id = {_toml_str(ident.id)}",
        f"groups = [{', '.join(_toml_str(g) for g in ident.groups)}]",
        "",
        "[mqtt]",
        f"host = {_toml_str(kit.hostname)}",
        f"port = {port}",
        f"topic_prefix = {_toml_str(kit.prefix)}",
    ]
    if ident.password:
        lines.append(f"username = {_toml_str(ident.id)}")
    lines += ["", "[mqtt.tls]", f"ca = {_toml_str(inst + '/ca.pem')}"]
    if cert:
        lines += [
            f"cert = {_toml_str(inst + '/client.pem')}",
            f"key = {_toml_str(inst + '/client.key')}",
        ]
    if trusted:
        lines += [
            "",
            "[security]",
            f"trusted_keys = [{', '.join(_toml_str(k) for k in trusted)}]",
            "require_signature = true",
        ]
    return "\n".join(lines) + "\n"


def render_uci(kit: Kit, ident: Identity, *, port: int, cert: bool, trusted: Sequence[str]) -> str:
    """``uci`` commands for OpenWrt (what packaging's UCI mapping is meant to read)."""
    inst = kit.install_dir.rstrip("/")

    def q(v: str) -> str:
        return "'" + v.replace("'", "'\\''") + "'"

    lines = [
        "# Generated by `titik-ctl broker add-gateway`: run on the gateway, then",
        f"# put the password from mqtt.env into the service environment ({PASSWORD_ENV}).",
        "uci set titik.device=device",
        f"uci set titik.device.id={q(ident.id)}",
        "uci -q delete titik.device.groups",
        *(f"uci add_list titik.device.groups={q(g)}" for g in ident.groups),
        "uci set titik.mqtt=mqtt",
        f"uci set titik.mqtt.host={q(kit.hostname)}",
        f"uci set titik.mqtt.port={q(str(port))}",
        f"uci set titik.mqtt.topic_prefix={q(kit.prefix)}",
    ]
    if ident.password:
        lines.append(f"uci set titik.mqtt.username={q(ident.id)}")
    # packaging/openwrt/titik.config: section "mqtt_tls" is [mqtt.tls] of agent.toml
    lines += ["uci set titik.mqtt_tls=mqtt_tls", f"uci set titik.mqtt_tls.ca={q(inst + '/ca.pem')}"]
    if cert:
        lines += [
            f"uci set titik.mqtt_tls.cert={q(inst + '/client.pem')}",
            f"uci set titik.mqtt_tls.key={q(inst + '/client.key')}",
        ]
    if trusted:
        lines += [
            "uci set titik.security=security",
            "uci -q delete titik.security.trusted_keys",
            *(f"uci add_list titik.security.trusted_keys={q(k)}" for k in trusted),
            "uci set titik.security.require_signature='1'",
        ]
    lines.append("uci commit titik")
    return "\n".join(lines) + "\n"


# -- operations ----------------------------------------------------------------------------


@dataclass(frozen=True)
class InitOptions:
    hostname: str
    prefix: str = "titik"
    cert_port: int = 8883
    password_port: int = 8884
    bind: str = ""
    sans: tuple[str, ...] = ()
    run_as: str = "mosquitto"
    log_file: str = "/var/log/mosquitto/mosquitto.log"
    persistence_dir: str = "/var/lib/mosquitto/"
    install_dir: str = "/etc/titik"
    trusted_keys: tuple[str, ...] = ()
    force: bool = False


def init_kit(root: Path, opts: InitOptions) -> Kit:
    kd = KitDir(root)
    if kd.kit_file.exists() and not opts.force:
        raise KitError(f"{kd.root}: a kit already exists here (--force replaces it)", 2)
    if not opts.cert_port and not opts.password_port:
        raise KitError("at least one listener is needed (--port or --password-port)", 2)
    persistence = (
        opts.persistence_dir if opts.persistence_dir.endswith("/") else opts.persistence_dir + "/"
    )
    kit = Kit(
        hostname=opts.hostname,
        prefix=check_prefix(opts.prefix),
        cert_port=opts.cert_port,
        password_port=opts.password_port,
        bind=opts.bind,
        sans=list(opts.sans),
        run_as=opts.run_as,
        log_file=opts.log_file,
        persistence_dir=persistence,
        install_dir=opts.install_dir,
        trusted_keys=[trusted_key_text(k) for k in opts.trusted_keys],
    )
    kd.root.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(f"Titik MQTT CA {opts.hostname}")
    write_file(kd.ca_key, key_pem(ca_key), 0o600)
    write_file(kd.ca_pem, cert_pem(ca_cert), 0o644)
    names = list(dict.fromkeys([opts.hostname, *opts.sans]))
    srv_key, srv_cert = issue(ca_key, ca_cert, opts.hostname, server_names=names, days=SERVER_DAYS)
    write_file(kd.server_key, key_pem(srv_key), 0o600)
    write_file(kd.server_pem, cert_pem(srv_cert), 0o644)
    write_file(
        kd.crl_pem, make_crl(ca_key, ca_cert, []).public_bytes(serialization.Encoding.PEM), 0o644
    )
    write_file(kd.passwd, "", 0o600)
    kd.save(kit)
    write_generated(kit, kd)
    return kit


@dataclass(frozen=True)
class Credentials:
    """What ``add_identity`` made: the bundle directory and the generated secrets."""

    bundle: Path
    password: str | None
    cert: Path | None


def add_identity(
    root: Path,
    ident_id: str,
    role: Role,
    *,
    groups: Sequence[str] = (),
    password: str | None = None,
    cert: bool = False,
    trusted_keys: Sequence[str] = (),
) -> Credentials:
    """Create or replace an identity: password and/or certificate, ACL, bundle."""
    kd = KitDir(root)
    kit = kd.load()
    check_name("id", ident_id)
    for g in groups:
        check_name("group", g)
    if password is None and not cert:
        raise KitError("give a password (--generate-password / --password-from-env) or --cert", 2)
    if cert and not kit.cert_port:
        raise KitError("this kit has no certificate listener (init --port 0)", 2)
    if password is not None and not kit.password_port:
        raise KitError("this kit has no password listener (init --password-port 0)", 2)
    old = kit.identities.get(ident_id)
    if old is not None and old.role != role:
        raise KitError(f"{ident_id} is already a {old.role}; revoke it first", 2)
    ident = Identity(
        id=ident_id,
        role=role,
        groups=list(dict.fromkeys(groups)) if role == "gateway" else [],
        password=password is not None,
        cert_serials=list(old.cert_serials) if old else [],
    )
    bundle = kd.bundle(ident_id)
    if bundle.exists():
        shutil.rmtree(bundle)
    bundle.mkdir(parents=True, mode=0o700)
    os.chmod(bundle, 0o700)
    shutil.copyfile(kd.ca_pem, bundle / "ca.pem")
    os.chmod(bundle / "ca.pem", 0o644)

    if password is not None:
        set_password(kd.passwd, ident_id, password)
        write_file(bundle / "mqtt.env", f"{PASSWORD_ENV}={password}\n", 0o600)
    else:
        remove_password(kd.passwd, ident_id)
    cert_path: Path | None = None
    if cert:
        ca_key, ca_cert = load_ca(kd)
        key, leaf = issue(ca_key, ca_cert, ident_id, days=CLIENT_DAYS)
        ident.cert_serials.append(leaf.serial_number)
        write_file(bundle / "client.key", key_pem(key), 0o600)
        cert_path = bundle / "client.pem"
        write_file(cert_path, cert_pem(leaf), 0o644)
        issued = kd.issued(ident_id)
        previous = issued.read_bytes() if issued.exists() else b""
        write_file(issued, previous + cert_pem(leaf), 0o644)
    kit.identities[ident_id] = ident
    kit.revoked_ids = [r for r in kit.revoked_ids if r != ident_id]
    kd.save(kit)
    write_generated(kit, kd)

    trusted = list(dict.fromkeys([*kit.trusted_keys, *(trusted_key_text(k) for k in trusted_keys)]))
    port = kit.cert_port if cert else kit.password_port
    if role == "gateway":
        write_file(
            bundle / "agent.toml",
            render_agent_toml(kit, ident, port=port, cert=cert, trusted=trusted),
            0o644,
        )
        write_file(
            bundle / "uci.txt", render_uci(kit, ident, port=port, cert=cert, trusted=trusted), 0o644
        )
    summary = {
        "id": ident_id,
        "role": role,
        "groups": ident.groups,
        "host": kit.hostname,
        "port": port,
        "username": ident_id,
        "password_env": PASSWORD_ENV if password is not None else None,
        "cert": cert,
        "prefix": kit.prefix,
    }
    write_file(bundle / "identity.json", json.dumps(summary, indent=2) + "\n", 0o644)
    return Credentials(bundle=bundle, password=password, cert=cert_path)


def revoke(root: Path, ident_id: str) -> list[int]:
    """Remove ``ident_id`` from the password file and ACL; put its certificates on the CRL.

    Returns the revoked serials. The broker must be reloaded (SIGHUP) to notice.
    """
    kd = KitDir(root)
    kit = kd.load()
    ident = kit.identities.pop(ident_id, None)
    if ident is None:
        raise KitError(f"{ident_id}: no such identity in {kd.kit_file}", 2)
    remove_password(kd.passwd, ident_id)
    kit.revoked_ids = sorted({*kit.revoked_ids, ident_id})
    serials = list(ident.cert_serials)
    if serials:
        ca_key, ca_cert = load_ca(kd)
        kit.revoked_serials = sorted(set(kit.revoked_serials) | set(serials))
        crl = make_crl(ca_key, ca_cert, kit.revoked_serials)
        write_file(kd.crl_pem, crl.public_bytes(serialization.Encoding.PEM), 0o644)
    kd.save(kit)
    write_generated(kit, kd)
    bundle = kd.bundle(ident_id)
    if bundle.exists():
        shutil.rmtree(bundle)
    return serials


def renew_server(root: Path) -> x509.Certificate:
    """Issue a new server certificate (same CA, names from kit.json); restart Mosquitto."""
    kd = KitDir(root)
    kit = kd.load()
    ca_key, ca_cert = load_ca(kd)
    names = list(dict.fromkeys([kit.hostname, *kit.sans]))
    key, cert = issue(ca_key, ca_cert, kit.hostname, server_names=names, days=SERVER_DAYS)
    write_file(kd.server_key, key_pem(key), 0o600)
    write_file(kd.server_pem, cert_pem(cert), 0o644)
    return cert


def render(root: Path) -> None:
    """Regenerate mosquitto.conf and the ACL from kit.json (after editing it by hand)."""
    kd = KitDir(root)
    write_generated(kd.load(), kd)


# -- command line ---------------------------------------------------------------------------


def add_parser(sub: Any) -> None:
    """Register ``broker`` and its actions on ``titik-ctl``'s subparsers."""
    fmt = argparse.RawDescriptionHelpFormatter
    bp = sub.add_parser(
        "broker",
        help="make a production Mosquitto setup (TLS, identities, ACLs)",
        formatter_class=fmt,
        description=(
            "Generate and maintain a Mosquitto setup in a kit directory: a CA, the server\n"
            "certificate, mosquitto.conf, the password file and the ACL, and one provisioning\n"
            "bundle per gateway. Nothing here talks to the broker: reload it after a change\n"
            "(kill -HUP <pid> or systemctl reload mosquitto). Guide: docs/security.md"
        ),
    )
    bsub = bp.add_subparsers(dest="broker_cmd", metavar="ACTION", required=True)

    p = bsub.add_parser(
        "init",
        help="create the CA, server certificate and mosquitto.conf",
        formatter_class=fmt,
        description=(
            "example:\n  titik-ctl broker init --dir /etc/mosquitto/titik --hostname broker.example.net"
        ),
    )
    p.add_argument("--dir", required=True, help="the kit directory")
    p.add_argument("--hostname", required=True, help="the broker's name, as gateways dial it")
    p.add_argument("--prefix", default="titik", help="topic prefix (default: titik)")
    p.add_argument(
        "--san",
        action="append",
        default=[],
        metavar="NAME|IP",
        help="another name or address in the server certificate (e.g. localhost, 127.0.0.1)",
    )
    p.add_argument(
        "--port", type=int, default=8883, help="TLS listener for client certificates (0: none)"
    )
    p.add_argument(
        "--password-port", type=int, default=8884, help="TLS listener for passwords (0: none)"
    )
    p.add_argument("--bind", default="", metavar="ADDRESS", help="listen on this address only")
    p.add_argument("--run-as", default="mosquitto", metavar="USER", help="Mosquitto's `user`")
    p.add_argument("--log-file", default="/var/log/mosquitto/mosquitto.log")
    p.add_argument("--persistence-dir", default="/var/lib/mosquitto/")
    p.add_argument(
        "--install-dir",
        default="/etc/titik",
        help="where bundles' files go on a gateway (paths in agent.toml; default /etc/titik)",
    )
    p.add_argument(
        "--trusted-key",
        action="append",
        default=[],
        metavar="KEY",
        help="operations signing key for every bundle: ed25519:..., or a key file (repeatable)",
    )
    p.add_argument("--force", action="store_true", help="replace an existing kit")

    for role, name, what in (
        ("gateway", "add-gateway", "a gateway (user name = device id)"),
        ("operator", "add-operator", "an operations user (titik-ctl)"),
        ("central", "add-central", "a central instance (shared subscriptions)"),
    ):
        p = bsub.add_parser(name, help=f"add or replace {what}", formatter_class=fmt)
        p.set_defaults(role=role)
        p.add_argument("--dir", required=True, help="the kit directory")
        p.add_argument("id", metavar="ID", help="the identity (MQTT user name, certificate CN)")
        if role == "gateway":
            p.add_argument("--group", action="append", default=[], metavar="G", help="repeatable")
            p.add_argument(
                "--trusted-key", action="append", default=[], metavar="KEY", help="repeatable"
            )
        pw = p.add_mutually_exclusive_group()
        pw.add_argument("--generate-password", action="store_true", help="make a random password")
        pw.add_argument(
            "--password-from-env",
            action="store_true",
            help=f"take the password from ${PASSWORD_ENV}",
        )
        p.add_argument("--cert", action="store_true", help="issue a client certificate (CN = ID)")

    p = bsub.add_parser("renew-server", help="issue a new server certificate (same CA)")
    p.add_argument("--dir", required=True, help="the kit directory")
    p = bsub.add_parser("render", help="regenerate mosquitto.conf and acl from kit.json")
    p.add_argument("--dir", required=True, help="the kit directory")

    p = bsub.add_parser("revoke", help="remove an identity; revoke its certificates")
    p.add_argument("--dir", required=True, help="the kit directory")
    p.add_argument("id", metavar="ID")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run a ``broker`` action; errors come back as :class:`KitError`."""
    root = Path(args.dir)
    action = args.broker_cmd
    if action == "init":
        kit = init_kit(
            root,
            InitOptions(
                hostname=args.hostname,
                prefix=args.prefix,
                cert_port=args.port,
                password_port=args.password_port,
                bind=args.bind,
                sans=tuple(args.san),
                run_as=args.run_as,
                log_file=args.log_file,
                persistence_dir=args.persistence_dir,
                install_dir=args.install_dir,
                trusted_keys=tuple(args.trusted_key),
                force=args.force,
            ),
        )
        kd = KitDir(root)
        print(f"kit for {kit.hostname} in {kd.root}", file=out)
        print(f"  start: mosquitto -c {kd.conf}", file=out)
        print(f"  keep {kd.ca_key} offline; it is only needed to issue and revoke", file=out)
        return 0
    if action == "renew-server":
        cert = renew_server(root)
        print(f"new server certificate, valid until {cert.not_valid_after_utc:%Y-%m-%d}", file=out)
        print("restart the broker to use it (systemctl restart mosquitto)", file=out)
        return 0
    if action == "render":
        render(root)
        print(f"regenerated {KitDir(root).conf} and {KitDir(root).acl}", file=out)
        print(RELOAD_HINT, file=out)
        return 0
    if action == "revoke":
        serials = revoke(root, args.id)
        print(
            f"revoked {args.id}" + (f" (certificate serials {serials})" if serials else ""),
            file=out,
        )
        print(RELOAD_HINT, file=out)
        # Mosquitto reads passwd, acl and crlfile at start and on SIGHUP only
        # (tests/integration/test_broker_tls.py): the reload is the step that revokes.
        print(f"until it reloads, {args.id}'s password and certificate still work", file=out)
        return 0
    password: str | None = None
    if args.generate_password:
        password = secrets.token_urlsafe(24)
    elif args.password_from_env:
        password = os.environ.get(PASSWORD_ENV)
        if not password:
            raise KitError(f"--password-from-env: ${PASSWORD_ENV} is not set", 2)
    elif not args.cert:
        password = secrets.token_urlsafe(24)
    creds = add_identity(
        root,
        args.id,
        args.role,
        groups=getattr(args, "group", []),
        password=password,
        cert=args.cert,
        trusted_keys=getattr(args, "trusted_key", []),
    )
    print(f"{args.role} {args.id}: bundle in {creds.bundle}", file=out)
    print(RELOAD_HINT, file=out)
    return 0


def main_broker(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        return run(args, out)
    except KitError as exc:
        print(f"titik-ctl broker: error: {exc}", file=err)
        return exc.code
    except OSError as exc:
        print(f"titik-ctl broker: error: {exc}", file=err)
        return 1
