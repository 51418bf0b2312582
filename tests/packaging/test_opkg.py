"""opkg install, upgrade and remove of the .ipk, and the facts about opkg the stand-in models.

opkg (opkg-lede) is in no package registry this machine reaches, so these tests use a stand-in,
tests/packaging/standins/opkg.py, which does what the real one was read and seen to do (its
docstring names the sources). The first group of tests checks the stand-in against those facts
with hand-made packages, one fact per test. The second installs, upgrades and removes the real
.ipk with it: the package's own maintainer scripts run under busybox sh and under dash, chrooted
into a root that looks like OpenWrt where the package touches it (tests/packaging/roots.py), with
a stand-in /etc/rc.common (procd is not here: enable/disable are real, start/stop are logged).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.packaging.conftest import Ipk
from tests.packaging.pkgtools import make_ipk, reversion_ipk, standin
from tests.packaging.pysplit import Split
from tests.packaging.roots import openwrt_root, snapshot

pytestmark = pytest.mark.slow

SHELLS = ["busybox sh", "dash"]
RECORD = """#!/bin/sh
echo "$(basename "$0") $* PKG_UPGRADE=$PKG_UPGRADE PKG_ROOT=$PKG_ROOT" >>"${IPKG_INSTROOT}/scripts.log"
"""
SCRIPTS = {s: RECORD for s in ("preinst", "postinst", "prerm", "postrm")}


def status_with(root: Path, *names: str) -> None:
    """Mark packages as installed in ROOT/usr/lib/opkg/status, as a device's base packages are."""
    status = root / "usr/lib/opkg/status"
    status.parent.mkdir(parents=True, exist_ok=True)
    status.write_text(
        "".join(
            f"Package: {n}\nVersion: 1\nStatus: install user installed\nArchitecture: all\n\n"
            for n in names
        )
    )


