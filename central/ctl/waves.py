"""``titik-ctl rollout``: start, follow and steer a rollout in waves that central runs.

Central runs rollouts (it holds the fleet's health and outlives the operator's terminal,
docs/architecture.md), so this talks to central's HTTP API with an API token; only the
signing happens here, with ctl's own key, which never leaves this machine:

1. ``POST /api/rollouts/prepare`` with the plan: central checks it and the config and returns
   each document (the waves, then the restore) with the bytes to sign;
2. ctl rebuilds the same documents itself from its plan, the base version and the old config
   central named (central.rollout.plan.documents), refuses if they differ, and signs them;
3. ``POST /api/rollouts/submit``; then it follows ``GET /api/rollouts/<id>`` until the rollout
   ends. Ctrl-C stops following, not the rollout, and says how to pause or abort it.

No HTTP library beyond the standard one: a handful of JSON requests do not need one.
"""

from __future__ import annotations

import argparse
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from agent import __version__
from agent.protocol.signing import sign
from agent.protocol.topics import CONFIG_DESIRED, group_topic
from central.ctl.session import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CtlError, load_key, table
from central.rollout.plan import Limits, Plan, PlanError, documents

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

#: Exit code after Ctrl-C while following (the rollout goes on in central).
EXIT_INTERRUPTED = 130
DEFAULT_API = "http://localhost:8080"
FINAL = ("completed", "halted", "aborted")
#: The status each request leads to, once central's runner has taken it.
AFTER = {
    "pause": ("paused", *FINAL),
    "resume": ("running", *FINAL),
    "abort": ("aborted", "completed", "halted"),
}


class Unreachable(CtlError):
    """Central's API did not answer (refused, timed out, a TLS failure)."""


@dataclass(frozen=True)
class CentralApi:
    url: str
    token: str
    context: ssl.SSLContext | None
    timeout: float

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 - the scheme is checked in api_from
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                "Accept": "application/json",
                "Content-Type": "application/json",
                "User-Agent": f"titik-ctl/{__version__}",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self.context) as r:  # noqa: S310
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as exc:
            raise http_error(exc, self.url) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(
                f"cannot reach central's API at {self.url}: {reason}; give --api URL "
                "(or TITIK_API) and check that titik-central runs",
                EXIT_FAILED,
            ) from None


def http_error(exc: urllib.error.HTTPError, url: str) -> CtlError:
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    if isinstance(detail, list):  # FastAPI's validation errors
        detail = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', []) if x != 'body')}: {d.get('msg')}"
            for d in detail
        )
    text = str(detail or exc.reason).replace("GET /api/rollouts", "titik-ctl rollout status")
    if exc.code == 401:
        return CtlError(
            f"central refused the token ({text}); make one with `titik-central token create "
            "--name NAME --role operator` and give it with --token-file or TITIK_API_TOKEN",
            EXIT_USAGE,
        )
    if exc.code in (403, 409):
        return CtlError(f"refused by central: {text}", EXIT_FAILED)
    if exc.code in (404, 422):
        return CtlError(text, EXIT_USAGE)
    return CtlError(f"central answered HTTP {exc.code}: {text}", EXIT_FAILED)


def api_from(args: argparse.Namespace, env: Mapping[str, str]) -> CentralApi:
    url = (args.api or env.get("TITIK_API") or DEFAULT_API).rstrip("/")
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise CtlError(f"--api {url!r}: an http:// or https:// URL of central", EXIT_USAGE)
    token_file = args.token_file or env.get("TITIK_API_TOKEN_FILE")
    if token_file:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise CtlError(f"--token-file {token_file}: {exc.strerror}", EXIT_USAGE) from None
    else:
        token = env.get("TITIK_API_TOKEN", "").strip()
    if not token:
        raise CtlError(
            "no API token: give --token-file FILE (or TITIK_API_TOKEN_FILE, or the token in "
            "TITIK_API_TOKEN); make one with `titik-central token create --name NAME "
            "--role operator`",
            EXIT_USAGE,
        )
    context = None
    if args.api_ca:
        if not Path(args.api_ca).is_file():
            raise CtlError(f"--api-ca {args.api_ca}: no such file (a CA certificate, PEM)", 2)
        context = ssl.create_default_context(cafile=args.api_ca)
    return CentralApi(url, token, context, float(args.timeout))


