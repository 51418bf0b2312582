"""The alert lifecycle in central's SQLite file: history, maintenance windows, incidents and
webhook deliveries (docs/alerts.md).

The ``alerts`` table (central/store/sqlite.py) stays what the fleet rules write: one row per
alert, open until closed. Everything an operator or the lifecycle adds lives here, beside it:

- ``alert_events``: every transition of an alert (``raised``, ``acked``, ``snoozed``,
  ``unsnoozed``, ``reopened``, ``resolved``) with who and when, append-only. An alert's state
  is derived from its row and its newest event (:func:`state_of`), so it never disagrees with
  its history.
- ``alert_info``: what the lifecycle decided when it took the alert in: the gateway's region
  and site, the maintenance window it was raised under, its incident, whether it was notified.
- ``maint_windows``: maintenance windows per group, device or region (soft-deleted, so the
  history of who silenced what stays).
- ``incidents``: gateways of one region (or site) that went down together.
- ``notifications``: each webhook delivery and how it ended.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from central.store.tables import SqliteTables

SCHEMA = """
CREATE TABLE IF NOT EXISTS alert_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, alert INTEGER NOT NULL, at REAL NOT NULL,
    event TEXT NOT NULL, who TEXT NOT NULL, until REAL, note TEXT
);
CREATE INDEX IF NOT EXISTS alert_events_alert ON alert_events (alert, seq);
CREATE TABLE IF NOT EXISTS alert_info (
    alert INTEGER PRIMARY KEY, taken REAL NOT NULL, region TEXT, site TEXT,
    maintenance INTEGER, incident INTEGER, notified INTEGER NOT NULL DEFAULT 0, resolved REAL
);
CREATE INDEX IF NOT EXISTS alert_info_open ON alert_info (resolved);
CREATE INDEX IF NOT EXISTS alert_info_incident ON alert_info (incident);
CREATE TABLE IF NOT EXISTS maint_windows (
    id INTEGER PRIMARY KEY AUTOINCREMENT, grp TEXT, device TEXT, region TEXT,
    start REAL NOT NULL, "end" REAL NOT NULL, reason TEXT NOT NULL, who TEXT NOT NULL,
    created REAL NOT NULL, deleted REAL, deleted_by TEXT
);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT, scope TEXT NOT NULL, key TEXT NOT NULL,
    opened REAL NOT NULL, first_down REAL NOT NULL, last_down REAL NOT NULL,
    resolved REAL, notified_count INTEGER NOT NULL DEFAULT 0, notified_at REAL
);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (scope, key, resolved);
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, subject TEXT NOT NULL,
    event TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, done REAL
);
CREATE TABLE IF NOT EXISTS alerting_meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
"""

STATES = ("open", "acknowledged", "snoozed", "resolved")
EVENTS = ("raised", "acked", "snoozed", "unsnoozed", "reopened", "resolved")
#: Webhook deliveries kept (GET /api/notifications shows the newest).
KEEP_DELIVERIES = 10_000
#: Alerts named in one statement by :meth:`AlertingStore.rows`.
ROWIDS_CHUNK = 1000
#: Who the lifecycle's own transitions are by.
CENTRAL = "central"


class AlertingError(ValueError):
    """A request refused; the message names the field (``group: no gateway is in ...``)."""


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    alert: int
    at: float
    event: str
    who: str
    until: float | None
    note: str | None


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert with its lifecycle: the ``alerts`` row, its newest event and ``alert_info``."""

    rowid: int
    kind: str
    device: str
    since: float
    detail: str
    closed: float | None
    state: str
    state_at: float | None
    state_by: str | None
    snoozed_until: float | None
    region: str | None
    site: str | None
    maintenance: int | None
    incident: int | None

    @property
    def id(self) -> str:
        """The API's id, as central.api.queries.alert_id spells it."""
        return f"{self.kind}/{self.device}/{self.since:.3f}"


