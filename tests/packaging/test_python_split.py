"""The packaged agent on OpenWrt's python3 split: every module outside the Depends closure refused.

OpenWrt splits the standard library into packages (python3-light, -logging, -codecs, -openssl ...;
packaging/openwrt/python3-split/<release>.toml, read from openwrt/packages with its sources named
there). A Depends that misses one of them installs fine and then fails at run time, e.g. at the
first connection when socket.getaddrinfo() needs the idna codec, hence unicodedata from
python3-codecs. No OpenWrt image can run here, so the agent runs on a CPython of the same minor
version with tests/packaging/splitrun.py refusing every module whose OpenWrt package the
package's Depends do not bring in, against a real Mosquitto: it connects, publishes telemetry,
applies a signed desired config and answers signed commands.

Everything the agent runs is the package's own files (launcher, agent, firmware hooks, vendored
libraries), unpacked from the built package, with one exception: the vendored pydantic-core is a
musllinux build, which cannot load into this glibc CPython, so its extension module is replaced by
the one from the manylinux wheel of exactly the same pydantic-core version (vendor.txt). psutil
and cryptography, which OpenWrt's feed provides, come from this machine (their versions differ
from the feed's; the closure check still applies to the stdlib modules they import).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import public_key_text
from tests.broker import Broker, subscriber
from tests.integration.test_remote import BASE, DESIRED, SSID, Ops, sim_state
from tests.packaging.conftest import Apk, Ipk, load_build
from tests.packaging.pysplit import NOWHERE, Split, depends_field
from tests.packaging.roots import overlay, python_root

pytestmark = [pytest.mark.slow, pytest.mark.broker]

SPLITRUN = Path(__file__).with_name("splitrun.py")
DEV = "gw-test01"  # the device id tests.integration.test_remote's topics are for


def control_fields(text: str) -> dict[str, str]:
    return dict(re.findall(r"(?m)^([A-Za-z-]+): (.*)$", text))


@pytest.mark.parametrize("release", ["openwrt-24.10", "openwrt-25.12"])
def test_the_split_data_reads_as_openwrt_builds_it(release: str) -> None:
    split = Split(release)
    assert split.package_of("unicodedata") == "python3-codecs"
    assert split.package_of("_ssl") == "python3-openssl"
    assert split.package_of("email.message") == "python3-email"
    assert split.package_of("encodings.idna") == "python3-base"  # imports unicodedata, though
    assert split.package_of("_sysconfigdata__linux_x86_64-linux-musl") == "python3-base"
    assert split.package_of("tkinter") == NOWHERE
    assert split.package_of("json") is None  # unclaimed: python3-light
    assert split.package_of("cryptography.x509") == "python3-cryptography"
    closure = split.closure(["python3-cryptography"])
    assert {"python3-cffi", "python3-ctypes", "python3-email", "python3-urllib"} <= closure
    assert "python3-codecs" not in closure  # so nothing but the .ipk's own Depends brings it
    assert ("python3-distutils" in split.packages) == (release == "openwrt-24.10")
    assert split.python == {"openwrt-24.10": "3.11", "openwrt-25.12": "3.13"}[release]


def manylinux_extension(python: str) -> tuple[str, bytes]:
    """The glibc build of the vendored pydantic-core's extension: (file name, content)."""
    build = load_build()
    req = next(r for _, r in build.vendor_spec() if r.startswith("pydantic-core=="))
    whl = build.pip_download(req, build.CACHE / "wheels", "manylinux2014_x86_64", python)
    with zipfile.ZipFile(whl) as zf:
        name = next(n for n in zf.namelist() if n.startswith("pydantic_core/_pydantic_core."))
        return Path(name).name, zf.read(name)


def substitute_pydantic_core(vendor: Path, python: str) -> str:
    """Swap the musllinux extension for the manylinux one of the same version; returns its name."""
    core = vendor / "pydantic" / "pydantic_core"
    musl = list(core.glob("_pydantic_core.*musl*.so"))
    assert musl, f"no musllinux extension in {core}"
    for so in musl:
        so.unlink()
    name, data = manylinux_extension(python)
    (core / name).write_bytes(data)
    return name


def own_modules(lib: Path) -> list[str]:
    """Top-level modules the package itself ships: the agent and the vendored libraries."""
    names = {"agent"}
    for group in (lib / "vendor").iterdir():
        if group.is_dir():
            names |= {
                p.name.removesuffix(".py")
                for p in group.iterdir()
                if not p.name.endswith((".dist-info", ".libs")) and p.name != "__pycache__"
            }
    return sorted(names)