def api_options() -> argparse.ArgumentParser:
    """The options :func:`api_from` reads, and --poll: the parent parser of every ACTION of
    ``titik-ctl rollout`` and ``titik-ctl upgrade`` (central/ctl/upgrade.py)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api", metavar="URL", help="central's URL (default: $TITIK_API or http://localhost:8080)"
    )
    common.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the API token (default: $TITIK_API_TOKEN_FILE, or the token in $TITIK_API_TOKEN)",
    )
    common.add_argument(
        "--api-ca", metavar="FILE", help="trust this CA certificate (PEM) for an https:// --api"
    )
    common.add_argument(
        "--poll",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how often to ask central while following (default: 2)",
    )
    return common


# -- start -----------------------------------------------------------------------------------


def parse_waves(text: str) -> list[float]:
    try:
        waves = [float(w.strip().removesuffix("%")) for w in text.split(",") if w.strip()]
    except ValueError:
        raise CtlError(
            f"--waves {text!r}: percentages separated by commas, e.g. 1,5,25,100", 2
        ) from None
    if not waves:
        raise CtlError("--waves: at least one percentage, the last 100", EXIT_USAGE)
    return waves


def plan_body(args: argparse.Namespace, config: dict[str, Any]) -> dict[str, Any]:
    rid = args.id or f"{args.group}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"[:64]
    return {
        "id": rid,
        "group": args.group,
        "config": config,
        "waves": parse_waves(args.waves),
        "soak_s": args.soak,
        "max_failures": args.max_failures,
        "margins": {
            "cpu_pct": args.cpu_margin,
            "mem_used_pct": args.mem_margin,
            "temp_c": args.temp_margin,
        },
    }


def check_prepared(body: Mapping[str, Any], prepared: Mapping[str, Any], prefix: str) -> str:
    """The topic, once every document central gave is the one this plan makes; else CtlError.
    (ctl signs only what it has rebuilt itself: central cannot slip it another document.)"""
    topic = group_topic(prefix, body["group"], CONFIG_DESIRED)
    docs = prepared["documents"]
    if prepared["topic"] != topic:
        raise CtlError(
            f"central prepared for topic {prepared['topic']!r}, not {topic!r}; not signed"
        )
    old = docs[-1]["payload"].get("config")
    plan = Plan(
        body["id"], body["group"], tuple(body["waves"]), int(prepared["base_version"]),
        body["config"], old if isinstance(old, dict) else {}, Limits(),
    )  # fmt: skip
    try:
        waves, restore = documents(plan)
    except PlanError as exc:
        raise CtlError(f"the plan: {exc}", EXIT_USAGE) from None
    if [d["payload"] for d in docs] != [*waves, restore]:
        raise CtlError("central's documents are not the ones this plan makes; nothing signed")
    return topic


def cmd_start(
    api: CentralApi, key: Ed25519PrivateKey, args: argparse.Namespace, out: TextIO
) -> int:
    from central.ctl.commands import read_config_file

    config = read_config_file(args.file)
    if set(config) == {"version", "config"} and isinstance(config["config"], dict):
        config = config["config"]  # a whole document: the rollout numbers its own versions
    body = plan_body(args, config)
    prepared = api.call("POST", "/api/rollouts/prepare", body)
    topic = check_prepared(body, prepared, args.prefix)
    return submit(api, key, topic, prepared, args, out)


def submit(
    api: CentralApi,
    key: Ed25519PrivateKey,
    topic: str,
    prepared: Mapping[str, Any],
    args: argparse.Namespace,
    out: TextIO,
    *,
    what: str = "rollout",
    signed: str = "signed",
) -> int:
    """Sign what central prepared (the caller has rebuilt and compared it), submit it, then
    follow it until it ends; with --no-wait, say how to follow it. ``what``: rollout or
    upgrade, as in its titik-ctl command."""
    sigs = [sign(key, topic, d["payload"])["sig"] for d in prepared["documents"]]
    print(prepared["summary"], file=out)
    started = api.call(
        "POST", "/api/rollouts/submit", {"prepare_id": prepared["prepare_id"], "sigs": sigs}
    )
    rid = started["id"]
    print(f"{what} {rid} started in central ({signed} with key {sigs[0]['kid']})", file=out)
    if args.no_wait:
        print(f"follow it: titik-ctl {what} status {rid} --wait", file=out)
        return EXIT_OK
    return follow(api, rid, out, args.poll)


# -- following -------------------------------------------------------------------------------


def wave_name(r: Mapping[str, Any], index: int) -> str:
    sizes = r.get("wave_sizes")
    size = f", {sizes[index]} gateways" if sizes else ""
    return f"wave {index + 1}/{len(r['waves'])} ({r['waves'][index]:g}%{size})"


def gate_line(r: Mapping[str, Any]) -> str:
    """The last gate's figures, naming its wave: a gate that passed while the rollout goes
    on was the previous wave's (the runner publishes the next one in the same step)."""
    g = r.get("gate")
    if not g:
        return ""
    wave = r["wave"] + 1
    if g["verdict"] == "passed" and r["status"] != "completed":
        wave -= 1
    if r.get("kind") == "upgrade":
        wave = g.get("wave") or r["wave"] + 1  # the gate names the wave it judged
        rate = g.get("failure_pct")
        return (
            f"wave {wave}'s gate {g['verdict']}: {g['applied']}/{g['size']} upgraded, "
            f"{g['failures']} failed"
            + (f" ({rate:g}% of {g.get('answered')} that answered)" if rate is not None else "")
            + (f", {g['pending']} pending" if g.get("pending") else "")
        )
    return f"wave {wave}'s gate {g['verdict']}: {g['applied']}/{g['size']} applied, {g['failures']} failed"


