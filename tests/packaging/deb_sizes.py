"""Measure what `apt-get install ./titik-agent_*.deb` adds to a fresh Debian minbase, per target.

    packaging/build --only deb --out dist
    .venv/bin/python -m tests.packaging.deb_sizes dist [--no-install-recommends] [bookworm:arm64 ...]

For each target (default: Debian 12 and 13 on amd64, arm64 and armhf) a plain minbase root
(debootstrap for amd64, the cached one from test_chroot.py; mmdebstrap without --include under
qemu for the others, made in a temporary directory, a few minutes each) gets the package with
apt's defaults (Recommends too). Printed as a Markdown table for docs/packaging.md: the
package's Installed-Size (dpkg-query, KiB), the disk used by /usr/lib/titik after the postinst
byte-compiled it, the packages apt installed and the sum of their Installed-Size, and how much
the root grew on disk (du, without apt's caches and lists). Needs root, like the tests.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from tests.packaging.test_chroot import (
    MIRROR,
    Chroot,
    Target,
    _run,
    cached_root,
    remove_root,
)

TARGETS = [Target(r, a) for r in ("bookworm", "trixie") for a in ("amd64", "arm64", "armhf")]
NOT_COUNTED = ("var/cache/apt", "var/lib/apt/lists", "tmp", "var/log")


def du_kib(root: Path, *exclude: str) -> int:
    args = ["du", "-sk", *(f"--exclude={root / e}" for e in exclude), str(root)]
    return int(_run(args).stdout.split()[0])


def packages(ch: Chroot) -> dict[str, int]:
    out = ch.ok("dpkg-query -W -f '${binary:Package} ${Installed-Size} ${db:Status-Abbrev}\\n'")
    found = {}
    for line in out.splitlines():
        name, size, status = [*line.split(), "", ""][:3]
        if status.startswith("ii"):
            found[name.split(":")[0]] = int(size or 0)
    return found


def plain_root(target: Target, where: Path) -> Path:
    if not target.foreign:
        root = where / target.name
        subprocess.run(
            ["cp", "-a", "--reflink=auto", str(cached_root(target.release)), str(root)],
            check=True,
        )
        return root
    root = where / target.name
    res = _run(
        [
            "mmdebstrap",
            "--variant=minbase",
            f"--arch={target.arch}",
            target.release,
            str(root),
            MIRROR,
        ],
        timeout=1800,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **target.env},
    )
    if res.returncode != 0:
        raise SystemExit(f"mmdebstrap {target} failed:\n{res.stderr[-2000:]}")
    return root


def measure(target: Target, deb: Path, where: Path, *apt_options: str) -> str:
    root = plain_root(target, where)
    ch = Chroot(root, target)
    try:
        ch.mount("-t", "proc", "proc", target="proc")
        (root / "etc/resolv.conf").write_text(Path("/etc/resolv.conf").read_text())
        before = packages(ch)
        disk_before = du_kib(root, *NOT_COUNTED)
        ch.install(deb, *apt_options)
        after = packages(ch)
        disk_after = du_kib(root, *NOT_COUNTED)
        own = int(ch.ok("dpkg-query -W -f '${Installed-Size}' titik-agent"))
        lib = du_kib(root / "usr/lib/titik")
        added = {n: s for n, s in after.items() if n not in before}
        names = ", ".join(sorted(n for n in added if n != "titik-agent"))
        return (
            f"| Debian {'12' if target.release == 'bookworm' else '13'} {target.arch} "
            f"| {own / 1024:.1f} | {lib / 1024:.1f} | {len(added)} "
            f"| {sum(added.values()) / 1024:.1f} | {(disk_after - disk_before) / 1024:.1f} "
            f"| {names} |"
        )
    finally:
        ch.umount_all()
        remove_root(root)


def main(argv: list[str]) -> int:
    dist = Path(argv[0])
    options = [a for a in argv[1:] if a.startswith("--")]
    wanted = [Target(*a.split(":")) for a in argv[1:] if not a.startswith("--")] or TARGETS
    print(
        "| target | titik-agent Installed-Size (MiB) | /usr/lib/titik on disk (MiB) "
        "| packages apt installed | their Installed-Size (MiB) | root grew by (MiB) | pulled in |"
    )
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="titik-sizes-") as tmp:
        for target in wanted:
            deb = next(dist.glob(f"titik-agent_*_{target.arch}.deb"))
            print(measure(target, deb, Path(tmp), *options), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
