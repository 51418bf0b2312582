"""Install the .deb into clean Debian 12 and 13 roots, amd64, arm64 and armhf, and run the agent.

amd64 roots are made with ``debootstrap --variant=minbase``; the test's ``apt-get install`` then
brings in the package's dependencies, as on a fresh machine.

arm64 and armhf roots run under qemu-user-static through binfmt_misc (scripts/setup --dev
installs and enables it). They are made with ``mmdebstrap --variant=minbase`` with the .deb's
Depends included, so one apt run installs the base system and python3 together, under emulation,
without Recommends (ca-certificates alone costs about a minute under qemu). The test's ``apt-get
install ./titik-agent_*.deb`` then checks the Depends and brings in the Recommends. qemu emulates
the CPU of an old Raspberry Pi rather than its default "max" CPU: arm64 as a Cortex-A53 (Pi 3,
Zero 2 W; ARMv8.0, no pointer authentication, which qemu's "max" CPU emulates about three times
slower on trixie), armhf as a Cortex-A7 (Pi 2; ARMv7 with NEON-VFPv4). So the pydantic-core
extension is shown to load on the oldest board each package claims.

The roots are made once and cached in $TITIK_TEST_ROOTS (default /var/cache/titik-test-roots),
several at a time (the emulated ones are CPU-bound), under a lock per root, so two test sessions
never build the same one. Each test works on a copy. Downloaded .debs are cached per root too, so
a second run needs the network only for ``apt-get update``. A chroot shares the host's network
namespace, so the agent reaches a Mosquitto on 127.0.0.1.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.broker import Broker, subscriber

pytestmark = [pytest.mark.slow, pytest.mark.broker]

CACHE = Path(os.environ.get("TITIK_TEST_ROOTS", "/var/cache/titik-test-roots"))
MIRROR = os.environ.get("TITIK_DEBIAN_MIRROR", "http://deb.debian.org/debian")
READY = ".titik-minbase-ok"
# Paths with "titik" in their name that may stay after a purge: dpkg's and apt's logs.
ALLOWED_AFTER_PURGE = ("var/log/", "tmp/", "var/cache/apt/archives/")
ROOT_BUILD_TIMEOUT = 1500  # s; a cold emulated root takes 1.5-2 minutes alone, more when shared

# Debian architecture: (uname -m in the root, qemu's binfmt handler, qemu's CPU model).
ARCHES = {
    "amd64": ("x86_64", None, None),
    "arm64": ("aarch64", "qemu-aarch64", "cortex-a53"),
    "armhf": ("armv7l", "qemu-arm", "cortex-a7"),
}
TRIPLES = {
    "amd64": "x86_64-linux-gnu",
    "arm64": "aarch64-linux-gnu",
    "armhf": "arm-linux-gnueabihf",
}
PYVER = {"bookworm": "311", "trixie": "313"}


def _run(cmd: list[str], timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout, **kw)  # type: ignore[call-overload, no-any-return]


def host_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


@dataclass(frozen=True)
class Target:
    """A Debian release on one architecture; the name of its cached root."""

    release: str
    arch: str = "amd64"

    @property
    def foreign(self) -> bool:
        return self.arch != host_arch()

    @property
    def name(self) -> str:
        return self.release if self.arch == "amd64" else f"{self.release}-{self.arch}"

    @property
    def env(self) -> dict[str, str]:
        """What every process in the root needs: qemu's CPU model when emulated."""
        cpu = ARCHES[self.arch][2]
        return {"QEMU_CPU": cpu} if self.foreign and cpu else {}

    def __str__(self) -> str:
        return self.name


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    with open("/proc/self/mounts") as fh:
        points = [line.split()[1] for line in fh]
    return sorted((p for p in points if p.startswith(prefix)), reverse=True)


def remove_root(path: Path) -> None:
    """Delete a (partial) root, never through a mount still inside it (/proc, /dev, a cache)."""
    if not path.exists():
        return
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    leftover = _mounts_under(path)
    assert not leftover, f"cannot remove {path}: still mounted: {leftover}"
    shutil.rmtree(path)


