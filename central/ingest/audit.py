"""The broker audit: every signed config and command that crosses the broker, into the audit log.

titik-ctl publishes straight to the broker, so central sees its actions the way a gateway
does: it subscribes to the desired-config and command topics of every gateway and group
(``agent.protocol.topics``) and appends one entry per message: who = the signing key's id
(``key:<kid>``; ``unsigned`` without a signature), what = ``config.push`` (version, the
config's top-level keys, a digest of the document; never its values, which may hold Wi-Fi
passwords) or ``command`` (id, name, argument names, expiry), target = ``gw/<id>`` or
``group/<name>``, via = ``ctl`` when titik-ctl marked the message (MQTT 5 user property
``titik-via``), else ``broker``. The gateways' answers (``cmd/result``, a final
``config/reported``) are appended as entries of their own that name the action's ``seq``
(``detail.of``): the log is append-only, so a result is never written into the action's
entry; ``GET /api/audit`` shows them together.

Bounded: an answer is recorded only for an action in the log, once per gateway (and state;
an upgrade's, once per step, its download progress left out),
so a gateway cannot grow the log by publishing results; a message delivered again (a
retained document on a new subscription, a QoS 1 redelivery) has the same ``ref``
(:func:`message_ref`) and is recorded once. The kid is the one the message claims; the
gateways verify it, and their answer (``signature: ...`` refusals included) is recorded.

Threads: paho's network thread only queues; :meth:`BrokerAudit.run` appends and then acks
(manual acks, like the consumer), so a message is acked only once it is in the log.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.protocol import topics
from agent.protocol.client import client_for
from agent.protocol.upgrade import STEPS
from central.config import CentralConfig
from central.store.audit import VIA_PROPERTY, AuditEntry, AuditLog, message_ref
from central.store.rollouts import RolloutStore, StepRow, answer_step, rollout_of

log = logging.getLogger("titik.central.audit")

#: Report states that end a config change (``applying`` does not).
FINAL_STATES = frozenset({"applied", "rejected", "rolled_back"})
RETRY_S = 1.0
#: Messages recorded in one transaction at most.
BATCH = 500
MAX_ERROR = 300


def audit_share_group(group: str) -> str:
    """The broker audit's own share group: ``<mqtt.share_group>-audit`` ('' stays plain).

    Never the consumer's: a shared subscription is the pair (group, filter), so the audit
    reading ``gw/+/config/desired`` in the consumer's group would take every other desired
    document and report away from the consumer. In its own group, each central instance's
    audit shares the audit's load, and the consumer still gets every message."""
    return f"{group}-audit" if group else ""


def audit_subscriptions(prefix: str, group: str) -> list[str]:
    """What the broker audit reads: desired configs and commands of gateways and groups, and
    the gateways' answers (command results, config reports)."""
    filters = [
        topics.gw_filter(prefix, topics.CONFIG_DESIRED),
        topics.group_filter(prefix, topics.CONFIG_DESIRED),
        topics.gw_filter(prefix, topics.CMD),
        topics.group_filter(prefix, topics.CMD),
        topics.gw_filter(prefix, topics.CMD_RESULT),
        topics.gw_filter(prefix, topics.CONFIG_REPORTED),
    ]
    return [topics.shared(group, f) for f in filters]


@dataclass(frozen=True, slots=True)
class Seen:
    """One message off the broker."""

    topic: str
    payload: bytes
    via: str = "broker"
    retained: bool = False
    mid: int = 0
    qos: int = 0


def _json(payload: bytes) -> Any:
    try:
        return json.loads(payload)
    except (ValueError, RecursionError):
        return None


def _signer(body: dict[str, Any]) -> tuple[str, str | None]:
    sig = body.get("sig")
    kid = sig.get("kid") if isinstance(sig, dict) else None
    if isinstance(kid, str) and kid and len(kid) <= 64 and kid.isprintable():
        return f"key:{kid}", kid
    return "unsigned", None


def _short(value: Any) -> str:
    return str(value)[:MAX_ERROR]


