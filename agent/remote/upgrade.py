"""The ``upgrade`` command: verify, fetch, pre-flight, install, health gate, rollback.

docs/upgrades.md is the full story; in short:

1. :meth:`Upgrader.start` (the command's handler, in the agent's loop) checks the manifest's
   signature against ``security.trusted_keys`` before anything else, then the rollout wave,
   the versions (no downgrade, no reinstall, not from below ``min_from``) and asks the
   platform's ``upgrade`` hook what it runs (``probe``: package format, architecture, free
   space). Its answer is the command's result (``step: verified``, or the refusal).
2. A thread downloads the package (:mod:`agent.remote.fetch`: resumable, bounded by the
   manifest's size, checked against its SHA-256), runs the pre-flight again on what is now on
   disk, writes the **journal** (``<state>/upgrade/journal.json``, on flash, before anything
   is installed) and calls the hook's ``install``, which keeps the previous package and
   starts a detached **worker** (a transient systemd unit, or a ``setsid`` process under
   procd) that installs the package and then waits for the new agent's confirmation until
   the journal's deadline; without it, the worker reinstalls the previous package by itself.
3. Installing restarts the service, so the new agent meets the journal at start
   (:meth:`Upgrader.tick`): once it is connected and the broker has acknowledged one of its
   samples it writes ``confirmed`` (the worker sees it and ends) and reports ``confirmed``.
   If the deadline has passed and no worker is left to act (the gateway rebooted), the agent
   starts the rollback itself. The agent that runs after a rollback reports ``rolled_back``
   with the reason.

Every step goes out on the command result topic as ``{"id", "ok", "ts", "step",
"result" | "error"}`` with the command's id (kept in the journal across the restart).
"""

from __future__ import annotations

import collections
import json
import logging
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agent import __version__
from agent.protocol.atomicfile import describe, write_atomic
from agent.protocol.signing import Verifier
from agent.protocol.upgrade import (
    Manifest,
    Package,
    UpgradeRefused,
    check_versions,
    parse_args,
    parse_version,
    redact_url,
    verify_manifest,
)
from agent.remote.fetch import FetchError, download

log = logging.getLogger("titik.upgrade")

JOURNAL = "journal.json"
INSTALL_RESULT = "install.result"
ROLLBACK_RESULT = "rollback.result"
CONFIRMED = "confirmed"
#: Download attempts (each resuming the last) before the upgrade is given up.
FETCH_ATTEMPTS = 5
FETCH_RETRY_S = (2.0, 5.0, 15.0, 30.0)
#: Free space kept beyond what an upgrade needs, on the state disk and on the root.
MARGIN_BYTES = 2 * 1024 * 1024
#: The root needs this many times the package's size to unpack it beside the old files.
UNPACK_FACTOR = 3
#: Report download progress at most every this many percent.
PROGRESS_STEP = 10
#: Phases of the journal that still wait for something.
ACTIVE = ("installing", "installed")


class UpgradeHooks(Protocol):
    """What the upgrader needs of the firmware hooks (:class:`agent.remote.hooks.HookRunner`)."""

    def has(self, section: str) -> bool: ...
    def call(self, section: str, action: str, data: Mapping[str, Any]) -> dict[str, Any]: ...


