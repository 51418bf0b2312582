from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.files import read_file
from agent.collectors.health import (
    CpuTimes,
    cpu_pct,
    find_sensors,
    parse_meminfo,
    parse_millidegrees,
    parse_uptime,
    read_health,
    read_memory,
    read_temperature,
)
from agent.collectors.network import (
    IfaceCounters,
    build_net,
    parse_default_route,
    parse_net_dev,
    parse_operstate,
    rate,
    read_counters,
    read_default_route,
    read_link_up,
    select_ifaces,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "collectors"
HEALTH = FIXTURES / "health"
NETWORK = FIXTURES / "network"


def test_uptime() -> None:
    assert parse_uptime("350735.47 234388.90\n") == 350735
    assert parse_uptime(b"350735.47 234388.90\n") == 350735
    with pytest.raises(ValueError, match="empty"):
        parse_uptime(b"")


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("meminfo.this-machine", (24683656 * 1024, 24018764 * 1024)),
        ("meminfo.32bit-highmem", (4103420 * 1024, 1149688 * 1024)),
        ("meminfo.pre-3.14", None),  # no MemAvailable: psutil estimates it instead
        ("meminfo.truncated", None),
    ],
)
def test_meminfo(fixture: str, expected: tuple[int, int] | None) -> None:
    assert parse_meminfo(read_file(str(HEALTH / fixture))) == expected


def test_meminfo_odd_cases() -> None:
    assert parse_meminfo(b"") is None
    assert parse_meminfo(b"MemTotal: lots\nMemAvailable: 1 kB\n") is None
    assert parse_meminfo(b"MemTotal: 0 kB\nMemAvailable: 0 kB\n") is None  # no division by 0
    # A key must start its line: "XMemAvailable:" is not MemAvailable.
    assert parse_meminfo(b"MemTotal: 8 kB\nXMemAvailable: 4 kB\n") is None
    assert parse_meminfo(b"MemTotal: 8 kB\nXMemAvailable: 4 kB\nMemAvailable: 2 kB\n") == (
        8192,
        2048,
    )


def test_memory_falls_back_to_psutil_without_memavailable(tmp_path: Path) -> None:
    import psutil

    old = tmp_path / "meminfo"
    old.write_bytes((HEALTH / "meminfo.pre-3.14").read_bytes())
    vm = psutil.virtual_memory()
    total, available = read_memory(str(old))
    assert total == vm.total and available > 0
    assert read_memory(str(tmp_path / "missing"))[0] == vm.total


def test_read_file_reads_past_one_chunk(tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(bytes(range(256)) * 200)  # 51,200 bytes: four reads of 16 KiB
    assert read_file(str(big)) == big.read_bytes()
    (tmp_path / "empty").write_bytes(b"")
    assert read_file(str(tmp_path / "empty")) == b""
    with pytest.raises(FileNotFoundError):
        read_file(str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45123\n", 45.1),
        ("-5000", -5.0),
        ("200000", None),
        ("-273000", None),
        ("", None),
        ("N/A", None),
        (b"52500\n", 52.5),
    ],
)
def test_millidegrees(text: str | bytes, expected: float | None) -> None:
    assert parse_millidegrees(text) == expected


def test_temperature_picks_the_hottest_sensor_and_skips_broken_ones(tmp_path: Path) -> None:
    for name, value in [
        ("thermal_zone0", "41000"),
        ("thermal_zone1", "garbage"),
        ("thermal_zone2", "999999"),
    ]:
        (tmp_path / "class/thermal" / name).mkdir(parents=True)
        (tmp_path / "class/thermal" / name / "temp").write_text(value)
    (tmp_path / "class/hwmon/hwmon0").mkdir(parents=True)
    (tmp_path / "class/hwmon/hwmon0/temp1_input").write_text("52500\n")
    (tmp_path / "class/thermal/thermal_zone3").mkdir()  # a zone without a temp file
    (tmp_path / "class/hwmon/hwmon0/fan1_input").write_text("1200\n")  # not a temperature
    sensors = find_sensors(tmp_path)
    assert [s.removeprefix(f"{tmp_path}/class/") for s in sensors] == [
        "hwmon/hwmon0/temp1_input",
        "thermal/thermal_zone0/temp",
        "thermal/thermal_zone1/temp",
        "thermal/thermal_zone2/temp",
    ]
    assert read_temperature(sensors) == 52.5
    # A sensor that went away since it was found is skipped, like one that fails to read.
    (tmp_path / "class/hwmon/hwmon0/temp1_input").unlink()
    assert read_temperature(sensors) == 41.0


def test_no_sensor_is_null(tmp_path: Path) -> None:
    assert find_sensors(tmp_path) == []
    assert read_temperature([]) is None


