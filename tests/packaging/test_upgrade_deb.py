"""The upgrade hook's apt/dpkg path for real: Debian 13's apt-get and dpkg in a debootstrap root.

The root is the cached trixie minbase root of test_chroot.py (a copy per test). The hook, its
lib/ and the packages are copied in, and the hook runs chrooted, as it would on a Raspberry Pi
(no systemd runs in a chroot, so the worker is a setsid'd process, as under procd). The
packages are small titik-agent .debs made with dpkg-deb, with maintainer scripts that log their
calls and a conffile an administrator edits; the real package's own install, upgrade and purge
are test_chroot.py's.

What is checked: the previous package is rebuilt from dpkg's database (as dpkg-repack does)
before anything changes; apt-get installs the new one; without the new agent's confirmation
the worker reinstalls the old one (apt-get --allow-downgrades) at the deadline, maintainer
scripts and the edited conffile included; with it, the new one stays.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__ as AGENT_VERSION
from agent.remote.hooks import flatten
from tests.broker import wait_until
from tests.packaging.test_chroot import CACHE, Chroot, Target, cached_root

pytestmark = [pytest.mark.slow, pytest.mark.broker]

REPO = Path(__file__).resolve().parents[2]
PKG = "titik-agent"
LOG_SCRIPT = '#!/bin/sh\necho "$(basename "$0") $*" >>/var/log/titik-scripts.log\n'


def make_deb(tmp: Path, version: str) -> Path:
    tree = tmp / f"tree-{version}"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/lib/titik").mkdir(parents=True)
    (tree / "etc/titik").mkdir(parents=True)
    (tree / "usr/lib/titik/VERSION").write_text(f"{version}\n")
    (tree / f"usr/lib/titik/only-{version}").write_text("")
    (tree / "etc/titik/agent.toml").write_text("# shipped\n")
    (tree / "DEBIAN/control").write_text(
        f"Package: {PKG}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: Titik tests <tests@example.org>\nSection: net\nPriority: optional\n"
        "Description: upgrade test package\n a test package for the upgrade hook\n"
    )
    (tree / "DEBIAN/conffiles").write_text("/etc/titik/agent.toml\n")
    for script in ("postinst", "prerm", "postrm"):
        (tree / "DEBIAN" / script).write_text(LOG_SCRIPT)
        (tree / "DEBIAN" / script).chmod(0o755)
    out = tmp / f"{PKG}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Chroot]:
    if os.geteuid() != 0 or shutil.which("chroot") is None:
        pytest.skip("chroot needs root")
    pristine = cached_root("trixie")
    path = tmp_path / "trixie"
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(path)], check=True)
    ch = Chroot(path, Target("trixie"))
    try:
        ch.mount("-t", "proc", "proc", target="proc")
        shutil.copytree(REPO / "firmware_hooks", path / "usr/lib/titik-hooks")
        yield ch
    finally:
        # Let a worker still running end before its root goes away.
        ch.sh("pkill -f titik-hooks || true")
        if ch.umount_all():
            shutil.rmtree(path, ignore_errors=True)


def hook(ch: Chroot, action: str, data: dict[str, object]) -> str:
    res = subprocess.run(
        ["chroot", str(ch.root), "/bin/sh", "/usr/lib/titik-hooks/raspberrypi/upgrade", action],
        input=flatten(data),
        capture_output=True,
        env=ch.environ({"TITIK_ROOT": "/"}),
        timeout=120,
        check=False,
    )
    out = res.stdout.decode()
    assert res.returncode == 0, f"{action}: {out}\n{res.stderr.decode()}"
    return out


def installed(ch: Chroot) -> str:
    return ch.ok(f"dpkg-query -W -f '${{Version}} ${{Status}}' {PKG}")


def start_upgrade(ch: Chroot, tmp_path: Path, deadline_in: int) -> Path:
    for version in ("0.1.0-1", "0.2.0-1"):
        shutil.copy(make_deb(tmp_path, version), ch.root / "tmp")
    ch.ok(f"dpkg -i /tmp/{PKG}_0.1.0-1_all.deb >/dev/null")
    ch.ok("echo '# edited by the admin' >>/etc/titik/agent.toml")
    ch.ok(f"rm /tmp/{PKG}_0.1.0-1_all.deb")  # the running package's file is gone, as usual
    probe = hook(ch, "probe", {"dir": "/var/lib/titik/upgrade"})
    assert '"format":"deb"' in probe and '"installed":"0.1.0-1"' in probe, probe
    hook(
        ch,
        "install",
        {
            "dir": "/var/lib/titik/upgrade",
            "package": f"/tmp/{PKG}_0.2.0-1_all.deb",
            "version": "0.2.0",
            "from": "0.1.0",
            "deadline": int(time.time()) + deadline_in,
        },
    )
    up = ch.root / "var/lib/titik/upgrade"
    # Rebuilt from dpkg's database before anything changed: a .deb dpkg-deb can read.
    info = ch.ok("dpkg-deb -f /var/lib/titik/upgrade/previous.deb Package Version")
    assert info == f"Package: {PKG}\nVersion: 0.1.0-1\n"
    files = ch.ok("dpkg-deb -c /var/lib/titik/upgrade/previous.deb")
    assert "./usr/lib/titik/only-0.1.0-1" in files
    wait_until(lambda: (up / "install.result").exists(), 120, "install.result")
    assert (up / "install.result").read_text() == "ok\n", (up / "worker.log").read_text()
    return up


def test_apt_upgrade_without_confirmation_is_rolled_back(root: Chroot, tmp_path: Path) -> None:
    up = start_upgrade(root, tmp_path, deadline_in=8)
    assert installed(root).startswith("0.2.0-1 install ok installed")
    wait_until(lambda: (up / "rollback.result").exists(), 120, "rollback.result")
    result = (up / "rollback.result").read_text()
    assert result.startswith("rolled back to 0.1.0-1: health gate"), (
        result + (up / "worker.log").read_text()
    )
    assert installed(root) == "0.1.0-1 install ok installed"
    assert (root.root / "usr/lib/titik/VERSION").read_text() == "0.1.0-1\n"
    assert (root.root / "usr/lib/titik/only-0.1.0-1").exists()
    assert not (root.root / "usr/lib/titik/only-0.2.0-1").exists()
    assert "# edited by the admin" in (root.root / "etc/titik/agent.toml").read_text()
    scripts = (root.root / "var/log/titik-scripts.log").read_text().splitlines()
    # The rebuilt package kept its maintainer scripts: the old postinst configured it again.
    assert scripts[-1] == f"{PKG}.postinst configure 0.2.0-1", scripts


def test_apt_upgrade_confirmed_stays(root: Chroot, tmp_path: Path) -> None:
    up = start_upgrade(root, tmp_path, deadline_in=60)
    (up / "confirmed").write_text("0.2.0\n")
    wait_until(lambda: not (up / "worker.pid").exists(), 60, "the worker to end")
    assert not (up / "rollback.result").exists()
    assert installed(root) == "0.2.0-1 install ok installed"
    assert "# edited by the admin" in (root.root / "etc/titik/agent.toml").read_text()


# --- the real .deb, upgraded by the real agent running in the root ---------------------------


@pytest.fixture(scope="session")
def agent_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The amd64 .deb of this tree (packaging/build --only deb --arch amd64)."""
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [str(REPO / "packaging/build"), "--only", "deb", "--arch", "amd64", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return next(out.glob("*.deb"))


def reversion(deb: Path, tmp: Path, version: str, *, broken: bool = False) -> Path:
    """The same .deb as agent version ``version`` (package version ``version-1``); a broken one
    exits at import, as a release that cannot start would."""
    tree = tmp / f"rev-{version}"
    subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True)
    init = tree / "usr/lib/titik/agent/__init__.py"
    text = init.read_text().replace(f'"{AGENT_VERSION}"', f'"{version}"')
    if broken:
        text += '\nraise SystemExit("titik-agent: this release is broken on purpose (test)")\n'
    init.write_text(text)
    control = tree / "DEBIAN/control"
    control.write_text(
        control.read_text().replace(f"Version: {AGENT_VERSION}-1", f"Version: {version}-1")
    )
    (tree / "DEBIAN/md5sums").unlink(missing_ok=True)
    out = tmp / f"titik-agent_{version}-1_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(out)], check=True)
    return out