def binfmt_problem(arch: str) -> str | None:
    """Why this kernel cannot run `arch` binaries in a chroot, or None if it can."""
    handler = ARCHES[arch][1]
    if handler is None:
        return None
    entry = Path("/proc/sys/fs/binfmt_misc") / handler
    if not entry.exists():
        return f"no binfmt_misc handler {handler}"
    text = entry.read_text()
    if not text.startswith("enabled"):
        return f"binfmt_misc handler {handler} is disabled"
    # F: the interpreter is opened when registered, so it works inside a chroot that lacks it.
    flags = next((ln.split(":", 1)[1] for ln in text.splitlines() if ln.startswith("flags:")), "")
    if "F" not in flags:
        return f"binfmt_misc handler {handler} lacks the F (fix-binary) flag"
    return None


def deb_depends(deb: Path) -> list[str]:
    """The package names in the .deb's Depends (first alternative, without versions)."""
    field = _run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout
    return [dep.split("|")[0].split("(")[0].strip() for dep in field.split(",") if dep.strip()]


def _bootstrap(target: Target, tmp: Path, include: list[str]) -> subprocess.CompletedProcess[str]:
    if not target.foreign:
        if not shutil.which("debootstrap"):
            pytest.fail("debootstrap not installed: run scripts/setup --dev")
        cmd = ["debootstrap", "--variant=minbase", target.release, str(tmp), MIRROR]
    else:
        if not shutil.which("mmdebstrap"):
            pytest.fail("mmdebstrap not installed: run scripts/setup --dev")
        problem = binfmt_problem(target.arch)
        if problem:
            pytest.fail(f"{problem}: run scripts/setup --dev (qemu-user-static, binfmt-support)")
        cmd = ["mmdebstrap", "--variant=minbase", f"--arch={target.arch}"]
        if include:
            cmd.append("--include=" + ",".join(include))
        cmd += [target.release, str(tmp), MIRROR]
    return _run(cmd, timeout=ROOT_BUILD_TIMEOUT, env={**os.environ, **target.env})


def build_root(target: Target, include: Sequence[str] = ()) -> Path:
    """A pristine root for `target`, made on first use (one builder at a time per root)."""
    root = CACHE / target.name
    if (root / READY).exists():
        return root
    if os.geteuid() != 0:
        pytest.skip("debootstrap, mmdebstrap and chroot need root")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it: wait for it
        if (root / READY).exists():
            return root
        tmp = CACHE / f"{target.name}.tmp"
        remove_root(tmp)
        how = f"{'mmdebstrap' if target.foreign else 'debootstrap'} {target} from {MIRROR}"
        try:
            res = _bootstrap(target, tmp, list(include))
        except subprocess.TimeoutExpired:
            remove_root(tmp)
            pytest.skip(f"{how} took over {ROOT_BUILD_TIMEOUT} s (network?)")
        if res.returncode != 0:
            remove_root(tmp)
            tail = "\n".join((res.stdout + res.stderr).splitlines()[-5:])
            pytest.skip(f"{how} failed (network?):\n{tail}")
        (tmp / READY).write_text(" ".join(include) + "\n")
        tmp.rename(root)
    return root


def cached_root(release: str) -> Path:
    """The pristine amd64 minbase root of `release` (also used by the OpenWrt tests' roots)."""
    return build_root(Target(release))


class Roots:
    """Builds every root the session's tests will need, several at a time, on first request."""

    def __init__(self, targets: list[Target], include: dict[Target, list[str]]) -> None:
        self.targets = targets
        self.include = include
        self.pool = ThreadPoolExecutor(max_workers=max(2, min(4, os.cpu_count() or 1)))
        self.jobs: dict[Target, Future[Path]] = {}

    def get(self, target: Target) -> Path:
        if not self.jobs:
            for t in [target, *self.targets]:
                self._submit(t)
        return self._submit(target).result()

    def _submit(self, target: Target) -> Future[Path]:
        if target not in self.jobs:
            include = self.include.get(target, [])
            self.jobs[target] = self.pool.submit(build_root, target, include)
        return self.jobs[target]

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="session")
def roots(request: pytest.FixtureRequest) -> Iterator[Roots]:
    targets = []
    for item in request.session.items:
        target = getattr(item, "callspec", None) and item.callspec.params.get("chroot")  # type: ignore[attr-defined]
        if isinstance(target, Target) and target not in targets:
            targets.append(target)
    # The emulated roots come with the package's Depends (see the module's docstring).
    foreign = [t for t in targets if t.foreign]
    debs: list[Path] = request.getfixturevalue("debs") if foreign else []
    include = {
        t: deb_depends(next(d for d in debs if d.name.endswith(f"_{t.arch}.deb"))) for t in foreign
    }
    pool = Roots(targets, include)
    yield pool
    pool.close()