def test_cpu_pct() -> None:
    assert cpu_pct(None, CpuTimes(1, 10)) is None
    assert cpu_pct(CpuTimes(1, 10), CpuTimes(3, 20)) == 20.0
    assert cpu_pct(CpuTimes(5, 10), CpuTimes(3, 20)) is None  # counters went back
    assert cpu_pct(CpuTimes(1, 10), CpuTimes(1, 10)) is None


def test_a_reading_that_went_back_is_not_the_next_baseline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    readings = iter([CpuTimes(50, 100), CpuTimes(40, 90), CpuTimes(70, 200)])
    monkeypatch.setattr("agent.collectors.health.cpu_times", lambda: next(readings))
    (tmp_path / "uptime").write_text("350735.47 234388.90\n")
    files = (str(HEALTH / "meminfo.this-machine"), str(tmp_path / "uptime"), [], str(tmp_path))
    first, base = read_health(*files, None)
    assert first.cpu_pct is None and base == CpuTimes(50, 100)
    odd, base = read_health(*files, base)  # counters went back: no figure, baseline kept
    assert odd.cpu_pct is None and base == CpuTimes(50, 100)
    later, _ = read_health(*files, base)
    assert later.cpu_pct == 20.0  # (70 - 50) / (200 - 100)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("route.this-machine", "eth0"),
        ("route.no-default", None),
        ("route.two-defaults-truncated", "wan"),
    ],
)
def test_default_route(fixture: str, expected: str | None) -> None:
    assert parse_default_route((NETWORK / fixture).read_text()) == expected


def test_default_route_is_parsed_again_only_when_the_table_changes(tmp_path: Path) -> None:
    route = tmp_path / "route"
    route.write_bytes((NETWORK / "route.this-machine").read_bytes())
    memo: dict[str, tuple[bytes, str | None]] = {}
    assert read_default_route(str(route), memo) == "eth0"
    memo["route"] = (memo["route"][0], "cached")  # the same text: the last answer is reused
    assert read_default_route(str(route), memo) == "cached"
    route.write_bytes((NETWORK / "route.two-defaults-truncated").read_bytes())
    assert read_default_route(str(route), memo) == "wan"
    assert read_default_route(str(tmp_path / "missing"), memo) is None


@pytest.mark.parametrize(
    ("state", "running"),
    [
        # The kernel's operstate names (Documentation/networking/operstates.rst).
        (b"up\n", True),
        (b"unknown\n", True),  # loopback, tun, and drivers that do not report it
        (b"down\n", False),
        (b"dormant\n", False),
        (b"lowerlayerdown\n", False),
        (b"notpresent\n", False),
        (b"testing\n", False),
        (b"", False),
    ],
)
def test_operstate(state: bytes, running: bool) -> None:
    assert parse_operstate(state) is running


def test_link_state_from_sysfs_leaves_out_what_is_gone(tmp_path: Path) -> None:
    for name, state in [("eth0", "up\n"), ("wlan0", "dormant\n")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "operstate").write_text(state)
    up = read_link_up(str(tmp_path), ["eth0", "wlan0", "ppp0"])
    assert up == {"eth0": True, "wlan0": False}


def test_default_route_of_empty_or_garbage() -> None:
    assert parse_default_route("") is None
    assert parse_default_route("Iface\tDestination\nxx\tzz\t00\tnothex\t0\t0\t0\t0\n") is None


def test_rates() -> None:
    assert rate(None, 100, 1) is None
    assert rate(100, 300, 2) == 100
    assert rate(300, 100, 2) is None  # counter reset (interface re-created)
    assert rate(100, 100, 0) is None


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "netdev.this-machine",
            {
                "lo": IfaceCounters(3218411843, 3218411843, 0),
                "ifb0": IfaceCounters(0, 0, 0),
                "ifb1": IfaceCounters(0, 0, 0),
                "eth0": IfaceCounters(3047832825, 5385298, 0),
            },
        ),
        (
            "netdev.vpn-server",
            {
                "tun0": IfaceCounters(4468821252, 2089659707, 0),
                "lo": IfaceCounters(18444634266, 18444634266, 0),
                "ens10": IfaceCounters(2314024641, 6064828263, 0),
                "eth0": IfaceCounters(8557466066, 7514729065, 0),
            },
        ),
        (
            "netdev.openwrt-router",
            {
                "lo": IfaceCounters(1048576, 1048576, 0),
                "eth0": IfaceCounters(98765432109, 12345678901, 0),
                "lan1": IfaceCounters(0, 0, 0),
                "lan2": IfaceCounters(2251799813, 6442450944, 0),
                "wan": IfaceCounters(96513632768, 5893027840, 4),
                "br-lan": IfaceCounters(5893027840, 96513632768, 0),
                "phy0-ap0": IfaceCounters(3221225472, 51539607552, 0),
                "phy1-ap0": IfaceCounters(2671771648, 45097156608, 0),
                "pppoe-wan": IfaceCounters(96000000000, 5800000000, 6),
            },
        ),
        (
            "netdev.glued",
            {
                "lo": IfaceCounters(1234, 1234, 0),
                "eth0": IfaceCounters(123456789, 98765, 3),
                "wlan0": IfaceCounters(42, 0, 0),
            },
        ),
        (
            "netdev.truncated",  # the cut eth0 is left out, not misread
            {
                "lo": IfaceCounters(3218411843, 3218411843, 0),
                "ifb0": IfaceCounters(0, 0, 0),
                "ifb1": IfaceCounters(0, 0, 0),
            },
        ),
    ],
)
def test_net_dev(fixture: str, expected: dict[str, IfaceCounters]) -> None:
    assert parse_net_dev((NETWORK / fixture).read_bytes()) == expected