def progress_line(r: Mapping[str, Any]) -> str:
    pct = f"{round(r['progress'] * 100):3d}%"
    if r["wave"] < 0:
        if r.get("note") and r["status"] == "running":
            return f"{pct}  {r['status']}: {r['note']}"
        return f"{pct}  {r['status']}: waiting for central to publish wave 1"
    gate = gate_line(r)
    line = f"{pct}  {r['status']}: {wave_name(r, r['wave'])}" + (f"; {gate}" if gate else "")
    if r.get("kind") == "upgrade":
        line += f"; {r.get('commands_sent')}/{r.get('commands')} commands sent"
    if r.get("note") and r["status"] == "running":
        line += f"; {r['note']}"
    return line


def final_code(r: Mapping[str, Any], out: TextIO) -> int:
    if r["status"] == "completed":
        print(f"rollout {r['id']} completed: every wave passed its gate", file=out)
        return EXIT_OK
    print(f"rollout {r['id']} {r['status']}: {r.get('reason') or ''}", file=out)
    if r["status"] == "halted":
        print(after_stop(r), file=out)
    return EXIT_FAILED


def after_stop(r: Mapping[str, Any]) -> str:
    """What a halt or an abort did."""
    if r.get("kind") == "upgrade":
        return (
            "central sends no further upgrade command; nothing is downgraded: a gateway in its "
            "health gate finishes by itself and one that fails it rolls itself back"
        )
    return "central published the restore: every gateway goes back to the old config"


def goes_on(rid: str, r: Mapping[str, Any]) -> str:
    status = r.get("status", "running")
    where = f", {wave_name(r, r['wave'])}" if r and r.get("wave", -1) >= 0 else ""
    return (
        f"Rollout {rid} goes on in central ({status}{where}).\n"
        f"  follow it again: titik-ctl rollout status {rid} --wait\n"
        f"  pause it:        titik-ctl rollout pause {rid}\n"
        f"  abort it:        titik-ctl rollout abort {rid}   (central restores the old config)"
    )