class Chroot:
    def __init__(self, root: Path, target: Target) -> None:
        self.root = root
        self.target = target
        self.release = target.release
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

    def environ(self, env: dict[str, str] | None = None) -> dict[str, str]:
        full = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "DEBIAN_FRONTEND": "noninteractive",
            "LC_ALL": "C",
            **self.target.env,
        }
        full.update(env or {})
        return full

    def sh(
        self, script: str, timeout: float = 300, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(
            ["chroot", str(self.root), "/bin/sh", "-ec", script],
            timeout=timeout,
            env=self.environ(env),
        )

    def ok(self, script: str, timeout: float = 300, env: dict[str, str] | None = None) -> str:
        res = self.sh(script, timeout, env)
        assert res.returncode == 0, (
            f"{script!r} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        )
        return res.stdout

    def install(self, deb: Path, *apt_options: str) -> None:
        """`apt-get install ./<deb>` as an administrator would; skips if the archive is away."""
        shutil.copy(deb, self.root / "tmp" / deb.name)
        res = self.sh("apt-get update -qq", timeout=180)
        if res.returncode != 0:
            pytest.skip(f"apt-get update in {self.target} failed (network?): {res.stderr[-500:]}")
        opts = " ".join(apt_options)
        self.ok(f"apt-get install -y -qq {opts} ./tmp/{deb.name} >/dev/null", timeout=600)

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
def chroot(request: pytest.FixtureRequest, roots: Roots, tmp_path: Path) -> Iterator[Chroot]:
    target: Target = request.param
    pristine = roots.get(target)
    root = tmp_path / target.name
    subprocess.run(["cp", "-a", "--reflink=auto", str(pristine), str(root)], check=True)
    ch = Chroot(root, target)
    archives = CACHE / f"archives-{target.name}"
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


def the_deb(debs: list[Path], arch: str) -> Path:
    return next(d for d in debs if d.name.endswith(f"_{arch}.deb"))


def launcher_choice(stderr: str) -> str:
    """The launcher's TITIK_LAUNCHER_DEBUG line, without its prefix."""
    lines = [ln for ln in stderr.splitlines() if ln.startswith("titik-agent launcher: ")]
    assert len(lines) == 1, stderr
    return lines[0].removeprefix("titik-agent launcher: ")


def pydantic_core_so(vendored: bool, target: Target) -> str:
    """Where the pydantic-core extension that the agent should load lives in the root."""
    base = "/usr/lib/titik/vendor/pydantic" if vendored else "/usr/lib/python3/dist-packages"
    so = f"_pydantic_core.cpython-{PYVER[target.release]}-{TRIPLES[target.arch]}.so"
    return f"{base}/pydantic_core/{so}"


def agent_toml(device: str, port: int) -> str:
    return (
        f'[device]\nid = "{device}"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\n'
        "[telemetry]\ninterval_s = 0.5\n"
        '[platform]\nkind = "linux"\n'
    )


def run_until_telemetry(
    ch: Chroot, broker: Broker, device: str, env: dict[str, str], timeout: float
) -> tuple[list[str], str]:
    """`titik-agent run` in the root until its first telemetry; the files it had mapped then
    (from /proc/PID/maps: under qemu-user the guest's mmaps are the host process's) and its
    stderr. It must stop cleanly on SIGTERM."""
    (ch.root / "etc/titik/agent.toml").write_text(agent_toml(device, broker.port))
    with subscriber(broker, "titik/#") as sub:
        # chroot execs the launcher, whose #! execs python3 (under qemu): all one PID.
        proc = subprocess.Popen(
            ["chroot", str(ch.root), "/usr/bin/titik-agent", "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **ch.target.env, **env},
        )
        try:
            msg = sub.next(lambda m: m.topic.endswith(f"/{device}/telemetry"), timeout=timeout)
            assert msg.json()
            maps = Path(f"/proc/{proc.pid}/maps").read_text().splitlines()
        finally:
            proc.terminate()
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
    stderr = err.decode(errors="replace")
    assert proc.returncode == 0, stderr
    files = sorted({ln.split(None, 5)[5] for ln in maps if len(ln.split(None, 5)) == 6})
    return files, stderr


def mapped(files: list[str], ch: Chroot, path_in_root: str) -> bool:
    """Whether `path_in_root` is among the mapped files (paths as the host sees them)."""
    return str(ch.root / path_in_root.lstrip("/")) in files or path_in_root in files


# Launcher switches and titik-ctl's variables, exported in the agent's environment: none of
# them is a config key, and the agent must start regardless (issue 15, point 5).
TOOL_SWITCHES = {
    "TITIK_LAUNCHER_DEBUG": "1",
    "TITIK_BROKER": "broker.elsewhere.example:8883",
    "TITIK_SIGNING_KEY": "/root/ops-signing.pem",
}

AMD64 = [Target("bookworm"), Target("trixie")]
ARM = [Target(r, a) for r in ("bookworm", "trixie") for a in ("arm64", "armhf")]


@pytest.mark.parametrize("chroot", AMD64, indirect=True, ids=str)
def test_deb_installs_runs_and_purges(chroot: Chroot, debs: list[Path], tmp_path: Path) -> None:
    chroot.install(the_deb(debs, "amd64"))

    # The conffile as shipped (placeholder broker) is a valid config.
    chroot.ok("titik-agent check-config /etc/titik/agent.toml")
    assert chroot.ok("test -d /var/lib/titik && echo yes").strip() == "yes"
    res = chroot.sh(
        "titik-agent check-config /etc/titik/agent.toml >/dev/null",
        env={"TITIK_LAUNCHER_DEBUG": "1"},
    )
    assert res.returncode == 0, res.stderr
    # Debian 12's pydantic is 1.10: the vendored one is used; Debian 13's 2.10 (a Recommends).
    expected = "pydantic=vendor" if chroot.release == "bookworm" else "pydantic=system"
    assert expected in launcher_choice(res.stderr)

    broker = Broker(tmp_path)
    broker.start()
    try:
        device = f"gw-chroot-{chroot.target}"
        (chroot.root / "etc/titik/agent.toml").write_text(agent_toml(device, broker.port))
        chroot.ok("titik-agent check-config /etc/titik/agent.toml")
        sample = json.loads(chroot.ok("titik-agent once"))
        assert isinstance(sample, dict)
        assert sample
        # TITIK_VENDOR=always: every group from the package, even where Debian has one.
        env = {**TOOL_SWITCHES, "TITIK_VENDOR": "always"}
        files, stderr = run_until_telemetry(chroot, broker, device, env, timeout=60)
        choice = launcher_choice(stderr)
        assert choice == "pydantic=vendor paho-mqtt=vendor tenacity=vendor", choice
        assert mapped(files, chroot, pydantic_core_so(True, chroot.target)), files
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


@pytest.mark.parametrize("chroot", ARM, indirect=True, ids=str)
def test_arm_deb_installs_and_publishes(chroot: Chroot, debs: list[Path], tmp_path: Path) -> None:
    """The arm64/armhf .deb under emulation: apt installs it, the launcher picks the vendored
    pydantic, and the agent's ARM pydantic-core extension loads, connects and publishes.

    Debian 12 is installed as apt does by default (with Recommends: Debian's tenacity 8.2 is
    used, its pydantic 1.10 and paho 1.6 are not). Debian 13 without Recommends, as many
    Raspberry Pi images are set up: then all three groups are the package's own, and the cp313
    extension is the one loaded (with Recommends, Debian 13's own pydantic would be, as the
    amd64 test shows)."""
    target = chroot.target
    uname = chroot.ok("uname -m").strip()
    assert uname == ARCHES[target.arch][0]
    bookworm = target.release == "bookworm"
    chroot.install(the_deb(debs, target.arch), *([] if bookworm else ["--no-install-recommends"]))
    assert chroot.ok("dpkg --print-architecture").strip() == target.arch

    res = chroot.sh(
        "titik-agent check-config /etc/titik/agent.toml >/dev/null",
        env={"TITIK_LAUNCHER_DEBUG": "1", "TITIK_VENDOR": "auto"},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    expected = (
        "pydantic=vendor paho-mqtt=vendor tenacity=system"
        if bookworm
        else "pydantic=vendor paho-mqtt=vendor tenacity=vendor"
    )
    assert launcher_choice(res.stderr) == expected

    broker = Broker(tmp_path)
    broker.start()
    try:
        device = f"gw-chroot-{target}"
        env = {**TOOL_SWITCHES, "TITIK_VENDOR": "auto"}
        files, stderr = run_until_telemetry(chroot, broker, device, env, timeout=180)
    finally:
        broker.stop()
    assert launcher_choice(stderr) == expected
    so = pydantic_core_so(True, target)
    assert mapped(files, chroot, so), f"{so} not mapped by the agent:\n" + "\n".join(files)
    # Nothing of the other Python version's or another machine's build was loaded.
    other = [f for f in files if "_pydantic_core" in f and not f.endswith(so)]
    assert not other, other


# What a fresh clone holds: the sources, not this checkout's venv, caches or build output.
NOT_IN_A_CLONE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis"
)
REPO = Path(__file__).resolve().parents[2]


def host_local_cas() -> list[str]:
    """Certificates the host trusts beyond those Debian's ca-certificates ships."""
    pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if not bundle.exists():
        return []
    shipped = {
        cert
        for crt in Path("/usr/share/ca-certificates").rglob("*.crt")
        for cert in pem.findall(crt.read_text(errors="replace"))
    }
    return [cert for cert in pem.findall(bundle.read_text()) if cert not in shipped]


@pytest.mark.parametrize("chroot", [Target("bookworm")], indirect=True, ids=str)
def test_setup_on_a_minbase_without_python(chroot: Chroot) -> None:
    """scripts/setup on Debian 12 minbase, which has no python3: apt brings it, and the .venv
    works (issue 15, point 6). As root, as in a fresh container; without --dev (the test tools
    would add chromium and lintian, a few hundred MB that prove nothing more here)."""
    assert chroot.sh("command -v python3").returncode != 0, "the minbase root has a python3"
    # No service may start in the chroot: mosquitto's postinst would start a broker on the
    # host's port 1883 (a chroot shares the network). What image builders do, see
    # /usr/share/doc/init-system-helpers/README.policy-rc.d.gz.
    policy = chroot.root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    # A machine on this network trusts what the host trusts: a TLS-intercepting proxy's CA,
    # if any (none on a plain network), goes where an administrator puts a local CA.
    local_cas = chroot.root / "usr/local/share/ca-certificates"
    for i, pem in enumerate(host_local_cas()):
        local_cas.mkdir(parents=True, exist_ok=True)
        (local_cas / f"host-{i}.crt").write_text(pem + "\n")
    shutil.copytree(REPO, chroot.root / "src/titik", ignore=NOT_IN_A_CLONE, symlinks=True)
    res = chroot.sh("apt-get update -qq", timeout=180)
    if res.returncode != 0:
        pytest.skip(f"apt-get update in {chroot.target} failed (network?): {res.stderr[-500:]}")

    res = chroot.sh("cd /src/titik && scripts/setup", timeout=900)
    assert res.returncode == 0, (
        f"scripts/setup exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    )
    assert "installing with apt: python3 python3-venv mosquitto ca-certificates" in res.stderr, (
        res.stderr
    )

    venv = "/src/titik/.venv/bin"
    version = chroot.ok(f"{venv}/python -c 'import sys; print(sys.version_info[:2])'")
    assert version.strip() == "(3, 11)"
    assert chroot.ok(f"{venv}/titik-agent --version").startswith("titik-agent ")
    sample = json.loads(
        chroot.ok(
            f"{venv}/titik-agent once --warmup 0.1 --config /src/titik/agent/agent.example.toml"
        )
    )
    assert sample
    # setup installs the central extra: the central tools start.
    for tool in ("titik-central", "titik-ctl", "titik-sim"):
        assert chroot.ok(f"{venv}/{tool} --help").startswith(f"usage: {tool}")
    # Run again: quick, and nothing more to install.
    res = chroot.sh("cd /src/titik && scripts/setup", timeout=300)
    assert res.returncode == 0, res.stderr
    assert "installing with apt" not in res.stderr
