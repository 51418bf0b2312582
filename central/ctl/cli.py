"""titik-ctl: the operator's command line for the fleet, over MQTT.

It reads the retained state gateways publish (status, reported config), publishes desired
configs and commands (signed with Ed25519 when a key is given), and waits for the gateways'
answers. Rollout decisions are pure and live in :mod:`central.ctl.rollout`; this module is the
imperative shell around them. docs/ctl.md is the user's guide.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from agent.protocol import Status
from agent.protocol.client import make_client
from agent.protocol.signing import public_key_text, sign
from agent.protocol.topics import (
    CMD,
    CMD_RESULT,
    CONFIG_DESIRED,
    CONFIG_REPORTED,
    STATUS,
    TOPIC_SAFE,
    ctl_topic,
    device_of,
    group_topic,
    gw_filter,
    gw_topic,
)
from central.ctl import rollout
from central.ctl.rollout import Outcome

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

#: When the broker does not echo our sync marker (an ACL), this long without a message ends
#: the collection of retained messages.
SNAPSHOT_QUIET_S = 2.0


class CtlError(Exception):
    """A failure to report as one line (what went wrong, and what to do) and an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code


# -- settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)
    tls_ca: Path | None
    prefix: str
    key: Ed25519PrivateKey | None = field(repr=False)
    timeout: float


def parse_broker(text: str, tls: bool) -> tuple[str, int]:
    default = 8883 if tls else 1883
    text = text.strip()
    if text.startswith("["):  # [::1]:1883
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise CtlError(f"--broker {text!r}: write HOST or HOST:PORT, e.g. mqtt.example.net:8883", 2)
    if not port_text:
        return host, default
    try:
        port = int(port_text)
    except ValueError:
        raise CtlError(
            f"--broker {text!r}: the port must be a number, e.g. {host}:1883", 2
        ) from None
    if not 0 < port < 65536:
        raise CtlError(f"--broker {text!r}: the port must be 1-65535", 2)
    return host, port


