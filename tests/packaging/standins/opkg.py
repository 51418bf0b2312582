"""A stand-in for OpenWrt's opkg (opkg-lede): install, upgrade and remove of local .ipk files.

opkg is in no package registry this machine reaches, so the tests use this. It does what the real
one does, as read in openwrt/opkg-lede (libopkg/opkg_install.c @9b7155d, opkg_remove.c @98ce8c2,
pkg.c pkg_run_script) and as seen running opkg-lede 38eccbb
(/work/shared/reference/anchors-openwrt.md, last section):

- The .ipk is a gzip tar of ./debian-binary, ./control.tar.gz and ./data.tar.gz; opkg-lede dropped
  ar support (commit dd4c78a), so an ar archive is refused.
- Depends are resolved against ROOT/usr/lib/opkg/status; a missing one stops the install with
  "Cannot satisfy the following dependencies for NAME:" (satisfy_dependencies_for), unless
  --force-depends.
- Installed-Size is bytes: the install stops when (size + 1023) / 1024 >= the kB free on the root
  ("Only have %ldkb available on filesystem %s, pkg %s needs %ld", verify_pkg_installable).
- With --offline-root ROOT, maintainer scripts run only with --force-postinstall; otherwise
  "Offline root mode: not running NAME.SCRIPT." (printed at -V2, as opkg_msg(INFO ...)).
- Scripts run as `sh -c "SCRIPT ARGS"` with PKG_ROOT (the destination's root) and PKG_UPGRADE
  (1 when upgrading, else 0) exported; the rest of the environment (IPKG_INSTROOT ...) is the
  caller's. Arguments: preinst "install" / "upgrade OLDVER", postinst "configure",
  prerm and postrm "remove" / "upgrade NEWVER".
- Upgrade: old prerm upgrade, new preinst upgrade, back up changed conffiles, old postrm upgrade,
  delete the old files (except changed conffiles), unpack the new files, resolve conffiles, then
  postinst configure. A conffile changed since it was installed is kept and the package's new
  version written beside it as NAME-opkg ("Existing conffile %s is different from the conffile in
  the new package. The new conffile will be placed at %s.").
- An older version than the installed one is refused ("Not downgrading package NAME on root
  from OLD to NEW.") unless --force-downgrade, with which it is installed as an upgrade is,
  after "Downgrading NAME on root from OLD to NEW..." (opkg_install_check_downgrade,
  libopkg/opkg_install.c @9b7155d; the agent's upgrade hook rolls back with it).
- Remove: prerm remove, delete the files (not a changed conffile: "Not deleting modified conffile
  %s."), postrm remove, delete the maintainer scripts. The file list (info/NAME.list) holds files
  only, so the directories the package created stay.

Around opkg, OpenWrt's own package scripts (which nfpm does not write; packaging/openwrt/postinst,
prerm and postrm do their part, and the tests hold them to this):
- The buildroot's postinst is "[ \"${IPKG_NO_SCRIPT}\" = 1 ] && exit 0", then sources
  ${IPKG_INSTROOT}/lib/functions.sh and runs default_postinst; prerm runs default_prerm
  (openwrt/openwrt include/package-pack.mk @004b949).
- default_postinst (package/base-files/files/lib/functions.sh @01fa063): with IPKG_INSTROOT set
  (an image being built) it runs "$root/etc/rc.common $root/etc/init.d/X enable" for every init
  script of the package, and starts nothing; on a live system it enables each one only when
  PKG_UPGRADE is not 1, then starts it. default_prerm: in an image, disable; live, disable
  unless PKG_UPGRADE=1, then stop.
- An image build (include/rootfs.mk @021b96d) installs with IPKG_NO_SCRIPT=1 IPKG_INSTROOT=ROOT
  opkg --offline-root ROOT --force-postinstall, then runs every info/*.postinst with
  IPKG_INSTROOT=ROOT, then enables every /etc/rc.common init script.

What this stand-in adds for tests, which real opkg has no need of: --live-root ROOT treats ROOT as
the / of a running device (files go under ROOT, scripts run chrooted into ROOT, PKG_ROOT=/).
Not modelled: package feeds and downloads, Replaces/Conflicts/Provides, alternatives, arch checks.

    python -m tests.packaging.standins.opkg (--offline-root ROOT | --live-root ROOT)
        [--force-postinstall] [--force-depends] [--force-downgrade] [-V2]
        install FILE.ipk... | remove NAME...
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

INFO = "usr/lib/opkg/info"
STATUS = "usr/lib/opkg/status"


class OpkgError(Exception):
    pass


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_stanzas(text: str) -> list[dict[str, str]]:
    out, cur, key = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                out.append(cur)
            cur, key = {}, None
        elif line[0] in " \t" and key:
            cur[key] += "\n" + line
        else:
            key, _, value = line.partition(":")
            cur[key] = value.strip()
    if cur:
        out.append(cur)
    return out


def dep_names(depends: str) -> list[str]:
    return [d.split("|")[0].split()[0] for d in depends.split(",") if d.strip()]


def version_key(version: str) -> list[object]:
    # Good enough for the versions tests use (0.1.0-1 < 0.1.1-1 < 0.2.0-1).
    out: list[object] = []
    for part in version.replace("-", ".").split("."):
        out.append((0, int(part)) if part.isdigit() else (1, part))
    return out


@dataclass
class Ipk:
    path: Path
    control: dict[str, str]
    control_files: dict[str, bytes]
    data: bytes
    conffiles: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.control["Package"]

    @property
    def version(self) -> str:
        return self.control["Version"]

    @classmethod
    def read(cls, path: Path) -> Ipk:
        blob = path.read_bytes()
        if blob.startswith(b"!<arch>"):
            raise OpkgError(f"Malformed package file {path} (an ar archive; opkg reads gzip tar)")
        try:
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as outer:
                members = {m.name: outer.extractfile(m).read() for m in outer if m.isfile()}  # type: ignore[union-attr]
        except (tarfile.TarError, OSError) as exc:
            raise OpkgError(f"Malformed package file {path}: {exc}") from exc
        with tarfile.open(fileobj=io.BytesIO(members["./control.tar.gz"]), mode="r:gz") as ctl:
            files = {
                m.name.removeprefix("./"): ctl.extractfile(m).read()  # type: ignore[union-attr]
                for m in ctl
                if m.isfile()
            }
        control = parse_stanzas(files["control"].decode())[0]
        conffiles = files.get("conffiles", b"").decode().split()
        return cls(path, control, files, members["./data.tar.gz"], conffiles)


class Opkg:
    def __init__(
        self,
        root: Path,
        *,
        offline: bool,
        force_postinstall: bool = False,
        force_depends: bool = False,
        force_downgrade: bool = False,
        verbosity: int = 1,
    ) -> None:
        self.root = root
        self.offline = offline
        self.force_postinstall = force_postinstall
        self.force_depends = force_depends
        self.force_downgrade = force_downgrade
        self.verbosity = verbosity

    # ---- status database --------------------------------------------------------------
    def status(self) -> list[dict[str, str]]:
        path = self.root / STATUS
        return parse_stanzas(path.read_text()) if path.exists() else []

    def write_status(self, stanzas: list[dict[str, str]]) -> None:
        path = self.root / STATUS
        path.parent.mkdir(parents=True, exist_ok=True)
        text = "\n".join(
            "".join(f"{k}: {v}\n" if v else f"{k}:\n" for k, v in s.items()) for s in stanzas
        )
        path.write_text(text + ("\n" if stanzas else ""))

    def installed(self, name: str) -> dict[str, str] | None:
        for s in self.status():
            if s.get("Package") == name and "installed" in s.get("Status", ""):
                return s
        return None

    def msg(self, level: int, text: str) -> None:
        if level <= self.verbosity:
            print(text, file=sys.stderr)

    # ---- paths --------------------------------------------------------------------------
    def host(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def conffile_modified(self, path: str, recorded: str) -> bool:
        p = self.host(path)
        return p.exists() and sha256(p) != recorded

    # ---- scripts ------------------------------------------------------------------------
    def run_script(self, name: str, script: str, path: Path, args: str, upgrade: bool) -> int:
        if self.offline and not self.force_postinstall:
            self.msg(2, f"Offline root mode: not running {name}.{script}.")
            return 0
        if not path.exists():
            return 0
        env = dict(os.environ)
        env["PKG_ROOT"] = str(self.root) + "/" if self.offline else "/"
        env["PKG_UPGRADE"] = "1" if upgrade else "0"
        if self.offline:
            cmd = ["sh", "-c", f"{path} {args}"]
        else:
            inside = "/" + str(path.relative_to(self.root))
            cmd = ["chroot", str(self.root), "sh", "-c", f"{inside} {args}"]
        res = subprocess.run(cmd, env=env, check=False)
        if res.returncode:
            self.msg(0, f'package "{name}" {script} script returned status {res.returncode}.')
        return res.returncode

    # ---- install / upgrade --------------------------------------------------------------
    def check(self, ipk: Ipk, old: dict[str, str] | None) -> bool:
        """opkg_install_check_downgrade, satisfy_dependencies_for and verify_pkg_installable."""
        if old and version_key(old["Version"]) > version_key(ipk.version) and self.force_downgrade:
            self.msg(
                1,
                f"Downgrading {ipk.name} on root from {old['Version']} to {ipk.version}...",
            )
        elif old and version_key(old["Version"]) >= version_key(ipk.version):
            if old["Version"] == ipk.version:
                self.msg(1, f"Package {ipk.name} ({ipk.version}) installed in root is up to date.")
                return False
            raise OpkgError(
                f"Not downgrading package {ipk.name} on root from {old['Version']} to {ipk.version}."
            )
        missing = [d for d in dep_names(ipk.control.get("Depends", "")) if not self.installed(d)]
        if missing and not self.force_depends:
            raise OpkgError(
                f"Cannot satisfy the following dependencies for {ipk.name}:\n"
                + "".join(f"\t{d}\n" for d in missing)
            )
        size = int(ipk.control.get("Installed-Size", "0") or 0)
        st = os.statvfs(self.root)
        kbs_available = st.f_bavail * st.f_frsize // 1024
        pkg_size_kbs = (size + 1023) // 1024
        if size and pkg_size_kbs >= kbs_available:
            raise OpkgError(
                f"Only have {kbs_available}kb available on filesystem {self.root}, "
                f"pkg {ipk.name} needs {pkg_size_kbs}"
            )
        return True

    def pre_scripts(self, ipk: Ipk, old: dict[str, str] | None, tmp: Path) -> None:
        """prerm_upgrade_old_pkg and preinst_configure."""
        name, info = ipk.name, self.root / INFO
        if old is None:
            if self.run_script(name, "preinst", tmp / "preinst", "install", False):
                raise OpkgError(f"Aborting installation of {name}.")
            return
        if self.run_script(name, "prerm", info / f"{name}.prerm", f"upgrade {ipk.version}", True):
            raise OpkgError(f'prerm script for package "{name}" failed')
        if self.run_script(name, "preinst", tmp / "preinst", f"upgrade {old['Version']}", True):
            raise OpkgError(f"Aborting installation of {name}.")

    def backup_conffiles(self, ipk: Ipk, recorded: dict[str, str]) -> dict[str, Path]:
        """backup_modified_conffiles: changed ones of the old version, and files becoming ones."""
        backups: dict[str, Path] = {}
        for path, digest in recorded.items():
            if self.conffile_modified(path, digest):
                backups[path] = self.backup(path)
        for path in ipk.conffiles:
            if path not in recorded and self.host(path).exists() and path not in backups:
                backups[path] = self.backup(path)
        return backups

    def install(self, ipk: Ipk) -> None:
        old = self.installed(ipk.name)
        if not self.check(ipk, old):
            return
        upgrade = old is not None
        name = ipk.name
        info = self.root / INFO
        info.mkdir(parents=True, exist_ok=True)
        self.msg(1, f"{'Upgrading' if upgrade else 'Installing'} {name} ({ipk.version}) to root...")
        recorded = self.recorded_conffiles(old)
        with tempfile.TemporaryDirectory() as tmpd:
            tmp = Path(tmpd)
            for fname, body in ipk.control_files.items():
                (tmp / fname).write_bytes(body)
                (tmp / fname).chmod(0o755)
            self.pre_scripts(ipk, old, tmp)
            backups = self.backup_conffiles(ipk, recorded)
            if old:
                args = f"upgrade {ipk.version}"
                if self.run_script(name, "postrm", info / f"{name}.postrm", args, True):
                    raise OpkgError(f'postrm script for package "{name}" failed')
                self.remove_files(name, recorded)
                for script in info.glob(f"{name}.*"):
                    script.unlink()
            for fname in ("preinst", "postinst", "prerm", "postrm", "control", "conffiles"):
                if (tmp / fname).exists():
                    shutil.copy2(tmp / fname, info / f"{name}.{fname}")
        files = self.unpack(ipk)
        (info / f"{name}.list").write_text("".join(f"/{f}\n" for f in files))
        digests = self.resolve_conffiles(ipk, backups)
        stanza = {
            "Package": name,
            "Version": ipk.version,
            "Depends": ipk.control.get("Depends", ""),
            "Status": "install user unpacked",
            "Architecture": ipk.control.get("Architecture", ""),
        }
        if digests:
            stanza["Conffiles"] = "".join(f"\n {p} {d}" for p, d in digests.items())
        self.write_status([s for s in self.status() if s.get("Package") != name] + [stanza])
        # opkg_configure: postinst configure
        err = self.run_script(name, "postinst", info / f"{name}.postinst", "configure", upgrade)
        stanza["Status"] = "install user installed"
        self.write_status([s for s in self.status() if s.get("Package") != name] + [stanza])
        if err:
            raise OpkgError(f"{name}.postinst returned {err}")

    def recorded_conffiles(self, stanza: dict[str, str] | None) -> dict[str, str]:
        out = {}
        for line in (stanza or {}).get("Conffiles", "").splitlines():
            parts = line.split()
            if len(parts) == 2:
                out[parts[0]] = parts[1]
        return out

    def backup(self, path: str) -> Path:
        src = self.host(path)
        dst = src.with_name(src.name + "-opkg.backup")
        shutil.copy2(src, dst)
        return dst

    def unpack(self, ipk: Ipk) -> list[str]:
        files = []
        with tarfile.open(fileobj=io.BytesIO(ipk.data), mode="r:gz") as data:
            for m in data:
                rel = m.name.removeprefix("./").rstrip("/")
                if not rel:
                    continue
                if m.isdir():
                    (self.root / rel).mkdir(parents=True, exist_ok=True)
                    continue
                data.extract(m, self.root, filter="tar")
                files.append(rel)  # opkg's file list: files and links, no directories
        return files

    def resolve_conffiles(self, ipk: Ipk, backups: dict[str, Path]) -> dict[str, str]:
        digests = {}
        for path in ipk.conffiles:
            target = self.host(path)
            if not target.exists():
                continue
            digests[path] = sha256(target)  # the package's version, before any swap
            backup = backups.get(path)
            if backup and backup.exists():
                if sha256(backup) != digests[path]:
                    new = target.with_name(target.name + "-opkg")
                    self.msg(
                        0,
                        f"Existing conffile {target} is different from the conffile in the new "
                        f"package. The new conffile will be placed at {new}.",
                    )
                    target.rename(new)
                    backup.rename(target)
                else:
                    backup.unlink()
        return digests

    # ---- remove ---------------------------------------------------------------------------
    def remove_files(self, name: str, conffiles: dict[str, str]) -> None:
        lst = self.root / INFO / f"{name}.list"
        for line in lst.read_text().splitlines() if lst.exists() else []:
            path = self.host(line)
            if line in conffiles and self.conffile_modified(line, conffiles[line]):
                self.msg(1, f"Not deleting modified conffile {path}.")
                continue
            if path.is_dir() and not path.is_symlink():
                continue  # never listed by opkg; never deleted
            path.unlink(missing_ok=True)
        lst.unlink(missing_ok=True)

    def remove(self, name: str) -> None:
        stanza = self.installed(name)
        if stanza is None:
            self.msg(1, "No packages removed.")
            return
        info = self.root / INFO
        self.msg(1, f"Removing package {name} from root...")
        if self.run_script(name, "prerm", info / f"{name}.prerm", "remove", False):
            raise OpkgError(f'not removing package "{name}", prerm script failed')
        self.remove_files(name, self.recorded_conffiles(stanza))
        err = self.run_script(name, "postrm", info / f"{name}.postrm", "remove", False)
        for script in info.glob(f"{name}.*"):
            script.unlink()
        self.write_status([s for s in self.status() if s.get("Package") != name])
        if err:
            raise OpkgError(f"{name}.postrm returned {err}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="opkg (stand-in)")
    where = ap.add_mutually_exclusive_group(required=True)
    where.add_argument("--offline-root", type=Path)
    where.add_argument("--live-root", type=Path, help="stand-in only: ROOT is a device's /")
    ap.add_argument("--force-postinstall", action="store_true")
    ap.add_argument("--force-depends", action="store_true")
    ap.add_argument("--force-downgrade", action="store_true")
    ap.add_argument("-V", "--verbosity", type=int, default=1)
    ap.add_argument("command", choices=["install", "remove"])
    ap.add_argument("args", nargs="+")
    a = ap.parse_args(argv)
    root = (a.offline_root or a.live_root).resolve()
    opkg = Opkg(
        root,
        offline=a.offline_root is not None,
        force_postinstall=a.force_postinstall,
        force_depends=a.force_depends,
        force_downgrade=a.force_downgrade,
        verbosity=a.verbosity,
    )
    try:
        for arg in a.args:
            if a.command == "install":
                opkg.install(Ipk.read(Path(arg)))
            else:
                opkg.remove(arg)
    except OpkgError as exc:
        print(f" * opkg_{a.command}_cmd: {exc}", file=sys.stderr)
        return 255
    return 0


if __name__ == "__main__":
    sys.exit(main())
