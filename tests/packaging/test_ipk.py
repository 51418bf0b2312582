"""The OpenWrt .ipk: container, control fields, conffiles, scripts and vendored wheels."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from agent import __version__
from tests.packaging.conftest import Ipk
from tests.packaging.pkgtools import unmet_needed
from tests.packaging.pysplit import Split

pytestmark = pytest.mark.slow  # the session builds every package first (~20 s)

# pydantic-core wheel machine and extension-module triple per OpenWrt arch family
MACHINES = {"x86_64": "x86_64", "aarch64": "aarch64", "arm": "armv7l"}
TRIPLES = {
    "x86_64": "x86_64-linux-musl",
    "aarch64": "aarch64-linux-musl",
    "arm": "arm-linux-musleabihf",
}
DEPENDS = {
    "libc",
    "python3-codecs",
    "python3-light",
    "python3-psutil",
    "python3-openssl",
    "python3-logging",
    "python3-uuid",
    "python3-urllib",
    "python3-decimal",
    "python3-email",
    "python3-cryptography",
}
SHELL_SCRIPTS_IN_DATA = [
    "./etc/init.d/titik",
    "./etc/hotplug.d/iface/90-titik",
    "./usr/libexec/titik-uci2toml",
]


def control_fields(ipk: Ipk) -> dict[str, str]:
    text = ipk.read("./control.tar.gz", "./control").decode()
    return dict(re.findall(r"(?m)^([A-Za-z-]+): (.*)$", text))


def family(arch: str) -> str:
    return "x86_64" if arch == "x86_64" else arch.split("_", 1)[0]


def test_outer_archive_is_a_gzip_tar_of_the_three_members(ipks: list[Ipk]) -> None:
    for ipk in ipks:
        assert ipk.path.read_bytes()[:2] == b"\x1f\x8b", f"{ipk.path.name} is not gzip"
        assert sorted(ipk.members) == ["./control.tar.gz", "./data.tar.gz", "./debian-binary"]
        assert ipk.members["./debian-binary"] == b"2.0\n"


def test_control_fields(ipks: list[Ipk]) -> None:
    for ipk in ipks:
        fields = control_fields(ipk)
        assert fields["Package"] == "titik-agent"
        assert fields["Version"] == f"{__version__}-1"
        assert fields["Architecture"] == ipk.arch
        assert set(fields["Depends"].split(", ")) == DEPENDS
        # each a package of 24.10's split (packaging/openwrt/python3-split/openwrt-24.10.toml)
        assert set(Split("openwrt-24.10").packages) >= DEPENDS
        with ipk.tar("./data.tar.gz") as data:
            size = sum(m.size for m in data if m.isfile())
        # OpenWrt counts bytes (ipkg-build), not KiB as Debian does.
        assert int(fields["Installed-Size"]) == size


def test_arches_are_openwrt_names_and_mips_is_absent(ipks: list[Ipk]) -> None:
    arches = {ipk.arch for ipk in ipks}
    assert {"x86_64", "aarch64_cortex-a53", "aarch64_generic", "arm_cortex-a7_neon-vfpv4"} <= arches
    assert not [a for a in arches if a.startswith("mips")]


def test_conffiles_are_listed(ipks: list[Ipk]) -> None:
    for ipk in ipks:
        conffiles = ipk.read("./control.tar.gz", "./conffiles").decode().split()
        assert conffiles == ["/etc/config/titik"]
        with ipk.tar("./data.tar.gz") as data:
            names = data.getnames()
        for path in conffiles:
            assert "." + path in names


def test_data_layout(ipks: list[Ipk]) -> None:
    ipk = ipks[0]
    with ipk.tar("./data.tar.gz") as data:
        names = set(data.getnames())
        modes = {m.name: m.mode for m in data}
    for path in (
        "./usr/bin/titik-agent",
        "./etc/init.d/titik",
        "./lib/upgrade/keep.d/titik",
        "./usr/lib/titik/agent/cli.py",
        "./usr/lib/titik/firmware_hooks/openwrt/wifi",
        "./usr/lib/titik/vendor/pydantic/pydantic/__init__.py",
    ):
        assert path in names, path
    assert not [n for n in names if "site-packages" in n or "__pycache__" in n]
    for exe in (
        "./usr/bin/titik-agent",
        "./etc/init.d/titik",
        "./usr/lib/titik/firmware_hooks/openwrt/wifi",
    ):
        assert modes[exe] & 0o111, f"{exe} is not executable"
    keep = ipk.read("./data.tar.gz", "./lib/upgrade/keep.d/titik").decode().split()
    assert "/etc/config/titik" in keep
    assert "/etc/titik/" in keep  # state, buffer and keys live under /etc/titik


def test_scripts_pass_shellcheck_and_busybox(ipks: list[Ipk], tmp_path: Path) -> None:
    ipk = ipks[0]
    scripts = []
    for member, names in (
        ("./control.tar.gz", ["./postinst", "./prerm", "./postrm"]),
        ("./data.tar.gz", SHELL_SCRIPTS_IN_DATA),
    ):
        for name in names:
            dest = tmp_path / name.rsplit("/", 1)[1]
            dest.write_bytes(ipk.read(member, name))
            scripts.append(dest)
    for script in scripts:
        assert script.read_text().startswith("#!/bin/sh"), script.name
        res = subprocess.run(
            ["shellcheck", "-s", "sh", str(script)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, f"{script.name}:\n{res.stdout}"
        res = subprocess.run(
            ["busybox", "sh", "-n", str(script)], capture_output=True, text=True, check=False
        )
        assert res.returncode == 0, f"{script.name}: {res.stderr}"


def test_vendored_wheels_match_the_arch(ipks: list[Ipk]) -> None:
    for ipk in ipks:
        fam = family(ipk.arch)
        with ipk.tar("./data.tar.gz") as data:
            names = data.getnames()
            wheels = {
                n: data.extractfile(n).read().decode()  # type: ignore[union-attr]
                for n in names
                if n.endswith(".dist-info/WHEEL")
            }
        tags = [t for text in wheels.values() for t in re.findall(r"(?m)^Tag: (.*)$", text)]
        binary = [t for t in tags if t != "py3-none-any"]
        assert binary, f"{ipk.path.name}: no binary wheel vendored"
        for tag in binary:
            assert tag.startswith("cp311-cp311-musllinux_"), tag  # OpenWrt 24.10: Python 3.11, musl
            assert tag.endswith("_" + MACHINES[fam]), f"{ipk.arch}: {tag}"
        sos = [n for n in names if n.endswith(".so")]
        assert sos
        assert all(TRIPLES[fam] in n for n in sos), sos


def test_native_libraries_are_shipped_or_in_the_depends(ipks: list[Ipk]) -> None:
    """readelf -d: the musllinux extension NEEDs its bundled libgcc_s and musl's libc.so."""
    split = Split("openwrt-24.10")
    provided = {lib: name for name, pkg in split.packages.items() for lib in pkg.get("libs", [])}  # type: ignore[attr-defined]
    assert provided["libc.so"] == "libc"
    for ipk in ipks:
        depends = [d.strip() for d in control_fields(ipk)["Depends"].split(",")]
        with ipk.tar("./data.tar.gz") as data:
            assert unmet_needed(data, depends, provided, split.closure(depends)) == [], ipk.arch
