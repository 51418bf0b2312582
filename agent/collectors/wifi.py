"""Connected Wi-Fi client counts from hostapd, iwinfo and iw.

Pure ``parse_*`` functions turn one tool's output into a count; ``count_clients``
runs the tools through the injected :class:`~agent.runner.CommandRunner`.
Client MACs are read only to de-duplicate: nothing but counts leaves this module,
and error messages mask anything that looks like an address.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence

from agent.collectors.files import list_dir
from agent.runner import CommandError, CommandRunner, run_checked

__all__ = [
    "WIFI_SOURCES",
    "ParseError",
    "count_clients",
    "list_wifi_ifaces",
    "parse_hostapd_all_sta",
    "parse_iw_station_dump",
    "parse_iwinfo_assoclist",
    "parse_ubus_clients",
    "parse_ubus_hostapd_list",
]


class ParseError(ValueError):
    """Tool output without the expected shape; the message says what was wrong."""


WIFI_SOURCES = ("ubus", "iwinfo", "iw", "hostapd_cli")

_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
# IFNAMSIZ is 16 including the NUL; a leading '-' would read as an option.
_IFNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}")

_MASKS = (
    (re.compile(_MAC), "<mac>"),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"), "<addr>"),
)


def describe(text: str) -> str:
    """First non-blank line, addresses masked, cut short: safe to put in an error."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    for pattern, mask in _MASKS:
        line = pattern.sub(mask, line)
    return repr(line[:80])


def parse_ubus_clients(text: str) -> int:
    """Count stations in ``ubus call hostapd.<if> get_clients`` JSON.

    A client counts when ``authorized`` is true; without that key, when ``assoc``
    is true; without either, it counts as present.
    """
    if not text.strip():
        raise ParseError("ubus get_clients: empty output")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        cut = exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string")
        what = "truncated JSON" if cut else f"invalid JSON at char {exc.pos}"
        raise ParseError(f"ubus get_clients: {what}") from exc
    clients = doc.get("clients") if isinstance(doc, dict) else None
    if not isinstance(clients, dict):
        raise ParseError("ubus get_clients: no 'clients' object")
    count = 0
    for info in clients.values():
        if not isinstance(info, dict):
            raise ParseError("ubus get_clients: a client entry is not an object")
        if "authorized" in info:
            count += info["authorized"] is True
        elif "assoc" in info:
            count += info["assoc"] is True
        else:
            count += 1
    return count


# iwinfo_cli.c print_assoclist: "%s  %s / %s (SNR %d)  %d ms ago". Requiring the
# whole line means a header cut mid-line is not counted.
_IWINFO_HEADER = re.compile(rf"({_MAC})\s+\S.*\bms ago\s*")


def parse_iwinfo_assoclist(text: str) -> int:
    """Count stations in ``iwinfo <if> assoclist`` output."""
    stripped = text.strip()
    if stripped == "No station connected":
        return 0
    macs = {m[1].lower() for ln in text.splitlines() if (m := _IWINFO_HEADER.fullmatch(ln))}
    if macs:
        return len(macs)
    if not stripped:
        raise ParseError("iwinfo assoclist: empty output")
    # e.g. "No information available": iwinfo exits 0 but could not ask the driver.
    raise ParseError(f"iwinfo assoclist: unexpected output {describe(text)}")


_IW_HEADER = re.compile(rf"Station ({_MAC}) \(on \S+\)\s*")
_IW_AUTHORIZED = re.compile(r"\s+authorized:\s*(\S*)\s*")


def parse_iw_station_dump(text: str) -> int:
    """Count stations in ``iw dev <if> station dump`` output.

    A station whose block says ``authorized: no`` is not counted. Output cut off
    mid-block still counts every complete ``Station ... (on ...)`` header.
    """
    authorized: dict[str, bool] = {}
    current: str | None = None
    stray = False
    for line in text.splitlines():
        if m := _IW_HEADER.fullmatch(line):
            current = m[1].lower()
            authorized.setdefault(current, True)
        elif current is not None:
            a = _IW_AUTHORIZED.fullmatch(line)
            # Only a complete "no" excludes: a value cut to "n" is not evidence.
            if a and a[1] in ("yes", "no"):
                authorized[current] = a[1] == "yes"
        elif line.strip():
            stray = True
    if not authorized and stray:
        raise ParseError(f"iw station dump: unexpected output {describe(text)}")
    return sum(authorized.values())


