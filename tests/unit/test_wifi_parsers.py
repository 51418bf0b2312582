"""Wi-Fi client-count parsers and readers, driven by recorded tool output.

Fixtures live in tests/fixtures/collectors/clients/wifi/<tool>/ with their sources in SOURCES.md.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collectors.wifi import (
    WIFI_SOURCES,
    ParseError,
    count_clients,
    list_wifi_ifaces,
    parse_hostapd_all_sta,
    parse_iw_station_dump,
    parse_iwinfo_assoclist,
    parse_ubus_clients,
    parse_ubus_hostapd_list,
)
from agent.runner import CommandError, CommandResult

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/collectors/clients/wifi"
MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


# --- parsers on fixtures ---------------------------------------------------------------

COUNT_CASES = [
    pytest.param(parse_ubus_clients, "ubus/several.json", 3, id="ubus-several"),
    pytest.param(parse_ubus_clients, "ubus/one.json", 1, id="ubus-one"),
    pytest.param(parse_ubus_clients, "ubus/no_clients.json", 0, id="ubus-none"),
    pytest.param(parse_ubus_clients, "ubus/unauthorized.json", 2, id="ubus-unauthorized"),
    pytest.param(parse_ubus_clients, "ubus/no_authorized_key.json", 2, id="ubus-assoc-fallback"),
    pytest.param(parse_iwinfo_assoclist, "iwinfo/several.txt", 2, id="iwinfo-several"),
    pytest.param(parse_iwinfo_assoclist, "iwinfo/one.txt", 1, id="iwinfo-one"),
    pytest.param(parse_iwinfo_assoclist, "iwinfo/no_clients.txt", 0, id="iwinfo-none"),
    pytest.param(parse_iwinfo_assoclist, "iwinfo/truncated.txt", 1, id="iwinfo-truncated"),
    pytest.param(parse_iw_station_dump, "iw/several.txt", 3, id="iw-several"),
    pytest.param(parse_iw_station_dump, "iw/unauthorized.txt", 2, id="iw-unauthorized"),
    pytest.param(parse_iw_station_dump, "iw/no_clients.txt", 0, id="iw-none"),
    pytest.param(parse_iw_station_dump, "iw/truncated.txt", 2, id="iw-truncated-mid-block"),
    pytest.param(parse_iw_station_dump, "iw/truncated_header.txt", 1, id="iw-truncated-header"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/several.txt", 2, id="hostapd-several"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/selected_interface.txt", 1, id="hostapd-sel"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/unauthorized.txt", 2, id="hostapd-unauth"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/no_clients.txt", 0, id="hostapd-none"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/truncated.txt", 2, id="hostapd-truncated"),
]


@pytest.mark.parametrize(("parse", "name", "expected"), COUNT_CASES)
def test_parser_counts_fixture(parse: Callable[[str], int], name: str, expected: int) -> None:
    assert parse(fixture(name)) == expected


ERROR_CASES = [
    pytest.param(parse_ubus_clients, "ubus/truncated.json", "truncated JSON", id="ubus-trunc"),
    pytest.param(parse_ubus_clients, "ubus/not_found.txt", "invalid JSON", id="ubus-err"),
    pytest.param(parse_ubus_clients, "ubus/no_ubusd.txt", "invalid JSON", id="ubus-no-ubusd"),
    pytest.param(
        parse_iwinfo_assoclist, "iwinfo/no_information.txt", "No information", id="iwinfo-down"
    ),
    pytest.param(
        parse_iwinfo_assoclist, "iwinfo/no_such_device.txt", "No such wireless", id="iwinfo-err"
    ),
    pytest.param(parse_iw_station_dump, "iw/no_such_device.txt", "No such device", id="iw-err"),
    pytest.param(
        parse_hostapd_all_sta, "hostapd_cli/connect_failed.txt", "Failed to connect", id="hcli-err"
    ),
]


@pytest.mark.parametrize(("parse", "name", "match"), ERROR_CASES)
def test_parser_rejects_error_text(parse: Callable[[str], int], name: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse(fixture(name))


LIST_CASES = [
    pytest.param("ubus_list/phy_names.txt", ["phy0-ap0", "phy0-ap1", "phy1-ap0"], id="phy"),
    pytest.param("ubus_list/legacy_names.txt", ["wlan0", "wlan1"], id="legacy"),
    pytest.param("ubus_list/none.txt", [], id="none"),
    pytest.param("ubus_list/truncated.txt", ["phy0-ap0", "phy0-ap1"], id="truncated"),
]


@pytest.mark.parametrize(("name", "expected"), LIST_CASES)
def test_ubus_hostapd_list(name: str, expected: list[str]) -> None:
    assert parse_ubus_hostapd_list(fixture(name)) == expected


def test_ubus_hostapd_list_rejects_error_text() -> None:
    with pytest.raises(ParseError, match="unexpected line"):
        parse_ubus_hostapd_list(fixture("ubus_list/not_found.txt"))


def test_ubus_clients_without_flags_counts_every_entry() -> None:
    text = '{"freq": 2412, "clients": {"00:00:5e:00:53:01": {}, "00:00:5e:00:53:02": {"aid": 1}}}'
    assert parse_ubus_clients(text) == 2


@pytest.mark.parametrize(
    ("text", "match"),
    [
        pytest.param("", "empty output", id="empty"),
        pytest.param("[]", "no 'clients' object", id="not-object"),
        pytest.param('{"freq": 2412}', "no 'clients' object", id="no-clients"),
        pytest.param('{"clients": {"x": 1}}', "not an object", id="bad-entry"),
        pytest.param('{"clients": {"a": "tru', "truncated JSON", id="cut-in-string"),
    ],
)
def test_ubus_clients_shape_errors(text: str, match: str) -> None:
    with pytest.raises(ParseError, match=match):
        parse_ubus_clients(text)


def test_iwinfo_empty_output_is_an_error() -> None:
    with pytest.raises(ParseError, match="empty output"):
        parse_iwinfo_assoclist("")


def test_iw_cut_authorized_value_does_not_exclude_station() -> None:
    text = fixture("iw/unauthorized.txt")
    cut = text.rindex("authorized:     no") + len("authorized:     n")
    assert parse_iw_station_dump(text[:cut]) == 3


def test_parse_errors_do_not_leak_addresses() -> None:
    garbage = "00:00:5E:00:53:99 192.0.2.7 2001:db8::1 something odd\n"
    for parse in (parse_iwinfo_assoclist, parse_iw_station_dump, parse_hostapd_all_sta):
        with pytest.raises(ParseError) as info:
            parse(garbage)
        message = str(info.value)
        assert not MAC.search(message)
        assert "192.0.2.7" not in message
        assert "2001:db8::1" not in message


MULTI_STATION = [
    pytest.param(parse_iwinfo_assoclist, "iwinfo/several.txt", id="iwinfo"),
    pytest.param(parse_iw_station_dump, "iw/several.txt", id="iw"),
    pytest.param(parse_hostapd_all_sta, "hostapd_cli/several.txt", id="hostapd_cli"),
    pytest.param(parse_ubus_clients, "ubus/several.json", id="ubus"),
]


@pytest.mark.parametrize(("parse", "name"), MULTI_STATION)
def test_every_cut_of_output_is_a_count_or_parse_error(
    parse: Callable[[str], int], name: str
) -> None:
    text = fixture(name)
    full = parse(text)
    for end in range(len(text)):
        try:
            n = parse(text[:end])
        except ParseError:
            continue
        assert 0 <= n <= full, (name, end, n)


@given(st.text())
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (
        parse_ubus_clients,
        parse_iwinfo_assoclist,
        parse_iw_station_dump,
        parse_hostapd_all_sta,
    ):
        with contextlib.suppress(ParseError):
            assert parse(text) >= 0
    with contextlib.suppress(ParseError):
        assert isinstance(parse_ubus_hostapd_list(text), list)


# --- count_clients: the fallback chain ---------------------------------------------------


class FakeRunner:
    """Stand-in for ubus, iwinfo, iw and hostapd_cli, which this machine lacks.

    Each tool name maps to a recorded result or to the CommandError the real
    runner raises; a tool not in the map is "not installed".
    """

    def __init__(self, tools: Mapping[str, CommandResult | CommandError]) -> None:
        self.tools = dict(tools)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float = 5.0) -> CommandResult:
        self.calls.append(argv)
        outcome = self.tools.get(argv[0], CommandError(f"{argv[0]}: not installed"))
        if isinstance(outcome, CommandError):
            raise outcome
        return outcome


def ok(name: str) -> CommandResult:
    return CommandResult(0, fixture(name), "")


def failed(returncode: int, name: str) -> CommandResult:
    return CommandResult(returncode, "", fixture(name))


ARGV = {
    "ubus": ["ubus", "call", "hostapd.phy0-ap0", "get_clients"],
    "iwinfo": ["iwinfo", "phy0-ap0", "assoclist"],
    "iw": ["iw", "dev", "phy0-ap0", "station", "dump"],
    "hostapd_cli": ["hostapd_cli", "-i", "phy0-ap0", "all_sta"],
}


@pytest.mark.parametrize(
    ("source", "result", "expected"),
    [
        pytest.param("ubus", ok("ubus/several.json"), 3, id="ubus"),
        pytest.param("iwinfo", ok("iwinfo/several.txt"), 2, id="iwinfo"),
        pytest.param("iw", ok("iw/several.txt"), 3, id="iw"),
        pytest.param("hostapd_cli", ok("hostapd_cli/several.txt"), 2, id="hostapd_cli"),
    ],
)
def test_each_source_runs_its_exact_argv(source: str, result: CommandResult, expected: int) -> None:
    runner = FakeRunner({ARGV[source][0]: result})
    assert count_clients(runner, "phy0-ap0", [source]) == expected
    assert runner.calls == [ARGV[source]]


def test_first_working_source_wins_and_later_ones_are_not_run() -> None:
    runner = FakeRunner({"iwinfo": ok("iwinfo/one.txt"), "iw": ok("iw/several.txt")})
    assert count_clients(runner, "phy0-ap0", WIFI_SOURCES) == 1
    assert runner.calls == [ARGV["ubus"], ARGV["iwinfo"]]


def test_parse_error_falls_through_to_next_source() -> None:
    runner = FakeRunner(
        {
            "ubus": ok("ubus/truncated.json"),
            "iwinfo": ok("iwinfo/no_information.txt"),
            "iw": ok("iw/several.txt"),
        }
    )
    assert count_clients(runner, "phy0-ap0", WIFI_SOURCES) == 3
    assert [c[0] for c in runner.calls] == ["ubus", "iwinfo", "iw"]


TOOL_ERRORS = [
    pytest.param("ubus", failed(4, "ubus/not_found.txt"), "exit 4: Command failed", id="ubus"),
    pytest.param("ubus", failed(255, "ubus/no_ubusd.txt"), "Failed to connect to ubus", id="ubusd"),
    pytest.param("iwinfo", failed(1, "iwinfo/no_such_device.txt"), "No such wireless", id="iwinfo"),
    pytest.param("iw", failed(237, "iw/no_such_device.txt"), "exit 237", id="iw"),
    pytest.param(
        "hostapd_cli", failed(255, "hostapd_cli/connect_failed.txt"), "wpa_ctrl_open", id="hcli"
    ),
]


@pytest.mark.parametrize(("source", "result", "match"), TOOL_ERRORS)
def test_tool_error_becomes_command_error(source: str, result: CommandResult, match: str) -> None:
    runner = FakeRunner({ARGV[source][0]: result})
    with pytest.raises(CommandError, match=match):
        count_clients(runner, "phy0-ap0", [source])


@pytest.mark.parametrize("source", WIFI_SOURCES)
def test_missing_tool_becomes_command_error(source: str) -> None:
    with pytest.raises(CommandError, match=f"{source}: not installed"):
        count_clients(FakeRunner({}), "phy0-ap0", [source])


def test_all_sources_failing_lists_every_reason_on_one_line() -> None:
    runner = FakeRunner(
        {
            "ubus": failed(4, "ubus/not_found.txt"),
            "iwinfo": ok("iwinfo/no_information.txt"),
            "hostapd_cli": failed(255, "hostapd_cli/connect_failed.txt"),
        }
    )
    with pytest.raises(CommandError) as info:
        count_clients(runner, "phy0-ap0", [*WIFI_SOURCES, "wl"])
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("wifi clients on phy0-ap0: ")
    for part in (
        "ubus: exit 4: Command failed: Not found",
        "iwinfo assoclist: unexpected output 'No information available'",
        "iw: not installed",
        "hostapd_cli: exit 255: Failed to connect",
        "wl: unknown source",
    ):
        assert part in message
    assert len(runner.calls) == 4


def test_no_sources_is_a_command_error() -> None:
    with pytest.raises(CommandError, match="no sources configured"):
        count_clients(FakeRunner({}), "wlan0", [])


@pytest.mark.parametrize("iface", ["", "-h", "wlan0; reboot", "a" * 16])
def test_bad_interface_name_is_refused_before_running_anything(iface: str) -> None:
    runner = FakeRunner({})
    with pytest.raises(CommandError, match="invalid interface name"):
        count_clients(runner, iface, WIFI_SOURCES)
    assert runner.calls == []


def test_error_messages_carry_no_client_macs() -> None:
    runner = FakeRunner({"hostapd_cli": CommandResult(0, "flags=[AUTH] 00:00:5e:00:53:41\n", "")})
    with pytest.raises(CommandError) as info:
        count_clients(runner, "wlan0", ["hostapd_cli"])
    assert not MAC.search(str(info.value))


# --- list_wifi_ifaces ----------------------------------------------------------------------


def test_list_wifi_ifaces(tmp_path: Path) -> None:
    net = tmp_path / "class" / "net"
    devices = tmp_path / "devices"
    for name in ("wlan0", "phy0-ap0", "phy1-ap0", "eth0", "br-lan", "lo"):
        (devices / name).mkdir(parents=True)
    (devices / "wlan0" / "wireless").mkdir()
    (devices / "phy0-ap0" / "phy80211").symlink_to(tmp_path / "phy0")  # dangling is fine
    (devices / "phy1-ap0" / "phy80211").write_text("")
    (devices / "br-lan" / "bridge").mkdir()
    net.mkdir(parents=True)
    for name in ("wlan0", "phy0-ap0", "phy1-ap0", "eth0", "br-lan", "lo"):
        (net / name).symlink_to(devices / name)  # as in sysfs
    assert list_wifi_ifaces(net) == ["phy0-ap0", "phy1-ap0", "wlan0"]


def test_list_wifi_ifaces_without_directory(tmp_path: Path) -> None:
    assert list_wifi_ifaces(tmp_path / "missing") == []
