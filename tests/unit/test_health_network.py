from __future__ import annotations

from pathlib import Path

import pytest

from agent.collectors.health import (
    CpuTimes,
    cpu_pct,
    parse_millidegrees,
    parse_uptime,
    read_temperature,
)
from agent.collectors.network import Counters, build_net, parse_default_route, rate, select_ifaces

PROC = Path(__file__).resolve().parents[1] / "fixtures" / "proc"


def test_uptime() -> None:
    assert parse_uptime("350735.47 234388.90\n") == 350735
    with pytest.raises(ValueError, match="empty"):
        parse_uptime("")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("45123\n", 45.1),
        ("-5000", -5.0),
        ("200000", None),
        ("-273000", None),
        ("", None),
        ("N/A", None),
    ],
)
def test_millidegrees(text: str, expected: float | None) -> None:
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
    assert read_temperature(tmp_path) == 52.5


def test_no_sensor_is_null(tmp_path: Path) -> None:
    assert read_temperature(tmp_path) is None


def test_cpu_pct() -> None:
    assert cpu_pct(None, CpuTimes(1, 10)) is None
    assert cpu_pct(CpuTimes(1, 10), CpuTimes(3, 20)) == 20.0
    assert cpu_pct(CpuTimes(5, 10), CpuTimes(3, 20)) is None  # counters went back
    assert cpu_pct(CpuTimes(1, 10), CpuTimes(1, 10)) is None


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("route.this-machine", "eth0"),
        ("route.no-default", None),
        ("route.two-defaults-truncated", "wan"),
    ],
)
def test_default_route(fixture: str, expected: str | None) -> None:
    assert parse_default_route((PROC / fixture).read_text()) == expected


def test_default_route_of_empty_or_garbage() -> None:
    assert parse_default_route("") is None
    assert parse_default_route("Iface\tDestination\nxx\tzz\t00\tnothex\t0\t0\t0\t0\n") is None


def test_rates() -> None:
    assert rate(None, 100, 1) is None
    assert rate(100, 300, 2) == 100
    assert rate(300, 100, 2) is None  # counter reset (interface re-created)
    assert rate(100, 100, 0) is None


def test_select_ifaces() -> None:
    assert select_ifaces(["lo", "wan", "br-lan"], []) == ["br-lan", "wan"]
    assert select_ifaces(["lo", "wan", "br-lan"], ["wan", "ghost"]) == ["wan"]


def test_build_net() -> None:
    prev = {"wan": Counters(1000, 500, 0)}
    cur = {"wan": Counters(3000, 1500, 2), "br-lan": Counters(10, 20, 0), "lan4": Counters(0, 0, 0)}
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
