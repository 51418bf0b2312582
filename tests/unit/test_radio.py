"""The radio collector: its parsers on real output (tests/fixtures/collectors/radio/, sources
in SOURCES.md), the busy share over an interval, and whole readings through stand-in tools
(this machine has no radio, ubus or rpcd: the stand-in runner answers with the captured
output the real tool printed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.collectors import radio
from agent.collectors.base import Context
from agent.collectors.radio import (
    Info,
    Survey,
    busy_pct,
    parse_iw_info,
    parse_iw_survey,
    parse_ubus_info,
    parse_ubus_survey,
    width_of_htmode,
)
from agent.collectors.wifi import ParseError
from agent.platforms.openwrt import OpenWrtPlatform
from agent.platforms.raspberrypi import RaspberryPiPlatform
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import Telemetry, encode
from agent.runner import CommandResult
from agent.sampling import run_collectors

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/collectors/radio"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def rpcd_survey(mhz: int, noise: int, active: int, busy: int) -> str:
    """``ubus call iwinfo survey`` as rpcd writes it (keys of rpc_iwinfo_survey, openwrt/rpcd
    iwinfo.c; no captured output was found, see SOURCES.md), with another channel before it."""
    other = {"mhz": 2412, "noise": 160, "active_time": 30, "busy_time": 29}
    entry = {"mhz": mhz, "noise": noise, "active_time": active, "busy_time": busy}
    tail = {"busy_time_ext": 0, "rx_time": 0, "tx_time": 0}
    return json.dumps({"results": [other | tail, entry | tail]})


# -- parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ubus_info_vht80.json", Info(149, 5745, 80, 13.0, None)),
        ("ubus_info_vht160.json", Info(36, 5180, 160, 23.0, None)),
        ("ubus_info_ht20_mesh.json", Info(11, 2462, 20, 20.0, None)),
    ],
)
def test_ubus_info(name: str, expected: Info) -> None:
    assert parse_ubus_info(fixture(name)) == expected


@pytest.mark.parametrize(
    ("htmode", "width"),
    [
        ("HT20", 20),
        ("HT40", 40),
        ("VHT80", 80),
        ("VHT80+80", 160),
        ("HE160", 160),
        ("EHT320", 320),
        ("NOHT", 20),
        ("weird", None),
    ],
)
def test_width_of_htmode(htmode: str, width: int | None) -> None:
    assert width_of_htmode(htmode) == width


@pytest.mark.parametrize("text", ["", "{", "[]", '{"phy": "phy0"}'])
def test_ubus_info_refuses_what_is_not_an_answer(text: str) -> None:
    with pytest.raises(ParseError, match="ubus iwinfo info"):
        parse_ubus_info(text)


def test_iw_info() -> None:
    assert parse_iw_info(fixture("iw_info_160.txt")) == Info(36, 5180, 160, 20.0, None)


def test_iw_info_without_a_channel_says_so() -> None:
    cut = fixture("iw_info_160.txt").split("        channel")[0]
    with pytest.raises(ParseError, match="no channel"):
        parse_iw_info(cut)
    with pytest.raises(ParseError, match="unexpected output"):
        parse_iw_info(fixture("iw_no_such_device.txt"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("iw_survey_in_use.txt", Survey(2472, -92, 15177460, 7723667)),
        ("iw_survey_ath9k.txt", Survey(2437, -95, 1704490481, 945335227)),
        ("iw_survey_carl9170.txt", Survey(2412, -86, 3339608, 270982)),
    ],
)
def test_iw_survey_takes_the_block_in_use(name: str, expected: Survey) -> None:
    assert parse_iw_survey(fixture(name)) == expected


def test_iw_survey_without_in_use_marker_uses_the_frequency() -> None:
    unmarked = fixture("iw_survey_ath9k.txt").replace(" [in use]", "")
    assert parse_iw_survey(unmarked, 2412) == Survey(2412, None, 26, 21)
    assert parse_iw_survey(unmarked, None) is None
    cut = fixture("iw_survey_in_use.txt").split("        channel busy")[0]
    assert parse_iw_survey(cut) == Survey(2472, -92, 15177460, None)  # nothing guessed
    with pytest.raises(ParseError):
        parse_iw_survey(fixture("iw_no_such_device.txt"))


def test_ubus_survey_matches_the_frequency_and_signs_the_noise() -> None:
    assert parse_ubus_survey(rpcd_survey(5180, 161, 19849, 495), 5180) == Survey(
        5180, -95, 19849, 495
    )
    assert parse_ubus_survey(rpcd_survey(5180, 161, 1, 1), 5745) is None
    with pytest.raises(ParseError, match="results"):
        parse_ubus_survey("{}", 5180)


def test_busy_share_is_over_the_interval() -> None:
    a = Survey(2472, -92, 15177460, 7723667)
    b = Survey(2472, -92, 15177460 + 60000, 7723667 + 15000)
    assert busy_pct(a, b) == 25.0
    assert busy_pct(None, b) is None  # first sample
    assert busy_pct(b, a) is None  # counters went back: a driver reset
    assert busy_pct(a, b._replace(mhz=2412)) is None  # another channel
    assert busy_pct(a, b._replace(busy_ms=None)) is None


# -- readings --------------------------------------------------------------------------------


class Tools:
    """Stand-in ubus and iw: each call answers with a captured output (or fails as the real
    tool does); ``active``/``busy`` advance the survey's counters between samples."""

    def __init__(self, *, ubus_survey: bool = True) -> None:
        self.ubus_survey = ubus_survey
        self.active, self.busy = 15177460, 7723667
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float = 5.0) -> CommandResult:
        self.calls.append(argv)
        iface = json.loads(argv[4])["device"] if argv[0] == "ubus" else argv[2]
        if iface == "gone":
            return CommandResult(237, "", fixture("iw_no_such_device.txt"))
        if argv[:4] == ["ubus", "call", "iwinfo", "info"]:
            return CommandResult(0, fixture("ubus_info_ht20_mesh.json"), "")
        if argv[:4] == ["ubus", "call", "iwinfo", "survey"]:
            if not self.ubus_survey:  # rpcd before 22.03: no such method
                return CommandResult(4, "", "Command failed: Method not found\n")
            return CommandResult(0, rpcd_survey(2462, 161, self.active, self.busy), "")
        if argv[3:] == ["info"]:
            return CommandResult(0, fixture("iw_info_160.txt"), "")
        if argv[3:] == ["survey", "dump"]:
            text = fixture("iw_survey_in_use.txt")
            text = text.replace("15177460", str(self.active)).replace("7723667", str(self.busy))
            return CommandResult(0, text, "")
        raise AssertionError(argv)


