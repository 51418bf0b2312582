"""``titik-ctl upgrade``: upgrade the agent of a group in waves, run by central.

An upgrade rollout is a rollout (``titik-ctl rollout``, central/ctl/waves.py): central runs it
and outlives this terminal; titik-ctl only signs, with its own key, which never leaves this
machine. ``start``:

1. reads the release manifest and signs it with --key if it is not signed yet (the same key
   must be in the gateways' ``security.trusted_keys`` and in central's [console]
   signing_keys);
2. ``POST /api/rollouts/upgrade/prepare``: central checks the manifest's signature and the
   plan, and returns every wave's commands (several per wave: the spreading) with the bytes
   to sign;
3. rebuilds those commands itself (central.rollout.upgrade.commands) from its own plan and the
   expiry central chose, refuses if they differ, signs them for the group's command topic,
   ``POST /api/rollouts/submit``, and follows it as ``titik-ctl rollout`` does.

status, pause, resume and abort are ``titik-ctl rollout``'s own (an upgrade is a rollout).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent.protocol.commands import MAX_LIFETIME_S
from agent.protocol.signing import sign
from agent.protocol.topics import CMD, group_topic
from agent.protocol.upgrade import MANIFEST_CONTEXT
from central.ctl import waves
from central.ctl.session import EXIT_USAGE, CtlError
from central.rollout.upgrade import (
    DEFAULT_TZ,
    UpgradePlanError,
    UpgradeSpec,
    UpgradeWindow,
    commands,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DEFAULT_WAVES = "1,10,50,100"


def read_manifest(path: str, key: Ed25519PrivateKey, out: TextIO) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except OSError as exc:
        raise CtlError(f"--manifest {path}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CtlError(f"--manifest {path}: not JSON ({exc})", EXIT_USAGE) from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("version"), str):
        raise CtlError(
            f"--manifest {path}: a release manifest (a JSON object with version, min_from and "
            "packages; docs/upgrades.md)",
            EXIT_USAGE,
        )
    if "sig" not in manifest:
        manifest = sign(key, MANIFEST_CONTEXT, manifest)
        print(
            f"signed the manifest of {manifest['version']} with key {manifest['sig']['kid']}",
            file=out,
        )
    return dict(manifest)


def plan_body(args: argparse.Namespace, manifest: Mapping[str, Any]) -> dict[str, Any]:
    stamp = time.strftime("%Y%m%dT%H%M", time.gmtime())
    rid = args.id or f"{args.group}-{manifest['version']}-{stamp}"[:48]
    if args.window:
        try:
            UpgradeWindow.parse(args.window, args.tz)
        except UpgradePlanError as exc:
            raise CtlError(f"--{exc}", EXIT_USAGE) from None
    if not 0 <= args.max_failure_pct <= 100:
        raise CtlError("--max-failure-pct: from 0 to 100", EXIT_USAGE)
    return {
        "id": rid,
        "group": args.group,
        "manifest": dict(manifest),
        "waves": waves.parse_waves(args.waves),
        "steps": args.steps,
        "spread_s": args.spread,
        "window": args.window,
        "tz": args.tz,
        "health_timeout_s": args.health_timeout,
        "soak_s": args.soak,
        "max_failures": f"{args.max_failure_pct:g}%",
        "margins": {
            "cpu_pct": args.cpu_margin,
            "mem_used_pct": args.mem_margin,
            "temp_c": args.temp_margin,
        },
    }


def check_prepared(body: Mapping[str, Any], prepared: Mapping[str, Any], prefix: str) -> str:
    """The topic, once every command central gave is the one this plan makes; else CtlError.
    (ctl signs only what it has rebuilt itself.)"""
    topic = group_topic(prefix, body["group"], CMD)
    if prepared["topic"] != topic:
        raise CtlError(f"central prepared for topic {prepared['topic']!r}, not {topic!r}")
    docs = [d["payload"] for d in prepared["documents"]]
    if not docs:
        raise CtlError("central prepared no command; nothing signed")
    expires = docs[0].get("expires_at")
    now = time.time()
    if not isinstance(expires, int) or not now < expires <= now + MAX_LIFETIME_S:
        raise CtlError(f"central chose expires_at {expires!r}, not within 7 days; nothing signed")
    spec = UpgradeSpec(
        body["manifest"], body["health_timeout_s"], body["steps"], body["spread_s"],
        body["window"], body["tz"], expires,
    )  # fmt: skip
    if docs != commands(body["id"], body["waves"], spec):
        raise CtlError("central's commands are not the ones this plan makes; nothing signed")
    return topic


def cmd_start(
    api: waves.CentralApi, key: Ed25519PrivateKey, args: argparse.Namespace, out: TextIO
) -> int:
    manifest = read_manifest(args.manifest, key, out)
    body = plan_body(args, manifest)
    prepared = api.call("POST", "/api/rollouts/upgrade/prepare", body)
    topic = check_prepared(body, prepared, args.prefix)
    return waves.submit(
        api, key, topic, prepared, args, out, what="upgrade", signed="commands signed"
    )


def cmd_upgrade(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    waves.check_args(args)
    args.rollout_cmd = args.upgrade_cmd
    if args.upgrade_cmd == "start":
        key = waves.signing_key(args, env, "upgrade start signs the manifest and the commands")
        return cmd_start(waves.api_from(args, env), key, args, out)
    api = waves.api_from(args, env)
    if args.upgrade_cmd == "status":
        return waves.cmd_status(api, args, out)
    return waves.cmd_request(api, args, out)


HELP = """\
Upgrade the agent of a group in waves, run by central (docs/upgrades.md, "Waves").

