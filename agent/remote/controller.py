"""Desired -> applied: overlay, validate, apply through hooks, verify contact, or roll back.

The life of a change:

1. A desired document arrives (retained, so again on every connect). A version not newer
   than the one stored for its source is ignored.
2. The group documents (in ``device.groups`` order) and the gateway's own are overlaid and
   validated as a whole. A bad config is reported ``rejected`` with its key path, and
   nothing changes.
3. A journal is written, then every changed hook section is validated, snapshotted and
   applied; the agent's own sections (telemetry, mqtt, agent, maintenance) are applied in
   memory.
4. The agent must then get a PUBACK from the broker (for the ``applying`` report) within
   ``config.rollback_timeout_s``. If it does, the config is committed and reported
   ``applied``. If it does not, or a hook fails, every applied section is restored from its
   snapshot and, once reconnected, the agent reports ``rolled_back`` with the reason.
5. A restart in the middle finds the journal and restores the snapshot: the gateway is
   always in the last committed state or the new one, never between.

A version that was rejected or rolled back is not tried again; a newer version is.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.atomicfile import write_atomic
from agent.remote.desired import (
    HOOK_SECTIONS,
    Rejected,
    changed_sections,
    config_hash,
    overlay,
    parse_document,
    validate,
)
from agent.remote.hooks import HookError
from agent.remote.signing import SignatureError, Verifier

log = logging.getLogger("titik.remote")

STATE_FILE = "remote.json"
JOURNAL_FILE = "applying.json"


class Hooks(Protocol):
    def has(self, section: str) -> bool: ...
    def validate(self, section: str, data: Mapping[str, Any]) -> None: ...
    def snapshot(self, section: str) -> None: ...
    def apply(self, section: str, data: Mapping[str, Any]) -> bool: ...
    def restore(self, section: str) -> None: ...


class Host(Protocol):
    """What the controller needs from the agent."""

    def publish_reported(self, payload: bytes) -> int | None: ...
    def apply_runtime(self, applied: Mapping[str, Any]) -> None: ...


class ConfigController:
    def __init__(
        self,
        state_dir: Path,
        groups: list[str],
        hooks: Hooks,
        host: Host,
        *,
        rollback_timeout_s: float,
        verifier: Verifier | None = None,
        require_signature: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.dir = state_dir
        self.groups = groups
        self.hooks = hooks
        self.host = host
        self.rollback_timeout_s = rollback_timeout_s
        self.verifier = verifier
        self.require_signature = require_signature
        self.clock = clock
        self.wall = wall
        self.docs: dict[str, dict[str, Any]] = {}  # source -> {"version", "config"}
        self.acted: dict[str, int] = {}  # source -> highest version acted upon
        self.applied: dict[str, Any] = {}
        self._verify: dict[str, Any] | None = None  # the apply awaiting broker contact
        self._probe_mid: int | None = None
        self._report: dict[str, Any] | None = None  # the latest report, until acked
        self._report_mid: int | None = None
        self._load()
        self._recover()

    # -- persistence
    def _load(self) -> None:
        try:
            data = json.loads((self.dir / STATE_FILE).read_bytes())
            self.docs = dict(data.get("docs", {}))
            self.acted = {k: int(v) for k, v in data.get("acted", {}).items()}
            self.applied = dict(data.get("applied", {}))
            self._report = data.get("report")
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("remote config state unreadable (%s); starting from the firmware as is", exc)

    def _save(self) -> None:
        body = {
            "docs": self.docs,
            "acted": self.acted,
            "applied": self.applied,
            "report": self._report,
        }
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / STATE_FILE, json.dumps(body).encode())
        except OSError as exc:
            log.error("cannot save remote config state: %s", exc.strerror or exc)

    def _write_journal(self, journal: Mapping[str, Any] | None) -> None:
        path = self.dir / JOURNAL_FILE
        if journal is None:
            path.unlink(missing_ok=True)
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(journal).encode())

    def _recover(self) -> None:
        """An apply was cut short by a restart: put the committed config back."""
        try:
            journal = json.loads((self.dir / JOURNAL_FILE).read_bytes())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("apply journal unreadable (%s); restoring every hook section", exc)
            journal = {"sections": list(HOOK_SECTIONS), "versions": {}, "source": "gw"}
        self._restore_hooks(journal.get("hooked", journal.get("sections", [])))
        self.acted.update(journal.get("versions", {}))
        self._write_journal(None)
        self._set_report(journal, "rolled_back", "the agent restarted while applying")
        log.warning("restored the last committed config after a restart during an apply")

    # -- input
    def on_desired(self, source: str, topic: str, payload: bytes) -> None:
        """A desired document for ``source`` ("gw" or "group/<name>") arrived on ``topic``."""
        try:
            doc = parse_document(payload)
            self._check_signature(topic, doc)
        except (Rejected, SignatureError) as exc:
            version = _peek_version(payload)
            if version is not None and version <= self.acted.get(source, -1):
                return  # an old retained document: it was dealt with already
            self._set_report({"source": source, "version": version}, "rejected", str(exc))
            log.warning("desired config from %s rejected: %s", source, exc)
            return
        version = doc["version"]
        known = self.docs.get(source, {}).get("version", -1)
        if version <= max(known, self.acted.get(source, -1)):
            return  # a retained copy coming again, or an older document
        self.docs[source] = {"version": version, "config": doc["config"]}
        self._save()
        self._reconcile(source)

    def _check_signature(self, topic: str, doc: Mapping[str, Any]) -> None:
        if self.verifier is not None and (self.require_signature or "sig" in doc):
            self.verifier.verify(topic, doc)
        elif self.require_signature:
            raise SignatureError("signature: required, but no trusted keys are configured")

    def sources(self) -> list[str]:
        return [f"group/{g}" for g in self.groups] + ["gw"]

    # -- the apply
    def _reconcile(self, trigger: str) -> None:
        if self._verify is not None:
            return  # one change at a time; the newer one is applied after this one settles
        used = [s for s in self.sources() if s in self.docs]
        versions = {s: self.docs[s]["version"] for s in used}
        meta = {"source": trigger, "version": versions.get(trigger), "versions": versions}
        if all(self.acted.get(s, -1) >= v for s, v in versions.items()):
            return
        try:
            target = validate(overlay([self.docs[s]["config"] for s in used]))
        except Rejected as exc:
            self.acted.update(versions)
            self._set_report(meta, "rejected", str(exc))
            log.warning("desired config rejected: %s", exc)
            return
        sections = changed_sections(self.applied, target)
        if not sections:
            self.acted.update(versions)
            self._set_report(meta, "applied", None)
            return
        hooked = [s for s in sections if s in HOOK_SECTIONS and self.hooks.has(s)]
        try:
            for s in hooked:
                self.hooks.validate(s, target.get(s, {}))
        except HookError as exc:
            self.acted.update(versions)
            self._set_report(meta, "rejected", str(exc))
            log.warning("desired config rejected by the firmware: %s", exc)
            return
        done: list[str] = []
        journal = {**meta, "sections": sections, "hooked": done, "previous": self.applied}
        self._write_journal(journal)
        log.info("applying config %s: sections %s", versions, ", ".join(sections))
        try:
            for s in hooked:
                self.hooks.snapshot(s)
                done.append(s)
                self._write_journal(journal)
                self.hooks.apply(s, target.get(s, {}))
        except HookError as exc:
            self._rollback(journal, str(exc))
            return
        self.host.apply_runtime(target)
        self._verify = {
            **journal,
            "target": target,
            "deadline": self.clock() + self.rollback_timeout_s,
        }
        self._set_report(meta, "applying", None)
        self._probe_mid = self._report_mid

    def _rollback(self, journal: dict[str, Any], reason: str) -> None:
        self._restore_hooks(journal["hooked"])
        self.host.apply_runtime(self.applied)
        self.acted.update(journal["versions"])
        self._write_journal(None)
        self._verify = None
        self._probe_mid = None
        self._set_report(journal, "rolled_back", reason)
        log.warning("config %s rolled back: %s", journal["versions"], reason)

    def _restore_hooks(self, sections: list[str]) -> None:
        for s in reversed(sections):
            try:
                self.hooks.restore(s)
            except HookError as exc:  # keep restoring the others; say so loudly
                log.error("restore failed: %s", exc)

    def _commit(self) -> None:
        v = self._verify
        if v is None:
            return
        self.applied = v["target"]
        self.acted.update(v["versions"])
        self._write_journal(None)
        self._verify = None
        self._probe_mid = None
        self._set_report(v, "applied", None)
        log.info("config %s applied (hash %s)", v["versions"], config_hash(self.applied))
        self._reconcile(v["source"])  # a newer document may have arrived meanwhile

    # -- driving
    def tick(self) -> None:
        v = self._verify
        if v is not None and self.clock() >= v["deadline"]:
            self._rollback(
                v, f"no contact with the broker within {self.rollback_timeout_s:g}s after applying"
            )

    def on_connected(self) -> None:
        if self._report is not None:
            self._publish_report()
            if self._verify is not None:
                self._probe_mid = self._report_mid

    def on_ack(self, mid: int) -> None:
        if mid == self._report_mid:
            self._report_mid = None
        if self._verify is not None and mid == self._probe_mid:
            self._commit()

    # -- reporting
    def _set_report(self, meta: Mapping[str, Any], state: str, error: str | None) -> None:
        report: dict[str, Any] = {
            "version": meta.get("version"),
            "source": meta.get("source"),
            "versions": meta.get("versions", {}),
            "state": state,
            "ts": round(self.wall(), 3),
            "hash": config_hash(self.applied),
        }
        if error:
            report["error"] = error
        self._report = report
        self._save()
        self._publish_report()

    def _publish_report(self) -> None:
        if self._report is not None:
            self._report_mid = self.host.publish_reported(
                json.dumps(self._report, separators=(",", ":")).encode()
            )

    @property
    def report(self) -> dict[str, Any] | None:
        return self._report


def _peek_version(payload: bytes) -> int | None:
    try:
        v = json.loads(payload).get("version")
    except (ValueError, AttributeError, UnicodeDecodeError):
        return None
    return v if isinstance(v, int) and not isinstance(v, bool) else None
