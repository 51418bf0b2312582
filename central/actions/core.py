"""Console actions without HTTP: prepare a document, check the operator's signature, publish.

Central never holds a private key. :meth:`Console.prepare` validates what the operator asks
for (a config against the agent's own schema and document checks, a command against
:mod:`central.actions.commands`), builds the exact payload and topic ``titik-ctl`` would, and
keeps them under a random ``action_id`` for ``action_ttl_s``. The page signs
``agent.protocol.signing.signed_bytes(topic, payload)`` with the operator's key; :meth:`Console.submit`
publishes only when that signature verifies against ``[console] signing_keys`` (the keys the
gateways trust), so a stolen dashboard session can prepare but never publish.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from agent.protocol.signing import (
    SignatureError,
    Verifier,
    key_id,
    parse_public_key,
    signed_bytes,
)
from agent.protocol.topics import (
    CMD,
    CONFIG_DESIRED,
    OWN_SOURCE,
    group_target,
    group_topic,
    gw_target,
    gw_topic,
)
from agent.remote.desired import Rejected, parse_document, validate
from central.actions.commands import MAX_LIFETIME_S, check_args, redacted
from central.store.base import DesiredDoc, ReportedDoc

Kind = Literal["config", "command"]
#: Most prepared actions kept at once; more are refused until some are submitted or expire.
MAX_PENDING = 1000
#: How long an expired action is still told apart from one that never existed.
EXPIRED_MEMORY_S = 3600.0


class ActionError(Exception):
    """An action refused; ``status`` is the HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class PublishError(Exception):
    """The broker did not take the message."""


class Publisher(Protocol):
    def publish(self, topic: str, payload: bytes, *, retain: bool) -> None:
        """QoS 1, returning once the broker acknowledged it; PublishError otherwise."""
        ...


class ConfigSource(Protocol):
    """What the console reads from the store to number a config document."""

    def desired_docs(self) -> dict[str, DesiredDoc]: ...

    def reported_docs(self) -> dict[str, ReportedDoc]: ...


@dataclass(frozen=True)
class Target:
    device: str | None = None
    group: str | None = None

    @property
    def name(self) -> str:
        """``gw/<device>`` or ``group/<group>``: how desired documents and the audit name it."""
        return gw_target(self.device) if self.device else group_target(str(self.group))

    def topic(self, prefix: str, leaf: str) -> str:
        if self.device:
            return gw_topic(prefix, self.device, leaf)
        return group_topic(prefix, str(self.group), leaf)


@dataclass
class Prepared:
    action_id: str
    kind: Kind
    target: Target
    topic: str
    payload: dict[str, Any]
    retain: bool
    summary: str
    actor: str
    token_id: str
    expires: float
    #: What the audit log keeps of it (no passphrases, no client MACs).
    detail: dict[str, Any] = field(default_factory=dict)
    version: int | None = None

    @property
    def signed(self) -> bytes:
        return signed_bytes(self.topic, self.payload)

    @property
    def action(self) -> str:
        """The audit's name of it, the same as the broker audit's (central/ingest/audit.py),
        which links the gateways' answers to it by these names and ``detail``."""
        return "config.push" if self.kind == "config" else "command"


def config_of(body: Mapping[str, Any]) -> tuple[dict[str, Any], int | None]:
    """A config body: ``{"config": {...}, "version"?: N}``, or the bare config object."""
    if isinstance(body.get("config"), dict) and set(body) <= {"config", "version"}:
        version = body.get("version")
        if version is not None and (
            not isinstance(version, int) or isinstance(version, bool) or version < 1
        ):
            raise ActionError(422, "body.version: must be a whole number of 1 or more")
        return dict(body["config"]), version
    return dict(body), None


