"""Radio health per access-point interface: channel, width, transmit power, noise floor, and
how busy the channel in use was over the interval.

- OpenWrt: ``ubus call iwinfo info`` (rpcd's iwinfo plugin) for channel, width (``htmode``)
  and power; ``ubus call iwinfo survey`` for the survey, ``iw dev <if> survey dump`` when rpcd
  has no ``survey`` method (before OpenWrt 22.03).
- Raspberry Pi OS and any Linux: ``iw dev <if> info`` and ``iw dev <if> survey dump``.
- Simulated: plausible figures that follow the site's day.

The busy share comes from the survey of the channel in use: the kernel counts, per channel,
the milliseconds the radio was on it (``active``) and the medium was busy (``busy``), since
the driver started. A sample reports the busy share of the *difference* since the previous
one, so it says how the last interval was; it is null on the first sample, after a channel
change and when the counters went back (a driver reset). Only numbers leave this module: the
interface's address, the BSSID and the SSID in the tools' output are never read into it.
Fixtures: tests/fixtures/collectors/radio/ (SOURCES.md names each one's origin).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from agent.collectors.base import Collector, Context, LinuxHost, SimHost, recalled, remember
from agent.collectors.wifi import ParseError, describe
from agent.protocol import RadioHealth
from agent.runner import CommandError, run_checked


class Info(NamedTuple):
    """What the interface is set to."""

    channel: int | None
    mhz: int | None  # the primary channel's frequency, to find it in the survey
    width: int | None
    txpower: float | None
    noise: int | None  # None where the driver does not say (iwinfo reports 0)


class Survey(NamedTuple):
    """The survey counters of the channel in use."""

    mhz: int
    noise: int | None
    active_ms: int | None
    busy_ms: int | None


# -- parsers (pure) -------------------------------------------------------------------------

# "HT20", "VHT80", "HE160", "EHT320", "VHT80+80"; "NOHT" is 20 MHz without HT.
_HTMODE = re.compile(r"(?:HT|VHT|HE|EHT)(\d+)(\+80)?")


def width_of_htmode(htmode: str) -> int | None:
    """Channel width in MHz from iwinfo's ``htmode`` (80+80 counts as 160)."""
    if htmode == "NOHT":
        return 20
    m = _HTMODE.fullmatch(htmode)
    if m is None:
        return None
    return int(m[1]) + (80 if m[2] else 0)


def _int(doc: dict[str, Any], key: str) -> int | None:
    value = doc.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _load(text: str, what: str) -> dict[str, Any]:
    if not text.strip():
        raise ParseError(f"{what}: empty output")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ParseError(f"{what}: invalid JSON at char {exc.pos}") from exc
    if not isinstance(doc, dict):
        raise ParseError(f"{what}: not a JSON object")
    return doc


def parse_ubus_info(text: str) -> Info:
    """``ubus call iwinfo info`` (keys of ``rpc_iwinfo_info`` in openwrt/rpcd ``iwinfo.c``)."""
    doc = _load(text, "ubus iwinfo info")
    channel, mhz = _int(doc, "channel"), _int(doc, "frequency")
    if channel is None and mhz is None:
        raise ParseError("ubus iwinfo info: no channel (is the interface up?)")
    htmode = doc.get("htmode")
    noise = _int(doc, "noise")
    txpower = _int(doc, "txpower")
    return Info(
        channel=channel,
        mhz=mhz,
        width=width_of_htmode(htmode) if isinstance(htmode, str) else None,
        txpower=float(txpower) if txpower is not None else None,
        noise=noise if noise else None,  # 0: the driver does not report it
    )


def _signed_noise(value: int | None) -> int | None:
    """libiwinfo keeps the survey's noise in an unsigned byte: 161 is -95 dBm."""
    if value is None or value == 0:
        return None
    return value - 256 if value > 127 else value