def _openwrt(tmp_path: Path, tools: Tools, ifaces: list[str]) -> OpenWrtPlatform:
    p = OpenWrtPlatform(tmp_path, tools)
    p.wifi_ifaces = lambda: ifaces  # type: ignore[method-assign]
    return p


def test_openwrt_reading_over_two_samples(tmp_path: Path) -> None:
    tools = Tools()
    p = _openwrt(tmp_path, tools, ["phy0-ap0"])
    memo: dict[str, object] = {}
    first = run_collectors(p, ["radio"], Context(wall=1e9, mono=0, memo=memo))["radio"]
    assert first["phy0-ap0"].model_dump() == {
        "channel": 11,
        "width_mhz": 20,
        "txpower_dbm": 20.0,
        "noise_dbm": -95,
        "busy_pct": None,
    }
    tools.active += 60000
    tools.busy += 6000
    ctx = Context(wall=1e9 + 60, mono=60, memo=memo)
    second = run_collectors(p, ["radio"], ctx)["radio"]
    assert second["phy0-ap0"].busy_pct == 10.0
    assert ctx.errors == {}


def test_openwrt_without_rpcd_survey_falls_back_to_iw(tmp_path: Path) -> None:
    tools = Tools(ubus_survey=False)
    p = _openwrt(tmp_path, tools, ["phy0-ap0"])
    ctx = Context(wall=1e9, mono=0)
    out = run_collectors(p, ["radio"], ctx)["radio"]
    assert out["phy0-ap0"].noise_dbm == -92
    assert ["iw", "dev", "phy0-ap0", "survey", "dump"] in tools.calls