class RunningAgent:
    """`titik-agent run` in the root; restart() is what systemd does when postinst restarts."""

    def __init__(self, ch: Chroot) -> None:
        self.ch = ch
        self.proc: subprocess.Popen[bytes] | None = None
        self.logs: list[str] = []

    def start(self) -> subprocess.Popen[bytes]:
        self.proc = subprocess.Popen(
            ["chroot", str(self.ch.root), "/usr/bin/titik-agent", "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        return self.proc

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                _, err = self.proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                _, err = self.proc.communicate()
            self.logs.append(err.decode(errors="replace"))
            self.proc = None

    def restart(self) -> subprocess.Popen[bytes]:
        self.stop()
        return self.start()


def test_the_real_agent_upgrades_itself_and_a_broken_release_is_rolled_back(
    root: Chroot, agent_deb: Path, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.protocol.signing import public_key_text, sign
    from tests.broker import Broker, subscriber
    from tests.upgrade_rig import Files, http_server, package_entry, signed_manifest

    root.mount("--bind", str(CACHE / "archives-trixie"), target="var/cache/apt/archives")
    shutil.copy("/etc/resolv.conf", root.root / "etc/resolv.conf")
    root.install(agent_deb)
    good = reversion(agent_deb, tmp_path, "0.9.0")
    bad = reversion(agent_deb, tmp_path, "0.9.1", broken=True)
    key = Ed25519PrivateKey.generate()
    device = "gw-upgrade-deb"
    broker = Broker(tmp_path)
    broker.start()
    agent = RunningAgent(root)
    files = Files(blobs={"/good.deb": good.read_bytes(), "/bad.deb": bad.read_bytes()})
    result_topic = f"titik/gw/{device}/cmd/result"
    try:
        (root.root / "etc/titik/agent.toml").write_text(
            f'[device]\nid = "{device}"\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n'
            "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
            "[telemetry]\ninterval_s = 0.5\n"
            '[platform]\nkind = "linux"\n'
            f'[security]\ntrusted_keys = ["{public_key_text(key.public_key())}"]\n'
        )
        with subscriber(broker, "titik/#") as sub, http_server(files) as base:
            agent.start()
            sub.next(lambda m: m.topic.endswith(f"{device}/status") and m.json()["online"], 60)

            def command(cid: str, name: str, blob: Path, version: str, timeout_s: int) -> None:
                entry = package_entry(f"{base}/{name}", blob.read_bytes(), "deb", "amd64")
                body = {
                    "id": cid,
                    "name": "upgrade",
                    "args": {
                        "manifest": signed_manifest(key, version, [entry]),
                        "health_timeout_s": timeout_s,
                    },
                    "expires_at": time.time() + 3600,
                }
                topic = f"titik/gw/{device}/cmd"
                sub.client.publish(topic, json.dumps(sign(key, topic, body)), qos=1)

            def step(cid: str, want: str, timeout: float = 120) -> dict[str, object]:
                def match(m: object) -> bool:
                    body = m.json()  # type: ignore[attr-defined]
                    got = body.get("step") or (body.get("result") or {}).get("step")
                    return m.topic == result_topic and body.get("id") == cid and got == want  # type: ignore[attr-defined,no-any-return]

                return dict(sub.next(match, timeout).json())

            up = root.root / "var/lib/titik/upgrade"
            # 1. A good release: installed by apt-get through the hook's worker, confirmed
            # by the new agent after the restart.
            command("up-good", "good.deb", good, "0.9.0", 120)
            step("up-good", "verified")
            step("up-good", "installing")
            wait_until(lambda: (up / "install.result").exists(), 180, "install.result")
            assert (up / "install.result").read_text() == "ok\n", (up / "worker.log").read_text()
            assert installed(root).startswith("0.9.0-1 install ok installed")
            agent.restart()  # what postinst's restart does under systemd
            assert step("up-good", "installed")["ok"]
            assert step("up-good", "confirmed")["ok"]
            wait_until(lambda: not (up / "worker.pid").exists(), 60, "the worker to end")
            assert (up / "current.deb").exists()
            # 2. A release whose agent cannot start: the worker reinstalls 0.9.0 at the
            # deadline (from current.deb, kept by the confirmation), and the agent that runs
            # then reports why.
            command("up-bad", "bad.deb", bad, "0.9.1", 20)
            step("up-bad", "installing")
            wait_until(lambda: (up / "install.result").exists(), 180, "install.result")
            crashed = agent.restart()
            assert crashed.wait(60) != 0  # the broken release exits at start
            agent.proc = None
            wait_until(lambda: (up / "rollback.result").exists(), 180, "rollback.result")
            rolled = (up / "rollback.result").read_text()
            assert rolled.startswith("rolled back to 0.9.0-1: health gate"), rolled
            assert installed(root).startswith("0.9.0-1 install ok installed")
            agent.start()
            last = step("up-bad", "rolled_back")
            assert not last["ok"]
            assert "health gate" in str(last["error"]) and "running 0.9.0" in str(last["error"])
    finally:
        agent.stop()
        broker.stop()
