"""A STAND-IN for OpenWrt's `uci` command line tool, for the hook tests only.

This machine cannot have the real uci (it is libuci's CLI, built for an OpenWrt userland), so
the tests put ``tests/hooks/bin/uci`` (which runs this file) first on PATH. It edits real
UCI-format files the way uci does, for the subset the firmware hooks use:

    uci [-q] [-c CONFDIR] [-t SAVEDIR] get|set|delete|show|commit|revert ...

- ``get PKG.SEC[.OPT]``: an option's value (a list's items joined by spaces) or a section's
  type; "uci: Entry not found" and exit 1 if missing (silent with -q).
- ``set PKG.SEC=TYPE``: create the section, or change its type.
- ``set PKG.SEC.OPT=VALUE``: set an option; VALUE is everything after the first "=",
  verbatim. The section must exist.
- ``delete PKG.SEC[.OPT]``: remove a section or an option.
- ``show [PKG[.SEC]]``: ``PKG.SEC=TYPE`` and ``PKG.SEC.OPT='VALUE'`` lines, ``'`` written as
  ``'\\''``; anonymous sections appear as ``@TYPE[N]``, which is also accepted as a name.
- ``commit [PKG]`` / ``revert PKG``: write the staged changes to CONFDIR/PKG, or drop them.

As with uci, changes are staged in SAVEDIR (default /tmp/.uci) until ``commit``, which rewrites
the file in uci's export format (comments and the original quoting are not kept) through a
temp file and a rename. The staged form here is a copy of the whole package (in export
format), not uci's delta lines; the tests compare only results, never the save dir. Each commit is appended to
$STANDIN_LOG as "uci commit PKG".
"""

from __future__ import annotations

# Only os and sys: the hooks call uci dozens of times per test, and importing re, json or
# typing would triple this script's start-up time.
import os
import sys
from collections.abc import Callable

# {"name": str, "type": str, "anon": bool, "opts": {name: str | list[str]}}
Section = dict

_ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class _Name:
    def __init__(self, extra: str = "") -> None:
        self.chars = _ALNUM | frozenset(extra)

    def match(self, text: str) -> bool:
        return bool(text) and all(c in self.chars for c in text)


NAME = _Name()
TYPE = _Name("-")


class UciError(Exception):
    pass


NOT_FOUND = "Entry not found"
INVALID = "Invalid argument"


def words_of(line: str) -> list[str]:
    """uci's tokenizer: blanks separate words; '...' is literal; "..." and bare words take
    backslash escapes; # starts a comment where a word could start."""
    words: list[str] = []
    i, n = 0, len(line)
    while i < n:
        if line[i] in " \t\r":
            i += 1
            continue
        if line[i] == "#":
            break
        word = []
        while i < n and line[i] not in " \t\r":
            c = line[i]
            if c in "'\"":
                end = i + 1
                while end < n and line[end] != c:
                    if c == '"' and line[end] == "\\":
                        end += 1
                    word.append(line[end] if end < n else "")
                    end += 1
                if end >= n:
                    raise UciError("Parse error (unterminated quote)")
                i = end + 1
            elif c == "\\" and i + 1 < n:
                word.append(line[i + 1])
                i += 2
            else:
                word.append(c)
                i += 1
        words.append("".join(word))
    return words


def parse(text: str) -> list[Section]:
    sections: list[Section] = []
    for raw in text.splitlines():
        words = words_of(raw)
        if not words or words[0] == "package":
            continue
        if words[0] == "config" and len(words) in (2, 3):
            anon = len(words) == 2
            name = f"cfg{len(sections):06x}" if anon else words[2]
            sections.append({"name": name, "type": words[1], "anon": anon, "opts": {}})
        elif words[0] in ("option", "list") and len(words) == 3 and sections:
            opts = sections[-1]["opts"]
            if words[0] == "option":
                opts[words[1]] = words[2]
            else:
                cur = opts.get(words[1])
                opts[words[1]] = [*(cur if isinstance(cur, list) else []), words[2]]
        else:
            raise UciError("Parse error")
    return sections


def quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def export(sections: list[Section]) -> str:
    """libuci's uci_export(): a blank line before each section, one tab-indented line per
    option, values in single quotes, and a final newline."""
    out = []
    for s in sections:
        name = "" if s["anon"] else f" {quote(s['name'])}"
        out.append(f"\nconfig {s['type']}{name}\n")
        for opt, val in s["opts"].items():
            if isinstance(val, list):
                out.extend(f"\tlist {opt} {quote(v)}\n" for v in val)
            else:
                out.append(f"\toption {opt} {quote(val)}\n")
    out.append("\n")
    return "".join(out)