def follow(api: CentralApi, rid: str, out: TextIO, poll: float) -> int:
    """Print a line per wave and per status change until the rollout ends; 0 completed,
    1 halted or aborted (or central's API gone for --timeout), 130 after Ctrl-C. Whenever
    it stops before the end, it says that the rollout goes on in central and how to act."""
    last: tuple[Any, ...] | None = None
    r: Mapping[str, Any] = {}
    lost: float | None = None
    try:
        while True:
            try:
                r = api.call("GET", f"/api/rollouts/{urllib.parse.quote(rid)}")
                lost = None
            except Unreachable as exc:
                if lost is None:
                    lost = time.monotonic()
                    print(f"{exc}; trying again for {api.timeout:g} s", file=out, flush=True)
                elif time.monotonic() - lost > api.timeout:
                    print(f"stopped following: central's API is gone. {goes_on(rid, r)}", file=out)
                    return EXIT_FAILED
                time.sleep(poll)
                continue
            key = (r["status"], r["wave"], (r.get("gate") or {}).get("verdict"))
            if key != last:
                print(progress_line(r), file=out, flush=True)
                last = key
            if r["status"] in FINAL:
                return final_code(r, out)
            time.sleep(poll)  # polling central's API: it offers no push
    except KeyboardInterrupt:
        print(f"\nstopped following. {goes_on(rid, r)}", file=out, flush=True)
        return EXIT_INTERRUPTED


# -- status and requests ---------------------------------------------------------------------


def show(r: Mapping[str, Any], out: TextIO) -> None:
    fail = f"{r['max_failures']:g}{'%' if r['max_failures_percent'] else ''}"
    sizes = r.get("wave_sizes") or [None] * len(r["waves"])
    waves = ", ".join(
        f"{p:g}%" + (f" ({n})" if n is not None else "")
        for p, n in zip(r["waves"], sizes, strict=True)
    )
    created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r["created"]))
    print(f"rollout {r['id']}: {r['status']}, group {r['group']}", file=out)
    print(
        f"  progress  {round(r['progress'] * 100)}%  " + progress_line(r).split("  ", 1)[1],
        file=out,
    )
    print(f"  waves     {waves}; soak {r['soak_s']:g} s; max failures {fail} per wave", file=out)
    if r.get("kind") == "upgrade":
        window = r.get("window") or "any hour"
        print(
            f"  upgrade   agent {r.get('release')}; window {window}; "
            f"{r.get('commands_sent')}/{r.get('commands')} commands sent",
            file=out,
        )
        if r.get("note") and r["status"] == "running":
            print(f"  waiting   {r['note']}", file=out)
    print(f"  started   {created} by {r['created_by']}", file=out)
    if r.get("reason"):
        print(f"  reason    {r['reason']}", file=out)
    gate = r.get("gate")
    if gate:
        print(f"  gate      {gate_line(r)}", file=out)
        for line in [*gate["failed"], *gate["health"]]:
            print(f"            {line}", file=out)
    for event in r["events"]:
        at, _, what = event.partition(" ")
        stamp = time.strftime("%H:%M:%S", time.gmtime(float(at))) if at.isdigit() else at
        print(f"  {stamp}  {what}", file=out)


def cmd_status(api: CentralApi, args: argparse.Namespace, out: TextIO) -> int:
    if args.id is None:
        items = api.call("GET", "/api/rollouts?limit=50")["items"]
        if not items:
            print("no rollouts yet; start one with titik-ctl rollout start", file=out)
            return EXIT_OK
        rows = [["ID", "GROUP", "STATUS", "WAVE", "PROGRESS", "STARTED BY"]]
        for r in items:
            wave = f"{r['wave'] + 1}/{len(r['waves'])}" if r["wave"] >= 0 else "-"
            rows.append(
                [
                    r["id"],
                    r["group"],
                    r["status"],
                    wave,
                    f"{round(r['progress'] * 100)}%",
                    r["created_by"],
                ]
            )
        print(table(rows), file=out)
        return EXIT_OK
    if args.wait:
        return follow(api, args.id, out, args.poll)
    show(api.call("GET", f"/api/rollouts/{urllib.parse.quote(args.id)}"), out)
    return EXIT_OK


