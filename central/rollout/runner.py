"""Runs every rollout that is under way, from central's writer thread (central/cli.py wires it).

Each tick (every ``every_s``): take the operators' requests (pause, resume, abort), publish
the first wave of a new rollout, gate the wave that is out, publish what the state machine
says (the next wave, or the restore), and store the new state and the gate's figures. After a
restart the first tick publishes each active rollout's current document again: retained, with
its version, so that is harmless where it arrived and repairs a publish the restart cut off.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from agent.protocol import ConfigReported
from agent.protocol.topics import CMD, CONFIG_DESIRED, group_topic
from central.rollout.engine import (
    Publish,
    RolloutStatus,
    Run,
    abort,
    from_dict,
    pause,
    resume,
    start,
    step,
    to_dict,
)
from central.rollout.gate import WaveCheck
from central.rollout.upgrade import UpgradeCheck
from central.store.base import DeviceState, ReportedDoc
from central.store.rollouts import RolloutStore

log = logging.getLogger("titik.rollout")

#: Failures and health findings kept with a gate's figures (the rest are counted).
GATE_DETAIL = 20


class _View:
    def __init__(self, states: Mapping[str, DeviceState], reports: Mapping[str, ReportedDoc]):
        self.states, self.reports = states, reports

    def members(self, group: str) -> list[str]:
        return sorted(d for d, st in self.states.items() if group in st.groups)

    def state(self, device: str) -> DeviceState | None:
        return self.states.get(device)

    def report(self, device: str) -> ConfigReported | None:
        doc = self.reports.get(device)
        return doc.report if doc is not None else None


def gate_figures(check: WaveCheck | UpgradeCheck | None, now: float) -> dict[str, Any] | None:
    if check is None:
        return None
    if isinstance(check, UpgradeCheck):
        fails = check.failures or []
        return {
            "checked": now,
            "verdict": check.verdict,
            "wave": check.wave + 1,
            "size": check.size,
            "applied": check.applied,
            "failures": len(fails),
            "failed": fails[:GATE_DETAIL],
            "health": check.health or [],
            "answered": check.answered,
            "pending": check.pending,
            "failure_pct": check.rate,
        }
    return {
        "checked": now,
        "verdict": check.verdict.value,
        "size": check.size,
        "applied": check.applied,
        "failures": len(check.failures),
        "failed": check.failures[:GATE_DETAIL],
        "health": check.health,
    }


class RolloutRunner:
    def __init__(
        self,
        store: RolloutStore,
        *,
        prefix: str,
        states: Callable[[], Mapping[str, DeviceState]],
        reports: Callable[[], Mapping[str, ReportedDoc]],
        publish: Callable[[str, bytes, bool], object],
        every_s: float = 5.0,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.states = states
        self.reports = reports
        self.publish = publish
        self.every_s = every_s
        self._next = 0.0
        self._restarted = True

    def restarted(self) -> None:
        """This instance took over from another (central/store/pg/leader.py): tick now and
        publish each active rollout's current document again, as after a restart."""
        self._restarted = True
        self._next = 0.0

    def tick(self, now: float) -> None:
        if now < self._next:
            return
        self._next = now + self.every_s
        active = self.store.listing(active_only=True)
        if not active:
            self._restarted = False
            return
        view = _View(self.states(), self.reports())
        for stored in active:
            try:
                self._advance(from_dict(stored.state), now, view)
            except Exception:  # one broken rollout must not stop the others, nor ingest
                log.exception("rollout %s: step failed; trying again next tick", stored.id)
        self._restarted = False

    def _advance(self, run: Run, now: float, view: _View) -> None:
        out: list[Publish] = []
        # After a restart, a config wave's retained document goes out again (harmless where it
        # arrived); an upgrade's command does not (it is not retained, and a gateway runs a
        # command id once: one the restart cut off goes out at the next step, as it is due).
        if self._restarted and run.wave >= 0 and run.plan.upgrade is None:
            doc = run.waves[run.wave]
            out.append(Publish(int(doc["version"]), doc))
        intents = self.store.take_intents(run.plan.id)
        for intent in intents:
            try:
                if intent.action == "pause":
                    run = pause(run, now, intent.who)
                elif intent.action == "resume":
                    run = resume(run, now, intent.who)
                else:
                    run, pubs = abort(run, now, intent.who)
                    out += pubs
            except ValueError as exc:
                log.warning("rollout %s: %s refused: %s", run.plan.id, intent.action, exc)
        check: WaveCheck | UpgradeCheck | None = None
        before = (run.status, run.note, run.next_at)
        if run.status is RolloutStatus.RUNNING and run.wave < 0:
            run, pubs = start(run, now)
            out += pubs
        elif run.status is RolloutStatus.RUNNING:
            steps = self.store.steps(run.plan.id) if run.plan.upgrade is not None else None
            run, pubs, check = step(run, now, view, steps)
            out += pubs
        for pub in out:
            leaf = CMD if pub.command else CONFIG_DESIRED
            topic = group_topic(self.prefix, run.plan.group, leaf)
            payload = json.dumps(pub.payload, separators=(",", ":")).encode()
            self.publish(topic, payload, not pub.command)
        moved = (run.status, run.note, run.next_at) != before
        if intents or out or check is not None or moved:
            self.store.save(run.plan.id, to_dict(run), gate_figures(check, now))
        if run.status.final:
            log.warning("rollout %s: %s (%s)", run.plan.id, run.status, run.reason or "")
