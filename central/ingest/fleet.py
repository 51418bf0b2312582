"""Fleet state rules, pure: no I/O, the clock is passed in.

- A live sample becomes a gateway's current state unless it is stamped more than
  ``Rules.future_s`` ahead of central's clock, or it is *late*: older than the current state
  while that state is fresh (see :meth:`FleetState.apply_live`; docs/protocol.md, "Ordering").
- A seq or boot that went backwards, or a new ``sid``, starts a new session; it never makes
  the gateway's later samples count as older.
- A historical sample (from a replayed batch) is stored but never touches current state.
- A status sets online/offline by its session counter ``boot``: an ``online: false`` whose
  ``boot`` is lower than the last is a stale Will and is ignored; an ``online: true`` with a
  lower ``boot`` is a gateway whose counters went back (a new session).
- A gateway with no live telemetry for 3x its interval (inferred from consecutive samples,
  default 60 s) is offline ("stale").
- Alerts: offline longer than N minutes; temperature, disk and memory over thresholds;
  a config report that says ``rejected`` or ``rolled_back``; a service report (issue 20)
  whose score is under ``Rules.service_score_below`` (``service_score``) or whose DNS,
  portal or Internet probe failed (``service_probe``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.protocol import Status
from central.store.base import (
    Alert,
    AlertChange,
    DeviceState,
    ReportedDoc,
    Sample,
)

if TYPE_CHECKING:
    from central.store.service import ServiceRow

STALE_FACTOR = 3.0
#: Closer samples are a burst (e.g. collect_now), not the interval.
MIN_INTERVAL_S = 0.1
STALE = "stale"
#: A live sample stamped this far ahead of central's clock never becomes current state.
FUTURE_S = 300.0

#: What :meth:`FleetState.apply_live` did with a sample (counted in ``IngestStats.live``).
CURRENT = "current"
NEW_SESSION = "new_session"
LATE = "late"
FUTURE = "future"
LIVE_OUTCOMES = (CURRENT, NEW_SESSION, LATE, FUTURE)
#: Alert kind: a live sample was stamped beyond ``Rules.future_s`` ahead of central's clock.
CLOCK = "clock"

#: Config report states that raise an alert, and the alert kind.
CONFIG_ALERTS = {"rejected": "config_rejected", "rolled_back": "config_rolled_back"}
#: Alert kinds of the service report: a low score, a failed probe on the citizen's path.
SERVICE_SCORE = "service_score"
SERVICE_PROBE = "service_probe"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


@dataclass(frozen=True, slots=True)
class Rules:
    offline_after_s: float = 600.0
    temp_c: float = 80.0
    disk_used_pct: float = 90.0
    mem_used_pct: float = 90.0
    stale_factor: float = STALE_FACTOR
    future_s: float = FUTURE_S
    service_score_below: float = 60.0


def _status_view(st: DeviceState) -> tuple[object, ...]:
    """What :meth:`FleetState.apply_status` may change of a device's row."""
    return (
        st.boot, st.site, st.region, st.lat, st.lon, st.version, st.platform, st.model,
        tuple(st.groups), st.online, st.last_seen, st.offline_since, st.offline_reason,
    )  # fmt: skip