def test_a_radio_that_cannot_be_read_costs_only_itself(tmp_path: Path) -> None:
    p = _openwrt(tmp_path, Tools(), ["gone", "phy0-ap0"])
    ctx = Context(wall=1e9, mono=0)
    out = run_collectors(p, ["radio"], ctx)["radio"]
    assert list(out) == ["phy0-ap0"]
    assert ctx.errors == {"radio.gone": "ubus: exit 237: command failed: No such device (-19)"}


def test_raspberry_pi_reads_iw(tmp_path: Path) -> None:
    p = RaspberryPiPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0"]  # type: ignore[method-assign]
    ctx = Context(wall=1e9, mono=0)
    out = run_collectors(p, ["radio"], ctx)["radio"]
    assert out["wlan0"].model_dump() == {
        "channel": 36,
        "width_mhz": 160,
        "txpower_dbm": 20.0,
        "noise_dbm": -92,
        "busy_pct": None,
    }


def test_no_address_or_name_of_the_radio_leaves_the_gateway(tmp_path: Path) -> None:
    ctx = Context(wall=1e9, mono=0)
    out = run_collectors(_openwrt(tmp_path, Tools(), ["phy0-ap0"]), ["radio"], ctx)
    p = RaspberryPiPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0"]  # type: ignore[method-assign]
    out |= {"rpi": run_collectors(p, ["radio"], ctx)["radio"]}
    text = json.dumps({k: {i: r.model_dump() for i, r in v.items()} for k, v in out.items()})
    for secret in ("32:00:22:f8:a5:21", "00:00:00:00:00:00", "meshID", "WPA2RKOE", "MT7603E"):
        assert secret.lower() not in text.lower()


def test_the_simulated_platform_has_radios_and_the_section_is_absent_when_off() -> None:
    sim = SimulatedPlatform("gw-1", boot_wall=0)
    memo: dict[str, object] = {}
    first = run_collectors(sim, ["radio"], Context(wall=1.8e9, mono=0, memo=memo))["radio"]
    assert set(first) == {"phy0-ap0", "phy1-ap0"}
    assert first["phy0-ap0"].channel in (1, 6, 11)
    assert first["phy1-ap0"].width_mhz == 80
    assert first["phy0-ap0"].busy_pct is None
    later = run_collectors(sim, ["radio"], Context(wall=1.8e9 + 60, mono=60, memo=memo))
    assert 0 <= later["radio"]["phy1-ap0"].busy_pct <= 100
    base = {"device": "gw-1", "seq": 1, "boot": 1, "sid": "s", "ts": 1.0}
    off = Telemetry.model_validate(base | {"agent": {"version": "0"}})
    assert b'"radio"' not in encode(off)
    on = Telemetry(**base, agent=off.agent, radio=later["radio"])
    assert Telemetry.model_validate_json(encode(on)).radio == later["radio"]


def test_the_registry_line_is_all_the_config_needs() -> None:
    from agent.config import DEFAULT_COLLECTORS, ConfigError, parse_config

    assert "radio" not in DEFAULT_COLLECTORS
    cfg = parse_config({"mqtt": {"host": "h"}, "telemetry": {"collectors": ["radio"]}})
    assert cfg.telemetry.collectors == ["radio"]
    with pytest.raises(ConfigError, match=r"telemetry.collectors\[0\]: unknown collector 'radi'"):
        parse_config({"mqtt": {"host": "h"}, "telemetry": {"collectors": ["radi"]}})
    assert radio.COLLECTOR.field == "radio"