def load_key(spec: str) -> Ed25519PrivateKey:
    """A PEM Ed25519 private key from a file (or, from TITIK_SIGNING_KEY, the PEM itself)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if spec.lstrip().startswith("-----BEGIN"):
        data, where = spec.encode(), "TITIK_SIGNING_KEY"
    else:
        try:
            data, where = Path(spec).read_bytes(), spec
        except OSError as exc:
            raise CtlError(
                f"cannot read the signing key {spec}: {exc.strerror}; "
                "create one with `titik-ctl keygen --out FILE`",
                EXIT_USAGE,
            ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CtlError(
            f"{where}: not an unencrypted PEM private key ({exc}); "
            "create one with `titik-ctl keygen --out FILE`",
            EXIT_USAGE,
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CtlError(f"{where}: not an Ed25519 key; titik signs with Ed25519 only", EXIT_USAGE)
    return key


def settings_from(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    tls_ca = Path(args.tls_ca) if args.tls_ca else None
    if tls_ca is not None and not tls_ca.is_file():
        raise CtlError(f"--tls-ca {tls_ca}: no such file (the CA certificate, PEM)", EXIT_USAGE)
    host, port = parse_broker(
        args.broker or env.get("TITIK_BROKER") or "localhost", tls_ca is not None
    )
    key_spec = args.key or env.get("TITIK_SIGNING_KEY")
    timeout = float(args.timeout)
    if timeout <= 0:
        raise CtlError("--timeout: must be more than 0 seconds", EXIT_USAGE)
    prefix = args.prefix.strip("/")
    if not prefix or any(c in prefix for c in "+#"):
        raise CtlError(f"--prefix {args.prefix!r}: a topic prefix without + or #", EXIT_USAGE)
    return Settings(
        host=host,
        port=port,
        username=args.username or env.get("TITIK_MQTT_USERNAME") or None,
        password=env.get("TITIK_MQTT_PASSWORD") or None,
        tls_ca=tls_ca,
        prefix=prefix,
        key=load_key(key_spec) if key_spec else None,
        timeout=timeout,
    )


# -- the MQTT link -----------------------------------------------------------------------


@dataclass(frozen=True)
class Msg:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        """The payload as JSON, or None: a gateway may publish anything on its topics."""
        return loads(self.payload)


def loads(payload: bytes) -> Any:
    """JSON or None; deep nesting (RecursionError) is "not JSON" too, not a crash."""
    try:
        return json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


class BrokerSession:
    """One MQTT 5 connection with paho's network thread; messages arrive on a queue."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.client_id = f"titik-ctl-{os.getpid()}-{secrets.token_hex(4)}"
        self.inbox: queue.Queue[Msg] = queue.Queue()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self._subacks: dict[int, threading.Event] = {}
        self._suback_errors: dict[int, str] = {}
        self._lock = threading.Lock()
        c = make_client(
            self.client_id,
            username=settings.username,
            password=settings.password,
            ca=settings.tls_ca,
        )
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        self.client = c

    @property
    def own_topic(self) -> str:
        """``{prefix}/ctl/{user}/{client id}``: where this run talks to itself (the snapshot
        marker, the MQTT 5 reply topic). The user level lets a broker ACL give each operator
        ``{prefix}/ctl/{user}/#`` and nothing of another's (``titik-ctl broker`` does);
        ``anonymous`` without --username, and + # / in a user name become _."""
        user = self.settings.username or "anonymous"
        for c in "+#/":
            user = user.replace(c, "_")
        return ctl_topic(self.settings.prefix, user, self.client_id)

    @property
    def sync_topic(self) -> str:
        return f"{self.own_topic}/sync"

    @property
    def reply_topic(self) -> str:
        return f"{self.own_topic}/reply"

    def _on_connect(
        self, client: paho.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any
    ) -> None:
        if rc.is_failure:
            self._connect_error = str(rc)
        self._connected.set()

    def _on_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any
    ) -> None:
        with self._lock:
            bad = [str(rc) for rc in rcs if rc.is_failure]
            if bad:
                self._suback_errors[mid] = ", ".join(bad)
            ev = self._subacks.setdefault(mid, threading.Event())
        ev.set()

    def _on_message(self, client: paho.Client, userdata: Any, m: paho.MQTTMessage) -> None:
        self.inbox.put(Msg(m.topic, bytes(m.payload), bool(m.retain)))

    def connect(self) -> None:
        s = self.settings
        where = f"{s.host}:{s.port}"
        try:
            self.client.connect(s.host, s.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise CtlError(
                f"cannot reach the broker at {where}: {exc}; check --broker (or TITIK_BROKER)"
                + (" and --tls-ca" if s.tls_ca else "")
            ) from None
        self.client.loop_start()
        if not self._connected.wait(s.timeout):
            self.close()
            raise CtlError(f"the broker at {where} did not answer within {s.timeout:g}s")
        if self._connect_error is not None:
            self.close()
            hint = (
                "check --username and TITIK_MQTT_PASSWORD"
                if "authori" in self._connect_error.lower()
                or "password" in self._connect_error.lower()
                else "check the broker's log"
            )
            raise CtlError(
                f"the broker at {where} refused the connection: {self._connect_error}; {hint}"
            )

    def subscribe(self, *topics: str) -> None:
        with self._lock:
            rc, mid = self.client.subscribe([(t, 1) for t in topics])
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise CtlError(f"cannot subscribe to {', '.join(topics)}: {paho.error_string(rc)}")
            ev = self._subacks.setdefault(mid, threading.Event())
        if not ev.wait(self.settings.timeout):
            raise CtlError(f"no SUBACK from the broker within {self.settings.timeout:g}s")
        if mid in self._suback_errors:
            raise CtlError(
                f"the broker refused the subscription to {', '.join(topics)} "
                f"({self._suback_errors[mid]}); check this user's ACL"
            )

    def publish(
        self,
        topic: str,
        body: Mapping[str, Any] | bytes,
        *,
        retain: bool = False,
        props: Properties | None = None,
    ) -> None:
        """QoS 1, waiting for the PUBACK; a dict is signed first when a key is configured."""
        if isinstance(body, bytes):
            payload = body
        else:
            if self.settings.key is not None:
                body = sign(self.settings.key, topic, body)
            payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        try:
            info.wait_for_publish(self.settings.timeout)
        except (RuntimeError, ValueError) as exc:
            raise CtlError(f"cannot publish to {topic}: {exc}") from None
        if not info.is_published():
            raise CtlError(f"the broker did not acknowledge the message to {topic} in time")

    def next(self, deadline: float) -> Msg | None:
        """The next message, or None once ``deadline`` (monotonic) has passed."""
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        try:
            return self.inbox.get(timeout=left)
        except queue.Empty:
            return None

    def snapshot(self, *topics: str) -> dict[str, bytes]:
        """Subscribe and collect the retained messages: topic -> payload (empty ones dropped).

        The end is known by a marker we publish to ourselves after the SUBACK: the broker
        queues it behind the retained messages (a city's 9,000 statuses and as many config
        reports take seconds to arrive). If an ACL swallows the marker, a quiet period ends
        the wait instead. Still receiving at --timeout is an error, not a partial answer: a
        rollout must not pick canaries from part of a group.
        """
        self.subscribe(*topics, self.sync_topic)
        marker = secrets.token_hex(8).encode()
        with contextlib.suppress(CtlError):
            self.publish(self.sync_topic, marker)
        found: dict[str, bytes] = {}
        deadline = time.monotonic() + self.settings.timeout
        while True:
            msg = self.next(min(deadline, time.monotonic() + SNAPSHOT_QUIET_S))
            if msg is None and time.monotonic() >= deadline:
                raise CtlError(
                    f"retained messages were still arriving after --timeout "
                    f"{self.settings.timeout:g}s ({len(found)} so far); try a longer --timeout"
                )
            if msg is None or (msg.topic == self.sync_topic and msg.payload == marker):
                return found
            if msg.topic == self.sync_topic:
                continue
            if msg.payload:
                found[msg.topic] = msg.payload
            else:
                found.pop(msg.topic, None)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


@contextlib.contextmanager
def connected(settings: Settings) -> Any:
    link = BrokerSession(settings)
    link.connect()
    try:
        yield link
    finally:
        link.close()


# -- topics and state --------------------------------------------------------------------


def topic_safe(value: str, what: str) -> str:
    if not value or any(c in value for c in "/+#") or value != value.strip():
        raise CtlError(f"{what} {value!r}: must be a plain name (no /, + or #)", EXIT_USAGE)
    return value


@dataclass
class RetainedFleet:
    """Retained state of every gateway: statuses, reports and device desired documents."""

    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    desired: dict[str, bytes] = field(default_factory=dict)

    @classmethod
    def read(
        cls, link: BrokerSession, *, desired: bool = False, extra: Sequence[str] = ()
    ) -> tuple[RetainedFleet, dict[str, bytes]]:
        p = link.settings.prefix
        topics = [gw_filter(p, STATUS), gw_filter(p, CONFIG_REPORTED)]
        if desired:
            topics.append(gw_filter(p, CONFIG_DESIRED))
        found = link.snapshot(*topics, *extra)
        fleet = cls()
        for topic, payload in found.items():
            body = loads(payload)
            if (d := device_of(topic, p, STATUS)) is not None and isinstance(body, dict):
                fleet.statuses[d] = body
            elif (d := device_of(topic, p, CONFIG_REPORTED)) is not None and isinstance(body, dict):
                fleet.reports[d] = body
            elif (d := device_of(topic, p, CONFIG_DESIRED)) is not None:
                fleet.desired[d] = payload
        return fleet, found

    def seen_version(self, devices: Iterable[str], source: str) -> int | None:
        """The highest version of ``source`` any of ``devices`` reports having acted on."""
        seen = [
            v
            for d in devices
            if isinstance(vs := self.reports.get(d, {}).get("versions"), dict)
            and isinstance(v := vs.get(source), int)
            and not isinstance(v, bool)
        ]
        return max(seen) if seen else None


# -- output ------------------------------------------------------------------------------


class Progress:
    """One progress line: rewritten in place on a terminal; otherwise (a log, a pipe) a new
    line at most every ``every_s`` seconds, and the last state at the end."""

    def __init__(
        self, out: TextIO, every_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every_s = every_s
        self.clock = clock
        self.last = ""
        self.written = ""
        self.at = -every_s

    def update(self, text: str) -> None:
        if text == self.last:
            return
        self.last = text
        if self.tty:
            self.out.write("\r\033[K" + text)
        elif self.clock() - self.at >= self.every_s:
            self.at = self.clock()
            self.written = text
            self.out.write(text + "\n")
        else:
            return
        self.out.flush()

    def done(self) -> None:
        if self.tty and self.last:
            self.out.write("\n")
        elif self.last != self.written:
            self.out.write(self.last + "\n")
        self.written = self.last
        self.out.flush()


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


def describe(device: str, outcome: Outcome, report: Mapping[str, Any] | None) -> str:
    text = f"  {device}: {outcome.value}"
    if report and report.get("error") and outcome is not Outcome.APPLIED:
        text += f": {report['error']}"
    if outcome is Outcome.NO_REPORT:
        text += " (offline, or still busy; the retained document reaches it when it connects)"
    return text


def pretty(value: Any) -> str:
    try:
        return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    except RecursionError:
        return "(nested too deeply to show)"


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
        body = msg.json()
        if dev is None or not isinstance(body, dict):
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
            return push_device(link, topic_safe(args.device, "--device"), config, args.version, out)
        return push_group(
            link, topic_safe(args.group, "--group"), config, args.version, canary, threshold, out
        )


def push_device(
    link: BrokerSession, device: str, config: dict[str, Any], given: int | None, out: TextIO
) -> int:
    s, p = link.settings, link.settings.prefix
    topic = gw_topic(p, device, CONFIG_DESIRED)
    fleet, found = RetainedFleet.read(link, extra=[topic])
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
) -> int:
    s, p = link.settings, link.settings.prefix
    gtopic = group_topic(p, group, CONFIG_DESIRED)
    source = f"group/{group}"
    fleet, found = RetainedFleet.read(link, desired=True, extra=[gtopic])
    members = rollout.members(group, fleet.statuses, fleet.reports)
    version = _version(found.get(gtopic), given, fleet.seen_version(members, source))
    canaries: list[str] = []
    restores: dict[str, int] = {}
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
        outcomes, restores = canary_phase(link, fleet, canaries, config)
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
    summary = rollout.tally(final)
    out.write(f"summary: {summary.line()}, group {group} version {version}\n")
    for d, o in final.items():
        if o.failed:
            out.write(describe(d, o, fleet.reports.get(d)) + "\n")
    return EXIT_FAILED if rollout.exceeds(threshold, summary.failed, summary.total) else EXIT_OK


def canary_phase(
    link: BrokerSession, fleet: RetainedFleet, canaries: list[str], config: dict[str, Any]
) -> tuple[dict[str, Outcome], dict[str, int]]:
    """Push the group config to each canary's own document; returns the outcomes and, per
    canary, the version its own document must be restored at afterwards."""
    p = link.settings.prefix
    versions: dict[str, int] = {}
    for d in canaries:
        current = fleet.desired.get(d)
        version = _version(current, None, fleet.seen_version([d], "gw"))
        own = rollout.document_config(current)
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
    return outcomes, {d: v + 1 for d, v in versions.items()}


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
    body = {
        "id": cid,
        "name": args.name,
        "args": cargs,
        "expires_at": int(time.time() + args.expires_in),
    }
    p = s.prefix
    with connected(s) as link:
        if args.device:
            device = topic_safe(args.device, "--device")
            link.subscribe(gw_topic(p, device, CMD_RESULT), link.reply_topic)
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = link.reply_topic
            props.CorrelationData = cid.encode()
            link.publish(gw_topic(p, device, CMD), body, props=props)
            expect = [device]
        else:
            group = topic_safe(args.group, "--group")
            fleet, _ = RetainedFleet.read(link)
            expect = rollout.members(group, fleet.statuses, fleet.reports)
            link.subscribe(gw_filter(p, CMD_RESULT))
            link.publish(group_topic(p, group, CMD), body)
        out.write(
            f"sent {args.name} (id {cid}) to {args.device or 'group ' + args.group}; waiting for {len(expect)} result(s)\n"
        )
        results = await_results(link, cid, expect, time.monotonic() + s.timeout)
    ok = True
    for device in expect:
        res = results.get(device)
        if res is None:
            ok = False
            out.write(
                f"{device}: no result within {s.timeout:g}s (offline? it runs when it connects, until expires_at)\n"
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
    return EXIT_OK if ok else EXIT_FAILED


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
back or did not answer); 2 usage or configuration error.
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
        help="push or show desired configs",
        formatter_class=fmt,
        description=(
            "config push: publish a desired config document (retained) and wait for the reports.\n"
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
            "result(s). Commands: reboot, restart_wifi, collect_now, diagnostics, kick_client,\n"
            "get_config (docs/remote-config.md). Values that read as JSON (30, true) are sent as such.\n\n"
            "examples:\n"
            "  titik-ctl cmd --device gw-0001 collect_now\n"
            "  titik-ctl cmd --device gw-0001 reboot --arg delay_s=30\n"
            "  titik-ctl cmd --group g1 restart_wifi"
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

    from central.broker import kit as brokerkit

    brokerkit.add_parser(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    out = sys.stdout
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already explained)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "keygen":
            return cmd_keygen(args, out)
        if args.command == "broker":
            from central.broker import kit as brokerkit

            return brokerkit.main_broker(args, out, sys.stderr)
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