@dataclass(frozen=True, slots=True)
class Window:
    id: int
    group: str | None
    device: str | None
    region: str | None
    start: float
    end: float
    reason: str
    who: str
    created: float
    deleted: float | None
    deleted_by: str | None

    def active(self, now: float) -> bool:
        return self.deleted is None and self.start <= now < self.end

    @property
    def target(self) -> str:
        if self.group is not None:
            return f"group/{self.group}"
        if self.device is not None:
            return f"gw/{self.device}"
        return f"region/{self.region}"


@dataclass(frozen=True, slots=True)
class Incident:
    id: int
    scope: str
    key: str
    opened: float
    first_down: float
    last_down: float
    resolved: float | None
    notified_count: int
    notified_at: float | None
    members: tuple[str, ...]
    down: int


def covering(
    windows: Iterable[Window], device: str, groups: Sequence[str], region: str | None, now: float
) -> Window | None:
    """The window of ``windows`` that covers this gateway now, if any (the one ending last)."""
    best = None
    for w in windows:
        if not w.active(now):
            continue
        if (
            (w.group is not None and w.group in groups)
            or w.device == device
            or (w.region is not None and w.region == region)
        ) and (best is None or w.end > best.end):
            best = w
    return best


@dataclass(frozen=True, slots=True)
class IncidentCount:
    """An open incident's notification state and how many gateways are in it."""

    id: int
    opened: float
    notified_at: float | None
    notified_count: int
    count: int


def state_of(closed: float | None, event: str | None, until: float | None, now: float) -> str:
    """An alert's state from its row and its newest event: closed is ``resolved``; an
    acknowledgement stands until reopened; a snooze until its time (then ``open`` again)."""
    if closed is not None:
        return "resolved"
    if event == "acked":
        return "acknowledged"
    if event == "snoozed" and until is not None and until > now:
        return "snoozed"
    return "open"


def no_nul(**fields: str | None) -> None:
    """:class:`AlertingError` naming the first field that holds a NUL character: PostgreSQL's
    text refuses it, so it is refused on both stores alike, before any row is written."""
    for name, value in fields.items():
        if value is not None and "\x00" in value:
            raise AlertingError(f"{name}: holds a NUL character (\\x00); remove it")


def parse_alert_id(alert_id: str) -> tuple[str, str, float]:
    if "\x00" in alert_id:
        raise ValueError("a NUL character is in no alert's id")
    kind, device, since = alert_id.split("/", 2)
    return kind, device, float(since)


_ROW_SQL = """
SELECT a.id AS rowid, a.kind, a.device, a.since, a.detail, a.closed,
       e.event, e.at AS e_at, e.who AS e_who, e.until AS e_until,
       i.region, i.site, i.maintenance, i.incident
FROM alerts a
LEFT JOIN alert_events e ON e.seq = (SELECT max(seq) FROM alert_events WHERE alert = a.id)
LEFT JOIN alert_info i ON i.alert = a.id
"""


