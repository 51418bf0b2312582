"""A STAND-IN for OpenWrt's `uci` command line tool, for tests only (the context and commands;
parsing, sections and delta lines are in uci_model.py).

The real uci (libuci and its CLI, openwrt/uci) is built for an OpenWrt userland and is in no
package registry this machine reaches, so the tests put ``tests/hooks/bin/uci`` (which runs
this file) first on PATH. It is our own code, written to behave as the real one does. Each
behaviour below was read from openwrt/uci (cli.c and delta.c at commit 5781664d, list.c and
libuci.c at e4516d01, file.c at 3cda2512, util.c) and matches what
../shared/reference/anchors-openwrt.md (last section) saw the real uci f3fc0b7 do:

- Config files are parsed as file.c does: ``'...'`` is literal, ``"..."`` and bare words take
  backslash escapes, a backslash at the end of a line continues it, ``#`` ends the line, a
  quoted value may span lines, ``;`` separates commands. ``option x ''`` sets nothing.
- **Anonymous sections** (``config TYPE`` with no name, or ``uci add PKG TYPE``) get a name
  when they are created (list.c, uci_fixup_section): ``cfg`` + two hex digits of the
  package's section counter + four hex digits of a djb hash of the type. The counter goes up
  by one for every section and once more for every anonymous one, so on the shipped
  /etc/config/titik without its ``telemetry`` section, ``uci add titik telemetry`` prints
  ``cfg0832a0``. ``uci show PKG`` calls them ``@TYPE[N]`` (N counts every section of that
  type); ``show PKG.SECTION``, ``show -X`` and ``export -n`` use the ``cfgXXXXXX`` name.
- Changing an option's value re-creates it at the end of its section (list.c, uci_set), so
  a committed file can list options in a different order than before.
- **Changes are delta lines**, appended to ``SAVEDIR/PKG`` (``-t``; default /tmp/.uci) as
  delta.c's uci_delta_save writes them: ``PKG.SEC='TYPE'`` or ``PKG.SEC.OPT='VALUE'`` for a
  set, ``+PKG.cfgXXXXXX='TYPE'`` for an add, ``-PKG.SEC[.OPT]`` for a delete, ``|`` and
  ``~`` for add_list and del_list, ``@`` rename, ``^`` reorder; values in single quotes,
  ``'`` written as ``'\\''``. Setting an option to the value it has writes nothing; setting
  a section's type always writes a line. The delta file has the mode of the config file.
- Reading a package applies the delta files of every delta path, in order: the compiled-in
  /tmp/.uci first, then the ``-t``/``-P`` directory (libuci.c adds /tmp/.uci;
  uci_set_savedir appends). So with ``-t DIR``, changes staged in /tmp/.uci by LuCI or a
  plain ``uci set`` are seen, and committed, too.
- ``commit`` rewrites the file (a temp file ``.PKG.uci-XXXXXX`` beside it, the old mode,
  then a rename) only if some delta line applied, and then **truncates SAVEDIR/PKG to zero
  bytes and leaves it there** (delta.c, uci_load_delta). With ``-P`` it commits nothing.
- ``revert PKG[.SEC[.OPT]]`` rewrites SAVEDIR/PKG without the matching lines (an empty file
  if all matched); it creates no file.
- ``get`` prints a list's items joined by spaces, quoting an item that holds whitespace;
  ``changes`` prints ``PKG.SEC.OPT='v'``, ``+=`` for a list add, ``-=`` for a list delete and
  ``-PKG.SEC`` for a delete, for the delta lines of every delta path.
- Errors are ``uci: Entry not found``, ``uci: Invalid argument`` or ``uci: Parse error``
  on stderr (nothing with ``-q``), exit 1; an unknown command prints the usage and exits 255.

Covered: ``get set delete add add_list del_list show changes export commit revert`` and the
flags ``-q -c -t -p -P -n -N -s -S -X -d``. Not covered (exit 1, "not in this stand-in"):
``batch import rename reorder`` and ``-f -m -L``. The paths uci has compiled in (/etc/config,
/tmp/.uci) are taken under ``$STANDIN_ROOT``, so that a test's temp root stands for ``/``.
Each ``commit`` is also appended to ``$STANDIN_LOG`` as "uci commit PKG".
"""

