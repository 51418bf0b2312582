"""The titik-ctl commands: devices, device, config show/push (with canaries), cmd, watch, keygen.

Each takes the settings, its parsed arguments and an output stream, and returns an exit code.
Rollout decisions are pure and live in :mod:`central.ctl.rollout`; this is the imperative shell.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import ValidationError

from agent.protocol import Status
from agent.protocol.signing import public_key_text
from agent.protocol.topics import (
    CMD,
    CMD_RESULT,
    CONFIG_DESIRED,
    CONFIG_REPORTED,
    STATUS,
    TOPIC_SAFE,
    device_of,
    group_topic,
    gw_filter,
    gw_topic,
)
from central.ctl import rollout
from central.ctl.rollout import Outcome

if TYPE_CHECKING:
    pass
from central.ctl.session import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_QUEUED,
    EXIT_USAGE,
    BrokerSession,
    CtlError,
    Msg,
    Progress,
    RetainedFleet,
    Settings,
    connected,
    describe,
    loads,
    pretty,
    report_of,
    table,
    topic_safe,
)

# -- commands ----------------------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace, out: TextIO) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = Path(args.out)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if args.force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CtlError(
            f"{path} exists; pick another --out, or add --force to replace it", EXIT_USAGE
        ) from None
    except OSError as exc:
        raise CtlError(f"cannot write {path}: {exc.strerror}", EXIT_USAGE) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)  # O_TRUNC keeps an existing file's mode
    out.write(f"wrote {path} (keep it secret; mode 0600)\n")
    out.write("add this line to security.trusted_keys on the gateways:\n")
    out.write(public_key_text(key.public_key()) + "\n")
    return EXIT_OK


def _status_row(device: str, st: Mapping[str, Any]) -> list[str]:
    return [
        device,
        "yes" if st.get("online") else "no",
        str(st.get("site") or "-"),
        str(st.get("region") or "-"),
        ",".join(st.get("groups") or []) or "-",
        str(st.get("version") or "-"),
    ]


def cmd_devices(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    with connected(s) as link:
        fleet, _ = RetainedFleet.read(link)
    rows = [["ID", "ONLINE", "SITE", "REGION", "GROUPS", "VERSION"]]
    for device in sorted(fleet.statuses):
        st = fleet.statuses[device]
        try:
            Status.model_validate(st)
        except ValidationError:
            continue  # not a titik status; nothing sensible to show
        if args.region and st.get("region") != args.region:
            continue
        if args.group and args.group not in (st.get("groups") or []):
            continue
        if args.status and bool(st.get("online")) != (args.status == "online"):
            continue
        rows.append(_status_row(device, st))
    if len(rows) == 1:
        out.write("no devices match (none has a retained status under this --prefix)\n")
        return EXIT_OK
    out.write(table(rows) + "\n")
    return EXIT_OK


def cmd_device(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    device = topic_safe(args.id, "ID")
    p = s.prefix
    with connected(s) as link:
        found = link.snapshot(gw_topic(p, device, STATUS), gw_topic(p, device, CONFIG_REPORTED))
    status = found.get(gw_topic(p, device, STATUS))
    reported = found.get(gw_topic(p, device, CONFIG_REPORTED))
    if status is None and reported is None:
        raise CtlError(
            f"nothing retained for {device!r}; list the known ids with `titik-ctl devices`"
        )
    out.write(f"device {device}\n")
    out.write("status:\n" + _show(status) + "\n")
    out.write(CONFIG_REPORTED + ":\n" + _show(reported) + "\n")
    return EXIT_OK


def cmd_config_show(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    device = topic_safe(args.id, "ID")
    p = s.prefix
    with connected(s) as link:
        found = link.snapshot(
            gw_topic(p, device, STATUS),
            gw_topic(p, device, CONFIG_REPORTED),
            gw_topic(p, device, CONFIG_DESIRED),
        )
        status = Msg("", found.get(gw_topic(p, device, STATUS), b""), True).json()
        status = status if isinstance(status, dict) else {}
        listed = status.get("groups")
        groups = [
            g
            for g in (listed if isinstance(listed, list) else [])
            if isinstance(g, str) and TOPIC_SAFE.fullmatch(g)
        ]
        group_docs = (
            link.snapshot(*(group_topic(p, g, CONFIG_DESIRED) for g in groups)) if groups else {}
        )
    if not found:
        raise CtlError(
            f"nothing retained for {device!r}; list the known ids with `titik-ctl devices`"
        )
    for g in groups:
        doc = group_docs.get(group_topic(p, g, CONFIG_DESIRED))
        out.write(f"desired (group/{g}):\n" + (_show_doc(doc)) + "\n")
    out.write("desired (gw):\n" + _show_doc(found.get(gw_topic(p, device, CONFIG_DESIRED))) + "\n")
    rep = found.get(gw_topic(p, device, CONFIG_REPORTED))
    out.write("reported:\n" + _show(rep) + "\n")
    return EXIT_OK


def _show(payload: bytes | None) -> str:
    if not payload:
        return "(none)"
    body = Msg("", payload, True).json()
    return pretty(body) if body is not None else f"(not JSON: {payload[:200]!r})"


def _show_doc(payload: bytes | None) -> str:
    if not payload:
        return "(none)"
    doc = loads(payload)
    if doc is None:
        return "(not JSON)"
    if isinstance(doc, dict) and "sig" in doc:
        doc["sig"] = (
            f"ed25519 key {doc['sig'].get('kid', '?')}" if isinstance(doc["sig"], dict) else "?"
        )
    return pretty(doc)


def read_config_file(path: str) -> dict[str, Any]:
    """The config to push: a bare config object, or a ``{"version", "config"}`` document."""
    try:
        body = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CtlError(f"--file {path}: {exc.strerror}", EXIT_USAGE) from None
    except ValueError as exc:
        raise CtlError(f"--file {path}: not valid JSON ({exc})", EXIT_USAGE) from None
    if (
        isinstance(body, dict)
        and isinstance(body.get("config"), dict)
        and set(body) <= {"version", "config", "sig"}
    ):
        body = body["config"]
    if not isinstance(body, dict):
        raise CtlError(
            f'--file {path}: must be a JSON object such as {{"telemetry": {{"interval_s": 60}}}}',
            EXIT_USAGE,
        )
    return body


def await_outcomes(
    link: BrokerSession,
    devices: Iterable[str],
    source: str,
    version: int,
    deadline: float,
    reports: dict[str, dict[str, Any]],
    on_change: Callable[[dict[str, Outcome | None]], None] | None = None,
) -> dict[str, Outcome]:
    """Read reports until every device has an outcome for (source, version) or time is up.

    Reports read earlier (``reports``) count first: waiting for one set of canaries reads the
    others' reports too, and those do not come again. (Versions pushed are always new, so a
    report from before the push cannot match.)"""
    p = link.settings.prefix
    outcomes: dict[str, Outcome | None] = {
        d: rollout.outcome_of(reports[d], source, version) if d in reports else None
        for d in sorted(devices)
    }
    if on_change is not None:
        on_change(outcomes)
    while any(o is None for o in outcomes.values()):
        msg = link.next(deadline)
        if msg is None:
            break
        dev = device_of(msg.topic, p, CONFIG_REPORTED)
        body = report_of(msg.payload) if dev is not None else None
        if dev is None or body is None:
            continue
        reports[dev] = body
        if dev in outcomes and outcomes[dev] is None:
            outcomes[dev] = rollout.outcome_of(body, source, version)
            if outcomes[dev] is not None and on_change is not None:
                on_change(outcomes)
    return rollout.finalise(outcomes)


def cmd_config_push(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    config = read_config_file(args.file)
    try:
        threshold = rollout.parse_threshold(args.max_failures)
        canary = rollout.parse_batch(args.canary) if args.canary is not None else None
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    if canary is not None and args.device:
        raise CtlError("--canary goes with --group (a single device is its own canary)", EXIT_USAGE)
    with connected(s) as link:
        if args.device:
            device = topic_safe(args.device, "--device")
            return push_device(link, device, config, args.version, out, new=args.new)
        group = topic_safe(args.group, "--group")
        return push_group(link, group, config, args.version, canary, threshold, out, new=args.new)


def cmd_config_clear(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Empty a device's or a group's document: ``{"config": {}}`` at the next version, signed
    like any document. The gateways drop that layer and keep the rest (the group's, their
    own, the local file): an empty retained message would change nothing on them, and an
    unsigned one would be refused where signatures are required."""
    with connected(s) as link:
        if args.device:
            device = topic_safe(args.device, "--device")
            return push_device(link, device, {}, None, out)
        group = topic_safe(args.group, "--group")
        return push_group(link, group, {}, None, None, rollout.parse_threshold("0"), out)


