"""Starting and steering rollouts from outside central's runner: the console and titik-ctl.

Two steps, as the console's actions (central/actions/core.py), because central holds no key:

1. :meth:`RolloutService.prepare` checks the plan (:func:`central.rollout.plan.check_plan`) and
   its config the way a gateway will (the agent's document and schema checks), numbers it
   from the group's current desired document (``base``: the newest of the retained version
   and the one gateways report), keeps the old config for the restore, and returns each
   document with the exact bytes to sign, plus each wave's size among the group's members.
2. :meth:`RolloutService.submit` puts the operator's signatures on those documents, checks
   them (:func:`check_documents`, :func:`check_signatures` against ``[console] signing_keys``)
   and creates the rollout in :class:`RolloutStore`; the runner (central/rollout/runner.py)
   publishes its first wave at its next tick.

Pause, resume and abort are rows of ``rollout_intents`` (:meth:`RolloutStore.request`), taken
by the runner, which alone writes a rollout's state. Errors are :class:`RolloutError` with the
HTTP status and a message that says what to do.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from agent.protocol.cohort import cohort
from agent.protocol.desired import Rejected, parse_document, validate
from agent.protocol.signing import SignatureError, Verifier, key_id, parse_public_key, signed_bytes
from agent.protocol.topics import CMD, CONFIG_DESIRED, group_target, group_topic
from agent.protocol.upgrade import UpgradeRefused, verify_manifest
from central.rollout.engine import RolloutStatus, Run, to_dict
from central.rollout.plan import Limits, Plan, PlanError, check_documents, check_signatures
from central.rollout.plan import documents as plan_documents
from central.rollout.upgrade import UpgradePlanError, UpgradeSpec, UpgradeWindow, expiry
from central.store.base import DesiredDoc, ReportedDoc
from central.store.rollouts import RolloutStore, RolloutStoreError, StoredRollout

#: Most prepared rollouts kept at once (each holds a few documents).
MAX_PENDING = 100
#: The largest command a gateway takes (agent/remote/commands.py MAX_COMMAND_BYTES).
MAX_COMMAND_BYTES = 16 * 1024
#: The request each state allows: pause a running rollout, resume a paused one, abort either.
ALLOWED = {"pause": ("running",), "resume": ("paused",), "abort": ("running", "paused")}


class RolloutError(Exception):
    """Refused; ``status`` is the HTTP status, the message says why and what to do."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Docs(Protocol):
    """What the service reads of the fleet (a SqliteStore is one)."""

    def desired_docs(self) -> dict[str, DesiredDoc]: ...

    def reported_docs(self) -> dict[str, ReportedDoc]: ...


@dataclass(frozen=True, slots=True)
class Spec:
    """What the operator asks for (the plan's fields before central numbers them)."""

    id: str
    group: str
    config: Mapping[str, Any]
    waves: tuple[float, ...]
    soak_s: float
    max_failures: float
    max_failures_percent: bool
    cpu_pct: float
    mem_used_pct: float
    temp_c: float


def parse_failures(value: float | str) -> tuple[float, bool]:
    """``max_failures`` as a count (``3``) or a share of each wave (``"5%"``)."""
    if isinstance(value, str):
        text = value.strip()
        percent = text.endswith("%")
        try:
            number = float(text.removesuffix("%"))
        except ValueError:
            raise RolloutError(422, "max_failures: a count (3) or a percentage (5%)") from None
        return number, percent
    return float(value), False


@dataclass
class PreparedRollout:
    prepare_id: str
    plan: Plan
    topic: str
    waves: list[dict[str, Any]]
    restore: dict[str, Any]
    sizes: list[int]
    members: int
    actor: str
    token_id: str
    expires: float
    summary: str

    @property
    def documents(self) -> list[dict[str, Any]]:
        """Every document in signing order: the waves, then the restore (an upgrade: its
        commands, and no restore)."""
        if self.plan.upgrade is not None:
            return list(self.waves)
        return [*self.waves, self.restore]

    def signed(self) -> list[bytes]:
        return [signed_bytes(self.topic, d) for d in self.documents]


