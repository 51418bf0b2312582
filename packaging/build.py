"""Stage and build the titik-agent .deb, .ipk and .apk packages with nfpm (packaging/build).

Every package gets the agent, the firmware hooks and the vendored libraries under
/usr/lib/titik; only the pydantic-core wheel differs per architecture. nfpm.yaml is the one
description; this script fills in its ${TITIK_*} variables per target.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import re
import shutil
import string
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGING = ROOT / "packaging"
CACHE = ROOT / "build" / "packaging"
RELEASE = "1"


@dataclass(frozen=True)
class Target:
    fmt: str  # "deb", "ipk" (OpenWrt 24.10) or "apk" (OpenWrt 25.12)
    arch: str  # the distribution's architecture name
    wheel_platforms: tuple[str, ...]  # pip --platform tags for pydantic-core
    pythons: tuple[str, ...]  # CPython versions the pydantic-core extension is built for


# Debian 12 has Python 3.11, Debian 13 has 3.13: one .deb carries both extensions.
# Raspberry Pi OS armhf targets ARMv6 too; the armv7l wheel needs ARMv7 (Pi 2 and later).
DEB = [
    Target("deb", "amd64", ("manylinux2014_x86_64",), ("3.11", "3.13")),
    Target("deb", "arm64", ("manylinux2014_aarch64",), ("3.11", "3.13")),
    Target("deb", "armhf", ("manylinux2014_armv7l",), ("3.11", "3.13")),
]
# OpenWrt 24.10 (Python 3.11, musl). opkg matches Architecture against the device's exact
# arch list, so each CPU flavour gets its own package; the payload is the same per wheel.
# armv7l musllinux wheels are hard-float (ld-musl-armhf), so only the *vfp* ARM arches.
IPK = [
    Target("ipk", "x86_64", ("musllinux_1_1_x86_64",), ("3.11",)),
    Target("ipk", "aarch64_generic", ("musllinux_1_1_aarch64",), ("3.11",)),
    Target("ipk", "aarch64_cortex-a53", ("musllinux_1_1_aarch64",), ("3.11",)),
    Target("ipk", "aarch64_cortex-a72", ("musllinux_1_1_aarch64",), ("3.11",)),
    Target("ipk", "arm_cortex-a7_neon-vfpv4", ("musllinux_1_1_armv7l",), ("3.11",)),
    Target("ipk", "arm_cortex-a9_vfpv3-d16", ("musllinux_1_1_armv7l",), ("3.11",)),
    Target("ipk", "arm_cortex-a15_neon-vfpv4", ("musllinux_1_1_armv7l",), ("3.11",)),
]
# OpenWrt 25.12 (Python 3.13, musl, apk-tools 3): the same CPU flavours, with the cp313 wheel.
# nfpm's apk packager writes Alpine's v2 format, which apk-tools 3 installs with --allow-untrusted.
APK = [Target("apk", t.arch, t.wheel_platforms, ("3.13",)) for t in IPK]
TARGETS = DEB + IPK + APK
FORMATS = ("deb", "ipk", "apk")


def version() -> str:
    text = (ROOT / "agent" / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.MULTILINE)
    if not match:
        raise SystemExit("packaging/build: no __version__ in agent/__init__.py")
    return match.group(1)


def vendor_spec() -> list[tuple[str, str]]:
    out = []
    for raw in (PACKAGING / "vendor.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            group, req = line.split()
            out.append((group, req))
    return out


def pip_download(req: str, dest: Path, platform: str | None, python: str) -> Path:
    """One wheel, cached in dest; pip is asked only when it is not there yet."""
    name, ver = req.split("==")
    stem = name.replace("-", "_")
    pytag = "cp" + python.replace(".", "")
    pattern = f"{stem}-{ver}-*.whl" if platform is None else f"{stem}-{ver}-{pytag}-*.whl"
    dest.mkdir(parents=True, exist_ok=True)
    found = [p for p in dest.glob(pattern) if platform is None or platform in p.name]
    if not found:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--disable-pip-version-check",
            "--only-binary=:all:",
            "--no-deps",
            "--python-version",
            python,
            "-d",
            str(dest),
        ]
        if platform:
            cmd += ["--platform", platform]
        res = subprocess.run([*cmd, req], capture_output=True, text=True, check=False)  # noqa: S603 - pinned requirement from vendor.txt
        if res.returncode != 0:
            raise SystemExit(f"packaging/build: pip download {req} failed:\n{res.stderr}")
        found = [p for p in dest.glob(pattern) if platform is None or platform in p.name]
    if len(found) != 1:
        raise SystemExit(f"packaging/build: expected one wheel for {req} {platform}, got {found}")
    return found[0]


def stage(target: Target, ver: str) -> Path:
    st = CACHE / "stage" / f"{target.fmt}-{target.arch}"
    shutil.rmtree(st, ignore_errors=True)
    lib = st / "lib"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    shutil.copytree(ROOT / "agent", lib / "agent", ignore=ignore)
    shutil.copytree(ROOT / "firmware_hooks", lib / "firmware_hooks", ignore=ignore)
    wheels = CACHE / "wheels"
    installed: list[str] = []
    for group, req in vendor_spec():
        dest = lib / "vendor" / group
        if req.startswith("pydantic-core=="):
            whls = [
                pip_download(req, wheels, plat, py)
                for plat in target.wheel_platforms
                for py in target.pythons
            ]
        else:
            whls = [pip_download(req, wheels, None, target.pythons[0])]
        for whl in whls:
            installed.append(f"{group}/{whl.name}")
            with zipfile.ZipFile(whl) as zf:
                zf.extractall(dest)  # noqa: S202 - pinned wheels; zipfile drops ".." and absolute names
    # What was unpacked where: the one record of both pydantic-core wheels of a .deb, whose
    # dist-info directories coincide.
    (lib / "vendor" / "wheels.txt").write_text("\n".join(installed) + "\n")
    # The extension modules of two Python versions share one pydantic_core directory.
    for rec in (lib / "vendor").glob("*/*.dist-info/RECORD"):
        rec.unlink()
    # The .apk's post-upgrade is the postinst with PKG_UPGRADE=1, as OpenWrt's buildroot writes
    # it (include/package-pack.mk); apk itself exports no PKG_UPGRADE.
    postinst = (PACKAGING / "openwrt" / "postinst").read_text()
    (st / "post-upgrade").write_text(postinst.replace("\n", "\nexport PKG_UPGRADE=1\n", 1))
    doc = st / "doc"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(copyright_text(lib / "vendor"))
    changelog = (
        f"titik-agent ({ver}-{RELEASE}) unstable; urgency=medium\n\n"
        "  * Package built by packaging/build; see the project's history for changes.\n\n"
        " -- Titik maintainers <titik@example.net>  Thu, 01 Jan 2026 00:00:00 +0000\n"
    )
    _gzip(doc / "changelog.Debian.gz", changelog.encode())
    _gzip(doc / "titik-agent.1.gz", (PACKAGING / "debian" / "titik-agent.1").read_bytes())
    return st


def _gzip(path: Path, data: bytes) -> None:
    # mtime 0 and no file name in the header, as dh_compress does (gzip -9n).
    with path.open("wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as fh:
        fh.write(data)


def copyright_text(vendor: Path) -> str:
    parts = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: titik\n"
        "Source: https://example.net/titik\n\n"
        "Files: *\nCopyright: 2026 Titik contributors\nLicense: Apache-2.0\n"
        " On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n"
    ]
    for meta in sorted(vendor.glob("*/*.dist-info/METADATA")):
        fields = dict(
            line.split(": ", 1)
            for line in meta.read_text().splitlines()
            if ": " in line
            and line.split(": ", 1)[0] in {"Name", "Version", "License-Expression", "License"}
        )
        lic = fields.get("License-Expression") or fields.get("License") or "see the dist-info"
        rel = meta.parent.relative_to(vendor.parent.parent)
        pkg_dir = rel.parts[0] + "/" + rel.parts[1]
        parts.append(
            f"\nFiles: usr/lib/titik/{pkg_dir}/{fields.get('Name', '?')}*\n"
            f"Copyright: the {fields.get('Name', '?')} authors\n"
            f"License: {lic.splitlines()[0]}\n"
            f" The licence text is in /usr/lib/titik/{pkg_dir}/{meta.parent.name}/.\n"
        )
    return "".join(parts)


def nfpm() -> str:
    exe = Path(sys.executable).parent / "nfpm"
    if exe.exists():
        return str(exe)
    found = shutil.which("nfpm")
    if not found:
        raise SystemExit("packaging/build: nfpm not found; run scripts/setup --dev")
    return found


def build(target: Target, ver: str, out: Path) -> Path:
    st = stage(target, ver)
    # nfpm expands variables in a few fields only (not in contents), so fill in all here.
    values = {
        "TITIK_VERSION": ver,
        "TITIK_RELEASE": RELEASE,
        "TITIK_ARCH": target.arch,
        "TITIK_IPK_ARCH": target.arch,
        "TITIK_STAGE": str(st.relative_to(ROOT)),
        # The OpenWrt files go into the .ipk and the .apk alike (a .deb skips both packagers).
        "TITIK_OPENWRT": "apk" if target.fmt == "apk" else "ipk",
    }
    config = st / "nfpm.yaml"
    config.write_text(string.Template((PACKAGING / "nfpm.yaml").read_text()).substitute(values))
    env = dict(os.environ)
    env.setdefault("SOURCE_DATE_EPOCH", _source_date())
    release = f"r{RELEASE}" if target.fmt == "apk" else RELEASE  # apk versions end in -rN
    dest = out / f"titik-agent_{ver}-{release}_{target.arch}.{target.fmt}"
    dest.unlink(missing_ok=True)
    subprocess.run(  # noqa: S603 - fixed argv
        [nfpm(), "package", "-f", str(config), "-p", target.fmt, "-t", str(dest)],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if target.fmt == "ipk":
        fix_ipk_installed_size(dest)
    return dest


def fix_ipk_installed_size(ipk: Path) -> None:
    """Rewrite Installed-Size in bytes, as OpenWrt's ipkg-build does and opkg reads it.

    nfpm writes KiB (the Debian unit); opkg's free-space check divides the field by 1024.
    Only that one line of ./control changes; the members and their order stay nfpm's.
    """
    with tarfile.open(ipk, "r:gz") as outer:
        members = [(m, outer.extractfile(m).read() if m.isfile() else b"") for m in outer]  # type: ignore[union-attr]
    parts = dict((m.name, data) for m, data in members)
    with tarfile.open(fileobj=io.BytesIO(parts["./data.tar.gz"]), mode="r:gz") as data_tar:
        size = sum(m.size for m in data_tar if m.isfile())
    control_out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(parts["./control.tar.gz"]), mode="r:gz") as ctl,
        tarfile.open(fileobj=control_out, mode="w:gz", format=tarfile.GNU_FORMAT) as new,
    ):
        for m in ctl:
            body = ctl.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name in ("./control", "control"):
                body = re.sub(rb"(?m)^Installed-Size: .*$", b"Installed-Size: %d" % size, body)
                m.size = len(body)
            new.addfile(m, io.BytesIO(body) if m.isfile() else None)
    parts["./control.tar.gz"] = control_out.getvalue()
    tmp = ipk.with_suffix(".tmp")
    with tarfile.open(tmp, "w:gz", format=tarfile.GNU_FORMAT) as out:
        for m, _ in members:
            body = parts[m.name]
            m.size = len(body)
            out.addfile(m, io.BytesIO(body))
    tmp.replace(ipk)


def _source_date() -> str:
    try:
        res = subprocess.run(
            ["git", "log", "-1", "--format=%ct"],  # noqa: S607 - git from PATH, optional
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return res.stdout.strip() or "0"
    except (OSError, subprocess.CalledProcessError):
        return "0"


def main() -> int:
    ap = argparse.ArgumentParser(prog="packaging/build", description=__doc__)
    ap.add_argument("--only", choices=FORMATS, help="build just one format")
    ap.add_argument("--arch", action="append", help="build just this architecture (repeatable)")
    ap.add_argument("--out", type=Path, default=ROOT / "dist", help="output directory (dist/)")
    args = ap.parse_args()
    ver = version()
    args.out.mkdir(parents=True, exist_ok=True)
    chosen = [
        t
        for t in TARGETS
        if (args.only in (None, t.fmt)) and (not args.arch or t.arch in args.arch)
    ]
    if not chosen:
        raise SystemExit("packaging/build: no target matches")
    for target in chosen:
        print(build(target, ver, args.out.resolve()).relative_to(args.out.resolve().parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
