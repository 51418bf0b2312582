"""Commands from operations: parse, authenticate, de-duplicate, run, answer.

A command is ``{"id", "name", "args", "expires_at", "sig"?}`` on ``{prefix}/gw/{id}/cmd``
or ``{prefix}/group/{group}/cmd``. Every command gets exactly one result
``{"id", "ok", "result" | "error", "ts"}`` on ``{prefix}/gw/{id}/cmd/result`` (and on the
MQTT 5 response topic, with the correlation data, when the request carries them). Nothing
a command contains can stop the agent: every failure becomes an error result.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.atomicfile import write_atomic
from agent.remote.signing import SignatureError, Verifier

log = logging.getLogger("titik.commands")

MAX_COMMAND_BYTES = 16 * 1024
IDS_FILE = "command-ids.json"
#: Longest a command may be valid for; bounds how long its id must be remembered.
MAX_LIFETIME_S = 7 * 86400
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAC_RE = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")


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
    if len(payload) > MAX_COMMAND_BYTES:
        raise CommandFailed(f"payload: {len(payload)} bytes, more than {MAX_COMMAND_BYTES}")
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CommandFailed(f"payload: not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise CommandFailed("payload: must be a JSON object")
    extra = set(raw) - {"id", "name", "args", "expires_at", "sig"}
    if extra:
        raise CommandFailed(f"{sorted(extra)[0]}: unknown key")
    cid, name, args, exp = (
        raw.get("id"),
        raw.get("name"),
        raw.get("args", {}),
        raw.get("expires_at"),
    )
    if not isinstance(cid, str) or not ID_RE.fullmatch(cid):
        raise CommandFailed("id: must be 1-64 letters, digits or . _ : -")
    if not isinstance(name, str):
        raise CommandFailed("name: missing")
    if not isinstance(args, dict):
        raise CommandFailed("args: must be an object")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        raise CommandFailed("expires_at: must be a UNIX time")
    if exp < now:
        raise CommandFailed(f"expires_at: expired {now - exp:.0f}s ago")
    if exp > now + MAX_LIFETIME_S:
        raise CommandFailed(f"expires_at: more than {MAX_LIFETIME_S // 86400} days ahead")
    return Command(cid, name, args, float(exp)), raw


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
    ) -> None:
        self.dir = state_dir
        self.handlers = handlers
        self.verifier = verifier
        self.require_signature = require_signature
        self.wall = wall
        self.seen: dict[str, float] = self._load()

    def _load(self) -> dict[str, float]:
        try:
            data = json.loads((self.dir / IDS_FILE).read_bytes())
            return {str(k): float(v) for k, v in data.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            log.error("command id memory unreadable (%s); starting empty", exc)
            return {}

    def _remember(self, cid: str, expires_at: float) -> None:
        now = self.wall()
        self.seen = {k: v for k, v in self.seen.items() if v >= now}
        self.seen[cid] = expires_at
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            write_atomic(self.dir / IDS_FILE, json.dumps(self.seen).encode())
        except OSError as exc:
            log.error("cannot save command ids: %s", exc.strerror or exc)

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
        if cmd.id in self.seen:
            log.warning("command %s already ran; refusing the duplicate", cmd.id)
            return _result(
                cmd.id, now, error="id: already ran; not run again (duplicate or replay)"
            )
        self._remember(cmd.id, cmd.expires_at)  # before running: a reboot must not run twice
        handler = self.handlers.get(cmd.name)
        if handler is None:
            known = ", ".join(sorted(self.handlers))
            return _result(
                cmd.id, now, error=f"name: unknown command {cmd.name!r} (known: {known})"
            )
        log.info("running command %s (%s)", cmd.id, cmd.name)
        try:
            return _result(cmd.id, self.wall(), result=handler(cmd.args))
        except CommandFailed as exc:
            return _result(cmd.id, self.wall(), error=str(exc))
        except Exception as exc:  # a bug in one command must not stop the agent
            log.exception("command %s (%s) failed", cmd.id, cmd.name)
            return _result(cmd.id, self.wall(), error=f"internal error: {type(exc).__name__}")


def _result(
    cid: str | None, now: float, *, result: Any = None, error: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "ok": error is None, "ts": round(now, 3)}
    if error is None:
        out["result"] = result
    else:
        out["error"] = error
    return out


def _peek_id(payload: bytes) -> str | None:
    try:
        cid = json.loads(payload).get("id")
    except (ValueError, AttributeError, UnicodeDecodeError):
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
        raise CommandFailed(f"args.{sorted(extra)[0]}: unknown argument")
