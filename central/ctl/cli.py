"""titik-ctl: the operator's command line for the fleet, over MQTT (docs/ctl.md).

It reads the retained state gateways publish (status, reported config), publishes desired
configs and commands (signed with Ed25519 when a key is given), and waits for the gateways'
answers. This module parses the arguments; :mod:`central.ctl.commands` does the work over
:mod:`central.ctl.session`; ``titik-ctl broker`` is :mod:`central.broker.cli`.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    pass
from central.ctl import upgrade, waves
from central.ctl.commands import (
    cmd_cmd,
    cmd_config,
    cmd_device,
    cmd_devices,
    cmd_keygen,
    cmd_watch,
)
from central.ctl.session import EXIT_FAILED, EXIT_USAGE, CtlError, settings_from

# -- argument parsing --------------------------------------------------------------------

DESCRIPTION = """\
Operate a Titik fleet over MQTT: list gateways, push configs (with canary rollouts),
run commands and watch what the gateways say.

Connection: --broker HOST[:PORT] (or TITIK_BROKER; default localhost:1883, 8883 with
--tls-ca), --username (or TITIK_MQTT_USERNAME) and the password from TITIK_MQTT_PASSWORD
only (never a flag, so it stays out of shell history and process lists).
Signing: --key FILE (or TITIK_SIGNING_KEY, a path or the PEM itself) signs every desired
config and command with Ed25519; make one with `titik-ctl keygen --out FILE`.

exit codes: 0 done; 1 the operation failed or was halted (a gateway rejected, rolled
back or did not answer); 2 usage or configuration error, or an unknown device or group;
3 (cmd) sent, and queued on the broker for the gateways that are offline.
"""

EXAMPLES = """\
examples:
  titik-ctl keygen --out ops.pem
  titik-ctl devices --group jakarta-pusat --status online
  titik-ctl device gw-0001
  titik-ctl config show gw-0001
  titik-ctl --key ops.pem config push --device gw-0001 --file wifi.json
  titik-ctl --key ops.pem config push --group jakarta-pusat --file wifi.json --canary 10% --max-failures 1
  titik-ctl --key ops.pem cmd --device gw-0001 diagnostics --arg http=https://example.org/
  titik-ctl watch --group jakarta-pusat

