"""The OpenWrt 25.12 .apk: its format and fields, apk add/upgrade/del, and the facts about apk-tools.

apk-tools 3 is in no package registry this machine reaches, so these tests use a stand-in,
tests/packaging/standins/apk.py, which does what the real one was read and seen to do (its
docstring names the sources). The fact tests check the stand-in with hand-made packages; the
others add, upgrade and delete the real .apk with it, its scripts chrooted into an OpenWrt-like
root under busybox sh and under dash (tests/packaging/roots.py), /etc/rc.common being a stand-in
(procd is not here: enable/disable are real, start/stop are logged).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import __version__
from tests.packaging.conftest import Apk, Ipk
from tests.packaging.pkgtools import make_apk, make_ipk, reversion_apk, standin, unmet_needed
from tests.packaging.pysplit import Split
from tests.packaging.roots import OPENWRT_DIRS, openwrt_root, snapshot

pytestmark = pytest.mark.slow

SHELLS = ["busybox sh", "dash"]
TRIPLES = {
    "x86_64": "x86_64-linux-musl",
    "aarch64": "aarch64-linux-musl",
    "arm": "arm-linux-musleabihf",
}
MACHINES = {"x86_64": "x86_64", "aarch64": "aarch64", "arm": "armv7l"}
RECORD = """#!/bin/sh
echo "{kind} $* PKG_UPGRADE=${{PKG_UPGRADE:-unset}}" >>/scripts.log
"""


def apk(*args: str) -> subprocess.CompletedProcess[str]:
    return standin("apk", *args)


def ok(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode == 0, (
        f"apk (stand-in) exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    )
    return res.stderr


def family(arch: str) -> str:
    return "x86_64" if arch == "x86_64" else arch.split("_", 1)[0]


# ---- the package itself -------------------------------------------------------------------


def test_apk_is_alpine_v2_with_openwrt_fields(apks: list[Apk], ipks: list[Ipk]) -> None:
    assert {a.arch for a in apks} == {i.arch for i in ipks}  # the same CPU flavours as 24.10
    split = Split("openwrt-25.12")
    for pkg in apks:
        info = dict(pkg.info)
        assert info["pkgname"] == "titik-agent"
        assert info["pkgver"] == f"{__version__}-r1"
        assert info["arch"] == pkg.arch
        depends = [v for k, v in pkg.info if k == "depend"]
        # 25.12's names, each a package of the 25.12 split (or the C library)
        assert set(depends) <= set(split.packages), set(depends) - set(split.packages)
        assert {
            "python3-light",
            "python3-codecs",
            "python3-psutil",
            "python3-cryptography",
            "libc",
        } <= set(depends)
        with pkg.tar() as data:
            size = sum(m.size for m in data if m.isfile())
        assert int(info["size"]) == size  # bytes
        assert not any(n.startswith(".SIGN.") for n in pkg.control)  # unsigned: --allow-untrusted


def test_apk_scripts_are_the_openwrt_scripts(apks: list[Apk]) -> None:
    root = Path(__file__).resolve().parents[2] / "packaging" / "openwrt"
    postinst = (root / "postinst").read_bytes()
    for pkg in apks:
        assert pkg.control[".post-install"] == postinst
        assert pkg.control[".pre-deinstall"] == (root / "prerm").read_bytes()
        assert pkg.control[".post-deinstall"] == (root / "postrm").read_bytes()
        # as OpenWrt's include/package-pack.mk writes post-upgrade: PKG_UPGRADE=1, then post-install
        upgrade = pkg.control[".post-upgrade"].decode()
        assert upgrade.splitlines()[:2] == ["#!/bin/sh", "export PKG_UPGRADE=1"]
        assert upgrade.replace("export PKG_UPGRADE=1\n", "", 1).encode() == postinst
        assert ".pre-install" not in pkg.control and ".pre-upgrade" not in pkg.control


def test_apk_vendors_the_cp313_musllinux_wheel(apks: list[Apk]) -> None:
    for pkg in apks:
        fam = family(pkg.arch)
        with pkg.tar() as data:
            names = data.getnames()
            tags = [
                t
                for n in names
                if n.endswith(".dist-info/WHEEL")
                for t in re.findall(r"(?m)^Tag: (.*)$", data.extractfile(n).read().decode())  # type: ignore[union-attr]
            ]
        binary = [t for t in tags if t != "py3-none-any"]
        assert binary and all(t.startswith("cp313-cp313-musllinux_") for t in binary), binary
        assert all(t.endswith("_" + MACHINES[fam]) for t in binary), binary
        sos = [n for n in names if n.endswith(".so")]
        assert sos and all(f"cpython-313-{TRIPLES[fam]}" in n for n in sos), sos
        assert not [n for n in names if "site-packages" in n or "__pycache__" in n]


def test_native_libraries_are_shipped_or_in_the_depends(apks: list[Apk]) -> None:
    split = Split("openwrt-25.12")
    provided = {lib: name for name, pkg in split.packages.items() for lib in pkg.get("libs", [])}  # type: ignore[attr-defined]
    for pkg in apks:
        depends = [v for k, v in pkg.info if k == "depend"]
        with pkg.tar() as data:
            assert unmet_needed(data, depends, provided, split.closure(depends)) == [], pkg.arch


# ---- facts about apk-tools 3, checked against the stand-in --------------------------------


def test_fact_an_ipk_is_refused_with_v2_package_format_error(tmp_path: Path) -> None:
    ipk = make_ipk(tmp_path / "a.ipk", "a", "1", {"/usr/share/a": b"a"})
    res = apk("--root", str(tmp_path / "root"), "--initdb", "--allow-untrusted", "add", str(ipk))
    assert res.returncode != 0
    assert f"ERROR: {ipk}: v2 package format error" in res.stderr


def test_fact_an_unsigned_package_needs_allow_untrusted(tmp_path: Path) -> None:
    pkg = make_apk(tmp_path / "a.apk", "a", "1-r1", {"usr/share/a": b"a"})
    root = tmp_path / "root"
    res = apk("--root", str(root), "--initdb", "add", str(pkg))
    assert res.returncode != 0
    assert "UNTRUSTED signature" in res.stderr
    ok(apk("--root", str(root), "--initdb", "--allow-untrusted", "--no-network", "add", str(pkg)))
    assert (root / "usr/share/a").read_bytes() == b"a"


def test_fact_missing_dependencies_are_unable_to_select(tmp_path: Path) -> None:
    pkg = make_apk(
        tmp_path / "a.apk", "a", "1-r1", {"usr/share/a": b"a"}, depends=("python3-light",)
    )
    res = apk("--root", str(tmp_path / "root"), "--initdb", "--allow-untrusted", "add", str(pkg))
    assert res.returncode != 0
    assert "unable to select packages:" in res.stderr
    assert "python3-light (no such package):" in res.stderr
    assert "required by: a-1-r1[python3-light]" in res.stderr


@pytest.fixture
def bare(tmp_path: Path) -> Iterator[Path]:
    """An OpenWrt-like root (dash) with an empty apk database, for the fact tests."""
    with openwrt_root(tmp_path, "dash") as root:
        ok(apk("--root", str(root), "--initdb", "--allow-untrusted", "del", "nothing"))
        yield root


def test_fact_scripts_run_in_apks_order_with_versions_as_arguments(
    bare: Path, tmp_path: Path
) -> None:
    kinds = [
        "pre-install",
        "post-install",
        "pre-upgrade",
        "post-upgrade",
        "pre-deinstall",
        "post-deinstall",
    ]
    scripts = {k: RECORD.format(kind=k) for k in kinds}
    v1 = make_apk(tmp_path / "a1.apk", "a", "1-r1", {"usr/share/a": b"1"}, scripts=scripts)
    v2 = make_apk(tmp_path / "a2.apk", "a", "2-r1", {"usr/share/a": b"2"}, scripts=scripts)
    for pkg in (v1, v2):
        ok(apk("--root", str(bare), "--allow-untrusted", "add", str(pkg)))
    ok(apk("--root", str(bare), "del", "a"))
    assert (bare / "scripts.log").read_text().splitlines() == [
        "pre-install 1-r1 PKG_UPGRADE=unset",
        "post-install 1-r1 PKG_UPGRADE=unset",
        "pre-upgrade 2-r1 1-r1 PKG_UPGRADE=unset",  # no deinstall scripts on an upgrade
        "post-upgrade 2-r1 1-r1 PKG_UPGRADE=unset",
        "pre-deinstall 2-r1 PKG_UPGRADE=unset",
        "post-deinstall 2-r1 PKG_UPGRADE=unset",
    ]


def test_fact_a_changed_protected_file_is_kept_and_the_new_one_written_as_apk_new(
    bare: Path, tmp_path: Path
) -> None:
    v1 = make_apk(tmp_path / "a1.apk", "a", "1-r1", {"etc/config/a": b"v1\n", "usr/share/a": b"1"})
    v2 = make_apk(tmp_path / "a2.apk", "a", "2-r1", {"etc/config/a": b"v2\n", "usr/share/a": b"2"})
    v3 = make_apk(tmp_path / "a3.apk", "a", "3-r1", {"etc/config/a": b"v3\n", "usr/share/a": b"3"})
    ok(apk("--root", str(bare), "--allow-untrusted", "add", str(v1)))
    ok(apk("--root", str(bare), "--allow-untrusted", "add", str(v2)))  # unchanged: replaced
    assert (bare / "etc/config/a").read_bytes() == b"v2\n"
    (bare / "etc/config/a").write_bytes(b"edited\n")
    (bare / "usr/share/a").write_bytes(b"edited too\n")  # not protected: replaced anyway
    ok(apk("--root", str(bare), "--allow-untrusted", "add", str(v3)))
    assert (bare / "etc/config/a").read_bytes() == b"edited\n"
    assert (bare / "etc/config/a.apk-new").read_bytes() == b"v3\n"
    assert (bare / "usr/share/a").read_bytes() == b"3"
    ok(apk("--root", str(bare), "del", "a"))
    assert (bare / "etc/config/a").read_bytes() == b"edited\n"  # kept by del too
    assert not (bare / "etc/config/a.apk-new").exists()


def test_fact_del_removes_the_directories_it_created_when_empty(bare: Path, tmp_path: Path) -> None:
    files = {"usr/lib/a/x/y/f.py": b"f", "usr/lib/a/keep/g": b"g"}
    ok(
        apk(
            "--root",
            str(bare),
            "--allow-untrusted",
            "add",
            str(make_apk(tmp_path / "a.apk", "a", "1-r1", files)),
        )
    )
    (bare / "usr/lib/a/keep/mine").write_text("not the package's")
    ok(apk("--root", str(bare), "del", "a"))
    assert not (bare / "usr/lib/a/x").exists()
    assert (bare / "usr/lib/a/keep/mine").exists()  # rmdir of a non-empty directory fails quietly


# ---- the real .apk, its scripts under busybox sh and dash ---------------------------------


@pytest.fixture
def device(request: pytest.FixtureRequest, tmp_path: Path, apks: list[Apk]) -> Iterator[Path]:
    """An OpenWrt-like live root with an apk database holding the .apk's Depends closure and
    base-files owning the directories it ships (as on a device)."""
    shell: str = request.param
    pkg = next(a for a in apks if a.arch == "x86_64")
    closure = Split("openwrt-25.12").closure(v for k, v in pkg.info if k == "depend")
    with openwrt_root(tmp_path, shell) as root:
        ok(apk("--root", str(root), "--initdb", "del", "nothing"))
        from tests.packaging.standins.apk import Apk as ApkTool

        tool = ApkTool(root)
        parents = {
            str(Path(d).parents[i]) for d in OPENWRT_DIRS for i in range(len(Path(d).parts) - 1)
        }
        tool.seed(
            "base-files",
            "1",
            sorted(set(OPENWRT_DIRS) | parents | {"etc", "usr/lib", "lib", "var"}),
        )
        for name in sorted(closure):
            tool.seed(name, "1", [])
        yield root


def the_apk(apks: list[Apk]) -> Path:
    return next(a for a in apks if a.arch == "x86_64").path


def rc_log(root: Path) -> list[str]:
    log = root / "var/log/rc.common.log"
    return log.read_text().splitlines() if log.exists() else []


IGNORE = ("lib/apk", "var/log/rc.common.log", "var/cache", "tmp", "root/.cache")


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_add_enables_starts_and_byte_compiles(device: Path, apks: list[Apk]) -> None:
    ok(apk("--root", str(device), "--allow-untrusted", "--no-network", "add", str(the_apk(apks))))
    assert os.readlink(device / "etc/rc.d/S95titik") == "../init.d/titik"
    assert rc_log(device) == ["start titik"]
    assert list((device / "usr/lib/titik/agent").glob("__pycache__/cli.cpython-313.pyc"))


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_upgrade_keeps_the_conffile_and_an_admins_disable(
    device: Path, apks: list[Apk], tmp_path: Path
) -> None:
    v2 = reversion_apk(
        the_apk(apks), tmp_path / "v2.apk", f"{__version__}-r2", {"etc/config/titik": b"# new\n"}
    )
    ok(apk("--root", str(device), "--allow-untrusted", "add", str(the_apk(apks))))
    subprocess.run(["chroot", str(device), "/etc/init.d/titik", "disable"], check=True)
    (device / "etc/config/titik").write_text(
        "config mqtt 'mqtt'\n\toption host 'edited.example.net'\n"
    )
    ok(apk("--root", str(device), "--allow-untrusted", "add", str(v2)))
    assert "edited.example.net" in (device / "etc/config/titik").read_text()
    assert (device / "etc/config/titik.apk-new").read_text() == "# new\n"
    assert not list((device / "etc/rc.d").glob("*titik")), (
        "the upgrade re-enabled a disabled service"
    )
    assert rc_log(device) == ["start titik", "restart titik"]


@pytest.mark.parametrize("device", SHELLS, indirect=True)
def test_del_leaves_nothing_behind(device: Path, apks: list[Apk]) -> None:
    before = snapshot(device, IGNORE)
    ok(apk("--root", str(device), "--allow-untrusted", "add", str(the_apk(apks))))
    (device / "var/etc/titik").mkdir()
    ok(apk("--root", str(device), "del", "titik-agent"))
    assert rc_log(device)[-1] == "stop titik"
    assert not list((device / "etc/rc.d").glob("*titik"))
    assert sorted(snapshot(device, IGNORE) - before) == []
