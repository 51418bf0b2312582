"""The data side of the uci STAND-IN (tests/hooks/uci_standin.py has what it stands in for
and where each behaviour was read): config file parsing as file.c does, packages and
sections as list.c keeps them, pointers and delta lines as util.c and delta.c write them.
Only os and sys, like the stand-in itself (start-up time)."""

from __future__ import annotations

# Only os and sys (and collections.abc, about 3 ms): the hooks call uci dozens of times per
# test, and importing re, json or typing would triple this script's start-up time.
import os

ROOT = os.environ.get("STANDIN_ROOT", "").rstrip("/")
UCI_CONFDIR = ROOT + "/etc/config"
UCI_SAVEDIR = ROOT + "/tmp/.uci"
UCI_FILEMODE = 0o600
UCI_DIRMODE = 0o700

NOT_FOUND = "Entry not found"
INVALID = "Invalid argument"
PARSE = "Parse error"

# delta.c's uci_command_char; CHANGE has none.
ADD, REMOVE, CHANGE, RENAME, REORDER, LIST_ADD, LIST_DEL = "+", "-", "", "@", "^", "|", "~"
COMMAND_CHARS = "+-@^|~"

ALNUM = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


class UciError(Exception):
    pass


def valid(text: str, name: bool = False, package: bool = False) -> bool:
    """util.c uci_validate_str: names are [A-Za-z0-9_]; types and packages any printable
    ASCII but blanks (packages may also have '-')."""
    if not text:
        return False
    for c in text:
        if c in ALNUM or (c == "-" and package):
            continue
        if name or not 33 <= ord(c) <= 126:
            return False
    return True


def valid_text(value: str) -> bool:
    """util.c uci_validate_text: no control characters but tab, CR and LF."""
    return all(ord(c) >= 32 or c in "\t\r\n" for c in value)


def djbhash(h: int, text: str) -> int:
    """list.c djbhash: h is -1 for the first call."""
    if h == -1:
        h = 5381
    for b in text.encode():
        h = (h * 33 + (b - 256 if b > 127 else b)) & 0xFFFFFFFF  # char is signed on x86/MIPS
    return h & 0x7FFFFFFF


def quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


# --- parsing (file.c) -------------------------------------------------------------------------


def commands(text: str) -> list[list[str]]:
    """Split text into commands (lists of words) the way file.c's parse_str/next_arg do."""
    cmds: list[list[str]] = []
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\n;":
            if words:
                cmds.append(words)
                words = []
            i += 1
        elif c in " \t\r\v\f":
            i += 1
        elif c == "#":
            i = line_end(text, i)
        else:
            word, i = read_word(text, i)
            words.append(word)
    if words:
        cmds.append(words)
    return cmds


def line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def read_word(text: str, i: int) -> tuple[str, int]:
    """One word from text[i]: quotes, backslashes, '#' ends the line, a blank or ';' the word."""
    word: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise UciError(PARSE)
            word.append(text[i + 1 : end])
            i = end + 1
        elif c == '"':
            i = read_double_quoted(text, i + 1, word)
        elif c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":  # a backslash at the end of a line continues it
                word.append(text[i + 1])
            i += 2
        elif c == "#":
            return "".join(word), line_end(text, i)
        elif c in " \t\r\v\f\n;":
            break
        else:
            word.append(c)
            i += 1
    return "".join(word), i


def read_double_quoted(text: str, i: int, word: list[str]) -> int:
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            return i + 1
        if c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                word.append(text[i + 1])
            i += 2
        else:
            word.append(c)
            i += 1
    raise UciError(PARSE)


class UciSection:
    __slots__ = ("anon", "name", "opts", "type")

    def __init__(self, name: str, type_: str, anon: bool) -> None:
        self.name = name
        self.type = type_
        self.anon = anon
        self.opts: dict[str, str | list[str]] = {}