def known_device(fleet: RetainedFleet, device: str, *, new_flag: str | None = None) -> None:
    """Refuse (exit 2) an id no gateway has published a status or a report under: a typo
    must not leave a retained document, or a command, that nothing will ever take."""
    if device in fleet.statuses or device in fleet.reports:
        return
    hint = f", or add {new_flag} for a gateway not installed yet" if new_flag else ""
    raise CtlError(
        f"unknown device {device!r}: no gateway has published under that id; "
        f"list the known ones with `titik-ctl devices`{hint}",
        EXIT_USAGE,
    )


def known_group(fleet: RetainedFleet, group: str, *, new_flag: str | None = None) -> list[str]:
    """The group's members; an unknown group (no member) is refused with exit 2."""
    members = rollout.members(group, fleet.statuses, fleet.reports)
    if members:
        return members
    groups = sorted(
        {
            g
            for st in fleet.statuses.values()
            if isinstance(gs := st.get("groups"), list)
            for g in gs
            if isinstance(g, str)
        }
    )
    listed = ", ".join(groups[:20]) + (" ..." if len(groups) > 20 else "") if groups else "none"
    hint = f"; add {new_flag} to publish for a group no gateway is in yet" if new_flag else ""
    raise CtlError(
        f"unknown group {group!r}: no gateway lists it (known groups: {listed}){hint}",
        EXIT_USAGE,
    )