class RolloutService:
    def __init__(
        self,
        *,
        prefix: str,
        signing_keys: Sequence[str],
        docs: Docs,
        members: Callable[[str], list[str]],
        store: RolloutStore,
        ttl_s: float = 600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.prefix = prefix
        self.signing_keys = list(signing_keys)
        self.verifier = Verifier(self.signing_keys)
        self.kids = sorted(key_id(parse_public_key(k)) for k in self.signing_keys)
        self.docs = docs
        self.members = members
        self.store = store
        self.ttl_s = ttl_s
        self.clock = clock
        self._pending: dict[str, PreparedRollout] = {}
        self._lock = threading.Lock()

    # -- prepare ---------------------------------------------------------------------------

    def _members_free(self, rid: str, group: str) -> list[str]:
        """The group's members, once the id is new and the group has no rollout under way."""
        members = self.members(group)
        if not members:
            raise RolloutError(
                404,
                f"group {group!r}: no gateway known to central is in it (check the name; "
                "a gateway joins a group by device.groups in its agent.toml)",
            )
        if self.store.get(rid) is not None:
            raise RolloutError(409, f"rollout id {rid!r} exists already; choose another")
        busy = [r for r in self.store.listing(active_only=True) if r.group == group]
        if busy:
            raise RolloutError(
                409,
                f"group {group!r} has rollout {busy[0].id!r} under way ({busy[0].status}); "
                "abort it or wait for it to end",
            )
        return members

    def _pending_add(self, prepared: PreparedRollout) -> PreparedRollout:
        with self._lock:
            self._sweep()
            if len(self._pending) >= MAX_PENDING:
                raise RolloutError(429, f"{MAX_PENDING} rollouts wait for signatures; retry later")
            self._pending[prepared.prepare_id] = prepared
        return prepared

    def prepare(self, spec: Spec, *, actor: str, token_id: str) -> PreparedRollout:
        members = self._members_free(spec.id, spec.group)
        base, old = self._current(spec.group)
        plan = Plan(
            spec.id,
            spec.group,
            spec.waves,
            base,
            dict(spec.config),
            old,
            Limits(
                soak_s=spec.soak_s,
                max_failures=spec.max_failures,
                max_failures_percent=spec.max_failures_percent,
                cpu_pct=spec.cpu_pct,
                mem_used_pct=spec.mem_used_pct,
                temp_c=spec.temp_c,
            ),
        )
        try:
            waves, restore = plan_documents(plan)
        except PlanError as exc:
            raise RolloutError(422, str(exc)) from None
        check_config(spec.config, waves)
        sizes = [len(cohort(spec.id, members, p)) for p in spec.waves]
        sizes[-1] = len(members)
        shown = ", ".join(f"{p:g}% ({n})" for p, n in zip(spec.waves, sizes, strict=True))
        summary = (
            f"roll config ({', '.join(sorted(spec.config)) or 'empty'}) out to group "
            f"{spec.group} ({len(members)} gateways) in {len(spec.waves)} waves: {shown}; "
            f"soak {spec.soak_s:g} s each; versions {base + 1}-{base + len(spec.waves)}, "
            f"restore {plan.restore_version}"
        )
        empty = [str(i + 1) for i, n in enumerate(sizes[:-1]) if n == 0]
        if empty:
            summary += (
                f"; note: wave {', '.join(empty)} reaches no gateway of this group (too small "
                "for that percentage), so its gate tests nothing"
            )
        prepared = PreparedRollout(
            prepare_id=secrets.token_urlsafe(18),
            plan=plan,
            topic=group_topic(self.prefix, spec.group, CONFIG_DESIRED),
            waves=waves,
            restore=restore,
            sizes=sizes,
            members=len(members),
            actor=actor,
            token_id=token_id,
            expires=self.clock() + self.ttl_s,
            summary=summary,
        )
        return self._pending_add(prepared)

    def prepare_upgrade(
        self, spec: Spec, upgrade: UpgradeSpec, *, actor: str, token_id: str
    ) -> PreparedRollout:
        """An upgrade rollout: the release manifest checked as a gateway will (its signature
        by one of [console] signing_keys, its shape), the window and spreading checked, and
        every wave's commands returned to sign (central/rollout/upgrade.py)."""
        if not self.signing_keys:
            raise RolloutError(
                403,
                "central trusts no signing key: add the operators' public keys to "
                "[console] signing_keys in central.toml (the manifest's key among them)",
            )
        try:
            manifest, _ = verify_manifest(dict(upgrade.manifest), self.verifier)
        except (UpgradeRefused, SignatureError) as exc:
            why = str(exc) if str(exc).startswith("manifest") else f"manifest: {exc}"
            raise RolloutError(422, why) from None
        try:
            if upgrade.window:
                UpgradeWindow.parse(upgrade.window, upgrade.tz)
        except UpgradePlanError as exc:
            raise RolloutError(422, str(exc)) from None
        members = self._members_free(spec.id, spec.group)
        upgrade = UpgradeSpec(
            upgrade.manifest, upgrade.health_timeout_s, upgrade.steps, upgrade.spread_s,
            upgrade.window, upgrade.tz, expiry(self.clock()),
        )  # fmt: skip
        plan = Plan(
            spec.id, spec.group, spec.waves, 0, {"agent": manifest.version}, {},
            Limits(
                soak_s=spec.soak_s, max_failures=spec.max_failures,
                max_failures_percent=spec.max_failures_percent, cpu_pct=spec.cpu_pct,
                mem_used_pct=spec.mem_used_pct, temp_c=spec.temp_c,
            ),
            upgrade,
        )  # fmt: skip
        try:
            cmds, _ = plan_documents(plan)
        except PlanError as exc:
            raise RolloutError(422, str(exc)) from None
        topic = group_topic(self.prefix, spec.group, CMD)
        for cmd in cmds:
            size = len(
                json.dumps({**cmd, "sig": {"alg": "ed25519", "kid": "x" * 16, "value": "x" * 88}})
            )
            if size > MAX_COMMAND_BYTES:
                raise RolloutError(
                    422,
                    f"manifest: the upgrade command would be {size} bytes, more than the "
                    f"{MAX_COMMAND_BYTES} a gateway takes; list fewer packages",
                )
        sizes = [len(cohort(spec.id, members, p)) for p in spec.waves]
        sizes[-1] = len(members)
        shown = ", ".join(f"{p:g}% ({n})" for p, n in zip(spec.waves, sizes, strict=True))
        window = f"inside {upgrade.window} {upgrade.tz}" if upgrade.window else "at any hour"
        summary = (
            f"upgrade the agent to {manifest.version} in group {spec.group} ({len(members)} "
            f"gateways) in {len(spec.waves)} waves: {shown}; each wave in {upgrade.steps} "
            f"commands {upgrade.interval_s:g} s apart, {window}; health gate "
            f"{upgrade.health_timeout_s:g} s, soak {spec.soak_s:g} s; halt above "
            f"{spec.max_failures:g}{'%' if spec.max_failures_percent else ''} failures; "
            f"{len(cmds)} commands to sign"
        )
        prepared = PreparedRollout(
            prepare_id=secrets.token_urlsafe(18),
            plan=plan,
            topic=topic,
            waves=cmds,
            restore={},
            sizes=sizes,
            members=len(members),
            actor=actor,
            token_id=token_id,
            expires=self.clock() + self.ttl_s,
            summary=summary,
        )
        return self._pending_add(prepared)

    def _current(self, group: str) -> tuple[int, dict[str, Any]]:
        """The base version (the newest the group's document had, retained or reported) and
        the config the rollout replaces (what the restore puts back)."""
        target = group_target(group)
        doc = self.docs.desired_docs().get(target)
        base = doc.version if doc is not None and doc.version is not None else 0
        for rep in self.docs.reported_docs().values():
            seen = rep.report.versions.get(target)
            if isinstance(seen, int) and seen > base:
                base = seen
        old: dict[str, Any] = {}
        if doc is not None and doc.version is not None:
            try:
                body = json.loads(doc.doc)
            except ValueError:
                body = {}
            if isinstance(body, dict) and isinstance(body.get("config"), dict):
                old = body["config"]
        return base, old

    def _sweep(self) -> None:
        now = self.clock()
        for pid in [p for p, v in self._pending.items() if v.expires <= now]:
            del self._pending[pid]

    # -- submit ----------------------------------------------------------------------------

    def submit(
        self, prepare_id: str, sigs: Sequence[Mapping[str, Any]], *, actor: str, token_id: str
    ) -> tuple[PreparedRollout, str]:
        """Create the rollout once every signature verifies; (the prepared plan, key id)."""
        with self._lock:
            self._sweep()
            prepared = self._pending.get(prepare_id)
            if prepared is None:
                raise RolloutError(
                    404, "prepare_id: unknown or expired (or already submitted); prepare again"
                )
            if prepared.token_id != token_id:
                raise RolloutError(403, "prepare_id: prepared by another login")
            del self._pending[prepare_id]
        if not self.signing_keys:
            raise RolloutError(
                403,
                "central trusts no signing key: add the operators' public keys to "
                "[console] signing_keys in central.toml",
            )
        docs = prepared.documents
        if len(sigs) != len(docs):
            raise RolloutError(
                422,
                f"sigs: {len(docs)} signatures expected (in the order prepare gave), "
                f"{len(sigs)} given",
            )
        signed = [{**d, "sig": dict(s)} for d, s in zip(docs, sigs, strict=True)]
        if prepared.plan.upgrade is not None:
            waves, restore = signed, {}
        else:
            waves, restore = signed[:-1], signed[-1]
        try:
            check_documents(prepared.plan, waves, restore)
            kid = check_signatures(prepared.plan, waves, restore, self.verifier, prepared.topic)
        except PlanError as exc:
            raise RolloutError(403, f"{exc}; nothing was started") from None
        run = Run(prepared.plan, tuple(waves), restore)
        try:
            self.store.create(prepared.plan.id, prepared.plan.group, actor, to_dict(run))
        except RolloutStoreError as exc:
            raise RolloutError(409, str(exc)) from None
        return prepared, kid

    # -- requests --------------------------------------------------------------------------

    def get(self, rid: str) -> StoredRollout:
        got = self.store.get(rid)
        if got is None:
            raise RolloutError(404, f"no rollout {rid!r}; list them with GET /api/rollouts")
        return got

    def request(self, rid: str, action: str, who: str) -> StoredRollout:
        """Queue pause, resume or abort for the runner; 404 unknown, 409 not in a state for it."""
        got = self.get(rid)
        if got.status not in ALLOWED[action]:
            final = RolloutStatus(got.status).final
            why = "it has ended" if final else f"only a {' or '.join(ALLOWED[action])} one can be"
            raise RolloutError(409, f"cannot {action} rollout {rid!r}: it is {got.status} ({why})")
        self.store.request(rid, action, who)
        return got

    def wave_sizes(self, rollout: StoredRollout) -> list[int]:
        """Each wave's size among the group's current members."""
        members = self.members(rollout.group)
        percents = rollout.state["plan"]["percents"]
        sizes = [len(cohort(rollout.id, members, p)) for p in percents]
        if sizes:
            sizes[-1] = len(members)
        return sizes


def check_config(config: Mapping[str, Any], waves: Sequence[Mapping[str, Any]]) -> None:
    """The agent's own checks, as a gateway makes them: each document (size, numbers), then
    the config against its schema. 422 naming the key."""
    try:
        for doc in waves:
            parse_document(json.dumps(doc, ensure_ascii=False).encode())
        validate(dict(config))
    except Rejected as exc:
        where = str(exc)
        raise RolloutError(
            422, where if where.startswith("(document)") else f"config.{where}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise RolloutError(422, f"config: {exc}") from None