class Package:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sections: list[UciSection] = []
        self.n_section = 0
        self.saved: list[tuple[str, str, str | None, str | None]] = []  # for `changes`
        self.pending: list[str] = []  # delta lines of this run, for uci_save

    # list.c
    def lookup(self, name: str) -> UciSection | None:
        return next((s for s in self.sections if s.name == name), None)

    def alloc(self, type_: str, name: str | None) -> UciSection:
        self.n_section += 1
        s = UciSection(name or "", type_, name is None)
        self.sections.append(s)
        return s

    def add_section(self, type_: str) -> UciSection:
        s = self.alloc(type_, None)
        h = djbhash(-1, s.type)
        for opt, val in s.opts.items():  # always empty here: fixup runs as the section opens
            h = djbhash(h, opt)
            if isinstance(val, str):
                h = djbhash(h, val)
        self.n_section += 1
        s.name = f"cfg{self.n_section:02x}{h % 65536:04x}"
        return s

    def set(self, sec: str, opt: str | None, value: str) -> bool:
        """uci_set; returns whether a delta is recorded."""
        s = self.lookup(sec)
        if opt is not None and s is None:
            raise UciError(INVALID)
        if opt is None and value and not valid(value):
            raise UciError(INVALID)
        if not value:
            if s is None or (opt is not None and opt not in s.opts):
                return False
            self.delete(sec, opt)
            return True
        if opt is None:
            if s is None:
                self.alloc(value, sec)
            else:
                s.type = value
            return True
        assert s is not None
        if s.opts.get(opt) == value:
            return False
        s.opts.pop(opt, None)  # re-created at the end, as uci_free_option + uci_alloc_option
        s.opts[opt] = value
        return True

    def delete(self, sec: str, opt: str | None, index: str | None = None) -> None:
        s = self.lookup(sec)
        if s is None or (opt is not None and opt not in s.opts):
            raise UciError(NOT_FOUND)
        if opt is None:
            self.sections.remove(s)
            return
        cur = s.opts[opt]
        if index is not None and isinstance(cur, list):
            if index.lstrip("-").isdigit() and 0 <= int(index) < len(cur):
                del cur[int(index)]
            return
        del s.opts[opt]

    def add_list(self, sec: str, opt: str, value: str) -> None:
        s = self.lookup(sec)
        if s is None:
            raise UciError(INVALID)
        cur = s.opts.get(opt)
        if isinstance(cur, list):
            cur.append(value)
            return
        s.opts.pop(opt, None)
        s.opts[opt] = [cur, value] if cur is not None else [value]

    def del_list(self, sec: str, opt: str, value: str) -> None:
        s = self.lookup(sec)
        if s is None:
            raise UciError(INVALID)
        cur = s.opts.get(opt)
        if isinstance(cur, list):
            cur[:] = [v for v in cur if v != value]

    def rename(self, sec: str, opt: str | None, value: str) -> None:
        s = self.lookup(sec)
        if s is None or (opt is not None and opt not in s.opts):
            raise UciError(NOT_FOUND)
        if opt is None:
            s.name, s.anon = value, False
        else:
            s.opts = {(value if k == opt else k): v for k, v in s.opts.items()}

    def reorder(self, sec: str, pos: int) -> None:
        s = self.lookup(sec)
        if s is None:
            raise UciError(NOT_FOUND)
        self.sections.remove(s)
        self.sections.insert(max(pos, 0), s)

    def shown(self, s: UciSection) -> str:
        """cli.c uci_lookup_section_ref: @TYPE[N] for an anonymous section."""
        if not s.anon:
            return s.name
        same = [t for t in self.sections if t.type == s.type]
        return f"@{s.type}[{same.index(s)}]"


def parse_config(pkg: Package, text: str, strict: bool) -> None:
    """file.c uci_import of one package: config, option, list; package lines are skipped."""
    cur: UciSection | None = None
    for words in commands(text):
        try:
            cur = parse_line(pkg, cur, words, strict)
        except UciError:
            if strict:
                raise


