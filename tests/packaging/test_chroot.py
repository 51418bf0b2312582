"""Install the amd64 .deb into clean Debian 12 and 13 minbase roots and run the agent there.

The roots are made once with ``debootstrap --variant=minbase`` and cached in
$TITIK_TEST_ROOTS (default /var/cache/titik-test-roots); each test works on a copy. Downloaded
.debs are kept in the cache too, so a second run needs the network only for ``apt-get update``.
A chroot shares the host's network namespace, so the agent reaches a Mosquitto on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker, subscriber

pytestmark = [pytest.mark.slow, pytest.mark.broker]

CACHE = Path(os.environ.get("TITIK_TEST_ROOTS", "/var/cache/titik-test-roots"))
MIRROR = os.environ.get("TITIK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
READY = ".titik-minbase-ok"
# Paths with "titik" in their name that may stay after a purge: dpkg's and apt's logs.
ALLOWED_AFTER_PURGE = ("var/log/", "tmp/", "var/cache/apt/archives/")


def _run(cmd: list[str], timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


def cached_root(release: str) -> Path:
    """A pristine minbase root, debootstrapped on first use; skips if that cannot be done."""
    root = CACHE / release
    if (root / READY).exists():
        return root
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    if not shutil.which("debootstrap"):
        pytest.fail("debootstrap not installed: run scripts/setup --dev")
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / f"{release}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        res = _run(["debootstrap", "--variant=minbase", release, str(tmp), MIRROR], timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip(f"debootstrap {release} from {MIRROR} took over 900 s (network?)")
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).splitlines()[-5:])
        pytest.skip(f"debootstrap {release} from {MIRROR} failed (network?):\n{tail}")
    (tmp / READY).touch()
    tmp.rename(root)
    return root


class Chroot:
    def __init__(self, root: Path, release: str) -> None:
        self.root = root
        self.release = release
        self.mounts: list[Path] = []

    def mount(self, *args: str, target: str) -> None:
        where = self.root / target
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", *args, str(where)], check=True)
        self.mounts.append(where)

    def umount_all(self) -> bool:
        for where in reversed(self.mounts):
            subprocess.run(["umount", str(where)], check=False)
        return not any(os.path.ismount(m) for m in self.mounts)

    def sh(
        self, script: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C",
        }
        full.update(env or {})
        return _run(["chroot", str(self.root), "/bin/sh", "-ec", script], timeout=timeout, env=full)

    def ok(self, script: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        res = self.sh(script, timeout, env)
        assert res.returncode == 0, (
            f"{script!r} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        )
        return res.stdout

    def titik_paths(self) -> list[str]:
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel.split(os.sep)[0] in {"proc", "sys", "dev"}:
                dirnames[:] = []
                continue
            for name in dirnames + filenames:
                if "titik" in name:
                    found.append(os.path.normpath(os.path.join(rel, name)))
        return sorted(p for p in found if not p.startswith(ALLOWED_AFTER_PURGE) and p != READY)


@pytest.fixture
def chroot(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Chroot]:
    release: str = request.param
    pristine = cached_root(release)
    root = tmp_path / release
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(root)], check=True)
    ch = Chroot(root, release)
    archives = CACHE / f"archives-{release}"
    (archives / "partial").mkdir(parents=True, exist_ok=True)
    try:
        ch.mount("-t", "proc", "proc", target="proc")
        ch.mount("-t", "sysfs", "-o", "ro", "sysfs", target="sys")
        ch.mount("--bind", str(archives), target="var/cache/apt/archives")
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        yield ch
    finally:
        # Never delete through a mount that is still there (the host's /proc, the cache).
        if ch.umount_all():
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("chroot", ["bookworm", "trixie"], indirect=True)
def test_deb_installs_runs_and_purges(chroot: Chroot, debs: list[Path], tmp_path: Path) -> None:
    deb = next(d for d in debs if d.name.endswith("_amd64.deb"))
    shutil.copy(deb, chroot.root / "tmp" / deb.name)
    res = chroot.sh("apt-get update -qq", timeout=180)
    if res.returncode != 0:
        pytest.skip(f"apt-get update in {chroot.release} failed (network?): {res.stderr[-500:]}")
    chroot.ok(f"apt-get install -y -qq ./tmp/{deb.name} >/dev/null", timeout=400)

    # The conffile as shipped (placeholder broker) is a valid config.
    chroot.ok("titik-agent check-config /etc/titik/agent.toml")
    assert chroot.ok("test -d /var/lib/titik && echo yes").strip() == "yes"
    launcher = chroot.sh(
        "titik-agent check-config /etc/titik/agent.toml >/dev/null",
        env={"TITIK_LAUNCHER_DEBUG": "1"},
    )
    # Debian 12's pydantic is 1.10: the vendored one is used; Debian 13's 2.10 (a Recommends).
    expected = "pydantic=vendor" if chroot.release == "bookworm" else "pydantic=system"
    assert expected in launcher.stderr, launcher.stderr

    broker = Broker(tmp_path)
    broker.start()
    try:
        (chroot.root / "etc/titik/agent.toml").write_text(
            f'[device]\nid = "gw-chroot-{chroot.release}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            "[telemetry]\ninterval_s = 0.5\n"
            '[platform]\nkind = "linux"\n'
        )
        chroot.ok("titik-agent check-config /etc/titik/agent.toml")
        sample = json.loads(chroot.ok("titik-agent once"))
        assert isinstance(sample, dict)
        assert sample
        with subscriber(broker, "titik/#") as sub:
            proc = subprocess.Popen(
                ["chroot", str(chroot.root), "/usr/bin/titik-agent", "run"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            )
            try:
                msg = sub.next(
                    lambda m: m.topic.endswith(f"gw-chroot-{chroot.release}/telemetry"), timeout=60
                )
                assert msg.json()
            finally:
                proc.terminate()
                try:
                    _, err = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate()
            assert proc.returncode == 0, err.decode(errors="replace")
    finally:
        broker.stop()

    # Remove keeps the configuration and the state; everything else goes.
    chroot.ok("apt-get remove -y -qq titik-agent >/dev/null")
    assert chroot.ok("dpkg-query -W -f '${db:Status-Abbrev}' titik-agent").strip() == "rc"
    left = chroot.titik_paths()
    assert "usr/lib/titik" not in left, left
    assert "usr/bin/titik-agent" not in left
    assert {"etc/titik", "var/lib/titik"} <= set(left), left
    assert (chroot.root / "etc/titik/agent.toml").exists()
    # Purge leaves nothing of the package but logs.
    chroot.ok("apt-get purge -y -qq titik-agent >/dev/null")
    assert chroot.titik_paths() == []
    assert chroot.sh("dpkg-query -W titik-agent").returncode != 0
