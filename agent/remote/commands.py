"""Commands from operations: parse, authenticate, de-duplicate, run, answer.

A command is ``{"id", "name", "args", "expires_at", "sig"?}`` on ``{prefix}/gw/{id}/cmd``
or ``{prefix}/group/{group}/cmd``. Every command gets exactly one result
``{"id", "ok", "result" | "error", "ts"}`` on ``{prefix}/gw/{id}/cmd/result`` (and on the
MQTT 5 response topic, with the correlation data, when the request carries them). Nothing
a command contains can stop the agent: every failure becomes an error result.

Replay protection fails closed. A command runs only once its id is on flash
(``command-ids.json``, until its ``expires_at``); if that write fails, it is not run. A
second file, ``command-horizon.json``, holds a time by which every remembered id has
expired, written before the ids. If the id memory is lost (unreadable, damaged, deleted),
a command that expires at or before that horizon might be one that ran already, so it is
refused; one that expires later cannot be, so it runs. Commands that change nothing on the
gateway (``harmless``: get_config, diagnostics, collect_now) are exempt from both rules:
running one twice does no harm, and they are what an operator needs on a sick gateway.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.protocol.atomicfile import WriteFaults, describe, sweep_tmp, write_atomic
from agent.protocol.commands import ID_RE as ID_RE  # noqa: PLC0414
from agent.protocol.commands import MAC_RE as MAC_RE  # noqa: PLC0414
from agent.protocol.commands import MAX_LIFETIME_S as MAX_LIFETIME_S  # noqa: PLC0414
from agent.protocol.inbound import BadInput, load_object, name
from agent.protocol.signing import SignatureError, Verifier

log = logging.getLogger("titik.commands")

MAX_COMMAND_BYTES = 16 * 1024
#: Largest refused payload still parsed for its id (or version), to name it in the answer.
MAX_PEEK_BYTES = 1 << 20
IDS_FILE = "command-ids.json"
HORIZON_FILE = "command-horizon.json"
#: A command may be valid for at most MAX_LIFETIME_S (agent/protocol/commands.py), which bounds
#: how long its id must be remembered. The horizon is rounded up to this, so it is written at most once an hour of commands.
HORIZON_STEP_S = 3600.0
#: Most unexpired ids remembered; past it, new commands are refused, never ids forgotten.
MAX_IDS = 4096
#: Longest error in a result (a refusal may quote a key from the command).
MAX_ERROR = 300


class CommandFailed(Exception):
    """The command ran (or could not) and failed; the message is the error result."""


@dataclass(frozen=True)
class Command:
    id: str
    name: str
    args: dict[str, Any]
    expires_at: float


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def parse_command(payload: bytes, now: float) -> tuple[Command, dict[str, Any]]:
    """Pure: bytes -> (command, raw dict); CommandFailed names what is wrong."""
    try:
        raw = load_object(payload, "payload", MAX_COMMAND_BYTES)
    except BadInput as exc:
        raise CommandFailed(str(exc)) from None
    extra = set(raw) - {"id", "name", "args", "expires_at", "sig"}
    if extra:
        raise CommandFailed(f"{name(sorted(extra)[0])}: unknown key")
    cid, cmd_name, args, exp = (
        raw.get("id"),
        raw.get("name"),
        raw.get("args", {}),
        raw.get("expires_at"),
    )
    if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
        raise CommandFailed("id: must be 1-64 letters, digits or . _ : -")
    if not isinstance(cmd_name, str):
        raise CommandFailed("name: missing")
    if not isinstance(args, dict):
        raise CommandFailed("args: must be an object")
    if not isinstance(exp, int | float) or isinstance(exp, bool) or not math.isfinite(exp):
        raise CommandFailed("expires_at: must be a UNIX time (a finite number of seconds)")
    if exp < now:
        raise CommandFailed(f"expires_at: expired {now - exp:.0f}s ago")
    if exp > now + MAX_LIFETIME_S:
        raise CommandFailed(f"expires_at: more than {MAX_LIFETIME_S // 86400} days ahead")
    return Command(cid, cmd_name, args, float(exp)), raw


#: The member of both files that carries ``refuse_until`` (not a valid command id).
LOST_KEY = "#lost_until"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def parse_ids(raw: bytes) -> tuple[dict[str, float], float | None]:
    """Pure: ``command-ids.json`` -> (id -> expires_at, lost_until); ValueError if damaged."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 (the callers expect ValueError)
    lost = data.pop(LOST_KEY, None)
    if lost is not None and not _finite(lost):
        raise ValueError(f"{LOST_KEY} is not a finite number")
    out: dict[str, float] = {}
    for k, v in data.items():
        if not ID_RE.fullmatch(k):
            raise ValueError(f"{name(k)}: not a command id")
        if not _finite(v):
            raise ValueError(f"{k}: expiry is not a finite number")
        out[k] = float(v)
    return out, None if lost is None else float(lost)