def push_device(
    link: BrokerSession,
    device: str,
    config: dict[str, Any],
    given: int | None,
    out: TextIO,
    *,
    new: bool = False,
) -> int:
    s, p = link.settings, link.settings.prefix
    topic = gw_topic(p, device, CONFIG_DESIRED)
    fleet, found = RetainedFleet.read(link, extra=[topic])
    if not new:
        known_device(fleet, device, new_flag="--new")
    version = _version(found.get(topic), given, fleet.seen_version([device], "gw"))
    link.publish(topic, {"version": version, "config": config}, retain=True)
    out.write(
        f"published {topic} version {version}{' (signed)' if s.key else ''}; waiting for {device}\n"
    )
    outcome = await_outcomes(
        link, [device], "gw", version, time.monotonic() + s.timeout, fleet.reports
    )[device]
    out.write(describe(device, outcome, fleet.reports.get(device)) + "\n")
    return EXIT_OK if outcome is Outcome.APPLIED else EXIT_FAILED


def _version(current: bytes | None, given: int | None, seen: int | None) -> int:
    try:
        version = rollout.next_version(current, given)
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    if given is None and seen is not None and version <= seen:
        version = seen + 1  # the retained document was cleared, but the gateways remember
    return version


def push_group(
    link: BrokerSession,
    group: str,
    config: dict[str, Any],
    given: int | None,
    canary: rollout.Amount | None,
    threshold: rollout.Amount,
    out: TextIO,
    *,
    new: bool = False,
) -> int:
    gtopic = group_topic(link.settings.prefix, group, CONFIG_DESIRED)
    fleet, found = RetainedFleet.read(link, desired=True, extra=[gtopic])
    if new:
        members = rollout.members(group, fleet.statuses, fleet.reports)
    else:
        members = known_group(fleet, group, new_flag="--new")
    restores: dict[str, int] = {}
    try:
        return _push_group(
            link, fleet, found, group, members, config, given, canary, threshold, out, restores
        )
    except KeyboardInterrupt:
        # Ctrl-C must not leave the new config pinned on the canaries' own documents.
        if restores:
            out.write(
                "interrupted: restoring the canaries' own documents "
                f"({', '.join(sorted(restores))}); Ctrl-C again leaves them as they are\n"
            )
            out.flush()
            restore_canaries(link, fleet, restores, out)
        else:
            out.write("interrupted: no canary document was published\n")
        raise