@dataclass
class FleetState:
    """Current state of every gateway and the open alerts; collects what changed."""

    rules: Rules
    states: dict[str, DeviceState] = field(default_factory=dict)
    open_alerts: dict[tuple[str, str], Alert] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)
    changes: list[AlertChange] = field(default_factory=list)

    @classmethod
    def restore(
        cls, rules: Rules, devices: Iterable[DeviceState], alerts: Iterable[Alert]
    ) -> FleetState:
        return cls(
            rules,
            states={d.device: d for d in devices},
            open_alerts={(a.device, a.kind): a for a in alerts if a.closed is None},
        )

    def _state(self, device: str) -> DeviceState:
        st = self.states.get(device)
        if st is None:
            st = self.states[device] = DeviceState(device=device)
            self.dirty.add(device)
        return st

    # --- inputs -------------------------------------------------------------------------

    def apply_live(self, s: Sample, now: float) -> str:
        """Take a live sample as current state, or not; return which (``LIVE_OUTCOMES``).

        ``future``: stamped more than ``future_s`` ahead of ``now``; stored by the caller,
        never current (it would make every later real sample look older), and a ``clock``
        alert opens. ``late``: the current sample again, or older than it, while the current
        state is fresh (taken within ``stale_factor`` x interval): same ``sid`` with a lower
        ``seq`` and an earlier ``ts``, or another ``sid`` with an earlier ``ts``. Otherwise it
        becomes current; ``new_session`` when its ``sid`` changed or its ``seq`` or ``boot``
        went back (state wiped or restored from a backup): its ``boot`` is the new reference.
        A state that is not fresh takes any sample, and samples of a session a status ended
        bring it back online once that status is older than the staleness period: a gateway
        that publishes is never held back for longer than that by an old or forged message.
        """
        st = self._state(s.device)
        if s.ts > now + self.rules.future_s:
            ahead = s.ts - now
            self._open(s.device, CLOCK, now, f"sample stamped {ahead:.0f} s ahead of central")
            return FUTURE
        if st.sid == s.sid and st.seq == s.seq:
            return LATE  # the current sample again (a redelivery)
        stale_s = self.rules.stale_factor * st.interval_s
        fresh = st.last_seen is not None and now - st.last_seen <= stale_s
        if fresh and st.last_ts is not None:
            if st.sid == s.sid:
                late = st.seq is not None and s.seq < st.seq and s.ts <= st.last_ts
            else:
                late = s.ts < st.last_ts
            if late:
                return LATE
        new_session = st.sid is not None and (
            s.sid != st.sid or (st.seq is not None and s.seq < st.seq) or s.boot < st.boot
        )
        if (
            st.sid == s.sid
            and st.seq is not None
            and st.last_ts is not None
            and s.seq == st.seq + 1
            and MIN_INTERVAL_S <= s.ts - st.last_ts <= 86400
        ):
            st.interval_s = s.ts - st.last_ts
        st.last_ts, st.sid, st.seq = s.ts, s.sid, s.seq
        st.clients, st.cpu_pct, st.mem_used_pct = s.clients, s.cpu_pct, s.mem_used_pct
        st.temp_c, st.disk_used_pct = s.temp_c, s.disk_used_pct
        st.version = s.version or st.version
        st.last_seen = now
        if (
            new_session
            or s.boot > st.boot
            or (
                s.boot == st.boot
                and (
                    st.online
                    or st.offline_reason in (None, STALE)
                    or self._older_than_stale(st.offline_since, st, now)
                )
            )
        ):
            # A new session, a newer one, or the same one not ended by a status (a sample
            # right after its Will is a straggler; samples long after it mean it lives).
            st.boot = s.boot
            self._set_online(st, now)
        self._thresholds(st, now)
        if self.open_alerts:
            self._close(s.device, CLOCK, now)
        self.dirty.add(s.device)
        return NEW_SESSION if new_session else CURRENT

    def apply_historical(self, s: Sample) -> None:
        # Stored by the caller; current state is left alone (Sparkplug's is_historical).
        self._state(s.device)

    def apply_status(self, device: str, status: Status, now: float) -> bool:
        """Apply a status; False when it is stale (an older session's) and was ignored."""
        st = self._state(device)
        if status.boot < st.boot and not status.online:
            return False  # a Will (or shutdown) of an older session, arriving late
        before = _status_view(st)
        # online: true with a lower boot cannot be an old Will: the gateway's counters went
        # back (state wiped or restored), and this is its session now.
        st.boot = status.boot
        for name in ("site", "region", "lat", "lon", "version", "platform", "model"):
            value = getattr(status, name)
            if value is not None:
                setattr(st, name, value)
        if status.groups is not None:
            st.groups = list(status.groups)
        if status.online:
            st.last_seen = now
            self._set_online(st, now)
        elif st.online or st.offline_reason in (None, STALE):
            st.online = False
            st.offline_since = now
            st.offline_reason = status.reason or "will"
        # The same status again (a bridge re-sends every retained status when it reconnects,
        # and a stopping Mosquitto sends every Will): nothing to write.
        if _status_view(st) != before:
            self.dirty.add(device)
        return True

    def apply_reported(self, doc: ReportedDoc, now: float) -> None:
        self._state(doc.device)
        for state, kind in CONFIG_ALERTS.items():
            if doc.report.state == state:
                self._open(doc.device, kind, now, doc.report.error or state)
            elif doc.report.state == "applied":
                self._close(doc.device, kind, now)

    def apply_service(self, row: ServiceRow, now: float) -> None:
        """A service report's score and failed probes open or close their alerts."""
        self._state(row.device)
        limit = self.rules.service_score_below
        if row.score < limit:
            why = ", ".join(name for name, _, _ in row.deductions) or "no deduction named"
            self._open(row.device, SERVICE_SCORE, now, f"score {row.score} < {limit:g}: {why}")
        else:
            self._close(row.device, SERVICE_SCORE, now)
        if row.failed:
            self._open(row.device, SERVICE_PROBE, now, "failed: " + ", ".join(row.failed))
        else:
            self._close(row.device, SERVICE_PROBE, now)

    def check(self, now: float) -> None:
        """Staleness and the offline alert; call it every few seconds."""
        for st in self.states.values():
            if (
                st.online
                and st.last_seen is not None
                and now - st.last_seen > self.rules.stale_factor * st.interval_s
            ):
                st.online = False
                st.offline_since = st.last_seen
                st.offline_reason = STALE
                self.dirty.add(st.device)
            if (
                not st.online
                and st.offline_since is not None
                and now - st.offline_since >= self.rules.offline_after_s
            ):
                # The alert is dated from when the gateway went down, not from when the rule
                # noticed (offline_after_s later): "down since" is what an operator needs.
                self._open(
                    st.device,
                    "offline",
                    st.offline_since,
                    f"offline since {_utc(st.offline_since)} (alert after "
                    f"{self.rules.offline_after_s / 60:g} min)",
                )

    def newer_stored(self, stored_news: Mapping[str, float]) -> list[str]:
        """The gateways whose stored row is newer news than this instance's state (their rows
        are for :meth:`merge`); those whose state here is newer than their row are marked to be
        written again (another instance wrote an older view over them)."""
        out = []
        for device, at in stored_news.items():
            st = self.states.get(device)
            if st is None or at > news(st):
                out.append(device)
            elif news(st) > at:
                self.dirty.add(device)
        return out

    def merge(
        self, stored: Iterable[DeviceState], open_alerts: Iterable[Alert], now: float
    ) -> None:
        """Take in what other central instances stored (several instances share the messages,
        so each holds only part of every gateway's; central/store/pg/leader.py). Call with
        nothing of this instance's unwritten (``take()`` just written); ``stored`` may be every
        row or only those :meth:`newer_stored` named.

        A stored row replaces this instance's state of a gateway when it is newer: a live
        sample or online status seen later (``last_seen``), or an offline status taken after
        this instance last saw the gateway. Otherwise this instance's is newer (another wrote
        an older view over it) and is written again. The open alerts become the stored ones;
        then the thresholds and the offline alert are judged again on the merged state, so
        an alert another instance opened is closed here when the gateway is fine now.
        """
        self.open_alerts = {(a.device, a.kind): a for a in open_alerts if a.closed is None}
        for d in stored:
            st = self.states.get(d.device)
            if st is None or _newer(d, st):
                self.states[d.device] = st = d
            elif _newer(st, d):
                self.dirty.add(d.device)
            if st.online:
                self._close(st.device, "offline", now)
            self._thresholds(st, now)

    def reset(self, device: str, stored: DeviceState | None) -> None:
        """Put a gateway's state back to what the store holds (its new row could not be
        written); ``None`` forgets it until its next message."""
        if stored is None:
            self.states.pop(device, None)
        else:
            self.states[device] = stored
        self.dirty.discard(device)

    def forget_alert(self, change: AlertChange) -> None:
        """An alert change could not be written: let the rules raise or close it again."""
        if change.close:
            return
        self.open_alerts.pop((change.device, change.kind), None)

    def take(self) -> tuple[list[DeviceState], list[AlertChange]]:
        """What changed since the last call: device rows to write and alert changes."""
        devices = [self.states[d] for d in sorted(self.dirty)]
        changes = self.changes
        self.dirty = set()
        self.changes = []
        return devices, changes

    # --- internals ----------------------------------------------------------------------

    def _older_than_stale(self, at: float | None, st: DeviceState, now: float) -> bool:
        """``at`` is unset or further back than the gateway's staleness period."""
        return at is None or now - at > self.rules.stale_factor * st.interval_s

    def _set_online(self, st: DeviceState, now: float) -> None:
        st.online = True
        st.offline_since = None
        st.offline_reason = None
        self._close(st.device, "offline", now)

    def _thresholds(self, st: DeviceState, now: float) -> None:
        r = self.rules
        for kind, value, limit, unit in (
            ("temp", st.temp_c, r.temp_c, "°C"),
            ("disk", st.disk_used_pct, r.disk_used_pct, "%"),
            ("mem", st.mem_used_pct, r.mem_used_pct, "%"),
        ):
            if value is not None and value >= limit:
                self._open(st.device, kind, now, f"{kind} {value:g}{unit} >= {limit:g}{unit}")
            elif value is not None:
                self._close(st.device, kind, now)

    def _open(self, device: str, kind: str, now: float, detail: str) -> None:
        if (device, kind) in self.open_alerts:
            return
        self.open_alerts[(device, kind)] = Alert(kind, device, now, detail)
        self.changes.append(AlertChange(kind, device, now, detail))

    def _close(self, device: str, kind: str, now: float) -> None:
        if self.open_alerts.pop((device, kind), None) is not None:
            self.changes.append(AlertChange(kind, device, now, close=True))


def news(st: DeviceState) -> float:
    """When central last heard of the gateway: alive (``last_seen``) or, while offline, gone
    (``offline_since``: a Will or shutdown status; the stale rule dates it at ``last_seen``)."""
    seen = st.last_seen or 0.0
    return seen if st.online else max(seen, st.offline_since or 0.0)


def _newer(a: DeviceState, b: DeviceState) -> bool:
    """``a`` holds later news of the gateway than ``b``."""
    return news(a) > news(b)
