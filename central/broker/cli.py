"""``titik-ctl broker``: the kit's operations (init, add, revoke, renew, render) and arguments."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from central.broker.files import (
    render_agent_toml,
    render_uci,
    trusted_key_text,
    write_generated,
)
from central.broker.kit import (
    CLIENT_DAYS,
    PASSWORD_ENV,
    RELOAD_HINT,
    SERVER_DAYS,
    Identity,
    Kit,
    KitDir,
    KitError,
    Role,
    check_name,
    check_prefix,
    remove_password,
    set_password,
    write_file,
)
from central.broker.pki import (
    cert_pem,
    issue,
    key_pem,
    load_ca,
    make_ca,
    make_crl,
)

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