def _push_group(
    link: BrokerSession,
    fleet: RetainedFleet,
    found: Mapping[str, bytes],
    group: str,
    members: list[str],
    config: dict[str, Any],
    given: int | None,
    canary: rollout.Amount | None,
    threshold: rollout.Amount,
    out: TextIO,
    restores: dict[str, int],
) -> int:
    s, p = link.settings, link.settings.prefix
    gtopic = group_topic(p, group, CONFIG_DESIRED)
    source = f"group/{group}"
    version = _version(found.get(gtopic), given, fleet.seen_version(members, source))
    canaries: list[str] = []
    if canary is not None:
        if not members:
            raise CtlError(
                f"no gateway is known in group {group!r} (no retained status lists it), so there is "
                "nothing to canary; check `titik-ctl devices --group G`, or push without --canary"
            )
        canaries, rest = rollout.select_canaries(members, canary)
        out.write(
            f"canary: {', '.join(canaries)} ({len(canaries)} of {len(members)}); rest: {len(rest)}\n"
        )
        outcomes = canary_phase(link, fleet, canaries, config, restores)
        failed = {d: o for d, o in outcomes.items() if o.failed}
        for d in canaries:
            out.write(describe(d, outcomes[d], fleet.reports.get(d)) + "\n")
        if rollout.should_halt(outcomes, threshold):
            out.write(
                f"HALTED: {len(failed)} of {len(canaries)} canary devices failed "
                f"(--max-failures {threshold}): {', '.join(sorted(failed))}\n"
                f"nothing was published to {gtopic}; restoring the canaries' own documents\n"
            )
            restore_canaries(link, fleet, restores, out)
            restores.clear()
            return EXIT_FAILED
        out.write(f"canary passed ({len(failed)} failed, --max-failures {threshold})\n")
    link.publish(gtopic, {"version": version, "config": config}, retain=True)
    out.write(f"published {gtopic} version {version}{' (signed)' if s.key else ''}\n")
    if not members:
        out.write(
            f"no gateway is known in group {group!r}; the document stays retained for when they connect\n"
        )
        return EXIT_OK
    progress = Progress(out)

    def show(outcomes: dict[str, Outcome | None]) -> None:
        progress.update(rollout.tally(outcomes).line())

    final = await_outcomes(
        link, members, source, version, time.monotonic() + s.timeout, fleet.reports, show
    )
    progress.done()
    if restores:
        restore_canaries(link, fleet, restores, out)
        restores.clear()
    summary = rollout.tally(final)
    out.write(f"summary: {summary.line()}, group {group} version {version}\n")
    for d, o in final.items():
        if o.failed:
            out.write(describe(d, o, fleet.reports.get(d)) + "\n")
    return EXIT_FAILED if rollout.exceeds(threshold, summary.failed, summary.total) else EXIT_OK