def parse_ubus_survey(text: str, mhz: int | None) -> Survey | None:
    """The entry for ``mhz`` in ``ubus call iwinfo survey`` (rpcd has no "in use" flag)."""
    doc = _load(text, "ubus iwinfo survey")
    results = doc.get("results")
    if not isinstance(results, list):
        raise ParseError("ubus iwinfo survey: no 'results' list")
    for entry in results:
        if isinstance(entry, dict) and mhz is not None and entry.get("mhz") == mhz:
            return Survey(
                mhz,
                _signed_noise(_int(entry, "noise")),
                _int(entry, "active_time"),
                _int(entry, "busy_time"),
            )
    return None


_IW_CHANNEL = re.compile(r"\s*channel (\d+) \((\d+) MHz\)(?:, width: (\d+) MHz)?.*")
_IW_TXPOWER = re.compile(r"\s*txpower (-?\d+(?:\.\d+)?) dBm\s*")


def parse_iw_info(text: str) -> Info:
    """``iw dev <if> info``: the ``channel ... width ...`` and ``txpower`` lines."""
    channel = mhz = width = None
    txpower = None
    for line in text.splitlines():
        if m := _IW_CHANNEL.fullmatch(line):
            channel, mhz = int(m[1]), int(m[2])
            width = int(m[3]) if m[3] else None
        elif m := _IW_TXPOWER.fullmatch(line):
            txpower = float(m[1])
    if channel is None:
        if not text.strip().startswith("Interface "):
            raise ParseError(f"iw info: unexpected output {describe(text)}")
        raise ParseError("iw info: no channel (is the interface up?)")
    return Info(channel, mhz, width, txpower, None)


_SURVEY_FIELDS = {
    "noise": re.compile(r"\s*noise:\s*(-?\d+) dBm\s*"),
    "active": re.compile(r"\s*channel active time:\s*(\d+) ms\s*"),
    "busy": re.compile(r"\s*channel busy time:\s*(\d+) ms\s*"),
}
_SURVEY_FREQ = re.compile(r"\s*frequency:\s*(\d+) MHz( \[in use\])?\s*")


def parse_iw_survey(text: str, mhz: int | None = None) -> Survey | None:
    """The block marked ``[in use]`` in ``iw dev <if> survey dump`` (else the one at ``mhz``).

    A block cut short keeps what it has: a missing counter is None, not a guess.
    """
    blocks: list[dict[str, Any]] = []
    stray = False
    for line in text.splitlines():
        if line.startswith("Survey data from "):
            blocks.append({})
        elif m := _SURVEY_FREQ.fullmatch(line):
            if blocks:
                blocks[-1].update(mhz=int(m[1]), in_use=bool(m[2]))
        elif blocks:
            for key, pattern in _SURVEY_FIELDS.items():
                if f := pattern.fullmatch(line):
                    blocks[-1][key] = int(f[1])
        elif line.strip():
            stray = True
    if not blocks and stray:
        raise ParseError(f"iw survey dump: unexpected output {describe(text)}")
    chosen = next((b for b in blocks if b.get("in_use")), None)
    if chosen is None and mhz is not None:
        chosen = next((b for b in blocks if b.get("mhz") == mhz), None)
    if chosen is None or "mhz" not in chosen:
        return None
    return Survey(chosen["mhz"], chosen.get("noise"), chosen.get("active"), chosen.get("busy"))


def busy_pct(prev: Survey | None, cur: Survey | None) -> float | None:
    """Busy share of the channel in use between two surveys; None when it cannot be known."""
    if prev is None or cur is None or prev.mhz != cur.mhz:
        return None
    if None in (prev.active_ms, prev.busy_ms, cur.active_ms, cur.busy_ms):
        return None
    d_active = cur.active_ms - prev.active_ms  # type: ignore[operator]
    d_busy = cur.busy_ms - prev.busy_ms  # type: ignore[operator]
    if d_active <= 0 or d_busy < 0:
        return None
    return round(min(100.0, 100.0 * d_busy / d_active), 1)


def build_radio(info: Info, survey: Survey | None, prev: Survey | None) -> RadioHealth:
    noise = survey.noise if survey is not None and survey.noise is not None else info.noise
    return RadioHealth(
        channel=info.channel,
        width_mhz=info.width,
        txpower_dbm=info.txpower,
        noise_dbm=noise,
        busy_pct=busy_pct(prev, survey),
    )


