"""Desired -> applied: overlay, validate, apply through hooks, verify contact, or roll back.

The life of a change:

1. A desired document arrives (retained, so again on every connect). A version not newer
   than the one stored for its source is ignored.
2. The group documents (in ``device.groups`` order) and the gateway's own are overlaid and
   validated as a whole. A bad config is reported ``rejected`` with its key path, and
   nothing changes.
3. A journal is written, then every changed hook section is validated, snapshotted and
   applied; the agent's own sections (telemetry, mqtt, agent, maintenance, service) are
   applied in memory.
4. The agent must then get a PUBACK from the broker (for the ``applying`` report) within
   ``config.rollback_timeout_s``. If it does, the config is committed and reported
   ``applied``. If it does not, or a hook fails, every applied section is restored from its
   snapshot and, once reconnected, the agent reports ``rolled_back`` with the reason.
5. A restart in the middle finds the journal and restores the snapshot: the gateway is
   always in the last committed state or the new one, never between.

A version that was rejected or rolled back is not tried again; a newer version is.

Flash that is full or failing never stops the agent here: if the journal (or a hook's
snapshot) cannot be written, nothing is applied, the report says why (``rejected``, naming
the file and the error), and the same documents are tried again later, by themselves
(``RETRY_MIN_S``, then less often).
If ``remote.json`` cannot be written, the state lives in memory and is written again later.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent.protocol import ConfigReported
from agent.protocol.atomicfile import WriteFaults, describe, sweep_tmp, write_atomic
from agent.protocol.inbound import BadInput, check, own_object, whole
from agent.protocol.signing import SignatureError, Verifier
from agent.remote.desired import (
    HOOK_SECTIONS,
    Rejected,
    changed_sections,
    config_hash,
    overlay,
    parse_document,
    peek_version,
    resolve,
    validate,
)

log = logging.getLogger("titik.remote")

STATE_FILE = "remote.json"
JOURNAL_FILE = "applying.json"
#: After a write failed, the next try is this many seconds later, then twice as long...
RETRY_MIN_S = 15.0
RETRY_MAX_S = 600.0
#: Longest error quoted in a report (a refusal may quote keys from the document).
MAX_ERROR = 300


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
        faults: WriteFaults | None = None,
        device: str = "",
    ) -> None:
        self.dir = state_dir
        self.device = device  # its place in a rollout wave's cohort (agent.protocol.cohort)
        self._rollout: dict[str, dict[str, Any]] = {}  # source -> {"id", "member"} of its doc
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
        self.faults = faults or WriteFaults()
        self._unsaved = False  # remote.json is behind memory
        self._postponed: str | None = None  # the trigger of an apply the disk refused
        self._retry_at: float | None = None
        self._retry_wait = RETRY_MIN_S
        self._loaded = False  # remote.json was read: its applied config can be trusted
        self._load()
        self._recover()

    # -- persistence
    def _load(self) -> None:
        for name in (STATE_FILE, JOURNAL_FILE):
            if sweep_tmp(self.dir / name):
                log.info("removed an unfinished write of %s", self.dir / name)
        try:
            raw = (self.dir / STATE_FILE).read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error(
                "remote config state unreadable (%s); starting from the firmware as is",
                describe(exc),
            )
            return
        try:
            self.docs, self.acted, self.applied, self._report, dropped = parse_state(raw)
        except (ValueError, TypeError) as exc:
            log.error("remote config state unreadable (%s); starting from the firmware as is", exc)
            return
        for why in dropped:
            log.error("remote config state: %s; ignored", why)
        self._loaded = True

    def _save(self) -> bool:
        body = {
            "docs": self.docs,
            "acted": self.acted,
            "applied": self.applied,
            "report": self._report,
        }
        path = self.dir / STATE_FILE
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(body).encode())
        except OSError as exc:
            self._unsaved = True
            self._write_failed(path, exc, "the remote config state lives in memory until then")
            return False
        self._unsaved = False
        self._write_ok()
        return True

    def _write_journal(self, journal: Mapping[str, Any]) -> None:
        """Raises OSError: without a journal on flash nothing may be applied."""
        path = self.dir / JOURNAL_FILE
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(journal).encode())
        except OSError as exc:
            self._write_failed(path, exc, "nothing is applied until then")
            raise
        self._write_ok()

    def _drop_journal(self) -> None:
        try:
            (self.dir / JOURNAL_FILE).unlink(missing_ok=True)
        except OSError as exc:
            # A stale journal is recognised at the next start: its target's hash is then
            # the applied one (committed), or the snapshots are restored (not committed).
            log.error("cannot remove %s: %s", self.dir / JOURNAL_FILE, describe(exc))

    def _write_failed(self, path: Path, exc: OSError, consequence: str) -> None:
        if self._retry_at is None:
            self._retry_at = self.clock() + self._retry_wait
        if self.faults.failed("remote", path.name, exc):
            log.error(
                "cannot write %s (%s); %s; trying again every %g-%gs",
                path,
                describe(exc),
                consequence,
                RETRY_MIN_S,
                RETRY_MAX_S,
            )

    def _write_ok(self) -> None:
        failed = self.faults.ok("remote")
        if failed:
            log.warning("writes to %s work again after %d failures", self.dir, failed)

    def _retry(self) -> None:
        """The disk refused a write earlier: try again (the state, then the apply)."""
        self._retry_at = None
        if self._unsaved:
            self._save()
        if self._postponed is not None:
            self._reconcile(self._postponed)
        if self._unsaved or self._postponed is not None:
            self._retry_wait = min(RETRY_MAX_S, self._retry_wait * 2)
            self._retry_at = self.clock() + self._retry_wait
        else:
            self._retry_wait = RETRY_MIN_S

    def _recover(self) -> None:
        """An apply was cut short by a restart: put the committed config back."""
        path = self.dir / JOURNAL_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.error("apply journal unreadable (%s); restoring every hook section", describe(exc))
            raw = b""
        journal = parse_journal(raw)
        if journal is None:
            log.error("apply journal %s is damaged; restoring every hook section", path)
            journal = {"sections": list(HOOK_SECTIONS), "hooked": list(HOOK_SECTIONS)}
        elif self._loaded and journal.get("target_hash") == config_hash(self.applied):
            # Committed (remote.json says so) but the journal could not be removed then.
            log.info("apply journal %s was left by a committed apply; removing it", path)
            self._drop_journal()
            return
        self._restore_hooks(journal["hooked"])
        self.acted.update(journal.get("versions", {}))
        self._drop_journal()
        self._set_report(journal, "rolled_back", "the agent restarted while applying")
        log.warning("restored the last committed config after a restart during an apply")

    # -- input
    def on_desired(self, source: str, topic: str, payload: bytes) -> None:
        """A desired document for ``source`` ("gw" or "group/<name>") arrived on ``topic``."""
        try:
            doc = parse_document(payload)
            self._check_signature(topic, doc)
        except (Rejected, SignatureError) as exc:
            version = peek_version(payload)
            if version is not None and version <= self.acted.get(source, -1):
                return  # an old retained document: it was dealt with already
            self._set_report({"source": source, "version": version}, "rejected", str(exc))
            log.warning("desired config from %s rejected: %s", source, exc)
            return
        version = doc["version"]
        known = self.docs.get(source, {}).get("version", -1)
        if version <= max(known, self.acted.get(source, -1)):
            return  # a retained copy coming again, or an older document
        config, selected = resolve(doc, self.device)
        self.docs[source] = {"version": version, "config": config}
        if selected is None:
            self._rollout.pop(source, None)
        else:
            self._rollout[source] = selected
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
        self._postponed = None  # this covers whatever the disk refused before
        used = [s for s in self.sources() if s in self.docs]
        versions = {s: self.docs[s]["version"] for s in used}
        meta: dict[str, Any] = {
            "source": trigger,
            "version": versions.get(trigger),
            "versions": versions,
        }
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
        self._apply(meta, target, sections)

    def _apply(self, meta: dict[str, Any], target: dict[str, Any], sections: list[str]) -> None:
        from agent.remote.hooks import HookError  # only a change or a rollback runs hooks

        versions = meta["versions"]
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
        journal = {
            **meta,
            "sections": sections,
            "hooked": done,
            "previous": self.applied,
            "target_hash": config_hash(target),
        }
        try:
            self._write_journal(journal)
        except OSError as exc:
            self._postpone(meta, self._journal_error(exc))
            return
        log.info("applying config %s: sections %s", versions, ", ".join(sections))
        try:
            for s in hooked:
                try:
                    self.hooks.snapshot(s)
                except HookError as exc:
                    # Nothing of this section changed yet (a full or failing disk, most
                    # often): undo the sections before it and try the version again later,
                    # as when the journal cannot be written; a rolled-back version never is.
                    log.warning("config %s postponed: %s", versions, exc)
                    self._restore_hooks(done)
                    self._drop_journal()
                    self._postpone(meta, f"{exc}; nothing was changed")
                    return
                done.append(s)
                self._write_journal(journal)
                self.hooks.apply(s, target.get(s, {}))
        except HookError as exc:
            self._rollback(journal, str(exc))
            return
        except OSError as exc:  # the journal: undo the snapshot taken, apply nothing
            self._restore_hooks(done)
            self._drop_journal()
            self._postpone(meta, self._journal_error(exc))
            return
        self.host.apply_runtime(target)
        self._verify = {
            **journal,
            "target": target,
            "deadline": self.clock() + self.rollback_timeout_s,
        }
        self._set_report(meta, "applying", None)
        self._probe_mid = self._report_mid

    @staticmethod
    def _journal_error(exc: OSError) -> str:
        return f"(state): cannot write {JOURNAL_FILE} ({describe(exc)}); nothing was changed"

    def _postpone(self, meta: Mapping[str, Any], why: str) -> None:
        """Nothing was changed (the journal or a snapshot could not be written): report why
        and try the same version again later, with back-off."""
        self._postponed = str(meta["source"])
        if self._retry_at is None:
            self._retry_at = self.clock() + self._retry_wait
        self._set_report(meta, "rejected", f"{why}, and the agent tries again by itself")

    def _rollback(self, journal: dict[str, Any], reason: str) -> None:
        self._restore_hooks(journal["hooked"])
        self.host.apply_runtime(self.applied)
        self.acted.update(journal["versions"])
        self._drop_journal()
        self._verify = None
        self._probe_mid = None
        self._set_report(journal, "rolled_back", reason)
        log.warning("config %s rolled back: %s", journal["versions"], reason)

    def _restore_hooks(self, sections: list[str]) -> None:
        from agent.remote.hooks import HookError

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
        self._verify = None
        self._probe_mid = None
        self._set_report(v, "applied", None)  # saves remote.json: committed
        self._drop_journal()
        log.info("config %s applied (hash %s)", v["versions"], config_hash(self.applied))
        self._reconcile(v["source"])  # a newer document may have arrived meanwhile

    # -- driving
    def tick(self) -> None:
        v = self._verify
        if v is not None and self.clock() >= v["deadline"]:
            self._rollback(
                v, f"no contact with the broker within {self.rollback_timeout_s:g}s after applying"
            )
        if self._retry_at is not None and self._verify is None and self.clock() >= self._retry_at:
            self._retry()

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
        # The report's one shape is the wire model; "error" is left out when there is none.
        report = ConfigReported(
            version=meta.get("version"),
            source=meta.get("source"),
            rollout=self._rollout.get(meta.get("source") or ""),
            versions=meta.get("versions", {}),
            state=state,
            ts=round(self.wall(), 3),
            hash=config_hash(self.applied),
            error=(error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 3] + "...")
            if error
            else None,
        )
        # "error" and "rollout" are left out when there are none (no bytes for nothing).
        absent = {k for k in ("error", "rollout") if getattr(report, k) is None}
        self._report = report.model_dump(mode="json", exclude=absent or None)
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


def parse_state(
    raw: bytes,
) -> tuple[
    dict[str, dict[str, Any]], dict[str, int], dict[str, Any], dict[str, Any] | None, list[str]
]:
    """Pure: ``remote.json`` -> (docs, acted, applied, report, what was dropped and why).

    ValueError or TypeError if it is not a JSON object at all. Entries that do not fit (a
    version beyond the wire's limit, kept by an agent from before that limit, say) are
    dropped one by one, so one bad entry does not cost the rest.
    """
    data = own_object(raw)
    dropped: list[str] = []
    docs: dict[str, dict[str, Any]] = {}
    raw_docs = data.get("docs")
    for source, doc in (raw_docs if isinstance(raw_docs, dict) else {}).items():
        if (
            isinstance(doc, dict)
            and whole(doc.get("version")) is not None
            and isinstance(doc.get("config"), dict)
            and _fits(doc["config"])
        ):
            docs[source] = {"version": doc["version"], "config": doc["config"]}
        else:
            dropped.append(f"the stored document of {source!r} is not usable")
    acted: dict[str, int] = {}
    raw_acted = data.get("acted")
    for source, version in (raw_acted if isinstance(raw_acted, dict) else {}).items():
        if whole(version, lo=-1) is not None:
            acted[source] = version
        else:
            dropped.append(f"the version acted upon for {source!r} is not usable")
    applied = data.get("applied")
    if not isinstance(applied, dict) or not _fits(applied):
        dropped.append("the applied config is not usable")
        applied = {}
    report = data.get("report")
    if report is not None and not (
        isinstance(report, dict)
        and (report.get("version") is None or whole(report["version"]) is not None)
        and _fits(report)
    ):
        dropped.append("the last report is not usable")
        report = None
    return docs, acted, applied, report, dropped


def _fits(value: Any) -> bool:
    try:
        check(value)
    except BadInput:
        return False
    return True


def parse_journal(raw: bytes) -> dict[str, Any] | None:
    """Pure: the apply journal, or None if it is damaged (the caller then restores all)."""
    try:
        j = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(j, dict):
        return None
    hooked = j.get("hooked", j.get("sections"))
    versions = j.get("versions", {})
    if not (
        isinstance(hooked, list)
        and all(s in HOOK_SECTIONS for s in hooked)
        and isinstance(versions, dict)
        and all(whole(v, lo=-1) is not None for v in versions.values())
    ):
        return None
    out = dict(j)
    out["hooked"] = hooked
    source = j.get("source")
    out["source"] = source if isinstance(source, str) else "gw"
    if whole(j.get("version")) is None:
        out["version"] = None
    return out