def cmd_request(api: CentralApi, args: argparse.Namespace, out: TextIO) -> int:
    """Ask central to pause, resume or abort, and wait (up to --timeout) until it did."""
    action, rid = args.rollout_cmd, args.id
    path = f"/api/rollouts/{urllib.parse.quote(rid)}"
    asked = api.call("POST", f"{path}/{action}")
    print(f"{action} requested for rollout {rid} (it was {asked['status']})", file=out, flush=True)
    deadline = time.monotonic() + api.timeout
    while time.monotonic() < deadline:
        r = api.call("GET", path)
        if r["status"] in AFTER[action]:
            why = f": {r['reason']}" if r.get("reason") and r["status"] in FINAL else ""
            print(f"rollout {rid} is {r['status']}{why}", file=out)
            if r["status"] in ("aborted", "halted"):
                print(after_stop(r), file=out)
            return EXIT_OK if r["status"] in AFTER[action][:1] else EXIT_FAILED
        time.sleep(0.5)  # polling central's API: the runner takes requests at its next tick
    raise CtlError(
        f"central has not acted on the {action} within {api.timeout:g} s (it is still queued); "
        f"check with titik-ctl rollout status {rid}",
        EXIT_FAILED,
    )


def check_args(args: argparse.Namespace) -> None:
    """The numbers every ACTION of rollout and upgrade takes; the prefix without slashes."""
    if args.poll <= 0:
        raise CtlError("--poll: must be more than 0 seconds", EXIT_USAGE)
    if args.timeout <= 0:
        raise CtlError("--timeout: must be more than 0 seconds", EXIT_USAGE)
    args.prefix = args.prefix.strip("/")


def signing_key(args: argparse.Namespace, env: Mapping[str, str], why: str) -> Ed25519PrivateKey:
    """--key or TITIK_SIGNING_KEY, which ``start`` needs (``why`` says for what)."""
    key_spec = args.key or env.get("TITIK_SIGNING_KEY")
    if not key_spec:
        raise CtlError(
            f"{why}: give --key FILE (or TITIK_SIGNING_KEY); make one with "
            "`titik-ctl keygen --out FILE`",
            EXIT_USAGE,
        )
    return load_key(key_spec)


def cmd_rollout(args: argparse.Namespace, env: Mapping[str, str], out: TextIO) -> int:
    check_args(args)
    if args.rollout_cmd == "start":
        key = signing_key(args, env, "rollout start signs its documents")
        return cmd_start(api_from(args, env), key, args, out)
    api = api_from(args, env)
    if args.rollout_cmd == "status":
        return cmd_status(api, args, out)
    return cmd_request(api, args, out)


# -- arguments -------------------------------------------------------------------------------

HELP = """\
Rollouts in waves, run by central (docs/rollouts.md): a canary, then growing waves of a
group, each soaked for --soak seconds and judged by a health gate (the wave's gateways online
and applied, no more failures than --max-failures, health no worse than the rest of the group
by the margins). A wave that fails HALTS the rollout and central publishes the restore (the
old config) to everyone.

titik-ctl talks to central's HTTP API for this (central runs the rollout, so it goes on when
this terminal closes): --api URL (or TITIK_API; default http://localhost:8080) and an API
token of the operator role from --token-file FILE, TITIK_API_TOKEN_FILE or TITIK_API_TOKEN
(never a flag's value: it would show in shell history). `start` signs every document of the
plan here with --key (TITIK_SIGNING_KEY); central checks the signatures against
[console] signing_keys and never holds a key.

exit codes: 0 done (start: completed); 1 halted, aborted, refused or central unreachable;
2 usage, no token or key, an unknown group or rollout, a config the schema refuses;
130 Ctrl-C while following (the rollout goes on in central).
"""


