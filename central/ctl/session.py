"""titik-ctl's connection to the broker and what it reads there.

Settings (flags and TITIK_ variables), the MQTT 5 session (:class:`BrokerSession`: subscribe,
snapshot of the retained state, publish and wait), the retained fleet it reads
(:class:`RetainedFleet`) and the output helpers the commands share.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import ssl
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

from agent.protocol import ConfigReported
from agent.protocol.client import make_client
from agent.protocol.signing import sign
from agent.protocol.topics import (
    CONFIG_DESIRED,
    CONFIG_REPORTED,
    STATUS,
    ctl_topic,
    device_of,
    gw_filter,
)
from central.ctl.rollout import Outcome
from central.store.audit import VIA_PROPERTY

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


def report_of(payload: bytes) -> dict[str, Any] | None:
    """A config report in its one shape (``agent.protocol.ConfigReported``, as central and the
    agent read it), or None if the payload is not one: a report central would quarantine
    decides nothing here either."""
    try:
        return ConfigReported.model_validate_json(payload).model_dump()
    except ValueError:  # pydantic's ValidationError is a ValueError
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
        """QoS 1, waiting for the PUBACK; a dict is signed first when a key is configured.

        Every message carries the MQTT 5 user property ``titik-via: ctl``, so central's audit
        log says it came from titik-ctl (a label; who signed it is the proof)."""
        if props is None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.UserProperty = (VIA_PROPERTY, "ctl")
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
            elif (d := device_of(topic, p, CONFIG_REPORTED)) is not None:
                if (report := report_of(payload)) is not None:
                    fleet.reports[d] = report
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