class Store:
    def __init__(self, confdir: str, savedir: str) -> None:
        self.confdir = confdir
        self.savedir = savedir

    def load(self, pkg: str) -> list[Section]:
        if not NAME.match(pkg):
            raise UciError(INVALID)
        for path in (os.path.join(self.savedir, pkg), os.path.join(self.confdir, pkg)):
            try:
                with open(path, encoding="utf-8") as f:
                    return parse(f.read())
            except FileNotFoundError:
                pass
        raise UciError(NOT_FOUND)

    def stage(self, pkg: str, sections: list[Section]) -> None:
        os.makedirs(self.savedir, exist_ok=True)
        with open(os.path.join(self.savedir, pkg), "w", encoding="utf-8") as f:
            f.write(export(sections))

    def commit(self, pkg: str) -> None:
        staged = os.path.join(self.savedir, pkg)
        if not os.path.exists(staged):
            return
        text = export(self.load(pkg))
        tmp = os.path.join(self.confdir, f".{pkg}.uci-standin")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.confdir, pkg))
        os.unlink(staged)
        log = os.environ.get("STANDIN_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"uci commit {pkg}\n")

    def revert(self, pkg: str) -> None:
        staged = os.path.join(self.savedir, pkg)
        if os.path.exists(staged):
            os.unlink(staged)


def find(sections: list[Section], ref: str) -> Section | None:
    if ref.startswith("@") and ref.endswith("]") and "[" in ref:
        kind, _, idx = ref[1:-1].partition("[")
        typed = [s for s in sections if s["type"] == kind]
        try:
            return typed[int(idx)]
        except (IndexError, ValueError):
            return None
    return next((s for s in sections if s["name"] == ref), None)


def shown_name(sections: list[Section], s: Section) -> str:
    if not s["anon"]:
        return str(s["name"])
    typed = [t for t in sections if t["type"] == s["type"]]
    return f"@{s['type']}[{typed.index(s)}]"


def split_path(path: str) -> tuple[str, str, str | None]:
    parts = path.split(".", 2)
    if len(parts) < 2 or (len(parts) == 3 and not NAME.match(parts[2])):
        raise UciError(INVALID)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def cmd_get(store: Store, arg: str) -> str:
    pkg, sec, opt = split_path(arg)
    s = find(store.load(pkg), sec)
    if s is None or (opt is not None and opt not in s["opts"]):
        raise UciError(NOT_FOUND)
    if opt is None:
        return f"{s['type']}\n"
    val = s["opts"][opt]
    return (" ".join(val) if isinstance(val, list) else val) + "\n"


def cmd_set(store: Store, arg: str) -> str:
    target, sep, value = arg.partition("=")
    if not sep:
        raise UciError(INVALID)
    pkg, sec, opt = split_path(target)
    sections = store.load(pkg)
    s = find(sections, sec)
    if opt is not None:
        if s is None:
            raise UciError(NOT_FOUND)
        s["opts"][opt] = value
    elif not TYPE.match(value):
        raise UciError(INVALID)
    elif s is not None:
        s["type"] = value
    elif NAME.match(sec):
        sections.append({"name": sec, "type": value, "anon": False, "opts": {}})
    else:
        raise UciError(INVALID)
    store.stage(pkg, sections)
    return ""


def cmd_delete(store: Store, arg: str) -> str:
    pkg, sec, opt = split_path(arg)
    sections = store.load(pkg)
    s = find(sections, sec)
    if s is None or (opt is not None and opt not in s["opts"]):
        raise UciError(NOT_FOUND)
    if opt is None:
        sections.remove(s)
    else:
        del s["opts"][opt]
    store.stage(pkg, sections)
    return ""


def cmd_show(store: Store, arg: str | None) -> str:
    if arg is None:
        pkgs = sorted(p for p in os.listdir(store.confdir) if not p.startswith("."))
        return "".join(cmd_show(store, p) for p in pkgs)
    pkg, _, rest = arg.partition(".")
    sections = store.load(pkg)
    only = find(sections, rest.split(".", 1)[0]) if rest else None
    if rest and only is None:
        raise UciError(NOT_FOUND)
    out = []
    for s in sections if only is None else [only]:
        shown = f"{pkg}.{shown_name(sections, s)}"
        out.append(f"{shown}={s['type']}\n")
        for opt, val in s["opts"].items():
            text = " ".join(quote(v) for v in val) if isinstance(val, list) else quote(val)
            out.append(f"{shown}.{opt}={text}\n")
    return "".join(out)


def cmd_commit(store: Store, arg: str | None) -> str:
    if arg is not None:
        store.commit(arg)
    elif os.path.isdir(store.savedir):
        for pkg in sorted(os.listdir(store.savedir)):
            store.commit(pkg)
    return ""


def cmd_revert(store: Store, arg: str) -> str:
    store.revert(arg.split(".", 1)[0])
    return ""


NEEDS_ARG: dict[str, Callable[[Store, str], str]] = {
    "get": cmd_get,
    "set": cmd_set,
    "delete": cmd_delete,
    "revert": cmd_revert,
}
OPTIONAL_ARG: dict[str, Callable[[Store, str | None], str]] = {
    "show": cmd_show,
    "commit": cmd_commit,
}


def main(argv: list[str]) -> int:
    quiet = False
    dirs = {"-c": "/etc/config", "-t": "/tmp/.uci"}
    while argv and argv[0].startswith("-"):
        flag = argv.pop(0)
        if flag == "-q":
            quiet = True
        elif flag in dirs and argv:
            dirs[flag] = argv.pop(0)
        else:
            print(f"uci stand-in: unsupported flag {flag}", file=sys.stderr)
            return 1
    store = Store(dirs["-c"], dirs["-t"])
    try:
        if argv and argv[0] in NEEDS_ARG and len(argv) == 2:
            out = NEEDS_ARG[argv[0]](store, argv[1])
        elif argv and argv[0] in OPTIONAL_ARG and len(argv) <= 2:
            out = OPTIONAL_ARG[argv[0]](store, argv[1] if len(argv) == 2 else None)
        else:
            print(f"uci stand-in: unsupported command line {argv!r}", file=sys.stderr)
            return 1
    except UciError as exc:
        if not quiet:
            print(f"uci: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
