"""Build every package once per test session (packaging/build into a temp dist/)."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Ipk:
    path: Path
    members: dict[str, bytes]  # the outer tar's members: ./debian-binary, ...

    @property
    def arch(self) -> str:
        return self.path.name.removesuffix(".ipk").split("_", 2)[2]

    def tar(self, member: str) -> tarfile.TarFile:
        return tarfile.open(fileobj=io.BytesIO(self.members[member]), mode="r:gz")

    def read(self, member: str, name: str) -> bytes:
        with self.tar(member) as tf:
            fh = tf.extractfile(name)
            assert fh is not None, f"{name} is not a file in {member}"
            return fh.read()


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run(
        [str(ROOT / "packaging" / "build"), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert res.returncode == 0, f"packaging/build failed:\n{res.stdout}\n{res.stderr}"
    return out


@pytest.fixture(scope="session")
def ipks(dist: Path) -> list[Ipk]:
    found = []
    for path in sorted(dist.glob("*.ipk")):
        with tarfile.open(path, "r:*") as tf:
            members = {
                m.name: (tf.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
                for m in tf
            }
        found.append(Ipk(path, members))
    assert found, "packaging/build made no .ipk"
    return found


@dataclass
class Apk:
    """An Alpine-v2 .apk: gzip members [signature,] control (.PKGINFO, .post-install ...), data."""

    path: Path
    control: dict[str, bytes]  # .PKGINFO and the scripts
    data: bytes  # the data tar

    @property
    def arch(self) -> str:
        return self.path.name.removesuffix(".apk").split("_", 2)[2]

    @property
    def info(self) -> list[tuple[str, str]]:
        text = self.control[".PKGINFO"].decode()
        return [
            (k.strip(), v.strip())
            for k, _, v in (line.partition("=") for line in text.splitlines())
            if v and not k.startswith("#")
        ]

    def tar(self) -> tarfile.TarFile:
        return tarfile.open(fileobj=io.BytesIO(self.data), mode="r:")


def gzip_members(blob: bytes) -> list[bytes]:
    """The decompressed members of concatenated gzip streams (apk's container)."""
    out = []
    while blob:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out.append(d.decompress(blob))
        blob = d.unused_data
    return out


def read_apk(path: Path) -> Apk:
    members = gzip_members(path.read_bytes())
    control: dict[str, bytes] = {}
    for member in members[:-1]:
        with tarfile.open(fileobj=io.BytesIO(member), mode="r:") as tf:
            for m in tf:
                if m.isfile():
                    control[m.name] = tf.extractfile(m).read()  # type: ignore[union-attr]
    return Apk(path, control, members[-1])


@pytest.fixture(scope="session")
def apks(dist: Path) -> list[Apk]:
    found = [read_apk(p) for p in sorted(dist.glob("*.apk"))]
    assert found, "packaging/build made no .apk"
    return found


@pytest.fixture(scope="session")
def debs(dist: Path) -> list[Path]:
    found = sorted(dist.glob("*.deb"))
    assert found, "packaging/build made no .deb"
    return found


def load_build() -> ModuleType:
    """packaging/build.py as a module (its directory is not a package, and "packaging" is taken)."""
    spec = importlib.util.spec_from_file_location("titik_build", ROOT / "packaging" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("titik_build", module)
    spec.loader.exec_module(module)
    return module