def test_net_dev_odd_cases() -> None:
    assert parse_net_dev(b"") == {}
    assert parse_net_dev(b"Inter-|   Receive\n face |bytes    packets\n") == {}
    # An entry cut short mid-text (the device went away between two reads): the next entry's
    # name must not be read as one of its numbers.
    text = (NETWORK / "netdev.this-machine").read_bytes()
    lines = text.splitlines(keepends=True)
    cut = lines[2][:40] + b"\n" + b"".join(lines[3:])
    parsed = parse_net_dev(lines[0] + lines[1] + cut)
    assert "lo" not in parsed
    assert parsed["eth0"] == IfaceCounters(3047832825, 5385298, 0)
    assert parse_net_dev(b"  eth0: 1 2 x 4 5 6 7 8 9 10 11 12 13 14 15 16\n") == {}


def test_counters_of_the_interfaces_to_report() -> None:
    path = str(NETWORK / "netdev.openwrt-router")
    assert list(read_counters(path, [])) == [
        "br-lan", "eth0", "lan1", "lan2", "phy0-ap0", "phy1-ap0", "pppoe-wan", "wan",
    ]  # fmt: skip
    assert read_counters(path, ["wan", "ghost"]) == {
        "wan": IfaceCounters(96513632768, 5893027840, 4)
    }
    with pytest.raises(FileNotFoundError):
        read_counters(str(NETWORK / "no-such-file"), [])


def test_select_ifaces() -> None:
    assert select_ifaces(["lo", "wan", "br-lan"], []) == ["br-lan", "wan"]
    assert select_ifaces(["lo", "wan", "br-lan"], ["wan", "ghost"]) == ["wan"]


def test_build_net() -> None:
    prev = {"wan": IfaceCounters(1000, 500, 0)}
    cur = {
        "wan": IfaceCounters(3000, 1500, 2),
        "br-lan": IfaceCounters(10, 20, 0),
        "lan4": IfaceCounters(0, 0, 0),
    }
    link = {"wan": True, "br-lan": True, "lan4": False}
    net = build_net(cur, link, prev, 10.0, "wan", True)
    assert net.wan_up is True
    assert net.ifaces["wan"].rx_bps == 200
    assert net.ifaces["wan"].tx_bps == 100
    assert net.ifaces["wan"].err == 2
    assert net.ifaces["br-lan"].rx_bps is None  # first sight: no rate yet
    assert "lan4" not in net.ifaces  # down and never used
    assert build_net(cur, link, prev, 10.0, None, False).wan_up is False
    assert build_net(cur, link, prev, 10.0, "wan", False).wan_up is False


def test_cpu_times_are_whole_ticks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Float seconds whose sums differ only in rounding must not read as counters going back:
    a busy delta of -1e-12 on an idle CPU gave a sample with no CPU figure."""
    from collections import namedtuple

    from agent.collectors import health

    T = namedtuple("T", "user nice system idle iowait irq softirq steal guest guest_nice")
    readings = iter(
        [
            T(0.1, 0.0, 0.2, 1000.3, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0),
            T(0.1, 0.0, 0.2, 1000.5, 0.7, 0.0, 0.0, 0.0, 0.0, 0.0),  # only idle moved
        ]
    )
    monkeypatch.setattr(health.psutil, "cpu_times", lambda: next(readings))
    a, b = health.cpu_times(), health.cpu_times()
    assert all(isinstance(x, int) for x in (*a, *b))
    assert b.busy == a.busy and b.total == a.total + 20
    assert health.cpu_pct(a, b) == 0.0