def parse_horizon(raw: bytes) -> tuple[float, float | None]:
    """Pure: ``command-horizon.json`` -> (expires_by, lost_until); ValueError if damaged."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict) or not _finite(data.get("expires_by")):
        raise ValueError("expires_by is not a finite number")
    lost = data.get(LOST_KEY)
    if lost is not None and not _finite(lost):
        raise ValueError(f"{LOST_KEY} is not a finite number")
    return float(data["expires_by"]), None if lost is None else float(lost)


class CommandProcessor:
    """Runs commands once each; remembers ids (on flash) until they expire."""

    def __init__(
        self,
        state_dir: Path,
        handlers: Mapping[str, Handler],
        *,
        verifier: Verifier | None = None,
        require_signature: bool = False,
        wall: Callable[[], float] = time.time,
        harmless: frozenset[str] = frozenset(),
        faults: WriteFaults | None = None,
    ) -> None:
        self.dir = state_dir
        self.handlers = handlers
        self.verifier = verifier
        self.require_signature = require_signature
        self.wall = wall
        self.harmless = harmless
        self.faults = faults or WriteFaults()
        self._last_error = ""
        self.seen: dict[str, float] = {}
        #: The command whose handler is running (a handler that reports later needs its id).
        self.running: Command | None = None
        #: The horizon on flash: every id remembered there expires at or before it.
        self.horizon = 0.0
        #: Set when the id memory was lost: commands expiring at or before it are refused.
        self.refuse_until: float | None = None
        self._load()

    # -- the id memory
    def _load(self) -> None:
        ids_path, horizon_path = self.dir / IDS_FILE, self.dir / HORIZON_FILE
        for path in (ids_path, horizon_path):
            if sweep_tmp(path):
                log.info("removed an unfinished write of %s", path)
        horizon: float | None = None
        lost: list[float] = []  # a loss noticed earlier, as either file remembers it
        try:
            horizon, lost_h = parse_horizon(horizon_path.read_bytes())
            lost += [lost_h] if lost_h is not None else []
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            log.error("%s unreadable (%s)", horizon_path, _why(exc))
        try:
            self.seen, lost_i = parse_ids(ids_path.read_bytes())
            lost += [lost_i] if lost_i is not None else []
        except FileNotFoundError:
            if horizon is not None and horizon >= self.wall():
                # Ids were remembered (the horizon says so) and the file is gone.
                self._lost(ids_path, "it is missing", max([horizon, *lost]))
                return
        except (OSError, ValueError) as exc:
            until = horizon if horizon is not None else self._bound(ids_path)
            self._lost(ids_path, _why(exc), max([until, *lost]))
            return
        self.horizon = max([horizon or 0.0, *self.seen.values(), *lost])
        if lost and max(lost) >= self.wall():
            self.refuse_until = max(lost)
            log.warning(
                "command id memory was lost earlier: commands that expire at or before %s "
                "are still refused",
                _iso(self.refuse_until),
            )

    def _bound(self, ids_path: Path) -> float:
        """Without a horizon: every id in the file was accepted by the time it was last
        written, so none of them expires after that plus the longest lifetime."""
        try:
            written = ids_path.stat().st_mtime
        except OSError:
            written = self.wall()
        return written + MAX_LIFETIME_S

    def _lost(self, path: Path, why: str, until: float) -> None:
        self.refuse_until = self.horizon = until
        log.error(
            "command id memory %s lost (%s): commands that expire at or before %s might "
            "have run already and are refused; send them again with a new id and a later "
            "expires_at",
            path,
            why,
            _iso(until),
        )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / HORIZON_FILE, self._horizon_body(until))
        except OSError as exc:  # then the next start works it out again, no earlier
            self._write_failed(HORIZON_FILE, exc)

    def _horizon_body(self, horizon: float) -> bytes:
        body: dict[str, float] = {"expires_by": horizon}
        if self.refuse_until is not None:
            body[LOST_KEY] = self.refuse_until
        return json.dumps(body).encode()

    def _remember(self, cid: str, expires_at: float) -> bool:
        """Put ``cid`` on flash; False (and nothing written about it) if the disk refused."""
        now = self.wall()
        self.seen = {k: v for k, v in self.seen.items() if v >= now}
        self.seen[cid] = expires_at
        if self.refuse_until is not None and self.refuse_until < now:
            self.refuse_until = None  # every id the lost memory could hold has expired
        body: dict[str, float] = dict(self.seen)
        if self.refuse_until is not None:
            body[LOST_KEY] = self.refuse_until
        what = HORIZON_FILE
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if expires_at > self.horizon:
                horizon = math.ceil(expires_at / HORIZON_STEP_S) * HORIZON_STEP_S
                write_atomic(self.dir / HORIZON_FILE, self._horizon_body(horizon))
                self.horizon = horizon
            what = IDS_FILE
            write_atomic(self.dir / IDS_FILE, json.dumps(body).encode())
        except OSError as exc:
            self._write_failed(what, exc)
            return False
        failed = self.faults.ok("commands")
        if failed:
            log.warning("command ids are written again after %d failed writes", failed)
        return True

    def _write_failed(self, what: str, exc: OSError) -> None:
        self._last_error = f"{describe(exc)}, {what}"
        if self.faults.failed("commands", what, exc):
            log.error(
                "cannot write %s (%s); commands that change something are refused until it "
                "works again (so that a restart cannot run one twice)",
                self.dir / what,
                describe(exc),
            )

    # -- handling
    def handle(self, topic: str, payload: bytes) -> dict[str, Any]:
        """The result to publish for this command (refusals and duplicates included)."""
        now = self.wall()
        cid = _peek_id(payload)
        try:
            cmd, raw = parse_command(payload, now)
            if self.verifier is not None and (self.require_signature or "sig" in raw):
                self.verifier.verify(topic, raw)
            elif self.require_signature:
                raise SignatureError("signature: required, but no trusted keys are configured")
        except (CommandFailed, SignatureError) as exc:
            log.warning("command %s refused: %s", cid or "(no id)", exc)
            return _result(cid, now, error=str(exc))
        refusal = self._refusal(cmd, now)
        if refusal is not None:
            log.warning("command %s refused: %s", cmd.id, refusal)
            return _result(cmd.id, now, error=refusal)
        return self._run(cmd, now)

    def _run(self, cmd: Command, now: float) -> dict[str, Any]:
        handler = self.handlers.get(cmd.name)
        if handler is None:
            self._remember(cmd.id, cmd.expires_at)
            known = ", ".join(sorted(self.handlers))
            return _result(
                cmd.id, now, error=f"name: unknown command {name(cmd.name)!r} (known: {known})"
            )
        # Remembered before running: a reboot must not run twice.
        if not self._remember(cmd.id, cmd.expires_at) and cmd.name not in self.harmless:
            del self.seen[cmd.id]  # it did not run: the same id may come again
            error = (
                f"(state): cannot save the command id ({self._last_error}); not run, so that "
                "a restart cannot run it twice"
            )
            return _result(cmd.id, now, error=error)
        log.info("running command %s (%s)", cmd.id, cmd.name)
        self.running = cmd
        try:
            return _result(cmd.id, self.wall(), result=handler(cmd.args))
        except CommandFailed as exc:
            return _result(cmd.id, self.wall(), error=str(exc))
        except Exception as exc:  # a bug in one command must not stop the agent
            log.exception("command %s (%s) failed", cmd.id, cmd.name)
            return _result(cmd.id, self.wall(), error=f"internal error: {type(exc).__name__}")
        finally:
            self.running = None

    def _refusal(self, cmd: Command, now: float) -> str | None:
        if cmd.id in self.seen:
            return "id: already ran; not run again (duplicate or replay)"
        if cmd.name in self.harmless:
            return None
        until = self.refuse_until
        if until is not None and cmd.expires_at <= until:
            return (
                f"expires_at: this gateway lost its memory of command ids, and a command "
                f"expiring at or before {_iso(until)} might have run already; send it again "
                "with a new id and a later expires_at"
            )
        if len(self.seen) >= MAX_IDS:
            self.seen = {k: v for k, v in self.seen.items() if v >= now}
        if len(self.seen) >= MAX_IDS:
            return f"id: {MAX_IDS} unexpired command ids remembered already; try again later"
        return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(min(max(t, 0.0), 253402300799.0)))


def _why(exc: BaseException) -> str:
    return describe(exc) if isinstance(exc, OSError) else str(exc)


def _result(
    cid: str | None, now: float, *, result: Any = None, error: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "ok": error is None, "ts": round(now, 3)}
    if error is None:
        out["result"] = result
    else:
        out["error"] = error if len(error) <= MAX_ERROR else error[: MAX_ERROR - 3] + "..."
    return out


def _peek_id(payload: bytes) -> str | None:
    """The id of a command that was refused, to answer it by (even one too large to run)."""
    if len(payload) > MAX_PEEK_BYTES:
        return None
    try:
        cid = json.loads(payload).get("id")
    except (ValueError, AttributeError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return cid if isinstance(cid, str) and ID_RE.fullmatch(cid) else None


# -- argument helpers for handlers
def arg_number(args: Mapping[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = args.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise CommandFailed(f"args.{key}: must be a number from {lo:g} to {hi:g}")
    return float(value)


def arg_mac(args: Mapping[str, Any], key: str = "mac") -> str:
    value = args.get(key)
    if not isinstance(value, str) or not MAC_RE.fullmatch(value):
        raise CommandFailed(f"args.{key}: must be a MAC address like 02:00:00:00:00:01")
    return value.lower()


def arg_unknown(args: Mapping[str, Any], allowed: set[str]) -> None:
    extra = set(args) - allowed
    if extra:
        raise CommandFailed(f"args.{name(sorted(extra)[0])}: unknown argument")