def feed_site(split: Split, closure: set[str], dest: Path, prefix: str = "") -> list[str]:
    """A site directory with this machine's copies of the feed packages in the closure."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in sorted(closure):
        for dist in split.packages.get(name, {}).get("dists", []):  # type: ignore[attr-defined]
            spec = importlib.util.find_spec(dist)
            if spec is None or spec.origin is None:
                continue
            src = Path(spec.origin)
            if spec.submodule_search_locations:
                src = src.parent
            (dest / src.name).symlink_to(Path(prefix + str(src)) if prefix else src)
    return [str(dest)]


def agent_config(
    path: Path,
    broker_port: int,
    key: Ed25519PrivateKey,
    state: Path,
    inside: Callable[[Path], str] = str,
) -> Path:
    sim_root = path.parent / "simroot"
    sim_root.mkdir(exist_ok=True)
    path.write_text(
        f'[device]\nid = "{DEV}"\ngroups = ["test"]\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\n'
        "reconnect_min_s = 0.1\nreconnect_max_s = 0.5\n"
        "[telemetry]\ninterval_s = 0.5\n"
        f'[state]\ndir = "{inside(state)}"\n'
        f'[platform]\nkind = "simulated"\nseed = 7\nroot = "{inside(sim_root)}"\n'
        "[security]\n"
        f'trusted_keys = ["{public_key_text(key.public_key())}"]\nrequire_signature = true\n'
    )
    return path


def exercise(
    broker: Broker,
    key: Ed25519PrivateKey,
    start: Callable[[], subprocess.Popen[bytes]],
    log: Path,
    sim_root: Path,
) -> None:
    """Connect, telemetry, a signed desired config applied, signed commands answered, a clean stop."""
    ops = Ops(broker, key)
    proc = None
    try:
        with subscriber(broker, f"{BASE}/telemetry", client_id="telemetry") as tele:
            proc = start()
            try:
                online = ops.sub.next(
                    lambda m: m.topic.endswith("/status") and m.json()["online"], timeout=60
                )
                assert online.json()["online"]
                assert tele.next(timeout=30).json()
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nagent log:\n{log.read_text()[-4000:]}") from exc
        ops.desire(1, SSID)
        rep = ops.report(lambda r: r["version"] == 1, timeout=30)
        assert rep["state"] == "applied", rep
        applied = sim_state(sim_root, "wifi")  # the packaged firmware hook ran
        assert applied is not None
        assert applied["ssids.public.ssid"] == SSID["wifi"]["ssids"]["public"]["ssid"]
        ops.send(DESIRED, {"version": 2, "config": SSID}, retain=True, signed=False)
        assert "signature: missing" in ops.report(lambda r: r["version"] == 2)["error"]
        assert ops.command("collect_now")["ok"]
        diag = ops.command("diagnostics", {"http": "http://127.0.0.1:9/"})
        assert diag["ok"], diag
        applied_cfg = ops.command("get_config")["result"]["applied"]["wifi"]["ssids"]["public"]
        assert applied_cfg["ssid"] == SSID["wifi"]["ssids"]["public"]["ssid"]
    finally:
        ops.close()
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode} on SIGTERM:\n{log.read_text()[-3000:]}"


def refusals(log: Path) -> list[str]:
    return re.findall(r"splitrun: refused import of (\S+):", log.read_text())


IMPORT_ALL = """
import importlib, os, pkgutil, sys
lib = sys.argv[1]
for group in sorted(os.listdir(os.path.join(lib, "vendor"))):
    if os.path.isdir(os.path.join(lib, "vendor", group)):
        sys.path.insert(0, os.path.join(lib, "vendor", group))
sys.path.insert(0, lib)
import agent
for mod in pkgutil.walk_packages(agent.__path__, "agent."):
    if not mod.name.endswith("__main__"):
        importlib.import_module(mod.name)