class AlertingStore(SqliteTables):
    """The lifecycle's tables; the ``alerts`` and ``devices`` tables must exist (open the
    SqliteStore on the file first). On PostgreSQL: central/store/pg/tables.py's
    PgAlertingStore runs this same code; the SQL both accept is written once here (``RETURNING
    id``, ``ON CONFLICT``, ``"end"`` quoted), and what differs is in the two attributes below.
    """

    #: A gateway's groups as a JSON array text (``devices`` as ``d``): a JSON text in SQLite.
    GROUPS_JSON = "coalesce(d.groups, '[]')"
    #: ``devices`` (as ``d``) whose groups hold the ``?`` argument.
    IN_GROUP = "EXISTS (SELECT 1 FROM json_each(d.groups) g WHERE g.value = ?)"

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(path, SCHEMA, clock=clock)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction for a whole engine tick (thousands of rows when a city goes down
        at once: one commit, not one per row)."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # --- alerts and their history -----------------------------------------------------------

    def _alert_row(self, r: sqlite3.Row, now: float) -> AlertRow:
        state = state_of(r["closed"], r["event"], r["e_until"], now)
        snoozed = r["e_until"] if state == "snoozed" else None
        return AlertRow(
            r["rowid"], r["kind"], r["device"], r["since"], r["detail"], r["closed"], state,
            r["e_at"], r["e_who"], snoozed, r["region"], r["site"], r["maintenance"],
            r["incident"],
        )  # fmt: skip

    def find(self, alert_id: str) -> AlertRow | None:
        """The alert with the API id ``<kind>/<device>/<since>`` (``since`` to 3 decimals)."""
        try:
            kind, device, since = parse_alert_id(alert_id)
        except ValueError:
            return None
        r = (
            self._conn()
            .execute(
                _ROW_SQL + "WHERE a.kind = ? AND a.device = ? AND abs(a.since - ?) < 0.0005 "
                "ORDER BY a.id DESC LIMIT 1",
                (kind, device, since),
            )
            .fetchone()
        )
        return self._alert_row(r, self.clock()) if r else None

    def rows(
        self,
        *,
        state: str | None = None,
        rowids: Iterable[int] | None = None,
        open_only: bool = False,
        limit: int = 100_000,
    ) -> list[AlertRow]:
        """Alerts with their state, oldest first; ``state`` one of :data:`STATES`."""
        now = self.clock()
        where = ""
        if state == "resolved":
            where = "WHERE a.closed IS NOT NULL"
        elif state is not None or open_only:
            where = "WHERE a.closed IS NULL"
        if rowids is None:
            cur = self._conn().execute(_ROW_SQL + where + " ORDER BY a.since, a.id")
            out = [self._alert_row(r, now) for r in cur]
        else:  # in chunks: a statement takes at most 32,766 arguments in SQLite
            ids = list(rowids)
            out = []
            for at in range(0, len(ids), ROWIDS_CHUNK):
                chunk = ids[at : at + ROWIDS_CHUNK]
                cond = (" AND " if where else "WHERE ") + f"a.id IN ({','.join('?' * len(chunk))})"
                cur = self._conn().execute(_ROW_SQL + where + cond, chunk)
                out += [self._alert_row(r, now) for r in cur]
            out.sort(key=lambda a: (a.since, a.rowid))
        if state is not None:
            out = [a for a in out if a.state == state]
        return out[:limit]

    def record(
        self,
        alert: int,
        event: str,
        who: str,
        *,
        at: float | None = None,
        until: float | None = None,
        note: str | None = None,
    ) -> None:
        if event not in EVENTS:
            raise AlertingError(f"event: one of {', '.join(EVENTS)}")
        no_nul(who=who, note=note)
        self._conn().execute(
            "INSERT INTO alert_events (alert, at, event, who, until, note) VALUES (?,?,?,?,?,?)",
            (alert, self.clock() if at is None else at, event, who, until, note),
        )

    def record_many(self, events: Iterable[tuple[int, str, float, str | None]], who: str) -> None:
        """Many of the engine's own events at once: ``(alert, event, at, note)`` each."""
        rows = [(alert, at, event, who, None, note) for alert, event, at, note in events]
        for _, _, event, _, _, note in rows:
            if event not in EVENTS:
                raise AlertingError(f"event: one of {', '.join(EVENTS)}")
            no_nul(note=note)
        if rows:
            self._conn().executemany(
                "INSERT INTO alert_events (alert, at, event, who, until, note) "
                "VALUES (?,?,?,?,?,?)",
                rows,
            )

    def history(self, alert: int) -> list[Event]:
        rows = self._conn().execute(
            "SELECT * FROM alert_events WHERE alert = ? ORDER BY seq", (alert,)
        )
        return [
            Event(r["seq"], r["alert"], r["at"], r["event"], r["who"], r["until"], r["note"])
            for r in rows
        ]

    # --- what the engine reads and writes -----------------------------------------------------

    def meta(self, key: str, default: float = 0.0) -> float:
        r = self._conn().execute("SELECT value FROM alerting_meta WHERE key = ?", (key,)).fetchone()
        return float(r[0]) if r else default

    def set_meta(self, key: str, value: float) -> None:
        self._conn().execute(
            "INSERT INTO alerting_meta VALUES (?, ?) ON CONFLICT (key) DO UPDATE "
            "SET value = excluded.value",
            (key, value),
        )

    def new_alerts(self, after: int, limit: int = 5000) -> list[sqlite3.Row]:
        """Alerts the lifecycle has not taken in yet, with the gateway's region, site and groups."""
        return (
            self._conn()
            .execute(
                "SELECT a.id, a.kind, a.device, a.since, a.detail, a.closed, d.region, d.site, "  # noqa: S608 - constants
                f"{self.GROUPS_JSON} AS groups FROM alerts a "
                "LEFT JOIN devices d ON d.device = a.device WHERE a.id > ? ORDER BY a.id LIMIT ?",
                (after, limit),
            )
            .fetchall()
        )

    def take_in(
        self,
        alert: int,
        at: float,
        region: str | None,
        site: str | None,
        maintenance: int | None,
    ) -> None:
        self._conn().execute(
            "INSERT INTO alert_info (alert, taken, region, site, maintenance) "
            "VALUES (?,?,?,?,?) ON CONFLICT (alert) DO NOTHING",
            (alert, at, region, site, maintenance),
        )

    def newly_closed(self) -> list[sqlite3.Row]:
        """Alerts taken in, closed in ``alerts``, not yet marked resolved here."""
        return (
            self._conn()
            .execute(
                "SELECT a.id, a.kind, a.device, a.since, a.closed, i.notified, i.incident, "
                "i.maintenance FROM alert_info i JOIN alerts a ON a.id = i.alert "
                "WHERE i.resolved IS NULL AND a.closed IS NOT NULL ORDER BY a.closed"
            )
            .fetchall()
        )

    def set_info(self, alert: int, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        self._conn().execute(
            f"UPDATE alert_info SET {sets} WHERE alert = ?",  # noqa: S608 (names are ours)
            (*cols.values(), alert),
        )

    def set_many(self, column: str, values: Iterable[tuple[Any, int]]) -> None:
        """``alert_info.<column>`` of many alerts: ``(value, alert)`` each."""
        rows = list(values)
        if rows:
            self._conn().executemany(
                f"UPDATE alert_info SET {column} = ? WHERE alert = ?",  # noqa: S608 (ours)
                rows,
            )

    def pending(self, offline_taken_by: float = float("inf")) -> list[sqlite3.Row]:
        """Open alerts taken in but neither notified, in maintenance, nor in an incident; of
        the ``offline`` ones only those taken in by ``offline_taken_by`` (their group wait is
        over: the others may still join an incident)."""
        return (
            self._conn()
            .execute(
                "SELECT a.id, a.kind, a.device, a.since, a.detail, i.taken, i.region, i.site "
                "FROM alert_info i JOIN alerts a ON a.id = i.alert WHERE i.resolved IS NULL "
                "AND i.notified = 0 AND i.maintenance IS NULL AND i.incident IS NULL "
                "AND (a.kind <> 'offline' OR i.taken <= ?) ORDER BY a.id",
                (min(offline_taken_by, 1e300),),
            )
            .fetchall()
        )

    def snoozes_ended(self, now: float) -> list[int]:
        """Open alerts whose newest event is a snooze that has ended."""
        rows = self._conn().execute(
            "SELECT a.id FROM alerts a JOIN alert_events e ON e.seq = "
            "(SELECT max(seq) FROM alert_events WHERE alert = a.id) "
            "WHERE a.closed IS NULL AND e.event = 'snoozed' AND e.until <= ?",
            (now,),
        )
        return [r[0] for r in rows]

    def placement(self, device: str) -> tuple[list[str], str | None]:
        """A gateway's groups and region (what a maintenance window may name)."""
        r = self._conn().execute(
            f"SELECT {self.GROUPS_JSON}, d.region FROM devices d WHERE d.device = ?",  # noqa: S608 - constants
            (device,),
        )
        row = r.fetchone()
        if row is None:
            return [], None
        return (list(json.loads(row[0])) if row[0] else []), row[1]

    # --- maintenance windows -----------------------------------------------------------------

    def _window(self, r: sqlite3.Row) -> Window:
        return Window(
            r["id"], r["grp"], r["device"], r["region"], r["start"], r["end"], r["reason"],
            r["who"], r["created"], r["deleted"], r["deleted_by"],
        )  # fmt: skip

    def add_window(
        self,
        *,
        group: str | None = None,
        device: str | None = None,
        region: str | None = None,
        start: float,
        end: float,
        reason: str,
        who: str,
    ) -> Window:
        """A window over one group, device or region; refused (naming the field) for an
        unknown target, an end not after the start or one already past, or an empty reason."""
        given = [(n, v) for n, v in (("group", group), ("device", device), ("region", region)) if v]
        if len(given) != 1:
            raise AlertingError("group: give exactly one of group, device or region")
        name, value = given[0]
        no_nul(**{name: value}, reason=reason, who=who)
        conn = self._conn()
        if name == "group":
            known = (
                conn.execute(
                    f"SELECT 1 FROM devices d WHERE {self.IN_GROUP} LIMIT 1",  # noqa: S608 - constants
                    (value,),
                ).fetchone()
                or conn.execute(
                    "SELECT 1 FROM config_desired WHERE target = ?", (f"group/{value}",)
                ).fetchone()
            )
        elif name == "device":
            known = conn.execute("SELECT 1 FROM devices WHERE device = ?", (value,)).fetchone()
        else:
            known = conn.execute("SELECT 1 FROM devices WHERE region = ? LIMIT 1", (value,))
            known = known.fetchone()
        if not known:
            raise AlertingError(f"{name}: no gateway is in {name} {value!r} (check the spelling)")
        if not end > start:
            raise AlertingError("end: must be after start")
        if end <= self.clock():
            raise AlertingError("end: is in the past; a window must end in the future")
        if not reason.strip():
            raise AlertingError("reason: say why (it is shown with every silenced alert)")
        wid = conn.execute(
            'INSERT INTO maint_windows (grp, device, region, start, "end", reason, who, created) '
            "VALUES (?,?,?,?,?,?,?,?) RETURNING id",
            (group, device, region, start, end, reason.strip(), who, self.clock()),
        ).fetchone()[0]
        return self._get_window(int(wid))

    def _get_window(self, wid: int) -> Window:
        w = self.window(wid)
        if w is None:
            raise AlertingError(f"id: no maintenance window {wid}")
        return w

    def window(self, wid: int) -> Window | None:
        r = self._conn().execute("SELECT * FROM maint_windows WHERE id = ?", (wid,)).fetchone()
        return self._window(r) if r else None

    def windows(self, *, include_ended: bool = False) -> list[Window]:
        now = self.clock()
        rows = self._conn().execute("SELECT * FROM maint_windows ORDER BY start, id")
        out = [self._window(r) for r in rows]
        if not include_ended:
            out = [w for w in out if w.deleted is None and w.end > now]
        return out

    def delete_window(self, wid: int, who: str) -> Window:
        w = self.window(wid)
        if w is None or w.deleted is not None:
            raise AlertingError(f"id: no maintenance window {wid} (list them to see the ids)")
        self._conn().execute(
            "UPDATE maint_windows SET deleted = ?, deleted_by = ? WHERE id = ?",
            (self.clock(), who, wid),
        )
        return self._get_window(wid)

    def window_for(
        self, device: str, groups: Sequence[str], region: str | None, now: float
    ) -> Window | None:
        """The active window covering this gateway now, if any (the one ending last)."""
        return covering(self.windows(), device, groups, region, now)

    # --- incidents --------------------------------------------------------------------------

    def open_incident(self, scope: str, key: str, at: float, first: float, last: float) -> int:
        row = self._conn().execute(
            "INSERT INTO incidents (scope, key, opened, first_down, last_down) VALUES (?,?,?,?,?) "
            "RETURNING id",
            (scope, key, at, first, last),
        )
        return int(row.fetchone()[0])

    def active_incident(self, scope: str, key: str) -> tuple[int, float, float] | None:
        """The open incident of a region (or site): ``(id, first_down, last_down)``."""
        r = (
            self._conn()
            .execute(
                "SELECT id, first_down, last_down FROM incidents WHERE scope = ? AND key = ? "
                "AND resolved IS NULL ORDER BY id DESC LIMIT 1",
                (scope, key),
            )
            .fetchone()
        )
        return (r[0], r[1], r[2]) if r else None

    def update_incident(self, iid: int, **cols: Any) -> None:
        sets = ", ".join(f"{k} = ?" for k in cols)
        self._conn().execute(
            f"UPDATE incidents SET {sets} WHERE id = ?",  # noqa: S608 (names are ours)
            (*cols.values(), iid),
        )

    def loose_offline(self, scope: str, key: str, lo: float, hi: float) -> list[sqlite3.Row]:
        """Open offline alerts of one region/site, in no incident nor maintenance, down in
        ``[lo, hi]``."""
        col = "region" if scope == "region" else "site"
        return (
            self._conn()
            .execute(
                f"SELECT a.id, a.since, i.notified FROM alert_info i JOIN alerts a ON a.id = i.alert "  # noqa: S608
                f"WHERE i.{col} = ? AND a.kind = 'offline' AND a.closed IS NULL "
                "AND i.incident IS NULL AND i.maintenance IS NULL AND a.since BETWEEN ? AND ?",
                (key, lo, hi),
            )
            .fetchall()
        )

    def incident(self, iid: int) -> Incident | None:
        conn = self._conn()
        r = conn.execute("SELECT * FROM incidents WHERE id = ?", (iid,)).fetchone()
        if r is None:
            return None
        members = conn.execute(
            "SELECT a.device, a.closed FROM alert_info i JOIN alerts a ON a.id = i.alert "
            "WHERE i.incident = ? ORDER BY a.device",
            (iid,),
        ).fetchall()
        return Incident(
            r["id"], r["scope"], r["key"], r["opened"], r["first_down"], r["last_down"],
            r["resolved"], r["notified_count"], r["notified_at"],
            tuple(m["device"] for m in members), sum(1 for m in members if m["closed"] is None),
        )  # fmt: skip

    def open_counts(self) -> list[IncidentCount]:
        """Every open incident's notification state and member count (one statement: the
        engine reads this each tick, so it never loads every member of every incident)."""
        rows = self._conn().execute(
            "SELECT n.id, n.opened, n.notified_at, n.notified_count, count(i.alert) AS members "
            "FROM incidents n LEFT JOIN alert_info i ON i.incident = n.id "
            "WHERE n.resolved IS NULL GROUP BY n.id, n.opened, n.notified_at, n.notified_count "
            "ORDER BY n.id"
        )
        return [
            IncidentCount(r["id"], r["opened"], r["notified_at"], r["notified_count"], r["members"])
            for r in rows
        ]

    def incidents(self, *, open_only: bool = False, limit: int = 200) -> list[Incident]:
        where = "WHERE resolved IS NULL " if open_only else ""
        ids = self._conn().execute(
            f"SELECT id FROM incidents {where}ORDER BY id DESC LIMIT ?",  # noqa: S608
            (limit,),
        )
        return [i for i in (self.incident(r[0]) for r in ids.fetchall()) if i is not None]

    # --- webhook deliveries -----------------------------------------------------------------

    def delivery_started(self, subject: str, event: str) -> int:
        """A delivery begins; the table keeps the newest :data:`KEEP_DELIVERIES` rows."""
        conn = self._conn()
        nid = int(
            conn.execute(
                "INSERT INTO notifications (at, subject, event, status) "
                "VALUES (?,?,?,'sending') RETURNING id",
                (self.clock(), subject, event),
            ).fetchone()[0]
        )
        if nid % 100 == 0:
            conn.execute("DELETE FROM notifications WHERE id <= ?", (nid - KEEP_DELIVERIES,))
        return nid

    def delivery_done(self, nid: int, status: str, attempts: int, error: str | None) -> None:
        self._conn().execute(
            "UPDATE notifications SET status = ?, attempts = ?, error = ?, done = ? WHERE id = ?",
            (status, attempts, error, self.clock(), nid),
        )

    def deliveries(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM notifications ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [dict(r) for r in rows]
