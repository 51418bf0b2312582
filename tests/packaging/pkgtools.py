"""Small builders for the package-manager tests: hand-made .ipk/.apk files and re-versioned copies."""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import subprocess
import sys
import tarfile
from pathlib import Path

from tests.packaging.conftest import ROOT, gzip_members


def _tar(entries: dict[str, bytes | None], mode: int = 0o644, gz: bool = True) -> bytes:
    """A tar of entries (None = a directory); parent directories are added first."""
    buf = io.BytesIO()
    names: dict[str, bytes | None] = {}
    for name, body in entries.items():
        parts = name.strip("/").split("/")
        for i in range(1, len(parts)):
            names.setdefault("/".join(parts[:i]), None)
        names[name.strip("/")] = body
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tf:
        for name, body in names.items():
            info = tarfile.TarInfo("./" + name if gz else name)
            if body is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                info.size, info.mode = len(body), mode
                tf.addfile(info, io.BytesIO(body))
    return buf.getvalue()


def make_ipk(
    dest: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    depends: str = "",
    conffiles: tuple[str, ...] = (),
    scripts: dict[str, str] | None = None,
    installed_size: int | None = None,
) -> Path:
    size = installed_size if installed_size is not None else sum(map(len, files.values()))
    control = (
        f"Package: {name}\nVersion: {version}\nArchitecture: all\nInstalled-Size: {size}\n"
        + (f"Depends: {depends}\n" if depends else "")
        + "Description: test package\n"
    )
    ctl: dict[str, bytes | None] = {"control": control.encode()}
    if conffiles:
        ctl["conffiles"] = "".join(f"{c}\n" for c in conffiles).encode()
    for sname, body in (scripts or {}).items():
        ctl[sname] = body.encode()
    outer = {
        "debian-binary": b"2.0\n",
        "control.tar.gz": _tar(ctl, mode=0o755),
        "data.tar.gz": _tar({k: v for k, v in files.items()}),
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.GNU_FORMAT) as tf:
        for member, body in outer.items():
            info = tarfile.TarInfo("./" + member)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    dest.write_bytes(buf.getvalue())
    return dest


def reversion_ipk(
    src: Path,
    dest: Path,
    version: str,
    replace: dict[str, bytes] | None = None,
    drop: str | None = None,
) -> Path:
    """A copy of a built .ipk with another Version (some data files replaced, a subtree dropped)."""
    with tarfile.open(src, "r:gz") as outer:
        members = [(m, outer.extractfile(m).read()) for m in outer]  # type: ignore[union-attr]
    parts = {m.name: body for m, body in members}
    data_out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(parts["./data.tar.gz"]), mode="r:gz") as data,
        tarfile.open(fileobj=data_out, mode="w:gz", format=tarfile.GNU_FORMAT) as new,
    ):
        for m in data:
            if drop and m.name.removeprefix(".").startswith(drop):
                continue
            body = data.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.isfile() and replace and m.name.removeprefix(".") in replace:
                body = replace[m.name.removeprefix(".")]
                m.size = len(body)
            new.addfile(m, io.BytesIO(body) if body is not None else None)
    parts["./data.tar.gz"] = data_out.getvalue()
    ctl_out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(parts["./control.tar.gz"]), mode="r:gz") as ctl,
        tarfile.open(fileobj=ctl_out, mode="w:gz", format=tarfile.GNU_FORMAT) as new,
    ):
        for m in ctl:
            body = ctl.extractfile(m).read() if m.isfile() else b""  # type: ignore[union-attr]
            if m.name in ("./control", "control"):
                body = re.sub(rb"(?m)^Version: .*$", b"Version: " + version.encode(), body)
                m.size = len(body)
            new.addfile(m, io.BytesIO(body) if m.isfile() else None)
    parts["./control.tar.gz"] = ctl_out.getvalue()
    with tarfile.open(dest, "w:gz", format=tarfile.GNU_FORMAT) as out:
        for m, _ in members:
            m.size = len(parts[m.name])
            out.addfile(m, io.BytesIO(parts[m.name]))
    return dest


def make_apk(
    dest: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    depends: tuple[str, ...] = (),
    scripts: dict[str, str] | None = None,
) -> Path:
    """An unsigned Alpine-v2 .apk: gzip(control tar) + gzip(data tar), as nfpm writes one."""
    data = gzip.compress(_tar(files, gz=False))
    info = (
        f"pkgname = {name}\npkgver = {version}\narch = noarch\nsize = {sum(map(len, files.values()))}\n"
        + "".join(f"depend = {d}\n" for d in depends)
        + f"datahash = {hashlib.sha256(data).hexdigest()}\n"
    )
    ctl: dict[str, bytes | None] = {".PKGINFO": info.encode()}
    for kind, body in (scripts or {}).items():
        ctl["." + kind] = body.encode()
    control = _tar(ctl, mode=0o755, gz=False)
    dest.write_bytes(gzip.compress(control) + data)
    return dest


def reversion_apk(
    src: Path, dest: Path, version: str, replace: dict[str, bytes] | None = None
) -> Path:
    """A copy of a built .apk with another pkgver (and some data files replaced)."""
    members = gzip_members(src.read_bytes())
    *control_members, data = members
    if replace:
        out = io.BytesIO()
        with (
            tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf,
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as new,
        ):
            for m in tf:
                body = tf.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
                if m.isfile() and m.name in replace:
                    body = replace[m.name]
                    m.size = len(body)
                    m.pax_headers = {}
                new.addfile(m, io.BytesIO(body) if body is not None else None)
        data = out.getvalue()
    data_gz = gzip.compress(data)
    ctl_out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(control_members[-1]), mode="r:") as tf,
        tarfile.open(fileobj=ctl_out, mode="w", format=tarfile.PAX_FORMAT) as new,
    ):
        for m in tf:
            body = tf.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            if m.name == ".PKGINFO":
                text = body.decode()  # type: ignore[union-attr]
                text = re.sub(r"(?m)^pkgver = .*$", f"pkgver = {version}", text)
                text = re.sub(
                    r"(?m)^datahash = .*$",
                    f"datahash = {hashlib.sha256(data_gz).hexdigest()}",
                    text,
                )
                body = text.encode()
                m.size = len(body)
            new.addfile(m, io.BytesIO(body) if body is not None else None)
    dest.write_bytes(gzip.compress(ctl_out.getvalue()) + data_gz)
    return dest


def standin(
    tool: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run tests/packaging/standins/<tool>.py as a command, the way a person runs opkg or apk."""
    return subprocess.run(
        [sys.executable, "-m", f"tests.packaging.standins.{tool}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )


def unmet_needed(
    data: tarfile.TarFile, depends: list[str], provided: dict[str, str], closure: set[str]
) -> list[str]:
    """NEEDED entries of the package's ELF files that neither the package nor its Depends provide.

    A library is provided when the package ships it (auditwheel's pydantic_core.libs/) or when
    `provided` maps it to a package in the Depends closure (libc.so: OpenWrt's libc).
    """
    import tempfile

    shipped = {Path(m.name).name for m in data if m.isfile()}
    unmet = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in data:
            if not (m.isfile() and (m.name.endswith(".so") or ".so." in m.name)):
                continue
            path = Path(tmp) / Path(m.name).name
            path.write_bytes(data.extractfile(m).read())  # type: ignore[union-attr]
            out = subprocess.run(
                ["readelf", "-d", str(path)], capture_output=True, text=True, check=True
            ).stdout
            for lib in re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", out):
                if lib not in shipped and provided.get(lib) not in closure:
                    unmet.append(f"{m.name}: {lib}")
    return unmet