A wave reaches a cohort of the group (a canary of 1 %, then 10 %, 50 %, everyone: --waves);
gateways pick themselves by the rollout's id (agent/protocol/cohort.py), so nothing lists
them. Each wave is spread: its cohort rises in --steps commands over --spread seconds, so
its gateways do not all download and restart at once; a gateway that runs the release
already answers so, and counts as done. Commands go out only inside the maintenance window
(--window 01:00-05:00 in --tz, Asia/Jakarta by default; the rest waits for the next night).
After a wave's last command it soaks (--soak, at least --health-timeout), then its gate:

  - failure rate: gateways that rolled back or failed, over those that answered; above
    --max-failure-pct the upgrade HALTS (at once when the failures alone pass it);
  - canary vs control: the upgraded gateways' mean CPU, memory and temperature against the
    group's gateways outside the wave (the control cohort), with the margins of config
    rollouts; worse by more than a margin HALTS it.

A halt (or an abort) sends nothing more and downgrades nothing: a gateway in its health gate
finishes by itself, and one that fails it reinstalls its previous package without central.

Central checks the manifest's signature against [console] signing_keys and the gateways
against security.trusted_keys: sign with the same --key (start signs an unsigned manifest).
Central's API and token: --api, --token-file, as `titik-ctl rollout`.

