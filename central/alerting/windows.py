"""Maintenance windows as operators write them: times and the CLI (``titik-central
maintenance``). The API takes the same times (central/api/routes/alerting.py).

A time is ``now``, a Unix time, an ISO 8601 time with its zone (``2026-12-06T22:00Z``,
``2026-12-07T05:00+07:00``), or, for the end, a duration after the start (``+2h``, ``+90m``,
``+1d``). A time without a zone is refused: a window an hour off silences the wrong hour.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from datetime import datetime
from typing import Any

from central.store.alerting import AlertingError, AlertingStore, Window

DURATION = re.compile(r"^\+(\d+(?:\.\d+)?)([smhd])$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_WINDOW_S = 90 * 86400


def parse_time(value: str | float, field: str, *, now: float, start: float | None = None) -> float:
    """A window's time as a Unix time; :class:`AlertingError` naming ``field`` otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        t = float(value)
    else:
        text = str(value).strip()
        m = DURATION.match(text)
        if text == "now":
            t = now
        elif m:
            if start is None:
                raise AlertingError(f"{field}: a duration (+2h) is only for the end")
            t = start + float(m.group(1)) * UNITS[m.group(2)]
        else:
            try:
                t = float(text)
            except ValueError:
                try:
                    d = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
                except ValueError:
                    raise AlertingError(
                        f"{field}: {text[:40]!r} is not a time: use now, 2026-12-06T22:00Z, "
                        "a Unix time" + (" or +2h" if start is not None else "")
                    ) from None
                if d.tzinfo is None:
                    raise AlertingError(
                        f"{field}: {text[:40]!r} has no time zone; add Z (UTC) or +07:00"
                    ) from None
                t = d.timestamp()
    if not math.isfinite(t) or not 0 <= t <= 253_402_300_799:
        raise AlertingError(f"{field}: out of range")
    return t


def check_span(start: float, end: float) -> None:
    if end - start > MAX_WINDOW_S:
        raise AlertingError("end: a window lasts at most 90 days")


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t))


DESCRIPTION = """\
Maintenance windows: alerts of gateways in a window's group (or the one device, or region)
are still raised and kept, marked "in maintenance", and notify nobody. Works on the
database file, also while central runs; every change is in the audit log.

examples:
  titik-central maintenance add --group kemang --start now --end +2h --reason "fibre works"
  titik-central maintenance add --device gw-00042 --start 2026-12-07T01:00Z --end +30m \\
      --reason "PoE switch swap"
  titik-central maintenance list
  titik-central maintenance delete 3
"""


def add_parser(sub: Any, config_arg: Any) -> None:
    m = sub.add_parser(
        "maintenance",
        help="add, list or delete maintenance windows (alerts silenced, still kept)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = m.add_subparsers(dest="action", required=True)
    add = msub.add_parser("add", help="add a window")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--group", help="the gateways of this group")
    target.add_argument("--device", help="one gateway")
    target.add_argument("--region", help="the gateways of this region")
    add.add_argument("--start", default="now", help="now (default), 2026-12-06T22:00Z, Unix time")
    add.add_argument("--end", required=True, help="a time as --start, or +2h / +90m / +1d")
    add.add_argument("--reason", required=True, help="why: shown with every silenced alert")
    listing = msub.add_parser("list", help="list the windows now and to come")
    listing.add_argument("--all", action="store_true", help="ended and deleted ones too")
    delete = msub.add_parser("delete", help="end a window now (kept in the list with --all)")
    delete.add_argument("id", type=int)
    for p in (add, listing, delete):
        config_arg(p)


def line(w: Window, now: float) -> str:
    state = (
        f"deleted by {w.deleted_by}" if w.deleted is not None
        else "active" if w.active(now) else "ended" if w.end <= now else "planned"
    )  # fmt: skip
    return (
        f"{w.id:>4}  {w.target:<28} {_utc(w.start)}  {_utc(w.end)}  {state:<10} {w.who}: {w.reason}"
    )


def run(store: AlertingStore, args: argparse.Namespace, who: str, audit: Any) -> int:
    """One ``titik-central maintenance`` action on ``store`` (SQLite or PostgreSQL)."""
    now = time.time()
    try:
        if args.action == "list":
            windows = store.windows(include_ended=args.all)
            print(
                f"{'ID':>4}  {'TARGET':<28} {'START':<20}  {'END':<20}  {'STATE':<10} WHO: REASON"
            )
            for w in windows:
                print(line(w, now))
            if not windows:
                print("no maintenance windows" + ("" if args.all else " now or to come"))
            return 0
        if args.action == "add":
            start = parse_time(args.start, "start", now=now)
            end = parse_time(args.end, "end", now=now, start=start)
            check_span(start, end)
            w = store.add_window(
                group=args.group, device=args.device, region=args.region,
                start=start, end=end, reason=args.reason, who=who,
            )  # fmt: skip
            audit(who, "maintenance.add", w.target, result="created",
                  detail={"id": w.id, "start": w.start, "end": w.end, "reason": w.reason})  # fmt: skip
            print(line(w, now))
            return 0
        w = store.delete_window(args.id, who)
        audit(who, "maintenance.delete", w.target, result="deleted", detail={"id": w.id})
        print(line(w, now))
    except AlertingError as exc:
        print(f"titik-central maintenance {args.action}: {exc}", file=sys.stderr)
        return 2
    else:
        return 0
    finally:
        store.close()