# -- readings -------------------------------------------------------------------------------


def _ubus(iface: str, method: str) -> list[str]:
    return ["ubus", "call", "iwinfo", method, json.dumps({"device": iface})]


def _iw(iface: str, *what: str) -> list[str]:
    return ["iw", "dev", iface, *what]


def _survey(ctx: Context, iface: str, read: Callable[[], Survey | None]) -> Survey | None:
    """A survey that cannot be read costs noise and busy share, not the radio's reading."""
    try:
        return read()
    except (CommandError, ParseError) as exc:
        ctx.warn(f"radio.{iface}.survey", str(exc))
        return None


def _read_openwrt(host: LinuxHost, iface: str, ctx: Context) -> tuple[Info, Survey | None]:
    info = parse_ubus_info(run_checked(host.runner, _ubus(iface, "info")))
    try:
        survey = parse_ubus_survey(run_checked(host.runner, _ubus(iface, "survey")), info.mhz)
    except (CommandError, ParseError):  # rpcd before 22.03 has no survey method
        survey = None
    if survey is None:
        survey = _survey(
            ctx,
            iface,
            lambda: parse_iw_survey(
                run_checked(host.runner, _iw(iface, "survey", "dump")), info.mhz
            ),
        )
    return info, survey


def _read_iw(host: LinuxHost, iface: str, ctx: Context) -> tuple[Info, Survey | None]:
    info = parse_iw_info(run_checked(host.runner, _iw(iface, "info")))
    survey = _survey(
        ctx,
        iface,
        lambda: parse_iw_survey(run_checked(host.runner, _iw(iface, "survey", "dump")), info.mhz),
    )
    return info, survey


def _collect(
    read: Callable[[LinuxHost, str, Context], tuple[Info, Survey | None]],
) -> Callable[[LinuxHost, Context], dict[str, RadioHealth]]:
    def collect(host: LinuxHost, ctx: Context) -> dict[str, RadioHealth]:
        ifaces = recalled(ctx, "wifi_ifaces")  # the same discovery as the clients collector's
        if ifaces is None:
            ifaces = remember(ctx, "wifi_ifaces", host.wifi_ifaces())
        out: dict[str, RadioHealth] = {}
        for iface in ifaces:
            key = f"radio.{iface}"
            try:
                info, survey = read(host, iface, ctx)
            except (CommandError, ParseError) as exc:
                ctx.warn(key, str(exc))
                ctx.memo.pop(key, None)
                continue
            out[iface] = build_radio(info, survey, ctx.memo.get(key))
            ctx.memo[key] = survey
        return out

    return collect


collect_openwrt = _collect(_read_openwrt)
collect_iw = _collect(_read_iw)

#: Channels of the simulated radios, by the seed's draw.
SIM_CHANNELS = ((1, 6, 11), (36, 44, 149))


def simulate(sim: SimHost, ctx: Context) -> dict[str, RadioHealth]:
    """The simulated site's two radios (2.4 GHz, 20 MHz; 5 GHz, 80 MHz), busier by day."""
    r = sim.rng
    busy = sim.busy(ctx.wall)
    first = "radio.sim" not in ctx.memo
    ctx.memo["radio.sim"] = True
    out = {}
    for i, iface in enumerate(sim.radios[:2]):
        channels = SIM_CHANNELS[i]
        out[iface] = RadioHealth(
            channel=channels[sim.capacity % len(channels)],
            width_mhz=(20, 80)[i],
            txpower_dbm=(20.0, 23.0)[i],
            noise_dbm=round(-95 + 3 * busy + r.uniform(-1, 1)),
            busy_pct=None if first else round(min(100.0, (15, 5)[i] + 45 * busy * r.random()), 1),
        )
    return out


COLLECTOR = Collector(
    "radio", {"openwrt": collect_openwrt, "linux": collect_iw, "simulated": simulate}
)
