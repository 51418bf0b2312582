"""A throwaway PostgreSQL: Debian's ``postgresql`` package, started by whoever needs one.

``titik-sim --store postgresql`` (central/sim/stack.py), ``bench/bench_api.py --store
postgresql`` and the tests (tests/postgres.py) start their own: ``initdb`` makes a cluster in
a fresh directory under /tmp, ``pg_ctl`` starts it on a free loopback port (and a Unix socket
in the same directory), and :meth:`LocalPostgres.stop` stops it (``-m immediate``) and removes
the directory. PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` user Debian's package creates (``runuser``), which owns the directory. The
directory is under /tmp itself, not under a caller's temp dir: /tmp/pytest-of-root is mode
0700, which the ``postgres`` user cannot enter.

``durable=False`` (``fsync=off``, no synchronous commit, no full-page writes) is for
throw-away test clusters and bulk fills only: a crash of the machine may lose them. With
``durable=True`` (the simulator's default) the server keeps PostgreSQL's own defaults for
those, so central's commits cost what they cost in production. Production settings are the
operator's (docs/central.md, "Central on PostgreSQL").
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg

from central.sim.localbroker import free_port

SUPERUSER = "titik"
START_S = 30
PREFIX = "titik-pg-"


def pg_bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (/usr/lib/postgresql/<ver>/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
    )
    if not found:
        raise RuntimeError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/<ver>/bin/initdb): "
            "run scripts/setup --dev, which installs Debian's postgresql package"
        )
    return found[-1].parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_orphans(bindir: Path) -> None:
    """Stop the clusters of processes that died without stopping theirs (a test session
    killed by a timeout, a simulator killed with SIGKILL): each cluster's directory names
    the pid of the process that made it."""
    for d in Path(tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = int((d / "owner").read_text())
        except (OSError, ValueError):
            continue
        if _alive(owner):
            continue
        if (d / "data" / "postmaster.pid").exists():
            cmd = [str(bindir / "pg_ctl"), "-D", str(d / "data"), "-m", "immediate", "-w", "stop"]
            if os.geteuid() == 0:
                cmd = ["runuser", "-u", "postgres", "--", *cmd]
            subprocess.run(cmd, capture_output=True, timeout=60, check=False)  # noqa: S603
        shutil.rmtree(d, ignore_errors=True)


class LocalPostgres:
    """One throw-away PostgreSQL cluster on 127.0.0.1:<port>, trust authentication.

    ``max_connections`` and ``shared_buffers`` are the server's; ``durable`` see the module's
    doc. ``settings``: more ``-c name=value`` options."""

    def __init__(
        self,
        *,
        durable: bool = False,
        max_connections: int = 200,
        shared_buffers: str = "32MB",
        settings: dict[str, str] | None = None,
    ) -> None:
        self.bindir = pg_bindir()
        reap_orphans(self.bindir)
        self.dir = Path(tempfile.mkdtemp(prefix=PREFIX))
        (self.dir / "owner").write_text(str(os.getpid()))
        self.data = self.dir / "data"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.durable = durable
        options = {
            "listen_addresses": self.host,
            "max_connections": str(max_connections),
            "shared_buffers": shared_buffers,
            **({} if durable else {"fsync": "off", "synchronous_commit": "off"}),
            **({} if durable else {"full_page_writes": "off"}),
            **(settings or {}),
        }
        self._opts = f"-p {self.port} -k {self.dir} " + " ".join(
            f"-c {k}={v}" for k, v in options.items()
        )
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"  # made by Debian's postgresql-common
            pw = pwd.getpwnam(self._user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self.dir.chmod(0o700)

    @property
    def log(self) -> Path:
        return self.dir / "log"

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        res = subprocess.run(  # noqa: S603 - PostgreSQL's own tools, fixed arguments
            cmd, capture_output=True, text=True, timeout=120, check=False
        )
        if res.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {res.stderr or res.stdout}\n{tail}")
        return res

    def start(self) -> LocalPostgres:
        self._run(
            "initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.resume()
        return self

    def pause(self) -> None:
        """Stop the server (fast shutdown), keeping its data: :meth:`resume` starts it again."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.data), "-o", self._opts, "-l", str(self.log),
            "-w", "-t", str(START_S), "start",
        )  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        with psycopg.connect(self.url(dbname), autocommit=True) as conn:
            conn.execute(sql.encode())

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; its url."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def server_pid(self) -> int | None:
        """The postmaster's pid (for the simulator's CPU sampling), None when stopped."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