def parse_line(
    pkg: Package, cur: UciSection | None, words: list[str], strict: bool
) -> UciSection | None:
    """file.c uci_parse_line; returns the section that following options go to."""
    kw, args = words[0], words[1:]
    if kw in ("package", "p"):
        return cur
    if kw in ("config", "c"):
        return parse_section(pkg, args, strict)
    if kw not in ("option", "o", "list", "l"):
        raise UciError(PARSE)
    if cur is None or not args or not valid(args[0], name=True):
        raise UciError(PARSE)
    if len(args) > 2 and strict:
        raise UciError(PARSE)
    value = args[1] if len(args) > 1 else ""
    if kw in ("list", "l"):
        pkg.add_list(cur.name, args[0], value)
    else:
        pkg.set(cur.name, args[0], value)
    return cur


def parse_section(pkg: Package, args: list[str], strict: bool) -> UciSection | None:
    """file.c uci_parse_config: an anonymous section is named as it opens."""
    if not args or not valid(args[0]):
        raise UciError(PARSE)
    name = args[1] if len(args) > 1 else ""
    if (name and not valid(name, name=True)) or (len(args) > 2 and strict):
        raise UciError(PARSE)
    if not name:
        return pkg.add_section(args[0])
    old = pkg.lookup(name)
    if old is not None and strict and old.type != args[0]:
        raise UciError(PARSE)
    pkg.set(name, None, args[0])
    return pkg.lookup(name)


# --- pointers (util.c uci_parse_ptr) and delta lines (delta.c) ----------------------------


class Ptr:
    __slots__ = ("extended", "option", "package", "section", "value")

    def __init__(self, text: str) -> None:
        path, eq, value = text.partition("=")
        self.value: str | None = value if eq else None
        parts = path.split(".")
        if len(parts) > 3 or not valid(parts[0], package=True):
            raise UciError(PARSE)
        self.package = parts[0]
        self.section = parts[1] if len(parts) > 1 else None
        self.option = parts[2] if len(parts) > 2 else None
        self.extended = self.section is not None and not valid(self.section, name=True)
        if self.option is not None and not valid(self.option, name=True):
            raise UciError(PARSE)
        if self.value is not None and not valid_text(self.value):
            raise UciError(PARSE)


def delta_line(cmd: str, pkg: str, sec: str, opt: str | None, value: str | None) -> str:
    """delta.c uci_delta_save."""
    line = f"{cmd}{pkg}.{sec}" + (f".{opt}" if opt is not None else "")
    if cmd == REMOVE and value is None:
        return line + "\n"
    return f"{line}={quote(value or '')}\n"


def parse_delta(words: list[str]) -> tuple[str, Ptr]:
    """delta.c uci_parse_delta_tuple: one argument, a command character, a pointer."""
    if len(words) != 1:
        raise UciError(INVALID)
    arg = words[0]
    cmd = arg[0] if arg and arg[0] in COMMAND_CHARS else CHANGE
    ptr = Ptr(arg[len(cmd) :])
    if ptr.section is None or ptr.extended or (cmd != REMOVE and ptr.value is None):
        raise UciError(INVALID)
    if cmd == REORDER and ptr.option is not None:
        raise UciError(INVALID)
    if cmd == RENAME and not valid(ptr.value or "", name=True):
        raise UciError(INVALID)
    if cmd in (LIST_ADD, LIST_DEL) and ptr.option is None:
        raise UciError(INVALID)
    return cmd, ptr


def apply_delta(pkg: Package, cmd: str, ptr: Ptr) -> None:
    """delta.c uci_parse_delta_line, after the line parsed."""
    sec, opt, value = ptr.section, ptr.option, ptr.value
    assert sec is not None
    if cmd == REORDER:
        pkg.reorder(sec, int(value) if value and value.isdigit() else 0)
    elif cmd == RENAME:
        pkg.rename(sec, opt, value or "")
    elif cmd == REMOVE:
        pkg.delete(sec, opt, value)
    elif cmd == LIST_ADD:
        pkg.add_list(sec, opt or "", value or "")
    elif cmd == LIST_DEL:
        pkg.del_list(sec, opt or "", value or "")
    else:
        pkg.set(sec, opt, value or "")
        s = pkg.lookup(sec)
        if cmd == ADD and opt is None and s is not None:
            s.anon = True
