"""Run firmware hooks: the agent's side of the contract in docs/firmware_hooks.md.

A hook is ``<hooks_dir>/<platform>/<section>``, called as ``<hook> <action>`` with the
section flattened on stdin (:func:`flatten`) and ``TITIK_ROOT`` / ``TITIK_SNAPSHOT_DIR`` in
its environment. It answers with one line of JSON on stdout. Anything else (a non-zero exit,
no or garbled JSON, a timeout) becomes a :class:`HookError` with a one-line reason, from
which the section's secrets (Wi-Fi keys) are masked, as they are from the diagnostics the
hook printed on stderr, which are logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: The hooks shipped with the agent: ``firmware_hooks/`` next to the ``agent`` package.
DEFAULT_HOOKS_DIR = Path(__file__).resolve().parents[2] / "firmware_hooks"

#: Members whose values never appear in errors or logs (matched on the last key segment).
SECRET_KEYS = frozenset({"key", "password", "secret"})

_KEY = re.compile(r"[A-Za-z0-9_]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_MAX_REASON = 300
_STDERR_LINES = 10
_MASK = "***"


class HookError(Exception):
    """A hook failed, or could not be run. ``str()`` is ``"<section> <action>: <reason>"``."""

    def __init__(self, section: str, action: str, reason: str, exit_code: int | None = None):
        super().__init__(f"{section} {action}: {reason}")
        self.section = section
        self.action = action
        self.reason = reason
        #: The hook's exit status; None if it did not run or was killed on timeout.
        self.exit_code = exit_code


def _flat_items(prefix: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        if not value and prefix:
            # An empty mapping (a radio with every setting left to defaults) must still name
            # itself, so it becomes null at its own path.
            yield prefix, None
        for key, sub in value.items():
            if not isinstance(key, str) or not _KEY.match(key):
                raise ValueError(f"{prefix}{'.' if prefix else ''}{key!s}: bad key for a hook")
            yield from _flat_items(f"{prefix}.{key}" if prefix else key, sub)
    elif isinstance(value, list | tuple):
        items = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, str | int):
                raise TypeError(f"{prefix}: list items must be strings or numbers")
            text = str(item)
            if not text or any(c.isspace() for c in text):
                raise ValueError(f"{prefix}: list items must be non-empty and without spaces")
            items.append(text)
        yield prefix, " ".join(items)
    elif value is None or isinstance(value, bool | int | float | str):
        yield prefix, value
    else:
        raise TypeError(f"{prefix}: cannot pass a {type(value).__name__} to a hook")


def flatten(section: Mapping[str, Any]) -> bytes:
    """The section as hooks read it: one JSON object, one member per line, sorted by key.

    Nested mappings become dotted keys, lists one space-joined string, None ``null``.
    Strings are UTF-8 with only ``\\"`` and ``\\\\`` escaped; control characters are
    refused (ValueError), so every member stays on its line and hooks can read it with sed.
    Values of other types raise TypeError.
    """
    members = []
    for key, value in sorted(_flat_items("", section), key=lambda kv: kv[0]):
        if isinstance(value, str) and _CONTROL.search(value):
            raise ValueError(f"{key}: control characters cannot be passed to a hook")
        text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        members.append(f"{json.dumps(key)}: {text}")
    if not members:
        return b"{}\n"
    try:
        return ("{\n" + ",\n".join(members) + "\n}\n").encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("a string is not valid Unicode") from exc


def secrets_of(section: Mapping[str, Any]) -> list[str]:
    """The values in ``section`` that must never be shown (see :data:`SECRET_KEYS`)."""
    found = []
    for key, value in _flat_items("", section):
        if key.rsplit(".", 1)[-1] in SECRET_KEYS and isinstance(value, str) and value:
            found.append(value)
    return found


def _mask(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MAX_REASON else line[: _MAX_REASON - 3] + "..."


class HookRunner:
    """Runs one platform's hooks. ``shell`` runs them through an interpreter
    (``[shell, hook, action]``) instead of executing them directly."""

    def __init__(
        self,
        hooks_dir: Path | None,
        platform: str,
        *,
        root: Path = Path("/"),
        snapshot_dir: Path,
        timeout_s: float = 60.0,
        env: Mapping[str, str] | None = None,
        shell: str | None = None,
    ) -> None:
        # Absolute: hooks run with / as their working directory.
        self._dir = (hooks_dir or DEFAULT_HOOKS_DIR).absolute() / platform
        self.platform = platform
        self._root = root.absolute()
        self._snapshot_dir = snapshot_dir.absolute()
        self._timeout_s = timeout_s
        self._env = dict(os.environ if env is None else env)
        self._env["TITIK_ROOT"] = str(self._root)
        self._env["TITIK_SNAPSHOT_DIR"] = str(self._snapshot_dir)
        self._shell = shell

    def path(self, section: str) -> Path:
        return self._dir / section

    def has(self, section: str) -> bool:
        """Whether this platform has a hook for ``section``."""
        if not _KEY.match(section):
            return False
        hook = self.path(section)
        return hook.is_file() and (self._shell is not None or os.access(hook, os.X_OK))

    def validate(self, section: str, data: Mapping[str, Any]) -> None:
        """Check ``data`` against what the gateway has, changing nothing."""
        self._run(section, "validate", data)

    def snapshot(self, section: str) -> None:
        """Save what :meth:`restore` needs into the snapshot dir (replacing an older one)."""
        try:
            self._snapshot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            why = f"cannot create {self._snapshot_dir}: {exc.strerror or exc}"
            raise HookError(section, "snapshot", why) from None
        self._run(section, "snapshot", {})

    def apply(self, section: str, data: Mapping[str, Any]) -> bool:
        """Apply ``data`` and reload the service; whether anything changed."""
        reply = self._run(section, "apply", data)
        changed = reply.get("changed", True)
        return changed if isinstance(changed, bool) else True

    def restore(self, section: str) -> None:
        """Put back what the last :meth:`snapshot` saved and reload the service."""
        self._run(section, "restore", {})

    def call(self, section: str, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Run a hook's other action (e.g. ``upgrade probe``); its whole reply."""
        return self._run(section, action, data)

    def _run(self, section: str, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        secrets = secrets_of(data)

        def error(reason: str, exit_code: int | None = None) -> HookError:
            return HookError(section, action, _one_line(_mask(reason, secrets)), exit_code)

        if not self.has(section):
            raise error(f"no hook {self.platform}/{section} in {self._dir.parent}")
        try:
            stdin = flatten(data)
        except (TypeError, ValueError) as exc:
            raise error(f"cannot pass the section to the hook: {exc}") from None
        hook = str(self.path(section))
        argv = [self._shell, hook, action] if self._shell else [hook, action]
        try:
            proc = subprocess.Popen(  # noqa: S603 - argv is the hook's path and a fixed action
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                cwd="/",
                # Its own process group, so a timeout also kills what the hook started.
                start_new_session=True,
            )
        except OSError as exc:
            raise error(f"cannot run {hook}: {exc.strerror or exc}") from None
        try:
            out, err = proc.communicate(stdin, timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            exited = proc.poll() is not None
            out, err = self._kill(proc)
            if not exited:
                raise error(f"timed out after {self._timeout_s:g}s; killed") from None
            # The hook itself finished; something it started kept its output open.
            log.warning("hook %s %s left processes holding its output; killed", section, action)
        diagnostics = [
            _mask(line, secrets)
            for line in err.decode("utf-8", "replace").splitlines()[-_STDERR_LINES:]
            if line.strip()
        ]
        reply = self._parse(out)
        code = proc.returncode
        ok = reply is not None and reply["ok"] is True and code == 0
        for line in diagnostics:
            log.log(
                logging.DEBUG if ok else logging.WARNING, "hook %s %s: %s", section, action, line
            )
        if reply is None:
            last = f" ({diagnostics[-1]})" if diagnostics else ""
            raise error(f"exit {code}, no valid JSON reply on stdout{last}", code)
        if ok:
            return reply
        if reply["ok"] is True:
            raise error(f"exit {code} despite an ok reply", code)
        why = reply.get("error")
        if not isinstance(why, str) or not why.strip():
            why = "failed without saying why"
        if code == 1:
            raise error(why, code)
        if code == 2:
            raise error(f"invalid input: {why}", code)
        raise error(f"{why} (exit {code})", code)

    @staticmethod
    def _parse(out: bytes) -> dict[str, Any] | None:
        text = out.decode("utf-8", "replace").strip()
        if not text or "\n" in text:
            return None
        try:
            reply = json.loads(text)
        except ValueError:
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            return None
        return reply

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        """Kill the hook's process group; what it had written so far."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            # The pipes close once every process holding them is gone; one that left the
            # group (setsid) could hold them open, so this wait is bounded too.
            return proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return b"", b""