class Upgrader:
    """One gateway's upgrades. ``connected`` and ``acked`` tell the health gate whether the
    link is up and how many records the broker has acknowledged."""

    def __init__(
        self,
        state_dir: Path,
        hooks: UpgradeHooks,
        *,
        device: str,
        platform: str,
        verifier: Verifier | None,
        connected: Callable[[], bool],
        acked: Callable[[], int],
        sim_state: Path | None = None,
        wall: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.dir = state_dir / "upgrade"
        #: The simulated platform's state directory (its hook's ``agent.pkg``).
        self.sim_state = sim_state
        self.hooks = hooks
        self.device = device
        self.platform = platform
        self.verifier = verifier
        self.connected = connected
        self.acked = acked
        self.wall = wall
        self.sleep = sleep
        self.reports: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        self._thread: threading.Thread | None = None
        self._acked_at_start = acked()
        self.journal: dict[str, Any] | None = self._read_journal()
        if self.journal is not None and self.journal.get("phase") in ACTIVE:
            log.info(
                "upgrade %s -> %s in progress (phase %s); health gate until %s",
                self.journal.get("from"),
                self.journal.get("to"),
                self.journal.get("phase"),
                _iso(float(self.journal.get("deadline", 0))),
            )

    # -- the running version
    def running(self) -> str:
        """The agent version running now: on the simulated platform, the package its hook
        installed last (no process is replaced there)."""
        if self.platform == "simulated":
            version = self._sim_package().get("version")
            return version if isinstance(version, str) else __version__
        return __version__

    def _sim_package(self) -> dict[str, Any]:
        """The simulated platform's installed package: its first line is a JSON object."""
        path = (self.sim_state or Path("/var/lib/titik-sim")) / "agent.pkg"
        try:
            with path.open("rb") as f:
                pkg = json.loads(f.readline(4096))
        except (OSError, ValueError):
            return {}
        return pkg if isinstance(pkg, dict) else {}

    # -- the command
    def start(self, cid: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """Check everything that can be checked before fetching; start the download."""
        parsed = parse_args(args)
        manifest, kid = verify_manifest(parsed.manifest, self.verifier)  # first: the signature
        if parsed.rollout is not None and not parsed.rollout.reaches(self.device):
            return {
                "step": "skipped",
                "version": manifest.version,
                "reason": f"not in rollout {parsed.rollout.id} at {parsed.rollout.percent:g}%",
            }
        j = self.journal
        if (
            parsed.rollout is not None
            and j is not None
            and j.get("phase") == "rolled_back"
            and j.get("rollout") == parsed.rollout.id
            and j.get("to") == manifest.version
        ):
            # A rollout's later commands reach this gateway again (cohorts nest): one rollback
            # from this release is enough; central counts this answer as a failure.
            raise UpgradeRefused(
                f"rollout {parsed.rollout.id}: this gateway rolled back from {manifest.version} "
                "already; it does not try it again in this rollout"
            )
        if self._thread is not None and self._thread.is_alive():
            raise UpgradeRefused("an upgrade is being downloaded already; try again later")
        if self.journal is not None and self.journal.get("phase") in ACTIVE:
            raise UpgradeRefused(
                f"the upgrade to {self.journal.get('to')} (command {self.journal.get('id')}) "
                "is still in its health gate"
            )
        probe = self._probe()
        check_versions(manifest, self.running())
        pkg = manifest.package_for(str(probe["format"]), str(probe["arch"]))
        try:
            self._check_space(pkg, probe, before_download=True)
        except OSError as exc:
            raise UpgradeRefused(f"(state): {describe(exc)} in {self.dir}") from None
        job = {
            "id": cid,
            "from": self.running(),
            "to": manifest.version,
            "format": pkg.format,
            "timeout_s": parsed.health_timeout_s,
            "kid": kid,
        }
        if parsed.rollout is not None:
            job["rollout"] = parsed.rollout.id
        self._thread = threading.Thread(
            target=self._run, args=(job, manifest, pkg), name="titik-upgrade", daemon=True
        )
        self._thread.start()
        log.info(
            "upgrade %s -> %s verified (key %s); fetching %s (%d bytes)",
            job["from"],
            manifest.version,
            kid,
            redact_url(pkg.url),
            pkg.size,
        )
        return {
            "step": "verified",
            "from": job["from"],
            "to": manifest.version,
            "kid": kid,
            "package": f"{pkg.format}/{pkg.arch}",
            "size": pkg.size,
        }

    def _probe(self) -> dict[str, Any]:
        if not self.hooks.has("upgrade"):
            raise UpgradeRefused(f"this platform ({self.platform}) has no upgrade hook")
        reply = self._hook("probe", {"dir": str(self.dir)})
        for key in ("format", "arch"):
            if not isinstance(reply.get(key), str) or not reply[key]:
                raise UpgradeRefused(f"upgrade probe: the hook did not say its {key}")
        return reply

    def _hook(self, action: str, data: Mapping[str, Any]) -> dict[str, Any]:
        from agent.remote.hooks import HookError

        try:
            return self.hooks.call("upgrade", action, data)
        except HookError as exc:
            raise UpgradeRefused(str(exc)) from None

    def _check_space(
        self, pkg: Package, probe: Mapping[str, Any], *, before_download: bool
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(self.dir).free
        # The download, and the copy of the previous package kept for rollback.
        need = (pkg.size * 2 if before_download else pkg.size) + MARGIN_BYTES
        if free < need:
            raise UpgradeRefused(
                f"preflight: {free // 1024} KiB free in {self.dir}, {need // 1024} KiB needed "
                "(the package and a copy of the running one)"
            )
        root_kb = probe.get("free_kb")
        if isinstance(root_kb, int) and not isinstance(root_kb, bool):
            need_kb = (pkg.size * UNPACK_FACTOR + MARGIN_BYTES) // 1024
            if root_kb < need_kb:
                raise UpgradeRefused(
                    f"preflight: {root_kb} KiB free where packages are installed, "
                    f"{need_kb} KiB needed"
                )

    # -- the download and install, in a thread
    def _report(self, cid: str, step: str, *, error: str | None = None, **result: Any) -> None:
        out: dict[str, Any] = {"id": cid, "ok": error is None, "ts": round(self.wall(), 3)}
        out["step"] = step
        if error is None:
            out["result"] = {"step": step, **result}
        else:
            out["error"] = error if len(error) <= 300 else error[:297] + "..."
        self.reports.append(out)
        log.log(
            logging.INFO if error is None else logging.WARNING,
            "upgrade %s: %s %s",
            cid,
            step,
            error or result,
        )

    def _run(self, job: dict[str, Any], manifest: Manifest, pkg: Package) -> None:
        cid = job["id"]
        try:
            path = self._fetch(cid, manifest, pkg)
            probe = self._probe()
            check_versions(manifest, self.running())
            manifest.package_for(str(probe["format"]), str(probe["arch"]))
            self._check_space(pkg, probe, before_download=False)
            self._report(cid, "preflight", arch=probe["arch"], installed=probe.get("installed"))
            for stale in (INSTALL_RESULT, ROLLBACK_RESULT, CONFIRMED):
                (self.dir / stale).unlink(missing_ok=True)
            deadline = self.wall() + float(job["timeout_s"])
            journal = {**job, "phase": "installing", "deadline": deadline, "package": str(path)}
            self._write_journal(journal)  # on flash before anything is installed
            self._report(cid, "installing", to=manifest.version)
            self._hook(
                "install",
                {
                    "dir": str(self.dir),
                    "package": str(path),
                    "version": manifest.version,
                    "from": job["from"],
                    "deadline": int(deadline),
                },
            )
        except (UpgradeRefused, FetchError) as exc:
            step = "failed"
            if isinstance(exc, UpgradeRefused) and str(exc).startswith("preflight"):
                step = "preflight"
            self._report(cid, step, error=str(exc))
            if self.journal is not None and self.journal.get("id") == cid:
                self._write_journal({**self.journal, "phase": "failed", "reason": str(exc)})
        except OSError as exc:  # the state disk: full or failing
            self._report(cid, "failed", error=f"(state): {describe(exc)} in {self.dir}")
        except Exception as exc:  # a bug must end this upgrade, not the agent
            log.exception("upgrade %s failed", cid)
            self._report(cid, "failed", error=f"internal error: {type(exc).__name__}")

    def _fetch(self, cid: str, manifest: Manifest, pkg: Package) -> Path:
        dest = self.dir / f"titik-agent_{manifest.version}.{pkg.format}"
        shown = [-1]

        def progress(have: int, size: int) -> None:
            pct = have * 100 // size
            if pct >= shown[0] + PROGRESS_STEP or (have == size and pct != shown[0]):
                shown[0] = pct
                self._report(cid, "downloading", pct=pct, bytes=have)

        for attempt in range(FETCH_ATTEMPTS):
            try:
                path = download(pkg, dest, progress=progress)
            except FetchError as exc:
                if not exc.resumable or attempt == FETCH_ATTEMPTS - 1:
                    raise
                wait = FETCH_RETRY_S[min(attempt, len(FETCH_RETRY_S) - 1)]
                log.warning("upgrade %s: %s; resuming in %gs", cid, exc, wait)
                self.sleep(wait)
                continue
            self._report(cid, "downloaded", bytes=pkg.size, sha256=pkg.sha256)
            return path
        raise AssertionError("unreachable")

    # -- the journal and the health gate
    def _read_journal(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.dir / JOURNAL).read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("upgrade journal %s unreadable (%s); ignored", self.dir / JOURNAL, exc)
            return None
        why = _journal_problem(data)
        if why is not None:
            log.error("upgrade journal %s damaged (%s); ignored", self.dir / JOURNAL, why)
            return None
        return dict(data)

    def _write_journal(self, journal: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.dir / JOURNAL, json.dumps(journal, sort_keys=True).encode())
        self.journal = journal

    def _result_file(self, name: str) -> str | None:
        try:
            return (self.dir / name).read_text(errors="replace").strip()[:300]
        except OSError:
            return None

    def tick(self) -> None:
        """The health gate and the worker's results; called from the agent's loop. A failing
        disk costs a log line and a retry at the next tick, never the agent."""
        try:
            self._tick()
        except OSError as exc:
            now = self.wall()
            if now - self._warned_at > 60:
                self._warned_at = now
                log.error("upgrade: cannot write in %s (%s); retrying", self.dir, describe(exc))

    _warned_at = float("-inf")

    def _tick(self) -> None:
        j = self.journal
        if j is None or j.get("phase") not in ACTIVE:
            return
        cid = str(j["id"])
        rolled = self._result_file(ROLLBACK_RESULT)
        if rolled is not None:
            ok = rolled.startswith("rolled back")
            self._write_journal({**j, "phase": "rolled_back", "reason": rolled})
            if ok:
                self._report(cid, "rolled_back", error=f"{rolled}; running {self.running()}")
            else:
                self._report(cid, "failed", error=rolled)
            return
        installed = self._result_file(INSTALL_RESULT)
        if installed is not None and not installed.startswith("ok"):
            if self._worker_alive():
                return  # its rollback comes next, and its result says where the gateway is
            self._write_journal({**j, "phase": "failed", "reason": installed})
            self._report(cid, "failed", error=f"install: {installed}; still {self.running()}")
            return
        running = self.running()
        if installed is None or running != j.get("to"):
            if self.wall() > float(j.get("deadline", 0)) + 60 and installed is None:
                self._write_journal({**j, "phase": "failed", "reason": "no install result"})
                self._report(cid, "failed", error="install: the worker never answered")
            return
        # The new agent runs.
        if j.get("phase") == "installing":
            # The gate counts from here: a sample acknowledged before the install proves nothing.
            self._acked_at_start = self.acked()
            self._write_journal({**j, "phase": "installed"})
            self._report(cid, "installed", version=running)
            return
        if self._healthy():
            write_atomic(self.dir / CONFIRMED, f"{running}\n".encode())
            self._keep_current(j)
            self._write_journal({**j, "phase": "confirmed"})
            self._report(cid, "confirmed", version=running)
        elif self.wall() > float(j["deadline"]) and not self._worker_alive():
            # No worker is left to roll back (the gateway rebooted in the gate): do it here.
            log.error("upgrade %s: health gate missed and no worker; rolling back", cid)
            try:
                self._hook("rollback", {"dir": str(self.dir), "reason": "health gate missed"})
            except UpgradeRefused as exc:
                self._write_journal({**j, "phase": "failed", "reason": str(exc)})
                self._report(cid, "failed", error=f"rollback: {exc}")

    def _keep_current(self, j: Mapping[str, Any]) -> None:
        """The confirmed package becomes ``current.<format>``, the next upgrade's way back, and
        ``previous.*`` goes: flash holds one package between upgrades."""
        try:
            pkg = Path(str(j.get("package", "")))
            fmt = str(j.get("format"))
            if pkg.is_file() and pkg.parent == self.dir:
                pkg.replace(self.dir / f"current.{fmt}")
                write_atomic(self.dir / f"current.{fmt}.version", f"{j.get('to')}\n".encode())
            # The previous package was this upgrade's way back; the next one's is current.
            for old in (*self.dir.glob("*.part"), *self.dir.glob("previous.*")):
                old.unlink()
        except OSError as exc:
            log.warning("upgrade: cannot keep the confirmed package (%s)", exc)

    def _healthy(self) -> bool:
        """Connected, with a sample acknowledged since this agent started."""
        if self.platform == "simulated" and not self._sim_healthy():
            return False
        return self.connected() and self.acked() > self._acked_at_start

    def _sim_healthy(self) -> bool:
        return self._sim_package().get("healthy", True) is not False

    def _worker_alive(self) -> bool:
        pid = self._result_file("worker.pid")
        if not pid or not pid.isdigit():
            return False
        return Path(f"/proc/{pid}").exists()

    def take_reports(self) -> list[dict[str, Any]]:
        out = []
        while self.reports:
            out.append(self.reports.popleft())
        return out

    def put_back(self, report: dict[str, Any]) -> None:
        """A report that could not be published now (offline): first in line next time."""
        self.reports.appendleft(report)


def _journal_problem(data: Any) -> str | None:
    """None if ``data`` is a journal this module wrote, else what is wrong with it."""
    if not isinstance(data, dict):
        return "not a JSON object"
    for key in ("id", "phase", "from", "to", "format"):
        if not isinstance(data.get(key), str):
            return f"{key}: missing or not a string"
    deadline = data.get("deadline")
    if (
        isinstance(deadline, bool)
        or not isinstance(deadline, int | float)
        or not math.isfinite(deadline)
    ):
        return "deadline: not a finite number"
    return None


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(max(0.0, min(t, 253402300799.0))))


__all__ = ["UpgradeHooks", "UpgradeRefused", "Upgrader", "parse_version"]