class Recorder:
    """Turns one message into audit entries (no MQTT; tests drive it directly)."""

    def __init__(self, prefix: str, audit: AuditLog) -> None:
        self.prefix = prefix
        self.audit = audit
        #: Answers to an upgrade rollout's commands, (rollout, step row), for the caller to
        #: keep in the rollout store once the audit's transaction is committed.
        self.steps: list[tuple[str, StepRow]] = []

    def record(self, m: Seen) -> AuditEntry | None:
        parsed = topics.parse_topic(self.prefix, m.topic)
        if parsed is None:
            return None
        level, name, leaf = parsed
        if not topics.TOPIC_SAFE.fullmatch(name):
            return None
        target = topics.gw_target(name) if level == topics.GW else topics.group_target(name)
        actions = {topics.CONFIG_DESIRED: self._config, topics.CMD: self._command}
        answers = {
            topics.CMD_RESULT: self._command_answer,
            topics.CONFIG_REPORTED: self._config_answer,
        }
        if leaf in actions:
            return actions[leaf](m, target)
        if level == topics.GW and leaf in answers:
            return answers[leaf](m, name)
        return None

    def _config(self, m: Seen, target: str) -> AuditEntry:
        ref = message_ref(m.topic, m.payload)
        detail: dict[str, Any] = {"topic": m.topic, "digest": ref.removeprefix("msg:")}
        if m.retained:
            detail["retained"] = True
        if not m.payload:
            return self.audit.append(
                "unsigned", "config.clear", target, key_id=None, result="published",
                detail=detail, via=m.via, ref=ref,
            )  # fmt: skip
        body = _json(m.payload)
        if not isinstance(body, dict):
            detail["error"] = "not a JSON object"
            return self.audit.append(
                "unsigned", "config.push", target, key_id=None, result="published (malformed)",
                detail=detail, via=m.via, ref=ref,
            )  # fmt: skip
        actor, kid = _signer(body)
        version = body.get("version")
        if isinstance(version, int) and not isinstance(version, bool):
            detail["version"] = version
        config = body.get("config")
        if isinstance(config, dict):
            detail["keys"] = sorted(str(k) for k in config)[:100]
        return self.audit.append(
            actor, "config.push", target, key_id=kid, result="published",
            detail=detail, via=m.via, ref=ref,
        )  # fmt: skip

    def _command(self, m: Seen, target: str) -> AuditEntry:
        ref = message_ref(m.topic, m.payload)
        detail: dict[str, Any] = {"topic": m.topic, "digest": ref.removeprefix("msg:")}
        body = _json(m.payload)
        if not isinstance(body, dict):
            detail["error"] = "not a JSON object"
            return self.audit.append(
                "unsigned", "command", target, key_id=None, result="published (malformed)",
                detail=detail, via=m.via, ref=ref,
            )  # fmt: skip
        actor, kid = _signer(body)
        for key in ("id", "name"):
            if isinstance(body.get(key), str):
                detail[key] = body[key][:64]
        if isinstance(body.get("expires_at"), int | float):
            detail["expires_at"] = body["expires_at"]
        args = body.get("args")
        if isinstance(args, dict):
            detail["args"] = sorted(str(k) for k in args)[:50]  # names only: values may be MACs
        return self.audit.append(
            actor, "command", target, key_id=kid, result="published",
            detail=detail, via=m.via, ref=ref,
        )  # fmt: skip

    def _command_answer(self, m: Seen, device: str) -> AuditEntry | None:
        body = _json(m.payload)
        if not isinstance(body, dict) or not isinstance(body.get("id"), str):
            return None
        step, ok, error = answer_step(body)
        rollout = rollout_of(body["id"])
        if rollout is not None:
            ts = body.get("ts")
            ts = float(ts) if isinstance(ts, int | float) and not isinstance(ts, bool) else None
            self.steps.append((rollout, StepRow(device, body["id"][:64], step, ok, error, ts)))
        action = self.audit.find("command", id=body["id"][:64])
        if action is None:
            return None
        result = "ok" if ok else f"error: {_short(body.get('error'))}"
        detail: dict[str, Any] = {"of": action.seq, "id": body["id"][:64]}
        ref = f"answer:{action.seq}:{device}"
        # An upgrade answers in several steps (docs/upgrades.md, "The reports"): each step is
        # an entry of its own (bounded: a dozen steps; the progress reports are left out).
        if "step" in body and step in STEPS and step != "downloading":
            detail["step"], ref = step, f"{ref}:{step}"
        elif "step" in body:
            return None  # progress, or a step no agent reports: not in the log
        return self.audit.append(
            action.actor, "command.result", topics.gw_target(device), key_id=action.key_id,
            result=result, detail=detail, via="broker", ref=ref,
        )  # fmt: skip

    def _config_answer(self, m: Seen, device: str) -> AuditEntry | None:
        body = _json(m.payload)
        if not isinstance(body, dict) or body.get("state") not in FINAL_STATES:
            return None
        version, source = body.get("version"), body.get("source")
        if not isinstance(version, int) or not isinstance(source, str):
            return None
        target = topics.gw_target(device) if source == topics.OWN_SOURCE else source
        action = self.audit.find("config.push", target, version=version)
        if action is None:
            return None
        state = body["state"]
        result = state if not body.get("error") else f"{state}: {_short(body['error'])}"
        return self.audit.append(
            action.actor, "config.result", topics.gw_target(device), key_id=action.key_id,
            result=result, detail={"of": action.seq, "version": version}, via="broker",
            ref=f"answer:{action.seq}:{device}:{state}",
        )  # fmt: skip