def canary_phase(
    link: BrokerSession,
    fleet: RetainedFleet,
    canaries: list[str],
    config: dict[str, Any],
    restores: dict[str, int],
) -> dict[str, Outcome]:
    """Push the group config to each canary's own document; returns the outcomes. Each
    canary's entry in ``restores`` (the version its own document must be restored at) is set
    before its document is published, so an interruption at any point knows what to undo."""
    p = link.settings.prefix
    versions: dict[str, int] = {}
    for d in canaries:
        current = fleet.desired.get(d)
        version = _version(current, None, fleet.seen_version([d], "gw"))
        own = rollout.document_config(current)
        restores[d] = version + 1
        link.publish(
            gw_topic(p, d, CONFIG_DESIRED),
            {"version": version, "config": rollout.canary_document(config, own)},
            retain=True,
        )
        versions[d] = version
    deadline = time.monotonic() + link.settings.timeout
    outcomes: dict[str, Outcome] = {}
    for v in sorted(set(versions.values())):
        same = [d for d in canaries if versions[d] == v]
        outcomes.update(await_outcomes(link, same, "gw", v, deadline, fleet.reports))
    return outcomes


def restore_canaries(
    link: BrokerSession, fleet: RetainedFleet, restores: dict[str, int], out: TextIO
) -> None:
    """Put back each canary's own document as it was before the rollout (a newer version)."""
    p = link.settings.prefix
    for d, version in sorted(restores.items()):
        own = rollout.document_config(fleet.desired.get(d))
        link.publish(
            gw_topic(p, d, CONFIG_DESIRED), {"version": version, "config": own}, retain=True
        )
    deadline = time.monotonic() + link.settings.timeout
    outcomes: dict[str, Outcome] = {}
    for v in sorted(set(restores.values())):
        same = [d for d in restores if restores[d] == v]
        outcomes.update(await_outcomes(link, same, "gw", v, deadline, fleet.reports))
    bad = sorted(d for d, o in outcomes.items() if o.failed)
    if bad:
        out.write(
            f"warning: restoring the canaries' own documents did not settle on: {', '.join(bad)}\n"
        )
    else:
        out.write(f"canary device documents restored: {', '.join(sorted(restores))}\n")


def cmd_config(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    if args.config_cmd == "push":
        return cmd_config_push(s, args, out)
    if args.config_cmd == "clear":
        return cmd_config_clear(s, args, out)
    return cmd_config_show(s, args, out)


def command_id() -> str:
    return f"ctl-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def cmd_cmd(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    try:
        cargs = rollout.parse_args_kv(args.arg or [])
    except ValueError as exc:
        raise CtlError(str(exc), EXIT_USAGE) from None
    if args.expires_in <= 0 or args.expires_in > 7 * 86400:
        raise CtlError("--expires-in: between 1 and 604800 seconds (7 days)", EXIT_USAGE)
    cid = command_id()
    expires_at = int(time.time() + args.expires_in)
    body = {"id": cid, "name": args.name, "args": cargs, "expires_at": expires_at}
    p = s.prefix
    # The broker keeps the command for each offline gateway's session until it expires, and
    # no longer: the gateway would refuse it then anyway.
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = max(1, math.ceil(args.expires_in))
    with connected(s) as link:
        fleet, _ = RetainedFleet.read(link)
        if args.device:
            device = topic_safe(args.device, "--device")
            known_device(fleet, device)
            expect = [device]
            link.subscribe(gw_topic(p, device, CMD_RESULT), link.reply_topic)
            props.ResponseTopic = link.reply_topic
            props.CorrelationData = cid.encode()
            topic = gw_topic(p, device, CMD)
        else:
            group = topic_safe(args.group, "--group")
            expect = known_group(fleet, group)
            link.subscribe(gw_filter(p, CMD_RESULT))
            topic = group_topic(p, group, CMD)
        online = [d for d in expect if fleet.statuses.get(d, {}).get("online") is True]
        offline = [d for d in expect if d not in online]
        link.publish(topic, body, props=props)
        out.write(
            f"sent {args.name} (id {cid}) to {args.device or 'group ' + args.group}; "
            f"waiting for {len(online)} result(s)"
            + (f"; {len(offline)} offline, queued" if offline else "")
            + "\n"
        )
        results = await_results(link, cid, online, time.monotonic() + s.timeout) if online else {}
    until = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(expires_at))
    ok = True
    for device in online:
        res = results.get(device)
        if res is None:
            ok = False
            out.write(
                f"{device}: no result within {s.timeout:g}s; if it went offline, the broker keeps "
                f"the command for it until {until}\n"
            )
        elif res.get("ok"):
            out.write(
                f"{device}: ok "
                + json.dumps(res.get("result"), sort_keys=True, ensure_ascii=False)
                + "\n"
            )
        else:
            ok = False
            out.write(f"{device}: error: {res.get('error')}\n")
    for device in offline:
        out.write(
            f"{device}: offline; queued on the broker until {until}, it runs when the gateway "
            "reconnects (see its result with `titik-ctl watch`)\n"
        )
    if not ok:
        return EXIT_FAILED
    return EXIT_QUEUED if offline else EXIT_OK