def add_parser(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    ro = sub.add_parser(
        "rollout", help="start, follow, pause, resume or abort a rollout in waves (via central)",
        formatter_class=fmt, description=HELP,
        epilog="examples:\n"
        "  export TITIK_API=https://central.example:8080 TITIK_API_TOKEN_FILE=~/.titik-token\n"
        "  titik-ctl --key ops.pem rollout start --group city --file wifi.json\n"
        "  titik-ctl --key ops.pem rollout start --group city --file wifi.json \\\n"
        "      --waves 1,10,50,100 --soak 900 --max-failures 2% --no-wait\n"
        "  titik-ctl rollout status\n"
        "  titik-ctl rollout status city-20261206T020000 --wait\n"
        "  titik-ctl rollout pause city-20261206T020000\n"
        "  titik-ctl rollout abort city-20261206T020000",
    )  # fmt: skip
    common = api_options()
    rsub = ro.add_subparsers(dest="rollout_cmd", metavar="ACTION", required=True)
    p = rsub.add_parser(
        "start", parents=[common], formatter_class=fmt, help="sign a plan, start it, follow it",
        description="Prepare the plan in central (it checks the config against the agent's schema and\n"
        "numbers the documents), rebuild and sign every document here with --key, submit, then\n"
        "print a line per wave until the rollout completes (exit 0) or halts or is aborted\n"
        "(exit 1). Ctrl-C stops following only: the rollout goes on in central, and titik-ctl\n"
        "says how to pause or abort it. --no-wait returns once central has accepted it.",
    )  # fmt: skip
    p.add_argument(
        "--group", required=True, metavar="G", help="the group to roll the config out to"
    )
    p.add_argument(
        "--file", required=True, metavar="CONFIG.json", help="the new config (JSON object)"
    )
    p.add_argument(
        "--id",
        metavar="ID",
        help="the rollout's id (default: <group>-<UTC time>); it picks the cohorts",
    )
    p.add_argument(
        "--waves",
        default="1,5,25,100",
        metavar="P,P,...",
        help="percentages of the group, the last 100 (default: 1,5,25,100)",
    )
    p.add_argument(
        "--soak",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="soak of each wave before its gate (default: 600)",
    )
    p.add_argument(
        "--max-failures",
        default="0",
        metavar="N|P%",
        help="failures tolerated per wave (default: 0)",
    )
    p.add_argument(
        "--cpu-margin",
        type=float,
        default=15.0,
        metavar="POINTS",
        help="how much higher a wave's mean CPU %% may be than the rest's (default: 15)",
    )
    p.add_argument(
        "--mem-margin",
        type=float,
        default=10.0,
        metavar="POINTS",
        help="the same for memory %% (default: 10)",
    )
    p.add_argument(
        "--temp-margin",
        type=float,
        default=5.0,
        metavar="DEGREES",
        help="the same for temperature (default: 5)",
    )
    p.add_argument("--no-wait", action="store_true", help="return once central has started it")
    p = rsub.add_parser(
        "status", parents=[common], formatter_class=fmt, help="list rollouts, or show one",
        description="Without ID: the latest rollouts. With ID: its status, wave, progress, the last\n"
        "gate's figures, the reason of a halt and its history. --wait follows it as start does.",
    )  # fmt: skip
    p.add_argument("id", nargs="?", metavar="ID", help="a rollout's id")
    p.add_argument("--wait", action="store_true", help="with ID: follow it until it ends")
    add_requests(
        rsub, common, "a rollout",
        pause="nothing advances; the wave that is out stays out",
        resume="the wave that is out soaks again in full, then its gate is judged",
        abort="central publishes the restore: every gateway goes back to the old config",
    )  # fmt: skip


def add_requests(sub: Any, common: argparse.ArgumentParser, noun: str, **what: str) -> None:
    """The pause, resume and abort ACTIONs of ``noun`` ("a rollout", "an upgrade"), each
    with what it does (:func:`cmd_request`)."""
    article, kind = noun.split(" ", 1)
    for name, text in what.items():
        p = sub.add_parser(
            name, parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
            help=f"{name} {noun}: {text}",
            description=f"Ask central to {name} {kind} ID ({text}), and wait (up to --timeout)\n"
            f"until its runner has done it. {article.capitalize()} {kind} that has ended is "
            "refused (exit 1).",
        )  # fmt: skip
        p.add_argument("id", metavar="ID", help=f"the {kind}'s id")