class BrokerAudit:
    """Its own MQTT session (client id ``<mqtt.client_id>-audit``): subscribes, records, acks."""

    def __init__(
        self,
        config: CentralConfig,
        audit: AuditLog,
        *,
        rollouts: RolloutStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.recorder = Recorder(config.mqtt.topic_prefix, audit)
        #: Where upgrade rollouts' steps are kept (the runner's gate reads them).
        self.rollouts = rollouts
        self.clock = clock
        self.inbox: queue.Queue[Seen] = queue.Queue()
        self.subscribed = threading.Event()
        self.recorded = 0
        self.errors = 0
        m = config.mqtt
        self.client = client_for(m, m.client_id[:58] + "-audit", manual_ack=True)
        self.client.reconnect_delay_set(1, 5)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()

    def start(self) -> None:
        m = self.config.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = m.session_expiry_s
        self.client.connect_async(
            m.host, m.port, keepalive=m.keepalive_s, clean_start=False, properties=props
        )
        self.client.loop_start()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the audit connection: %s", reason)
            return
        opts = SubscribeOptions(qos=1, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
        m = self.config.mqtt
        group = audit_share_group(m.share_group)
        client.subscribe([(t, opts) for t in audit_subscriptions(m.topic_prefix, group)])

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        via = "broker"
        props = getattr(msg, "properties", None)
        for k, v in getattr(props, "UserProperty", None) or []:
            if k == VIA_PROPERTY and v == "ctl":
                via = "ctl"
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            topic = msg._topic.decode("utf-8", "backslashreplace")
        self.inbox.put(Seen(topic, bytes(msg.payload), via, bool(msg.retain), msg.mid, msg.qos))

    def run(self, stop: threading.Event) -> None:
        """Record and ack until ``stop`` is set, up to :data:`BATCH` messages in one
        transaction (a group push brings one answer per gateway). A store that cannot write
        makes this wait and try the same messages again (they are not acked, so nothing is
        lost); a message the log refuses is counted, logged and acked."""
        while not stop.is_set():
            try:
                batch = [self.inbox.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(batch) < BATCH:
                try:
                    batch.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            while not stop.is_set():
                try:
                    self._record(batch)
                    break
                except Exception:
                    self.errors += 1
                    log.exception("audit: cannot append %d message(s); trying again", len(batch))
                    stop.wait(RETRY_S)
            else:
                return
            for m in batch:
                if m.qos:
                    self.client.ack(m.mid, m.qos)

    def _record(self, batch: list[Seen]) -> None:
        recorded, refused = 0, 0
        self.recorder.steps.clear()
        with self.recorder.audit.batch():
            for m in batch:
                try:
                    if self.recorder.record(m) is not None:
                        recorded += 1
                except ValueError as exc:  # a field the log refuses: say so, never block
                    refused += 1
                    log.warning("audit: %s not recorded: %s", m.topic, exc)
        # After the audit's transaction (SQLite allows one writer at a time), before the acks:
        # a failure here makes run() try the whole batch again (the audit's refs dedupe it).
        if self.rollouts is not None and self.recorder.steps:
            self.rollouts.record_steps(self.recorder.steps)
        self.recorded += recorded
        self.errors += refused

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