from __future__ import annotations

# Only os and sys (and collections.abc, about 3 ms): the hooks call uci dozens of times per
# test, and importing re, json or typing would triple this script's start-up time.
import os
import sys
from collections.abc import Callable

# The stand-in runs with tests/hooks on sys.path (bin/uci), so its other half is top-level.
from uci_model import (
    ADD,
    CHANGE,
    INVALID,
    LIST_ADD,
    LIST_DEL,
    NOT_FOUND,
    PARSE,
    REMOVE,
    UCI_CONFDIR,
    UCI_DIRMODE,
    UCI_FILEMODE,
    UCI_SAVEDIR,
    Package,
    Ptr,
    UciError,
    UciSection,
    apply_delta,
    commands,
    delta_line,
    parse_config,
    parse_delta,
    quote,
    valid,
)

# --- the context: files and directories -----------------------------------------------------


class Uci:
    def __init__(self) -> None:
        self.confdir = UCI_CONFDIR
        self.savedir = UCI_SAVEDIR
        self.delta_path = [UCI_SAVEDIR]  # libuci.c uci_alloc_context
        self.strict = True
        self.export_names = False
        self.show_ext = True
        self.nocommit = False
        self.delimiter = " "

    def set_savedir(self, d: str) -> None:
        """delta.c uci_set_savedir: the save dir goes (or moves) to the end of the path."""
        if d in self.delta_path:
            self.delta_path.remove(d)
        self.delta_path.append(d)
        self.savedir = d

    def config_path(self, name: str) -> str:
        return os.path.join(self.confdir, name)

    def load(self, name: str) -> tuple[Package, int]:
        """file.c uci_file_load + delta.c uci_load_delta: (package, delta lines applied)."""
        if not valid(name, package=True):
            raise UciError(PARSE)
        try:
            with open(self.config_path(name), encoding="utf-8") as f:
                text = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise UciError(NOT_FOUND) from None
        pkg = Package(name)
        parse_config(pkg, text, self.strict)
        changes = 0
        for d in self.delta_path:
            try:
                with open(os.path.join(d, name), encoding="utf-8") as f:
                    text = f.read()
            except OSError:
                continue
            for words in commands(text):
                try:
                    cmd, ptr = parse_delta(words)
                    if ptr.package != name:
                        raise UciError(PARSE)
                    pkg.saved.append((cmd, ptr.section or "", ptr.option, ptr.value))
                    apply_delta(pkg, cmd, ptr)
                    changes += 1
                except (UciError, ValueError):
                    continue  # "ignore parse errors in single lines"
        return pkg, changes

    def lookup(self, ptr: Ptr) -> tuple[Package, UciSection | None, bool]:
        """list.c uci_lookup_ptr: (package, section, complete)."""
        pkg, _ = self.load(ptr.package)
        if ptr.section is None:
            return pkg, None, True
        if ptr.extended:
            s = self.lookup_ext(pkg, ptr.section)
            if s is not None:
                ptr.section = s.name
        else:
            s = pkg.lookup(ptr.section)
        complete = s is not None and (ptr.option is None or ptr.option in s.opts)
        return pkg, s, complete

    @staticmethod
    def lookup_ext(pkg: Package, ref: str) -> UciSection | None:
        """list.c uci_lookup_ext_section: @TYPE[N], @[N], negative N from the end."""
        if not (ref.startswith("@") and ref.endswith("]") and "[" in ref):
            raise UciError(INVALID)
        kind, _, idx = ref[1:-1].partition("[")
        if kind and not valid(kind):
            raise UciError(INVALID)
        try:
            n = int(idx)
        except ValueError:
            raise UciError(INVALID) from None
        typed = [s for s in pkg.sections if not kind or s.type == kind]
        if n < 0:
            n += len(typed)
        return typed[n] if 0 <= n < len(typed) else None

    def save(self, pkg: Package) -> None:
        """delta.c uci_save: append this run's delta lines to SAVEDIR/PKG."""
        if not pkg.pending:
            return
        try:
            if not os.path.isdir(self.savedir):  # one level, with the config dir's mode
                try:
                    mode = os.stat(self.confdir).st_mode & 0o7777
                except OSError:
                    mode = UCI_DIRMODE
                os.mkdir(self.savedir, mode)
            try:
                mode = os.stat(self.config_path(pkg.name)).st_mode & 0o7777
            except OSError:
                mode = UCI_FILEMODE
            fd = os.open(os.path.join(self.savedir, pkg.name), os.O_WRONLY | os.O_CREAT, mode)
        except OSError:
            raise UciError("I/O error") from None
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            f.write("".join(pkg.pending))

    def export(self, pkg: Package, header: bool) -> str:
        """file.c uci_export_package."""
        out = [f"package {pkg.name}\n"] if header else []
        for s in pkg.sections:
            name = f" {quote(s.name)}" if not s.anon or self.export_names else ""
            out.append(f"\nconfig {s.type}{name}\n")
            for opt, val in s.opts.items():
                if isinstance(val, list):
                    out.extend(f"\tlist {opt} {quote(v)}\n" for v in val)
                else:
                    out.append(f"\toption {opt} {quote(val)}\n")
        out.append("\n")
        return "".join(out)

    def commit(self, name: str) -> None:
        """file.c uci_file_commit + delta.c uci_load_delta(flush)."""
        log = os.environ.get("STANDIN_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"uci commit {name}\n")
        if self.nocommit:
            return
        pkg, changes = self.load(name)
        if not changes:
            return
        path = self.config_path(name)
        mode = os.stat(path).st_mode & 0o7777
        tmp = os.path.join(self.confdir, f".{name}.uci-{os.getpid():06d}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(self.export(pkg, header=False))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, os.path.realpath(path))
        try:  # opened for writing without O_CREAT: no delta file, nothing to truncate
            fd = os.open(os.path.join(self.savedir, name), os.O_WRONLY)
        except OSError:
            return
        os.ftruncate(fd, 0)
        os.close(fd)

    def revert(self, name: str, sec: str | None, opt: str | None) -> None:
        """delta.c uci_filter_delta: rewrite SAVEDIR/PKG without the matching lines."""
        path = os.path.join(self.savedir, name)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return
        keep = []
        for words in commands(text):
            try:
                cmd, ptr = parse_delta(words)
            except UciError:
                continue
            match = (sec is None or ptr.section == sec) and (opt is None or ptr.option == opt)
            if not match:
                keep.append(delta_line(cmd, name, ptr.section or "", ptr.option, ptr.value))
        with open(path, "r+", encoding="utf-8") as f:
            f.truncate(0)
            f.write("".join(keep))

    def configs(self) -> list[str]:
        """file.c uci_list_config_files."""
        try:
            names = sorted(os.listdir(self.confdir))
        except OSError:
            raise UciError(NOT_FOUND) from None
        return [
            n
            for n in names
            if "." not in n and valid(n, package=True) and os.path.isfile(self.config_path(n))
        ]


# --- commands (cli.c) -----------------------------------------------------------------------


def show_value(val: str | list[str], quoted: bool, delimiter: str) -> str:
    """cli.c uci_show_value."""
    if isinstance(val, str):
        return quote(val) if quoted else val
    items = [quote(v) if quoted or any(c in v for c in " \t\r\n") else v for v in val]
    return delimiter.join(items)


def show_section(uci: Uci, pkg: Package, s: UciSection, ref: str) -> str:
    out = [f"{pkg.name}.{ref}={s.type}\n"]
    for opt, val in s.opts.items():
        out.append(f"{pkg.name}.{ref}.{opt}={show_value(val, True, uci.delimiter)}\n")
    return "".join(out)


def cmd_show(uci: Uci, ptr: Ptr) -> str:
    pkg, s, complete = uci.lookup(ptr)
    if not complete:
        raise UciError(NOT_FOUND)
    if s is None:
        refs = [(t, pkg.shown(t) if uci.show_ext else t.name) for t in pkg.sections]
        return "".join(show_section(uci, pkg, t, ref) for t, ref in refs)
    if ptr.option is None:
        return show_section(uci, pkg, s, s.name)
    val = show_value(s.opts[ptr.option], True, uci.delimiter)
    return f"{pkg.name}.{s.name}.{ptr.option}={val}\n"


def cmd_get(uci: Uci, ptr: Ptr) -> str:
    _, s, complete = uci.lookup(ptr)
    if not complete:
        raise UciError(NOT_FOUND)
    if s is None:
        return ""
    if ptr.option is None:
        return f"{s.type}\n"
    return show_value(s.opts[ptr.option], False, uci.delimiter) + "\n"


def cmd_changes(uci: Uci, ptr: Ptr) -> str:
    pkg, _, _ = uci.lookup(ptr)
    out = []
    for cmd, sec, opt, value in pkg.saved:
        line = f"{'-' if cmd == REMOVE else ''}{pkg.name}.{sec}" + (f".{opt}" if opt else "")
        if cmd != REMOVE:
            op = {LIST_ADD: "+=", LIST_DEL: "-="}.get(cmd, "=")
            line += op + quote(value or "")
        out.append(line + "\n")
    return "".join(out)


def cmd_export(uci: Uci, ptr: Ptr) -> str:
    pkg, _, _ = uci.lookup(ptr)
    return uci.export(pkg, header=True)


def cmd_commit(uci: Uci, ptr: Ptr) -> str:
    uci.lookup(ptr)
    uci.commit(ptr.package)
    return ""


PACKAGE_CMDS: dict[str, Callable[[Uci, Ptr], str]] = {
    "show": cmd_show,
    "changes": cmd_changes,
    "export": cmd_export,
    "commit": cmd_commit,
}


def section_cmd(uci: Uci, cmd: str, arg: str) -> str:
    """cli.c uci_do_section_cmd: get, set, delete, add_list, del_list, revert."""
    ptr = Ptr(arg)
    if cmd in ("get", "revert") and ptr.value is not None:
        raise UciError("")  # cli.c returns 1 without a message
    if cmd == "get":
        return cmd_get(uci, ptr)
    pkg, s, complete = uci.lookup(ptr)
    if cmd == "revert":
        uci.revert(pkg.name, ptr.section, ptr.option)
        return ""
    if ptr.section is None:
        raise UciError(INVALID)
    if ptr.extended and s is None:
        raise UciError(NOT_FOUND if cmd == "delete" else INVALID)
    EDITS[cmd](pkg, ptr, s, complete)
    uci.save(pkg)
    return ""


def edit_set(pkg: Package, ptr: Ptr, s: UciSection | None, complete: bool) -> None:
    sec, value = ptr.section or "", ptr.value
    if value is None:
        raise UciError(INVALID)
    if pkg.set(sec, ptr.option, value):
        cmd = CHANGE if value else REMOVE
        pkg.pending.append(delta_line(cmd, pkg.name, sec, ptr.option, value or None))


def edit_delete(pkg: Package, ptr: Ptr, s: UciSection | None, complete: bool) -> None:
    sec, value = ptr.section or "", ptr.value
    if value is not None and not value.lstrip("-").isdigit():
        raise UciError("")
    if not complete:
        raise UciError(NOT_FOUND)
    pkg.delete(sec, ptr.option, value)
    pkg.pending.append(delta_line(REMOVE, pkg.name, sec, ptr.option, value))


def edit_add_list(pkg: Package, ptr: Ptr, s: UciSection | None, complete: bool) -> None:
    sec, opt, value = ptr.section or "", ptr.option, ptr.value
    if value is None or opt is None or s is None:
        raise UciError(INVALID)
    pkg.add_list(sec, opt, value)
    pkg.pending.append(delta_line(LIST_ADD, pkg.name, sec, opt, value))


def edit_del_list(pkg: Package, ptr: Ptr, s: UciSection | None, complete: bool) -> None:
    sec, opt, value = ptr.section or "", ptr.option, ptr.value
    if value is None or opt is None or s is None:
        raise UciError(INVALID)
    if isinstance(s.opts.get(opt), list):
        pkg.del_list(sec, opt, value)
        pkg.pending.append(delta_line(LIST_DEL, pkg.name, sec, opt, value))


EDITS: dict[str, Callable[[Package, Ptr, UciSection | None, bool], None]] = {
    "set": edit_set,
    "delete": edit_delete,
    "add_list": edit_add_list,
    "del_list": edit_del_list,
}


def cmd_add(uci: Uci, name: str, type_: str) -> str:
    """cli.c uci_do_add: the new anonymous section's name on stdout."""
    pkg, _ = uci.load(name)
    s = pkg.add_section(type_)
    pkg.pending.append(delta_line(ADD, pkg.name, s.name, None, type_))
    uci.save(pkg)
    return f"{s.name}\n"


USAGE = "Usage: uci [<options>] <command> [<arguments>]\n"
NOT_HERE = ("batch", "import", "rename", "ren", "reorder")


def run(uci: Uci, argv: list[str]) -> str:
    cmd = argv[0].lower()
    args = argv[1:]
    if cmd in ("get", "set", "delete", "del", "add_list", "del_list", "revert"):
        if len(args) != 1:
            raise Usage()
        return section_cmd(uci, "delete" if cmd == "del" else cmd, args[0])
    if cmd in PACKAGE_CMDS:
        if len(args) > 1:
            raise Usage()
        if args:
            return PACKAGE_CMDS[cmd](uci, Ptr(args[0]))
        out = []
        for name in uci.configs():
            try:
                out.append(PACKAGE_CMDS[cmd](uci, Ptr(name)))
            except UciError:
                continue
        return "".join(out)
    if cmd == "add":
        if len(args) != 2:
            raise Usage()
        return cmd_add(uci, args[0], args[1])
    if cmd == "help":
        sys.stderr.write(USAGE)
        return ""
    if cmd in NOT_HERE:
        raise NotHere(f"command {cmd}")
    raise Usage()


class Usage(Exception):
    pass


class NotHere(Exception):
    pass


def parse_flags(uci: Uci, argv: list[str]) -> bool | None:
    """cli.c main's getopt loop; returns quiet, or None where uci prints its usage."""
    quiet = False
    while argv and argv[0].startswith("-") and argv[0] != "-":
        flags = argv.pop(0)[1:]
        while flags:
            f, flags = flags[0], flags[1:]
            if f in "cdfpPt":
                if not flags and not argv:
                    return None
                set_dir_flag(uci, f, flags or argv.pop(0))
                flags = ""
            elif f == "q":
                quiet = True
            elif f in "sS":
                uci.strict = f == "s"
            elif f in "nN":
                uci.export_names = f == "n"
            elif f == "X":
                uci.show_ext = False
            elif f in "mL":
                raise NotHere(f"-{f}")
            else:  # getopt's '?': cli.c prints the usage and returns 0
                return None
    return quiet


def set_dir_flag(uci: Uci, flag: str, val: str) -> None:
    if flag == "c":
        uci.confdir = val
    elif flag == "d":
        uci.delimiter = val
    elif flag == "p":  # delta.c uci_add_delta_path: before the save dir, which stays last
        uci.delta_path.insert(len(uci.delta_path) - 1, val)
    elif flag in "Pt":
        uci.set_savedir(val)
        uci.nocommit = uci.nocommit or flag == "P"
    else:
        raise NotHere("-f")


def main(argv: list[str]) -> int:
    uci = Uci()
    quiet = False
    try:
        flags = parse_flags(uci, argv)
        if flags is None or not argv:
            sys.stderr.write(USAGE)
            return 0
        quiet = flags
        out = run(uci, argv)
    except Usage:
        sys.stderr.write(USAGE)
        return 255
    except NotHere as exc:
        print(f"uci stand-in: {exc} is not in this stand-in", file=sys.stderr)
        return 1
    except UciError as exc:
        if not quiet and str(exc):
            print(f"uci: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
