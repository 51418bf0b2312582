"""OpenWrt's python3 split, read from packaging/openwrt/python3-split/<release>.toml.

The data file says which OpenWrt package ships which part of the standard library (the python3
Makefile's base list and light exclusions, and the file lists of python3-package-*.mk) and what the
feed packages the agent uses depend on. From it this module computes the closure of a package's
Depends and writes the policy that tests/packaging/splitrun.py enforces: every module whose package
is outside the closure is refused, as if it were not installed.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SPLIT_DIR = ROOT / "packaging" / "openwrt" / "python3-split"
NOWHERE = "(in-no-package)"  # light's exclusions that no other package ships either


@dataclass(frozen=True)
class Claim:
    """A module name (fnmatch pattern) and whether its submodules go with it."""

    name: str
    subtree: bool
    package: str


def module_of(path: str) -> tuple[str, bool] | None:
    """The module a stdlib path of the Makefiles stands for, or None if it is no module.

    "email" (a directory) is email and its submodules; "uuid.py" is uuid;
    "lib-dynload/_ssl.SO" is _ssl; "sysconfig/__init__.py" is sysconfig alone.
    """
    if path.startswith("/"):
        return None  # /usr/include/..., /usr/lib/pkgconfig: outside the stdlib
    if path.startswith("lib-dynload/"):
        return path.removeprefix("lib-dynload/").removesuffix(".SO"), False
    if path.endswith(".py"):
        name = path.removesuffix(".py").replace("/", ".")
        return name.removesuffix(".__init__"), False
    if "-" in path or "." in path:
        return None  # config-3.11-*, data files
    return path.replace("/", "."), True


class Split:
    def __init__(self, release: str) -> None:
        self.path = SPLIT_DIR / f"{release}.toml"
        data = tomllib.loads(self.path.read_text())
        self.source: dict[str, str] = data["source"]
        self.python: str = data["source"]["python"]
        self.makefile: dict[str, object] = data["makefile"]
        self.packages: dict[str, dict[str, object]] = data["packages"]
        # The python3 meta package: light plus every stdlib part not marked otherwise
        # (Py3BasePackage without DO_NOT_ADD_TO_PACKAGE_DEPENDS).
        self.packages.setdefault(
            "python3",
            {
                "depends": ["python3-light"]
                + [
                    name
                    for name, pkg in self.packages.items()
                    if pkg.get("files") and pkg.get("in_python3", True)
                ]
            },
        )

    def depends_of(self, package: str) -> list[str]:
        return list(self.packages.get(package, {}).get("depends", []))  # type: ignore[call-overload]

    def closure(self, roots: Iterable[str]) -> set[str]:
        """Every package that installing `roots` brings in (names not described are leaves)."""
        seen: set[str] = set()
        todo = list(roots)
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            todo.extend(self.depends_of(name))
        return seen

    def claims(self) -> list[Claim]:
        out: list[Claim] = []
        for path in self.makefile["base_files"]:  # type: ignore[attr-defined]
            mod = module_of(path)
            if mod:
                out.append(Claim(mod[0], mod[1], "python3-base"))
        for path in self.makefile["light_excludes"]:  # type: ignore[attr-defined]
            mod = module_of(path)
            if mod:
                out.append(Claim(mod[0], mod[1], NOWHERE))
        for name, pkg in self.packages.items():
            for path in pkg.get("files", []):  # type: ignore[attr-defined]
                mod = module_of(path)
                if mod:
                    out.append(Claim(mod[0], mod[1], name))
            for dist in pkg.get("dists", []):  # type: ignore[attr-defined]
                out.append(Claim(dist, True, name))
        return out

    def package_of(self, module: str) -> str | None:
        """The package a claimed module is in (None: unclaimed, i.e. python3-light if stdlib)."""
        best = None
        for claim in self.claims():
            exact = (
                module.startswith(claim.name[:-1])
                if claim.name.endswith("*")
                else module == claim.name
            )
            hit = exact or (claim.subtree and module.startswith(claim.name + "."))
            if hit and (best is None or len(claim.name) > len(best.name)):
                best = claim
        return best.package if best else None

    def policy(self, depends: Iterable[str], own: Iterable[str], feed_paths: Iterable[str]) -> str:
        """The policy file for splitrun.py: the closure, the claims and the feed's site dir."""
        closure = self.closure(depends) | {"titik-agent"}
        lines = [f"closure {' '.join(sorted(closure))}"]
        lines += [f"path {p}" for p in feed_paths]
        for claim in self.claims():
            lines.append(f"claim {claim.name} {int(claim.subtree)} {claim.package}")
        for name in own:
            lines.append(f"claim {name} 1 titik-agent")
        return "\n".join(lines) + "\n"


def depends_field(text: str) -> list[str]:
    """Package names of a Depends field ("a, b (>= 1), c")."""
    return [part.split()[0] for part in text.split(",") if part.strip()]