exit codes: 0 completed (or started, with --no-wait); 1 halted, aborted, refused or central
unreachable; 2 usage, no token or key, an unknown group, a manifest central refuses;
130 Ctrl-C while following (the upgrade goes on in central).
"""


def add_parser(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    up = sub.add_parser(
        "upgrade", help="upgrade the agent of a group in waves inside a maintenance window (via central)",
        formatter_class=fmt, description=HELP,
        epilog="examples:\n"
        "  export TITIK_API=https://central.example:8080 TITIK_API_TOKEN_FILE=~/.titik-token\n"
        "  titik-ctl --key ops.pem upgrade start --group city --manifest manifest-0.2.0.json \\\n"
        "      --window 01:00-05:00 --tz Asia/Jakarta --max-failure-pct 1\n"
        "  titik-ctl --key ops.pem upgrade start --group city --manifest m.json \\\n"
        "      --waves 1,10,50,100 --steps 6 --spread 7200 --health-timeout 300 --soak 1800 --no-wait\n"
        "  titik-ctl upgrade status\n"
        "  titik-ctl upgrade status city-0.2.0-20261206T0100 --wait\n"
        "  titik-ctl upgrade pause city-0.2.0-20261206T0100\n"
        "  titik-ctl upgrade abort city-0.2.0-20261206T0100",
    )  # fmt: skip
    common = waves.api_options()
    usub = up.add_subparsers(dest="upgrade_cmd", metavar="ACTION", required=True)
    p = usub.add_parser(
        "start", parents=[common], formatter_class=fmt,
        help="sign the manifest and the wave commands, start the upgrade, follow it",
        description="Prepare the upgrade in central (it checks the manifest's signature, the window and\n"
        "the spreading), rebuild and sign every command here with --key, submit, then print a\n"
        "line per command, wait and gate until it completes (exit 0) or halts or is aborted\n"
        "(exit 1). Ctrl-C stops following only. --no-wait returns once central accepted it.",
    )  # fmt: skip
    p.add_argument("--group", required=True, metavar="G", help="the group to upgrade")
    p.add_argument(
        "--manifest", required=True, metavar="FILE",
        help="the release manifest (JSON; signed with --key here if it has no sig)",
    )  # fmt: skip
    p.add_argument(
        "--id", metavar="ID",
        help="the upgrade's id, 1-48 chars (default: <group>-<version>-<UTC time>); it picks the cohorts",
    )  # fmt: skip
    p.add_argument(
        "--waves", default=DEFAULT_WAVES, metavar="P,P,...",
        help=f"cohort percentages of the group, the first the canary, the last 100 (default: {DEFAULT_WAVES})",
    )  # fmt: skip
    p.add_argument(
        "--steps", type=int, default=4, metavar="N",
        help="commands per wave: its cohort rises in N steps (default: 4; 1 = all at once)",
    )  # fmt: skip
    p.add_argument(
        "--spread", type=float, default=3600.0, metavar="SECONDS",
        help="from a wave's first command to its last (default: 3600; at most the window)",
    )  # fmt: skip
    p.add_argument(
        "--window", metavar="HH:MM-HH:MM",
        help="daily maintenance window in --tz: commands only inside it (default: any hour); "
        "it may cross midnight (22:00-04:00)",
    )  # fmt: skip
    p.add_argument(
        "--tz", default=DEFAULT_TZ, metavar="ZONE",
        help=f"the window's time zone, an IANA name (default: {DEFAULT_TZ})",
    )  # fmt: skip
    p.add_argument(
        "--health-timeout", type=float, default=300.0, metavar="SECONDS",
        help="the gateways' health gate: the new agent must connect and report by then, "
        "or it is rolled back (10-3600, default: 300)",
    )  # fmt: skip
    p.add_argument(
        "--soak", type=float, default=900.0, metavar="SECONDS",
        help="after a wave's last command, before its gate (at least --health-timeout; default: 900)",
    )  # fmt: skip
    p.add_argument(
        "--max-failure-pct", type=float, default=1.0, metavar="PCT",
        help="halt when more than PCT %% of a wave's gateways that answered rolled back or "
        "failed (default: 1)",
    )  # fmt: skip
    p.add_argument(
        "--cpu-margin", type=float, default=15.0, metavar="POINTS",
        help="how much higher the upgraded gateways' mean CPU %% may be than the control's (default: 15)",
    )  # fmt: skip
    p.add_argument(
        "--mem-margin", type=float, default=10.0, metavar="POINTS",
        help="the same for memory %% (default: 10)",
    )  # fmt: skip
    p.add_argument(
        "--temp-margin", type=float, default=5.0, metavar="DEGREES",
        help="the same for temperature (default: 5)",
    )  # fmt: skip
    p.add_argument("--no-wait", action="store_true", help="return once central has started it")
    p = usub.add_parser(
        "status", parents=[common], formatter_class=fmt, help="list rollouts, or show one",
        description="Without ID: the latest rollouts (upgrades and configs). With ID: its status,\n"
        "wave, commands sent, what it waits for (the window), the last gate's figures (failure\n"
        "rate, canary vs control), why it halted, its history. --wait follows it.",
    )  # fmt: skip
    p.add_argument("id", nargs="?", metavar="ID", help="an upgrade's id")
    p.add_argument("--wait", action="store_true", help="with ID: follow it until it ends")
    waves.add_requests(
        usub, common, "an upgrade",
        pause="no further command is sent; the gateways at work finish",
        resume="commands go on (inside the window); a sent wave soaks again in full",
        abort="no further command is sent, for good (nothing is downgraded)",
    )  # fmt: skip