_SELECTED = re.compile(r"Selected interface '[^']*'")
_MAC_LINE = re.compile(_MAC)


def parse_hostapd_all_sta(text: str) -> int:
    """Count stations in ``hostapd_cli -i <if> all_sta`` output.

    Each station is a MAC line followed by ``key=value`` lines; when it has a
    ``flags=`` line it counts only if the flags include ``[AUTHORIZED]``.
    """
    authorized: dict[str, bool] = {}
    current: str | None = None
    stray = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _SELECTED.fullmatch(line):
            continue
        if _MAC_LINE.fullmatch(line):
            current = line.lower()
            authorized.setdefault(current, True)
        elif current is not None and "=" in line:
            key, _, value = line.partition("=")
            if key == "flags":
                authorized[current] = "[AUTHORIZED]" in value
        else:
            stray = True
    if not authorized and stray:
        raise ParseError(f"hostapd_cli all_sta: unexpected output {describe(text)}")
    return sum(authorized.values())


def parse_ubus_hostapd_list(text: str) -> list[str]:
    """Interface names from ``ubus list 'hostapd.*'``, in listed order.

    ubus ends every path with a newline, so a last line without one was cut
    short and is dropped rather than reported as a wrong name.
    """
    lines = text.split("\n")
    if not text.endswith("\n"):
        lines.pop()
    names: list[str] = []
    for raw in lines:
        line = raw.strip()
        if not line or line == "hostapd":
            continue
        prefix, dot, name = line.partition(".")
        if prefix != "hostapd" or not dot or not _IFNAME.fullmatch(name):
            raise ParseError(f"ubus list hostapd.*: unexpected line {describe(line)}")
        if name not in names:
            names.append(name)
    return names


_SOURCES: dict[str, tuple[Callable[[str], list[str]], Callable[[str], int]]] = {
    "ubus": (lambda i: ["ubus", "call", f"hostapd.{i}", "get_clients"], parse_ubus_clients),
    "iwinfo": (lambda i: ["iwinfo", i, "assoclist"], parse_iwinfo_assoclist),
    "iw": (lambda i: ["iw", "dev", i, "station", "dump"], parse_iw_station_dump),
    "hostapd_cli": (lambda i: ["hostapd_cli", "-i", i, "all_sta"], parse_hostapd_all_sta),
}


def _reason(source: str, exc: Exception) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if msg.startswith((f"{source}:", f"{source} ")) else f"{source}: {msg}"


def count_clients(runner: CommandRunner, iface: str, sources: Sequence[str]) -> int:
    """Connected stations on ``iface`` from the first of ``sources`` that works.

    ``sources`` are names from :data:`WIFI_SOURCES`, tried in order. If none runs
    and parses, raise :class:`CommandError` giving every source's reason on one line.
    """
    if not _IFNAME.fullmatch(iface):
        raise CommandError(f"wifi clients: invalid interface name {iface!r}")
    reasons: list[str] = []
    for source in sources:
        if source not in _SOURCES:
            reasons.append(f"{source}: unknown source")
            continue
        build_argv, parse = _SOURCES[source]
        try:
            return parse(run_checked(runner, build_argv(iface)))
        except (CommandError, ParseError) as exc:
            reasons.append(_reason(source, exc))
    detail = "; ".join(reasons) if reasons else "no sources configured"
    raise CommandError(f"wifi clients on {iface}: {detail}")


def list_wifi_ifaces(sys_class_net: str | os.PathLike[str]) -> list[str]:
    """Sorted names of interfaces under a ``/sys/class/net``-like directory that are wireless.

    An interface is wireless when it has a ``wireless`` or ``phy80211`` entry
    (``phy80211`` is a symlink, so a dangling one still counts).
    """
    base = os.fspath(sys_class_net)
    return sorted(
        name
        for name in list_dir(base)
        if any(os.path.lexists(f"{base}/{name}/{marker}") for marker in ("wireless", "phy80211"))
    )