print("imported every agent module")
"""


def check_split(
    python: list[str],
    work: Path,
    lib: Path,
    launcher: Path,
    cfg: Path,
    broker: Broker,
    key: Ed25519PrivateKey,
    inside: Callable[[Path], str] = str,
) -> None:
    """Import every agent module, then run the agent, both under the split in `work`/policy.txt.

    `inside` gives a host path as the interpreter sees it (in a chroot). A refused import fails
    the test only where the agent cannot do without it: optional imports that the libraries guard
    (paho's socks, lzma in zipfile ...) are refused on OpenWrt too, and the code goes on without
    them. The refusals are listed when something fails.
    """
    shutil.copy(SPLITRUN, work / "splitrun.py")
    (work / "import_all.py").write_text(IMPORT_ALL)
    run = [*python, inside(work / "splitrun.py"), inside(work / "policy.txt")]
    res = subprocess.run(
        [*run, inside(work / "import_all.py"), inside(lib)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and "imported every agent module" in res.stdout, res.stderr[-4000:]
    log = work / "agent.log"

    def start() -> subprocess.Popen[bytes]:
        fh = log.open("ab")
        return subprocess.Popen(
            [*run, inside(launcher), "run", "--config", inside(cfg)],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )

    try:
        exercise(broker, key, start, log, cfg.parent / "simroot")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nrefused imports: {refusals(log)}") from exc


def test_ipk_agent_on_openwrt_24_10_python_split(
    ipks: list[Ipk], broker: Broker, tmp_path: Path
) -> None:
    if sys.version_info[:2] != (3, 11):
        pytest.skip("OpenWrt 24.10 has Python 3.11; this interpreter is another version")
    ipk = next(i for i in ipks if i.arch == "x86_64")
    root = tmp_path / "root"
    with ipk.tar("./data.tar.gz") as data:
        data.extractall(root, filter="tar")
    lib = root / "usr/lib/titik"
    substitute_pydantic_core(lib / "vendor", "3.11")
    split = Split("openwrt-24.10")
    depends = depends_field(
        control_fields(ipk.read("./control.tar.gz", "./control").decode())["Depends"]
    )
    closure = split.closure(depends)
    (tmp_path / "policy.txt").write_text(
        split.policy(depends, own_modules(lib), feed_site(split, closure, tmp_path / "feed"))
    )
    key = Ed25519PrivateKey.generate()
    check_split(
        [sys.executable, "-I", "-S"],
        tmp_path,
        lib,
        root / "usr/bin/titik-agent",
        agent_config(tmp_path / "agent.toml", broker.port, key, tmp_path / "state"),
        broker,
        key,
    )


def test_the_split_reproduces_the_idna_failure_without_python3_codecs(
    ipks: list[Ipk], tmp_path: Path
) -> None:
    """The method can see the issue-15 bug: without python3-codecs, getaddrinfo cannot resolve."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("OpenWrt 24.10 has Python 3.11; this interpreter is another version")
    ipk = next(i for i in ipks if i.arch == "x86_64")
    split = Split("openwrt-24.10")
    depends = depends_field(
        control_fields(ipk.read("./control.tar.gz", "./control").decode())["Depends"]
    )
    assert "python3-codecs" in depends
    assert split.package_of("unicodedata") == "python3-codecs"
    program = tmp_path / "resolve.py"
    program.write_text("import socket\nprint(socket.getaddrinfo('127.0.0.1', 1883)[0][4])\n")
    for deps, ok in ((depends, True), ([d for d in depends if d != "python3-codecs"], False)):
        policy = tmp_path / "policy.txt"
        policy.write_text(split.policy(deps, [], []))
        res = subprocess.run(
            [sys.executable, "-I", "-S", str(SPLITRUN), str(policy), str(program)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if ok:
            assert res.returncode == 0, res.stderr
            assert "127.0.0.1" in res.stdout
        else:
            assert res.returncode != 0
            assert "LookupError: unknown encoding: idna" in res.stderr, res.stderr
            assert "refused import of unicodedata" in res.stderr


def chroot_feed(split: Split, closure: set[str], root: Path, dest: Path) -> Path:
    """A site directory in root linking Debian's copies of the feed packages in the closure."""
    site = root / "usr/lib/python3/dist-packages"
    dest.mkdir(parents=True)
    for name in sorted(closure):
        for dist in split.packages.get(name, {}).get("dists", []):  # type: ignore[attr-defined]
            for found in [site / dist, site / f"{dist}.py", *site.glob(f"{dist}.*.so")]:
                if found.exists():
                    (dest / found.name).symlink_to("/" + str(found.relative_to(root)))
    return dest


def test_apk_agent_on_openwrt_25_12_python_split(
    apks: list[Apk], broker: Broker, tmp_path: Path
) -> None:
    """The same on 25.12's split, with Debian 13's python3.13 in a chroot (tests/packaging/roots.py)
    and Debian's python3-psutil and python3-cryptography in place of the feed's."""
    if os.geteuid() != 0:
        pytest.skip("chroot and overlay mounts need root")
    pkg = next(a for a in apks if a.arch == "x86_64")
    with overlay(python_root(), tmp_path / "ovl") as root:
        with pkg.tar() as data:
            data.extractall(root, filter="tar")
        lib = root / "usr/lib/titik"
        substitute_pydantic_core(lib / "vendor", "3.13")
        work = root / "opt/split"
        work.mkdir(parents=True)
        split = Split("openwrt-25.12")
        depends = [v for k, v in pkg.info if k == "depend"]
        closure = split.closure(depends)

        def inside(path: Path) -> str:
            return "/" + str(path.relative_to(root))

        feed = chroot_feed(split, closure, root, work / "feed")
        (work / "policy.txt").write_text(split.policy(depends, own_modules(lib), [inside(feed)]))
        key = Ed25519PrivateKey.generate()
        cfg = agent_config(work / "agent.toml", broker.port, key, work / "state", inside)
        subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)
        try:
            check_split(
                ["chroot", str(root), "/usr/bin/python3", "-I", "-S"],
                work,
                lib,
                root / "usr/bin/titik-agent",
                cfg,
                broker,
                key,
                inside,
            )
        finally:
            subprocess.run(["umount", str(root / "proc")], check=False)
        assert "splitrun: python 3.13," in (work / "agent.log").read_text()