def await_results(
    link: BrokerSession, cid: str, expect: Sequence[str], deadline: float
) -> dict[str, dict[str, Any]]:
    p = link.settings.prefix
    results: dict[str, dict[str, Any]] = {}
    while len(results) < len(expect):
        msg = link.next(deadline)
        if msg is None:
            break
        body = msg.json()
        if not isinstance(body, dict) or body.get("id") != cid:
            continue
        device = device_of(msg.topic, p, CMD_RESULT) if msg.topic != link.reply_topic else expect[0]
        if device is not None and device in expect:
            results[device] = body
    return results


def event_line(topic: str, body: Any, prefix: str, retained: bool) -> str | None:
    """One line for ``watch``: status, reported config or command result."""
    stamp = time.strftime("%H:%M:%S")
    tag = " (retained)" if retained else ""
    if not isinstance(body, dict):
        return None
    if (d := device_of(topic, prefix, STATUS)) is not None:
        state = "online" if body.get("online") else "offline"
        extra = f" version={body['version']}" if body.get("version") else ""
        extra += f" reason={body['reason']!r}" if body.get("reason") else ""
        return f"{stamp} {d} status {state} boot={body.get('boot')}{extra}{tag}"
    if (d := device_of(topic, prefix, CONFIG_REPORTED)) is not None:
        err = f" error={body['error']!r}" if body.get("error") else ""
        return (
            f"{stamp} {d} config {body.get('state')} source={body.get('source')} "
            f"version={body.get('version')} hash={body.get('hash')}{err}{tag}"
        )
    if (d := device_of(topic, prefix, CMD_RESULT)) is not None:
        what = "ok" if body.get("ok") else f"error={body.get('error')!r}"
        return f"{stamp} {d} result id={body.get('id')} {what}{tag}"
    return None


def cmd_watch(s: Settings, args: argparse.Namespace, out: TextIO) -> int:
    p = s.prefix
    group = topic_safe(args.group, "--group") if args.group else None
    members: set[str] = set()
    shown = 0
    with connected(s) as link:
        link.subscribe(
            gw_filter(p, STATUS), gw_filter(p, CONFIG_REPORTED), gw_filter(p, CMD_RESULT)
        )
        try:
            while args.count is None or shown < args.count:
                msg = link.next(time.monotonic() + 3600)
                if msg is None:
                    continue
                body = msg.json()
                if group is not None and isinstance(body, dict):
                    d = device_of(msg.topic, p, STATUS)
                    groups = body.get("groups")
                    if d is not None and isinstance(groups, list):
                        (members.add if group in groups else members.discard)(d)
                    d = device_of(msg.topic, p, CONFIG_REPORTED)
                    versions = body.get("versions")
                    if (
                        d is not None
                        and isinstance(versions, dict)
                        and f"group/{group}" in versions
                    ):
                        members.add(d)
                    dev = msg.topic.split("/")[len(p.split("/")) + 1]
                    if dev not in members:
                        continue
                line = event_line(msg.topic, body, p, msg.retain)
                if line is not None:
                    out.write(line + "\n")
                    out.flush()
                    shown += 1
        except KeyboardInterrupt:
            pass
    return EXIT_OK