Full guide: docs/ctl.md
"""


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(
        prog="titik-ctl", description=DESCRIPTION, epilog=EXAMPLES, formatter_class=fmt
    )
    ap.add_argument(
        "--broker",
        metavar="HOST[:PORT]",
        help="the MQTT broker (default: $TITIK_BROKER or localhost:1883)",
    )
    ap.add_argument(
        "--username",
        help="MQTT user name (default: $TITIK_MQTT_USERNAME); the password comes from $TITIK_MQTT_PASSWORD",
    )
    ap.add_argument(
        "--tls-ca", metavar="FILE", help="connect with TLS, trusting this CA certificate (PEM)"
    )
    ap.add_argument("--prefix", default="titik", help="topic prefix (default: titik)")
    ap.add_argument(
        "--key",
        metavar="FILE",
        help="Ed25519 private key (PEM) that signs configs and commands (default: $TITIK_SIGNING_KEY)",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to wait for the broker and for gateways' answers (default: 30)",
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "keygen",
        help="make a signing key",
        formatter_class=fmt,
        description=(
            "Write a new Ed25519 private key (PEM, mode 0600) and print its public key line,\n"
            "ed25519:..., for security.trusted_keys in the gateways' agent.toml.\n\n"
            "example:\n  titik-ctl keygen --out ops.pem"
        ),
    )
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the private key")
    p.add_argument("--force", action="store_true", help="replace FILE if it exists")

    p = sub.add_parser(
        "devices",
        help="list gateways from their retained status",
        formatter_class=fmt,
        description=(
            "List gateways (id, online, site, region, groups, agent version) from the retained\n"
            "status messages.\n\nexample:\n  titik-ctl devices --region 'Jakarta Pusat' --status offline"
        ),
    )
    p.add_argument("--region", help="only this region (exact)")
    p.add_argument("--group", help="only members of this group")
    p.add_argument(
        "--status", choices=["online", "offline"], help="only online or offline gateways"
    )

    p = sub.add_parser(
        "device",
        help="one gateway's status and reported config",
        formatter_class=fmt,
        description=(
            "Show a gateway's retained status and config report.\n\nexample:\n  titik-ctl device gw-0001"
        ),
    )
    p.add_argument("id", metavar="ID", help="the device id")

    cfg = sub.add_parser(
        "config",
        help="push, clear or show desired configs",
        formatter_class=fmt,
        description=(
            "config push: publish a desired config document (retained) and wait for the reports.\n"
            "config clear: empty a device's or a group's document (the next version, {}).\n"
            "config show: a gateway's desired documents (its own and its groups') and its report."
        ),
    )
    csub = cfg.add_subparsers(dest="config_cmd", metavar="ACTION", required=True)
    p = csub.add_parser(
        "push",
        help="publish a desired config and wait for the outcome",
        formatter_class=fmt,
        description=(
            "Publish CONFIG.json as the desired config of one device or of a group, then wait\n"
            "for the gateways' reports. The file holds the config object (e.g.\n"
            '{"telemetry": {"interval_s": 60}}) or a whole {"version", "config"} document.\n'
            "The version is --version, or the current retained document's version + 1.\n\n"
            "With --group and --canary N|P%: the first N (or P%, rounded up) members by sorted id\n"
            "get the config on their own device documents first. If more of them fail (rejected,\n"
            "rolled back, no report) than --max-failures allows, the rollout HALTS (exit 1) and\n"
            "the group document is not published; the canaries' own documents are restored.\n"
            "Otherwise the group document is published and the rest are watched.\n\n"
            "examples:\n"
            "  titik-ctl config push --device gw-0001 --file wifi.json\n"
            "  titik-ctl config push --group g1 --file wifi.json --canary 2\n"
            "  titik-ctl config push --group g1 --file wifi.json --canary 10% --max-failures 5%"
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="one gateway")
    target.add_argument("--group", metavar="G", help="every gateway with G in device.groups")
    p.add_argument("--file", required=True, metavar="CONFIG.json", help="the config to push (JSON)")
    p.add_argument(
        "--version", type=int, metavar="N", help="the document's version (default: current + 1)"
    )
    p.add_argument(
        "--canary", metavar="N|P%", help="with --group: apply to this many members first"
    )
    p.add_argument(
        "--max-failures",
        default="0",
        metavar="N|P%",
        help="failures tolerated before halting (default: 0)",
    )
    p.add_argument(
        "--new",
        action="store_true",
        help="allow a device or group no gateway has reported yet (pre-provisioning); "
        "without it an unknown one is refused (exit 2), so a typo leaves no document behind",
    )
    p = csub.add_parser(
        "clear",
        help="empty a device's or a group's desired document",
        formatter_class=fmt,
        description=(
            'Publish {"config": {}} at the next version (signed like any document) as the\n'
            "desired document of one device or of a group, and wait for the reports. The\n"
            "gateways drop that layer and keep the others (their group's, their own, the local\n"
            "file): use it to take back a per-device override, or a document that was rejected.\n\n"
            "examples:\n"
            "  titik-ctl config clear --device gw-0001\n"
            "  titik-ctl config clear --group g1"
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="one gateway's own document")
    target.add_argument("--group", metavar="G", help="group G's document")
    p = csub.add_parser(
        "show",
        help="desired and reported config of a device",
        formatter_class=fmt,
        description=(
            "Show a gateway's desired documents and its reported config.\n\nexample:\n  titik-ctl config show gw-0001"
        ),
    )
    p.add_argument("id", metavar="ID", help="the device id")

    p = sub.add_parser(
        "cmd",
        help="run a command on a device or a group",
        formatter_class=fmt,
        description=(
            "Publish a command (a unique id, expires_at = now + --expires-in) and print the\n"
            "result(s) of the gateways online. An offline gateway gets it from the broker when\n"
            "it reconnects, until it expires (exit 3 says some were queued so). Unknown devices\n"
            "and groups are refused (exit 2).\n"
            "Commands: reboot, restart_wifi, collect_now, diagnostics, kick_client,\n"
            "get_config (docs/remote-config.md), upgrade (docs/upgrades.md: --arg manifest=\n"
            '"$(cat manifest.signed.json)" --arg health_timeout_s=300; for a group in waves\n'
            "inside a maintenance window use `titik-ctl upgrade`). Values that read as JSON\n"
            "(30, true, an object) are sent as such.\n\n"
            "examples:\n"
            "  titik-ctl cmd --device gw-0001 collect_now\n"
            "  titik-ctl cmd --device gw-0001 reboot --arg delay_s=30\n"
            "  titik-ctl cmd --group g1 restart_wifi\n"
            '  titik-ctl cmd --device gw-0001 upgrade --arg manifest="$(cat m.signed.json)"'
        ),
    )
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--device", metavar="ID", help="one gateway")
    target.add_argument("--group", metavar="G", help="every gateway in group G")
    p.add_argument("name", metavar="NAME", help="the command's name")
    p.add_argument("--arg", action="append", metavar="KEY=VALUE", help="an argument (repeatable)")
    p.add_argument(
        "--expires-in",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="refused by gateways after this long (default: 300)",
    )

    p = sub.add_parser(
        "watch",
        help="stream status, config and result events",
        formatter_class=fmt,
        description=(
            "Print one line per status, reported config or command result until Ctrl-C.\n\n"
            "example:\n  titik-ctl watch --group g1"
        ),
    )
    p.add_argument("--group", metavar="G", help="only gateways of group G")
    p.add_argument("--count", type=int, metavar="N", help="stop after N events")

    from central.broker import cli as brokerkit

    brokerkit.add_parser(sub)
    waves.add_parser(sub)
    upgrade.add_parser(sub)
    return ap


def no_broker(args: argparse.Namespace, out: TextIO) -> int:
    """The commands that need no MQTT settings (rollouts go through central's HTTP API)."""
    if args.command == "keygen":
        return cmd_keygen(args, out)
    if args.command == "rollout":
        return waves.cmd_rollout(args, os.environ, out)
    if args.command == "upgrade":
        return upgrade.cmd_upgrade(args, os.environ, out)
    from central.broker import cli as brokerkit

    return brokerkit.main_broker(args, out, sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    out = sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already explained)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command in ("keygen", "broker", "rollout", "upgrade"):
            return no_broker(args, out)
        settings = settings_from(args, os.environ)
        run = {
            "devices": cmd_devices,
            "device": cmd_device,
            "config": cmd_config,
            "cmd": cmd_cmd,
            "watch": cmd_watch,
        }[args.command]
        return run(settings, args, out)
    except CtlError as exc:
        print(f"titik-ctl: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
