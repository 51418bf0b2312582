"""Run a program as if only part of the standard library were installed (OpenWrt's python3 split).

    python3 -I -S splitrun.py POLICY PROGRAM [ARGS...]

POLICY (written by tests/packaging/pysplit.py) has lines
    closure PKG...                 the packages the program's package brings in
    path DIR                       a site directory to add (the feed packages: psutil, ...)
    claim MODULE SUBTREE PKG       MODULE (and its submodules if SUBTREE is 1) is in PKG
Every other module of the standard library is in python3-light. A module whose package is not in
the closure is refused with ModuleNotFoundError, exactly as if its file were absent, and the
refusal is printed to stderr. A module that is neither stdlib nor claimed is refused too: nothing
else is on a gateway. The hook goes in before anything but builtins is imported here, and every
module the interpreter loaded before that is checked against the policy as well.

-S keeps site from adding the host's site-packages; the program runs with runpy as __main__.
This file runs under the interpreter being tested (3.11 or 3.13), so it uses the stdlib only.
"""

import sys

LIGHT = "python3-light"
BASE = "python3-base"


def main() -> None:
    policy_path, program, *args = sys.argv[1:]
    closure: set[str] = set()
    claims: list[tuple[str, bool, str]] = []
    paths: list[str] = []
    with open(policy_path, encoding="utf-8") as fh:
        for line in fh.read().splitlines():
            kind, _, rest = line.partition(" ")
            if kind == "closure":
                closure.update(rest.split())
            elif kind == "path":
                paths.append(rest)
            elif kind == "claim":
                name, subtree, package = rest.split()
                claims.append((name, subtree == "1", package))
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)

    def matches(pattern: str, name: str) -> bool:
        if pattern.endswith("*"):
            return name.startswith(pattern[:-1])
        return name == pattern

    def package_of(fullname: str) -> str:
        best = None
        for name, subtree, package in claims:
            hit = matches(name, fullname) or (subtree and fullname.startswith(name + "."))
            if hit and (best is None or len(name) > len(best[0])):
                best = (name, package)
        if best:
            return best[1]
        if fullname in ("__main__", "_frozen_importlib", "_frozen_importlib_external"):
            return BASE
        if fullname.partition(".")[0] in stdlib:
            return LIGHT
        return "(not on an OpenWrt gateway)"

    class RefuseOutsideClosure:
        @staticmethod
        def find_spec(fullname: str, path: object = None, target: object = None) -> None:
            package = package_of(fullname)
            if package in closure:
                return  # let the normal finders look for it
            msg = f"splitrun: refused import of {fullname}: it is in {package}, not in the Depends closure"
            print(msg, file=sys.stderr, flush=True)
            raise ModuleNotFoundError(msg, name=fullname)

    sys.meta_path.insert(0, RefuseOutsideClosure)
    early = sorted(m for m in sys.modules if package_of(m) not in closure)
    if early:
        print(f"splitrun: loaded before the hook, outside the closure: {early}", file=sys.stderr)
        sys.exit(3)
    sys.path[:] = [p for p in sys.path if "-packages" not in p] + paths
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    print(
        f"splitrun: python {version}, closure {' '.join(sorted(closure))}",
        file=sys.stderr,
        flush=True,
    )
    sys.argv = [program, *args]
    import runpy

    runpy.run_path(program, run_name="__main__")


main()
