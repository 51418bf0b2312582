"""A stand-in for apk-tools 3 (OpenWrt 25.12's package manager): add and del of local .apk files.

apk-tools is in no package registry this machine reaches, so the tests use this. It does what the
real one does, as read in alpinelinux/apk-tools (src/database.c @c21f61d: apk_db_install_pkg,
apk_db_purge_pkg, apk_db_migrate_files, apk_db_dir_unref; src/package.c apk_ipkg_run_script;
src/print.c error strings) and as seen running apk-tools 3.0.6
(/work/shared/reference/anchors-openwrt.md, last section):

- An Alpine-v2 package is concatenated gzip streams: an optional signature (.SIGN.*), the control
  tar (.PKGINFO first, then .pre-install, .post-install ...) and the data tar. Anything else, an
  .ipk for one, is refused: "ERROR: FILE: v2 package format error".
- An unsigned package is refused unless --allow-untrusted: "ERROR: FILE: UNTRUSTED signature".
  (A signed one is taken if its key is in ROOT/etc/apk/keys; the signature itself is not checked.)
- Every "depend" must be installed: "ERROR: unable to select packages:" /
  "  NAME (no such package):" / "    required by: PKG-VER[NAME]".
- Scripts are written to ROOT/var/cache/misc/PKG-VER.TYPE and run chrooted into ROOT with the
  new version as $1 and, on an upgrade, the old version as $2 (the deinstall scripts get the old
  version). Order: install = pre-install, files, post-install; upgrade = pre-upgrade, files, the
  old version's leftover files purged, post-upgrade (no deinstall scripts); del = pre-deinstall,
  files purged, post-deinstall. apk exports no PKG_UPGRADE.
- Protected paths "+etc", "@etc/init.d" (there only symlinks), "!etc/apk" (apk's defaults; no
  ROOT/etc/apk/protected_paths.d here). A protected file changed since it was installed is kept on
  upgrade, the package's new version written beside it as NAME.apk-new (unless the two are equal),
  and kept on del.
- apk records directories too, with a count of the packages that own each: when the last owner
  goes, the directory is removed (rmdir: kept if something else is still in it).

Around apk, OpenWrt's buildroot writes a package's scripts (include/package-pack.mk @004b949):
post-install sources functions.sh and runs default_postinst (IPKG_NO_SCRIPT=1: nothing);
post-upgrade is "export PKG_UPGRADE=1" followed by the post-install; pre-deinstall runs
default_prerm; post-deinstall is the package's postrm. nfpm writes no such scripts, so
packaging/build makes the .apk's post-upgrade the same way from packaging/openwrt/postinst.

Not modelled: repositories and indexes, ADB v3 packages, signature verification, triggers,
provides/conflicts, the arch check, and the real database's format (this keeps its own JSON
in ROOT/lib/apk/db/standin.json).

    python -m tests.packaging.standins.apk --root ROOT [--initdb] [--allow-untrusted]
        [--no-network] add FILE.apk... | del NAME...
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

DB = "lib/apk/db/standin.json"
PROTECTED = (("etc", "+"), ("etc/init.d", "@"), ("etc/apk", "!"))


class ApkError(Exception):
    pass


def protect_mode(path: str) -> str:
    """The protected-path rule for a file (relative path): the longest matching prefix wins."""
    best, mode = "", "-"
    for prefix, m in PROTECTED:
        if (path == prefix or path.startswith(prefix + "/")) and len(prefix) > len(best):
            best, mode = prefix, m
    return mode


def sha1(path: Path) -> str | None:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    if not path.is_file():
        return None
    return hashlib.sha1(path.read_bytes()).hexdigest()  # noqa: S324 - a checksum, as apk's


@dataclass
class ApkFile:
    path: Path
    info: dict[str, list[str]]
    scripts: dict[str, bytes]
    data: bytes
    signed: list[str]

    @property
    def name(self) -> str:
        return self.info["pkgname"][0]

    @property
    def version(self) -> str:
        return self.info["pkgver"][0]

    @classmethod
    def read(cls, path: Path) -> ApkFile:
        blob = path.read_bytes()
        members = []
        try:
            while blob:
                d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                members.append(d.decompress(blob))
                blob = d.unused_data
        except zlib.error as exc:
            raise ApkError(f"{path}: v2 package format error") from exc
        signed: list[str] = []
        control: dict[str, bytes] = {}
        try:
            for i, member in enumerate(members[:-1]):
                with tarfile.open(fileobj=io.BytesIO(member), mode="r:") as tf:
                    names = [m for m in tf if m.isfile()]
                    for m in names:
                        body = tf.extractfile(m).read()  # type: ignore[union-attr]
                        if i == 0 and m.name.startswith(".SIGN."):
                            signed.append(m.name)
                        else:
                            control[m.name] = body
        except tarfile.TarError as exc:
            raise ApkError(f"{path}: v2 package format error") from exc
        if len(members) < 2 or ".PKGINFO" not in control:
            raise ApkError(f"{path}: v2 package format error")
        info: dict[str, list[str]] = {}
        for line in control[".PKGINFO"].decode().splitlines():
            key, sep, value = line.partition(" = ")
            if sep and not key.startswith("#"):
                info.setdefault(key.strip(), []).append(value.strip())
        scripts = {k[1:]: v for k, v in control.items() if k != ".PKGINFO"}
        return cls(path, info, scripts, members[-1], signed)


class Apk:
    def __init__(self, root: Path, *, allow_untrusted: bool = False) -> None:
        self.root = root
        self.allow_untrusted = allow_untrusted

    # ---- database ---------------------------------------------------------------------------
    def db(self) -> dict[str, dict[str, object]]:
        path = self.root / DB
        if not path.exists():
            raise ApkError(f"{self.root}: apk database not found (use --initdb)")
        return json.loads(path.read_text())  # type: ignore[no-any-return]

    def save(self, db: dict[str, dict[str, object]]) -> None:
        (self.root / DB).write_text(json.dumps(db, indent=1, sort_keys=True))

    def initdb(self) -> None:
        (self.root / "lib/apk/db").mkdir(parents=True, exist_ok=True)
        (self.root / "etc/apk").mkdir(parents=True, exist_ok=True)
        if not (self.root / DB).exists():
            self.save({})

    def seed(self, name: str, version: str, dirs: list[str]) -> None:
        """Record an installed package that owns `dirs` (what base-files etc. are on a device)."""
        db = self.db()
        db[name] = {
            "version": version,
            "depends": [],
            "dirs": sorted(dirs),
            "files": {},
            "scripts": {},
        }
        self.save(db)

    # ---- scripts ------------------------------------------------------------------------------
    def run_script(
        self, name: str, version: str, kind: str, body: bytes | None, args: list[str]
    ) -> bool:
        if body is None:
            return True
        rel = f"var/cache/misc/{name}-{version}.{kind}"
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        path.chmod(0o755)
        print(f"Executing {name}-{version}.{kind}", file=sys.stderr)
        try:
            res = subprocess.run(["chroot", str(self.root), "/" + rel, *args], check=False)
        finally:
            path.unlink(missing_ok=True)
        if res.returncode:
            print(
                f"ERROR: {name}-{version}.{kind}: script exited with error {res.returncode}",
                file=sys.stderr,
            )
            return False
        return True

    # ---- directories ----------------------------------------------------------------------
    def dir_owners(self, db: dict[str, dict[str, object]], d: str) -> int:
        return sum(d in pkg["dirs"] for pkg in db.values())  # type: ignore[operator]

    def unref_dirs(self, db: dict[str, dict[str, object]], dirs: list[str]) -> None:
        for d in sorted(dirs, key=lambda p: -p.count("/")):
            if self.dir_owners(db, d) == 0:
                with contextlib.suppress(OSError):  # not empty: apk_db_dir_unref ignores it
                    (self.root / d).rmdir()

    # ---- add -----------------------------------------------------------------------------
    def check(self, pkg: ApkFile, db: dict[str, dict[str, object]]) -> None:
        """Trust (UNTRUSTED signature) and dependencies (unable to select packages)."""
        keys = self.root / "etc/apk/keys"
        trusted = any((keys / s.split(".", 3)[-1]).exists() for s in pkg.signed)
        if not trusted and not self.allow_untrusted:
            raise ApkError(f"{pkg.path}: UNTRUSTED signature")
        names = [re.split(r"[<>=~]", d)[0] for d in pkg.info.get("depend", [])]
        missing = [d for d in names if d not in db]
        if missing:
            lines = "".join(
                f"  {d} (no such package):\n    required by: {pkg.name}-{pkg.version}[{d}]\n"
                for d in missing
            )
            raise ApkError("unable to select packages:\n" + lines.rstrip("\n"))

    def script(self, pkg: ApkFile, kind: str, args: list[str]) -> None:
        if not self.run_script(pkg.name, pkg.version, kind, pkg.scripts.get(kind), args):
            raise ApkError(f"{pkg.name}-{pkg.version}: {kind} script failed")

    def unpack(self, pkg: ApkFile, old_files: dict[str, str]) -> tuple[dict[str, str], list[str]]:
        """Extract the data; a changed protected file stays, the package's copy as .apk-new."""
        files: dict[str, str] = {}
        dirs: list[str] = []
        staging = self.root / ".apk-standin-tmp"
        with tarfile.open(fileobj=io.BytesIO(pkg.data), mode="r:") as data:
            for m in data:
                rel = m.name.removeprefix("./").rstrip("/")
                if not rel:
                    continue
                if m.isdir():
                    (self.root / rel).mkdir(parents=True, exist_ok=True)
                    dirs.append(rel)
                    continue
                mode = protect_mode(rel)
                on_disk = sha1(self.root / rel)
                if (mode == "+" or (mode == "@" and m.issym())) and on_disk not in (
                    None,
                    old_files.get(rel),
                ):
                    data.extract(m, staging, filter="tar")
                    files[rel] = sha1(staging / rel) or ""
                    if files[rel] != on_disk:
                        (staging / rel).replace(self.root / (rel + ".apk-new"))
                        print(f"  Installing file to {rel}.apk-new", file=sys.stderr)
                    continue
                data.extract(m, self.root, filter="tar")
                files[rel] = sha1(self.root / rel) or ""
        if staging.exists():
            shutil.rmtree(staging)
        return files, dirs

    def add(self, pkg: ApkFile) -> None:
        db = self.db()
        self.check(pkg, db)
        old = db.get(pkg.name)
        if old and old["version"] == pkg.version:
            return
        args = [pkg.version] + ([str(old["version"])] if old else [])
        print(
            f"({'Upgrading' if old else 'Installing'} {pkg.name} ({pkg.version}))", file=sys.stderr
        )
        self.script(pkg, "pre-upgrade" if old else "pre-install", args)
        old_files: dict[str, str] = dict(old["files"]) if old else {}  # type: ignore[call-overload]
        files, dirs = self.unpack(pkg, old_files)
        db[pkg.name] = {
            "version": pkg.version,
            "depends": pkg.info.get("depend", []),
            "dirs": sorted(set(dirs)),
            "files": files,
            "scripts": {k: v.decode(errors="surrogateescape") for k, v in pkg.scripts.items()},
        }
        if old:
            # the old version's files the new one does not have go (changed protected ones stay)
            for rel, digest in old_files.items():
                if rel not in files:
                    self.purge_file(rel, digest)
            self.unref_dirs(db, [d for d in old["dirs"] if d not in dirs])  # type: ignore[attr-defined]
        self.save(db)
        self.script(pkg, "post-upgrade" if old else "post-install", args)

    def purge_file(self, rel: str, digest: str) -> None:
        """A changed protected file stays; the file's .apk-new goes (apk_db_purge_pkg)."""
        target = self.root / rel
        mode = protect_mode(rel)
        if mode != "-":
            (self.root / (rel + ".apk-new")).unlink(missing_ok=True)
        if mode == "+" and sha1(target) not in (None, digest):
            return
        target.unlink(missing_ok=True)

    # ---- del -------------------------------------------------------------------------------
    def delete(self, name: str) -> None:
        db = self.db()
        pkg = db.get(name)
        if pkg is None:
            print(f"WARNING: {name}: not installed", file=sys.stderr)
            return
        version = str(pkg["version"])
        scripts: dict[str, str] = pkg["scripts"]  # type: ignore[assignment]
        print(f"(Purging {name} ({version}))", file=sys.stderr)
        body = scripts.get("pre-deinstall")
        self.run_script(
            name,
            version,
            "pre-deinstall",
            body.encode(errors="surrogateescape") if body else None,
            [version],
        )
        for rel, digest in dict(pkg["files"]).items():  # type: ignore[call-overload]
            self.purge_file(rel, digest)
        del db[name]
        self.unref_dirs(db, list(pkg["dirs"]))  # type: ignore[call-overload]
        self.save(db)
        body = scripts.get("post-deinstall")
        self.run_script(
            name,
            version,
            "post-deinstall",
            body.encode(errors="surrogateescape") if body else None,
            [version],
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="apk (stand-in)")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--initdb", action="store_true")
    ap.add_argument("--allow-untrusted", action="store_true")
    ap.add_argument("--no-network", action="store_true")  # nothing is fetched anyway
    ap.add_argument("command", choices=["add", "del"])
    ap.add_argument("args", nargs="+")
    a = ap.parse_args(argv)
    apk = Apk(a.root.resolve(), allow_untrusted=a.allow_untrusted)
    try:
        if a.initdb:
            apk.initdb()
        for arg in a.args:
            if a.command == "add":
                apk.add(ApkFile.read(Path(arg)))
            else:
                apk.delete(arg)
    except ApkError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 99
    return 0


if __name__ == "__main__":
    sys.exit(main())