def opkg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return standin("opkg", *args, env=env)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (
        f"opkg (stand-in) exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    )
    return res.stderr


# ---- facts about opkg-lede, checked against the stand-in -----------------------------------


def test_fact_an_ar_archive_is_refused(tmp_path: Path) -> None:
    """opkg-lede reads an .ipk as a gzip tar only (ar support dropped in dd4c78a)."""
    bad = tmp_path / "x.ipk"
    bad.write_bytes(b"!<arch>\ndebian-binary   0           0     0     100644  4         `\n2.0\n")
    res = opkg("--offline-root", str(tmp_path), "install", str(bad))
    assert res.returncode != 0
    assert "Malformed package file" in res.stderr


def test_fact_dependencies_resolve_against_the_roots_status(tmp_path: Path) -> None:
    root = tmp_path / "root"
    status_with(root, "libc")
    pkg = make_ipk(
        tmp_path / "a.ipk", "a", "1", {"/usr/share/a": b"a"}, depends="libc, python3-light"
    )
    res = opkg("--offline-root", str(root), "install", str(pkg))
    assert res.returncode != 0
    assert "Cannot satisfy the following dependencies for a:" in res.stderr
    assert "python3-light" in res.stderr
    assert not (root / "usr/share/a").exists()
    status_with(root, "libc", "python3-light")
    ok(opkg("--offline-root", str(root), "install", str(pkg)))
    assert (root / "usr/share/a").read_bytes() == b"a"


def test_fact_offline_root_runs_scripts_only_with_force_postinstall(tmp_path: Path) -> None:
    root = tmp_path / "root"
    status_with(root)
    pkg = make_ipk(tmp_path / "a.ipk", "a", "1", {"/usr/share/a": b"a"}, scripts=SCRIPTS)
    err = ok(opkg("--offline-root", str(root), "-V2", "install", str(pkg)))
    assert "Offline root mode: not running a.preinst." in err
    assert "Offline root mode: not running a.postinst." in err
    assert not (root / "scripts.log").exists()
    ok(opkg("--offline-root", str(root), "remove", "a"))
    env = {**os.environ, "IPKG_INSTROOT": str(root)}
    ok(opkg("--offline-root", str(root), "--force-postinstall", "install", str(pkg), env=env))
    log = (root / "scripts.log").read_text().splitlines()
    assert log[0].startswith("preinst install PKG_UPGRADE=0")
    assert log[1] == f"a.postinst configure PKG_UPGRADE=0 PKG_ROOT={root}/"


def test_fact_pkg_upgrade_is_exported_to_every_script_of_an_upgrade(tmp_path: Path) -> None:
    root = tmp_path / "root"
    status_with(root)
    env = {**os.environ, "IPKG_INSTROOT": str(root)}
    force = ("--offline-root", str(root), "--force-postinstall")
    v1 = make_ipk(tmp_path / "a1.ipk", "a", "1", {"/usr/share/a": b"1"}, scripts=SCRIPTS)
    v2 = make_ipk(tmp_path / "a2.ipk", "a", "2", {"/usr/share/a": b"2"}, scripts=SCRIPTS)
    ok(opkg(*force, "install", str(v1), env=env))
    (root / "scripts.log").unlink()
    ok(opkg(*force, "install", str(v2), env=env))
    assert [
        line.split(" PKG_ROOT")[0] for line in (root / "scripts.log").read_text().splitlines()
    ] == [
        "a.prerm upgrade 2 PKG_UPGRADE=1",
        "preinst upgrade 1 PKG_UPGRADE=1",
        "a.postrm upgrade 2 PKG_UPGRADE=1",
        "a.postinst configure PKG_UPGRADE=1",
    ]
    (root / "scripts.log").unlink()
    ok(opkg(*force, "remove", "a", env=env))
    assert [
        line.split(" PKG_ROOT")[0] for line in (root / "scripts.log").read_text().splitlines()
    ] == [
        "a.prerm remove PKG_UPGRADE=0",
        "a.postrm remove PKG_UPGRADE=0",
    ]


def test_fact_installed_size_is_read_as_bytes(tmp_path: Path) -> None:
    """(size + 1023) / 1024 kB must be below the free space, so a KiB figure would under-count."""
    if os.geteuid() != 0:
        pytest.skip("needs a small tmpfs (root)")
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        status_with(root)
        big = make_ipk(
            tmp_path / "big.ipk", "big", "1", {"/f": b"x"}, installed_size=3 * 1024 * 1024
        )
        res = opkg("--offline-root", str(root), "install", str(big))
        assert res.returncode != 0
        assert "Only have" in res.stderr and "pkg big needs 3072" in res.stderr
        # The same figure read as KiB (3145728 bytes = 3 GiB) would be refused too; 1500 bytes fit.
        small = make_ipk(tmp_path / "small.ipk", "small", "1", {"/f": b"x"}, installed_size=1500)
        ok(opkg("--offline-root", str(root), "install", str(small)))
    finally:
        subprocess.run(["umount", str(root)], check=False)


def test_fact_a_changed_conffile_is_kept_and_the_new_one_written_as_opkg(tmp_path: Path) -> None:
    root = tmp_path / "root"
    status_with(root)
    conf = {"conffiles": ("/etc/config/a",)}
    v1 = make_ipk(tmp_path / "a1.ipk", "a", "1", {"/etc/config/a": b"v1\n"}, **conf)  # type: ignore[arg-type]
    v2 = make_ipk(tmp_path / "a2.ipk", "a", "2", {"/etc/config/a": b"v2\n"}, **conf)  # type: ignore[arg-type]
    v3 = make_ipk(tmp_path / "a3.ipk", "a", "3", {"/etc/config/a": b"v3\n"}, **conf)  # type: ignore[arg-type]
    ok(opkg("--offline-root", str(root), "install", str(v1)))
    ok(opkg("--offline-root", str(root), "install", str(v2)))  # unchanged: replaced silently
    assert (root / "etc/config/a").read_bytes() == b"v2\n"
    assert not (root / "etc/config/a-opkg").exists()
    (root / "etc/config/a").write_bytes(b"edited by the admin\n")
    err = ok(opkg("--offline-root", str(root), "install", str(v3)))
    assert "is different from the conffile in the new package" in err
    assert (root / "etc/config/a").read_bytes() == b"edited by the admin\n"
    assert (root / "etc/config/a-opkg").read_bytes() == b"v3\n"


def test_fact_remove_deletes_files_but_not_directories_and_keeps_a_changed_conffile(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    status_with(root)
    files = {"/usr/lib/a/x/y/f.py": b"f", "/etc/config/a": b"conf\n", "/etc/config/b": b"b\n"}
    pkg = make_ipk(
        tmp_path / "a.ipk", "a", "1", files, conffiles=("/etc/config/a", "/etc/config/b")
    )
    ok(opkg("--offline-root", str(root), "install", str(pkg)))
    (root / "etc/config/a").write_bytes(b"edited\n")
    err = ok(opkg("--offline-root", str(root), "remove", "a"))
    assert f"Not deleting modified conffile {root}/etc/config/a." in err
    assert (root / "etc/config/a").read_bytes() == b"edited\n"
    assert not (root / "etc/config/b").exists()
    assert not (root / "usr/lib/a/x/y/f.py").exists()
    assert (root / "usr/lib/a/x/y").is_dir()  # opkg's file list has no directories
    assert not (root / "usr/lib/opkg/info/a.list").exists()


# ---- the real .ipk, its scripts under busybox sh and dash ---------------------------------


@pytest.fixture
def device(request: pytest.FixtureRequest, tmp_path: Path, ipks: list[Ipk]) -> Iterator[Path]:
    """An OpenWrt-like live root whose opkg status has the .ipk's Depends closure installed."""
    shell: str = request.param
    ipk = next(i for i in ipks if i.arch == "x86_64")
    control = ipk.read("./control.tar.gz", "./control").decode()
    depends = next(line for line in control.splitlines() if line.startswith("Depends:"))
    closure = Split("openwrt-24.10").closure(d.strip() for d in depends[8:].split(","))
    with openwrt_root(tmp_path, shell) as root:
        status_with(root, *sorted(closure))
        yield root


def the_ipk(ipks: list[Ipk]) -> Path:
    return next(i for i in ipks if i.arch == "x86_64").path


def rc_log(root: Path) -> list[str]:
    log = root / "var/log/rc.common.log"
    return log.read_text().splitlines() if log.exists() else []


def in_root(root: Path, cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["chroot", str(root), "sh", "-c", cmd], capture_output=True, text=True, check=False
    )


IGNORE = ("usr/lib/opkg", "var/log/rc.common.log", "var/cache", "tmp", "root/.cache")


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_install_enables_starts_and_byte_compiles(device: Path, ipks: list[Ipk]) -> None:
    ok(opkg("--live-root", str(device), "install", str(the_ipk(ipks))))
    assert os.readlink(device / "etc/rc.d/S95titik") == "../init.d/titik"
    assert os.readlink(device / "etc/rc.d/K10titik") == "../init.d/titik"
    assert rc_log(device) == ["start titik"]
    assert (device / "etc/titik/state").is_dir()
    assert list((device / "usr/lib/titik/agent").glob("__pycache__/cli.cpython-*.pyc"))
    assert in_root(device, "/etc/init.d/titik enabled").returncode == 0


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_upgrade_keeps_the_conffile_and_an_admins_disable(
    device: Path, ipks: list[Ipk], tmp_path: Path
) -> None:
    v1 = the_ipk(ipks)
    v2 = reversion_ipk(
        v1, tmp_path / "v2.ipk", "0.1.0-2", {"/etc/config/titik": b"# the new default\n"}
    )
    ok(opkg("--live-root", str(device), "install", str(v1)))
    assert in_root(device, "/etc/init.d/titik disable").returncode == 0
    (device / "etc/config/titik").write_text(
        "config mqtt 'mqtt'\n\toption host 'edited.example.net'\n"
    )
    err = ok(opkg("--live-root", str(device), "install", str(v2)))
    assert "The new conffile will be placed at" in err
    assert "edited.example.net" in (device / "etc/config/titik").read_text()
    assert (device / "etc/config/titik-opkg").read_text() == "# the new default\n"
    assert not list((device / "etc/rc.d").glob("*titik")), (
        "the upgrade re-enabled a disabled service"
    )
    # the old prerm stopped it, the new postinst started it again (as default_postinst does)
    assert rc_log(device) == ["start titik", "stop titik", "restart titik"]


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_upgrade_of_an_enabled_service_keeps_it_enabled(
    device: Path, ipks: list[Ipk], tmp_path: Path
) -> None:
    v2 = reversion_ipk(the_ipk(ipks), tmp_path / "v2.ipk", "0.1.0-2")
    ok(opkg("--live-root", str(device), "install", str(the_ipk(ipks))))
    ok(opkg("--live-root", str(device), "install", str(v2)))
    assert (device / "etc/rc.d/S95titik").is_symlink()
    assert not (device / "etc/config/titik-opkg").exists()


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_upgrade_leaves_no_empty_directory_of_the_old_version(
    device: Path, ipks: list[Ipk], tmp_path: Path
) -> None:
    """opkg deletes the old version's files, not its directories; postinst prunes them."""
    gone = "/usr/lib/titik/firmware_hooks/simulated"
    v2 = reversion_ipk(the_ipk(ipks), tmp_path / "v2.ipk", "0.1.0-2", drop=gone)
    ok(opkg("--live-root", str(device), "install", str(the_ipk(ipks))))
    assert (device / gone.lstrip("/")).is_dir()
    ok(opkg("--live-root", str(device), "install", str(v2)))
    assert not (device / gone.lstrip("/")).exists()
    assert (device / "usr/lib/titik/firmware_hooks/openwrt").is_dir()


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_remove_leaves_nothing_behind(device: Path, ipks: list[Ipk]) -> None:
    before = snapshot(device, IGNORE)
    ok(opkg("--live-root", str(device), "install", str(the_ipk(ipks))))
    (device / "var/etc/titik").mkdir(parents=True)  # what the init script renders at start
    (device / "var/etc/titik/agent.toml").write_text("[mqtt]\n")
    ok(opkg("--live-root", str(device), "remove", "titik-agent"))
    assert rc_log(device)[-1] == "stop titik"
    assert sorted(snapshot(device, IGNORE) - before) == []


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_remove_keeps_a_changed_conffile_and_the_agents_state(
    device: Path, ipks: list[Ipk]
) -> None:
    before = snapshot(device, IGNORE)
    ok(opkg("--live-root", str(device), "install", str(the_ipk(ipks))))
    (device / "etc/config/titik").write_text("config mqtt 'mqtt'\n\toption host 'mine'\n")
    (device / "etc/titik/state/counters.json").write_text("{}")
    ok(opkg("--live-root", str(device), "remove", "titik-agent"))
    assert sorted(snapshot(device, IGNORE) - before) == [
        "etc/config/titik",
        "etc/titik",
        "etc/titik/state",
        "etc/titik/state/counters.json",
    ]


@pytest.mark.parametrize("shell", SHELLS)
def test_image_build_enables_without_running_anything(
    ipks: list[Ipk], tmp_path: Path, shell: str
) -> None:
    """OpenWrt's buildroot (include/rootfs.mk) installs with IPKG_NO_SCRIPT=1, then runs every
    postinst with IPKG_INSTROOT set; default_postinst enables the init scripts in the image."""
    with openwrt_root(tmp_path, shell) as root:
        status_with(
            root,
            *Split("openwrt-24.10").closure(
                ["python3", "python3-psutil", "python3-cryptography", "libc"]
            ),
        )
        env = {**os.environ, "IPKG_INSTROOT": str(root), "IPKG_NO_SCRIPT": "1"}
        args = ("--offline-root", str(root), "--force-postinstall", "install", str(the_ipk(ipks)))
        ok(opkg(*args, env=env))
        assert not list((root / "etc/rc.d").glob("*titik"))  # IPKG_NO_SCRIPT=1: nothing
        env.pop("IPKG_NO_SCRIPT")
        sh = ["busybox", "sh"] if shell == "busybox sh" else ["dash"]
        res = subprocess.run(
            [*sh, str(root / "usr/lib/opkg/info/titik-agent.postinst"), "configure"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert res.returncode == 0, res.stderr
        assert os.readlink(root / "etc/rc.d/S95titik") == "../init.d/titik"
        assert rc_log(root) == []  # nothing started in an image
        assert not list((root / "usr/lib/titik").rglob("__pycache__"))
        assert (root / "etc/titik/state").is_dir()