class Console:
    """Prepared actions (in memory, per central process) and their submission."""

    def __init__(
        self,
        *,
        prefix: str,
        signing_keys: list[str],
        publisher: Publisher | None,
        docs: ConfigSource | None,
        members: Callable[[str], int] | None = None,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.signing_keys = list(signing_keys)
        self.verifier = Verifier(signing_keys)
        self.kids = sorted(key_id(parse_public_key(k)) for k in signing_keys)
        self.publisher = publisher
        self.docs = docs
        self.members = members
        self.ttl_s = ttl_s
        self.clock = clock
        self._pending: dict[str, Prepared] = {}
        self._expired: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- prepare ---------------------------------------------------------------------------

    def prepare(
        self, kind: Kind, target: Target, body: Mapping[str, Any], *, actor: str, token_id: str
    ) -> Prepared:
        if kind == "config":
            prepared = self._config(target, body, actor, token_id)
        else:
            prepared = self._command(target, body, actor, token_id)
        with self._lock:
            self._sweep()
            if len(self._pending) >= MAX_PENDING:
                raise ActionError(
                    429,
                    f"{MAX_PENDING} actions are waiting for a signature; submit or let them expire",
                )
            self._pending[prepared.action_id] = prepared
        return prepared

    def _base(self, kind: Kind, target: Target, actor: str, token_id: str) -> dict[str, Any]:
        return {
            "action_id": secrets.token_urlsafe(18),
            "kind": kind,
            "target": target,
            "actor": actor,
            "token_id": token_id,
            "expires": self.clock() + self.ttl_s,
        }

    def _config(
        self, target: Target, body: Mapping[str, Any], actor: str, token_id: str
    ) -> Prepared:
        config, given = config_of(body)
        current = self._current_version(target)
        # As titik-ctl numbers a push (central.ctl.rollout.next_version): one more than the
        # retained document's, or the given one if it is newer.
        if given is None:
            version = 1 if current is None else current + 1
        elif current is not None and given <= current:
            raise ActionError(
                409,
                f"body.version: {given} is not newer than the current document's version "
                f"{current}; gateways would ignore it (use {current + 1} or leave it out)",
            )
        else:
            version = given
        seen = self._seen_version(target)
        if given is None and seen is not None and version <= seen:
            version = seen + 1  # the retained document was cleared, but the gateways remember
        payload = {"version": version, "config": config}
        try:
            # The agent's own checks, in the order a gateway makes them: the document (size,
            # numbers within the wire's limits), then the config against its schema.
            parse_document(json.dumps(payload, ensure_ascii=False).encode())
            validate(config)
        except Rejected as exc:
            where = str(exc)
            raise ActionError(
                422, where if where.startswith("(document)") else f"config.{where}"
            ) from None
        except (ValueError, RecursionError) as exc:
            raise ActionError(422, f"config: {exc}") from None
        topic = target.topic(self.prefix, CONFIG_DESIRED)
        sections = ", ".join(sorted(config)) or "nothing (an empty config)"
        summary = f"push config version {version} to {self._who(target)}: sets {sections}"
        if seen is not None and given is None and version == seen + 1 and current != seen:
            summary += f" (gateways have seen version {seen})"
        return Prepared(
            **self._base("config", target, actor, token_id),
            topic=topic,
            payload=payload,
            retain=True,
            summary=summary,
            # As the broker audit records a config: its version and top-level keys, never the
            # values (they may hold Wi-Fi passphrases).
            detail={"version": version, "keys": sorted(config)},
            version=version,
        )

    def _command(
        self, target: Target, body: Mapping[str, Any], actor: str, token_id: str
    ) -> Prepared:
        extra = set(body) - {"name", "args", "expires_in_s"}
        if extra:
            raise ActionError(422, f"body.{sorted(extra)[0]}: unknown key")
        name = body.get("name")
        if not isinstance(name, str):
            raise ActionError(422, "body.name: required, the command's name")
        expires_in = body.get("expires_in_s", 3600)
        if (
            not isinstance(expires_in, int)
            or isinstance(expires_in, bool)
            or not 1 <= expires_in <= MAX_LIFETIME_S
        ):
            raise ActionError(
                422, f"body.expires_in_s: whole seconds from 1 to {MAX_LIFETIME_S} (7 days)"
            )
        try:
            args = check_args(name, body.get("args", {}))
        except ValueError as exc:
            raise ActionError(422, f"body.{exc}") from None
        cid = f"web-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(self.clock()))}-{secrets.token_hex(3)}"
        payload = {
            "id": cid,
            "name": name,
            "args": args,
            "expires_at": int(self.clock() + expires_in),
        }
        shown = ", ".join(f"{k}={v}" for k, v in sorted(redacted(args).items()))
        return Prepared(
            **self._base("command", target, actor, token_id),
            topic=target.topic(self.prefix, CMD),
            payload=payload,
            retain=False,
            summary=f"run {name}({shown}) on {self._who(target)}, valid for {expires_in} s",
            detail={
                "id": cid,
                "name": name,
                "expires_at": payload["expires_at"],
                "args": redacted(args),
            },
        )

    def _who(self, target: Target) -> str:
        if target.device:
            return f"gateway {target.device}"
        n = self.members(str(target.group)) if self.members else None
        return f"group {target.group}" + (f" ({n} gateways known)" if n is not None else "")

    def _current_version(self, target: Target) -> int | None:
        if self.docs is None:
            return None
        doc = self.docs.desired_docs().get(target.name)
        return doc.version if doc is not None else None

    def _seen_version(self, target: Target) -> int | None:
        """The highest version of this document any gateway reports having acted on."""
        if self.docs is None:
            return None
        source = target.name
        seen: list[int] = []
        for device, rep in self.docs.reported_docs().items():
            if target.device and device != target.device:
                continue
            versions = rep.report.versions
            v = versions.get(OWN_SOURCE if target.device else source)
            if isinstance(v, int):
                seen.append(v)
        return max(seen) if seen else None

    # -- submit ----------------------------------------------------------------------------

    def take(self, action_id: str, *, token_id: str) -> Prepared:
        """The prepared action (once: it is gone afterwards); 404/410/403 otherwise."""
        with self._lock:
            self._sweep()
            prepared = self._pending.get(action_id)
            if prepared is None:
                if action_id in self._expired:
                    raise ActionError(410, "action_id: expired; prepare the action again")
                raise ActionError(
                    404,
                    "action_id: unknown (already submitted, or never prepared); prepare it again",
                )
            if prepared.token_id != token_id:
                raise ActionError(403, "action_id: prepared by another login")
            del self._pending[action_id]
        return prepared

    def verify(self, prepared: Prepared, sig: Mapping[str, Any]) -> dict[str, Any]:
        """The payload with the operator's signature, once it verifies; 403 otherwise."""
        if not self.signing_keys:
            raise ActionError(
                403,
                "no [console] signing_keys are configured: central publishes nothing from the web",
            )
        signed = dict(prepared.payload)
        signed["sig"] = dict(sig)
        try:
            self.verifier.verify(prepared.topic, signed)
        except SignatureError as exc:
            raise ActionError(
                403, str(exc).replace("this gateway", "[console] signing_keys")
            ) from None
        return signed

    @staticmethod
    def encode(signed: Mapping[str, Any]) -> bytes:
        """The bytes published (as titik-ctl writes them)."""
        return json.dumps(signed, separators=(",", ":"), ensure_ascii=False).encode()

    def check_current(self, prepared: Prepared) -> None:
        """409 when the target's document moved past the prepared version meanwhile."""
        if prepared.version is not None:
            current = self._current_version(prepared.target)
            if current is not None and current >= prepared.version:
                raise ActionError(
                    409,
                    f"{prepared.target.name} is at version {current} since this was prepared; "
                    "prepare it again",
                )

    def publish(self, prepared: Prepared, payload: bytes) -> None:
        if self.publisher is None:
            raise ActionError(503, "central has no broker connection for actions")
        try:
            self.publisher.publish(prepared.topic, payload, retain=prepared.retain)
        except PublishError as exc:
            raise ActionError(503, f"the broker did not take it: {exc}; try again") from None

    def _sweep(self) -> None:
        now = self.clock()
        for aid in [a for a, p in self._pending.items() if p.expires <= now]:
            del self._pending[aid]
            self._expired[aid] = now
        for aid in [a for a, at in self._expired.items() if now - at > EXPIRED_MEMORY_S]:
            del self._expired[aid]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
