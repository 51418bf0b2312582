"""The service report (agent/service/): its parsers on real output (tests/fixtures/collectors/
service/ and the clients collector's station fixtures, sources in each SOURCES.md), a whole
report through stand-in tools (this machine has no radio, iw, ubus or logread: the stand-in
runner answers with the captured output the real tools printed), privacy, the score, and the
report's size on the wire (issue 20, point 8)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.collectors.wifi import ParseError
from agent.config import parse_config
from agent.platforms.openwrt import OpenWrtPlatform
from agent.platforms.raspberrypi import RaspberryPiPlatform
from agent.platforms.simulated import SimulatedPlatform
from agent.protocol import score as scoring
from agent.protocol.service import (
    RSSI_EDGES,
    DhcpEvents,
    Probes,
    RadioReport,
    ServiceReport,
    SsidQuality,
    encode_report,
)
from agent.runner import CommandResult
from agent.service import events, neighbours, stations
from agent.service.probes import ProbeResult
from agent.service.report import ServiceReporter

FIX = Path(__file__).resolve().parents[1] / "fixtures/collectors"
SERVICE = FIX / "service"
RADIO = FIX / "radio"
STATIONS = FIX / "clients/wifi/iw/several.txt"
UBUS = FIX / "clients/wifi/ubus/several.json"


def text(path: Path) -> str:
    return path.read_text()


# -- parsers -----------------------------------------------------------------------------


def test_scan_dump_channels_signals_and_ssids() -> None:
    seen = neighbours.parse_scan_dump(text(SERVICE / "iw_scan_dump.txt"))
    assert [(b.channel, b.signal_dbm, b.ssid) for b in seen] == [
        (11, -40, "Vodafone Hotspot"),
        (13, -59, "LOVER"),
        (157, -53, "connect_point"),
        (36, -20, "connect_point"),
    ]
    assert neighbours.by_channel(seen) == {
        "11": (1, -40),
        "13": (1, -59),
        "36": (1, -20),
        "157": (1, -53),
    }
    # Our own BSSIDs are not neighbours.
    assert "13" not in neighbours.by_channel(seen, {"00:19:77:1d:e8:94"})


def test_scan_dump_empty_and_garbage() -> None:
    assert neighbours.parse_scan_dump("") == []
    with pytest.raises(ParseError, match="iw scan dump") as exc:
        neighbours.parse_scan_dump("command failed: No such device (-19)\n")
    assert "-19" in str(exc.value)


@pytest.mark.parametrize(
    ("mhz", "channel"), [(2412, 1), (2484, 14), (5180, 36), (5955, 1), (900, None)]
)
def test_channel_of_mhz(mhz: int, channel: int | None) -> None:
    assert neighbours.channel_of_mhz(mhz) == channel


def test_station_dump_signal_rates_counters() -> None:
    found = stations.parse_station_dump(text(STATIONS))
    assert list(found.values()) == [
        stations.Station(-53, 72.2, 24.0, 5778, 0, 0),
        stations.Station(-57, None, None, 90, 1, 0),  # the block as posted has no bitrates
        stations.Station(None, 54.0, 54.0, 187789, 4589, 0),  # "75 dBm": a driver's bad value
    ]


def test_station_dump_skips_unauthorized_and_refuses_garbage() -> None:
    found = stations.parse_station_dump(text(FIX / "clients/wifi/iw/unauthorized.txt"))
    assert len(found) == 2
    with pytest.raises(ParseError):
        stations.parse_station_dump("command failed: No such device (-19)\n")


def test_ubus_clients_signal_and_rates() -> None:
    found = stations.parse_ubus_clients(text(UBUS))
    assert next(iter(found.values()))[:2] == (None, 866.7)
    assert any(s.signal_dbm == -55 for s in found.values())
    with pytest.raises(ParseError, match="ubus get_clients"):
        stations.parse_ubus_clients('{"clients": ')


def test_aggregate_histogram_medians_and_interval_ratios() -> None:
    before = stations.parse_station_dump(text(STATIONS))
    q = stations.aggregate(before, None)  # first report: counters since association
    assert q.sta == 3
    assert q.rssi == [0, 0, 0, 2, 0]
    assert (q.tx_mbps, q.rx_mbps) == (63.1, 39.0)
    assert q.retry_pct == round(100 * 4590 / (5778 + 90 + 187789), 1)
    assert q.fail_pct == 0.0
    # The next report sees only what happened since.
    after = {
        mac: s._replace(tx_packets=s.tx_packets + 100, tx_retries=s.tx_retries + 10, tx_failed=1)
        for mac, s in before.items()
    }
    q2 = stations.aggregate(after, before)
    assert q2.retry_pct == 10.0
    assert q2.fail_pct == round(100 * 3 / 303, 1)
    assert stations.aggregate({}, None) == stations.Quality(0, [0] * 5, None, None, None, None)


def test_rssi_buckets_match_the_protocol() -> None:
    assert stations.RSSI_EDGES == RSSI_EDGES
    assert stations.rssi_histogram([-90, -80, -71, -70, -61, -60, -51, -50, -20]) == [1, 2, 2, 2, 2]


def test_logread_events_per_interface_and_dhcp() -> None:
    since = events._logread_time("Sat Nov 18 19:00:00 2017")
    assert since is not None
    c = events.parse_log(text(SERVICE / "logread_openwrt.txt"), since, journal=False)
    assert c.by_iface == {"wlan1": [1, 1, 0], "wlan0": [1, 1, 2]}
    assert (c.ack, c.nak, c.no_address) == (1, 1, 2)
    # The next read starts after the newest line: nothing is counted twice.
    again = events.parse_log(text(SERVICE / "logread_openwrt.txt"), c.newest, journal=False)
    assert again.by_iface == {} and again.ack == 0


def test_journal_events() -> None:
    c = events.parse_log(text(SERVICE / "journal_short_unix.txt"), 0.0, journal=True)
    assert c.by_iface == {"wlan1-1": [1, 1, 0], "uap0": [1, 0, 0]}
    assert (c.ack, c.nak, c.no_address) == (1, 0, 0)  # "no address range" is a config fault
    assert c.newest == 1692592410.0


# -- a whole report through stand-in tools ----------------------------------------------------


class Tools:
    """Stand-in runner (no radio, iw, ubus or logread here): answers each command with the
    output the real tool printed (the fixtures), or its real error text."""

    def __init__(self, log: str = "logread_openwrt.txt") -> None:
        self.log = log
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], timeout: float = 5.0) -> CommandResult:  # noqa: PLR0911
        self.calls.append(argv)
        if argv[:2] == ["iw", "dev"] and argv[2] == "gone0":
            return CommandResult(237, "", text(RADIO / "iw_no_such_device.txt"))
        if argv[:2] == ["ubus", "call"] and argv[2] == "iwinfo" and argv[3] == "info":
            return CommandResult(0, text(RADIO / "ubus_info_vht80.json"), "")
        if argv[:2] == ["ubus", "call"] and argv[2] == "iwinfo":
            return CommandResult(4, "", "Command failed: Method not found\n")
        if argv[-2:] == ["survey", "dump"]:
            return CommandResult(0, text(RADIO / "iw_survey_ath9k.txt"), "")
        if argv[-1] == "info":
            return CommandResult(0, text(RADIO / "iw_info_160.txt"), "")
        if argv[-2:] == ["scan", "dump"]:
            return CommandResult(0, text(SERVICE / "iw_scan_dump.txt"), "")
        if argv[-2:] == ["station", "dump"]:
            return CommandResult(0, text(STATIONS), "")
        if argv[0] in ("logread", "journalctl"):
            return CommandResult(0, text(SERVICE / self.log), "")
        return CommandResult(127, "", f"{argv[0]}: not found\n")


def no_probes(cfg: object, rng: object) -> ProbeResult:
    return ProbeResult(
        dns="ok",
        dns_ms=3.2,
        portal="open",
        portal_ms=40.0,
        inet_ms=21.0,
        loss_pct=0.0,
        jitter_ms=1.5,
        wall_ms=80.0,
    )


def service_cfg(**extra: object) -> object:
    return parse_config({"mqtt": {"host": "x"}, "service": {"enabled": True, **extra}}).service


def reporter(platform: object, **extra: object) -> ServiceReporter:
    clock = iter(range(0, 10**6, 300))
    return ServiceReporter(
        service_cfg(**extra),
        platform,
        clock=lambda: 0.0,
        wall=lambda: 1_800_000_000.0 + next(clock),
        probe=no_probes,  # type: ignore[arg-type]
    )


def test_openwrt_report(tmp_path: Path) -> None:
    p = OpenWrtPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0", "wlan1"]  # type: ignore[method-assign]
    rep = reporter(p).report()
    assert set(rep.radios) == {"wlan0", "wlan1"}
    assert rep.radios["wlan0"].channel == 149
    assert rep.radios["wlan0"].nbr == {
        "11": (1, -40),
        "13": (1, -59),
        "36": (1, -20),
        "157": (1, -53),
    }
    assert rep.radios["wlan0"].nbr_ids is None
    assert rep.ssids["wlan0"].sta == 3
    assert rep.dhcp == DhcpEvents(ack=0, nak=0, no_address=0)  # the log is older than the start
    assert rep.probes is not None and rep.probes.dns == "ok"
    assert rep.errors is None


def test_events_count_from_the_reporters_start(tmp_path: Path) -> None:
    p = RaspberryPiPlatform(tmp_path, Tools(log="journal_short_unix.txt"))
    p.wifi_ifaces = lambda: ["uap0"]  # type: ignore[method-assign]
    r = reporter(p)
    r._log_since = 0.0
    rep = r.report()
    assert rep.ssids["uap0"].ev == (1, 0, 0)
    assert rep.dhcp == DhcpEvents(ack=1, nak=0, no_address=0)
    tools: Tools = p.runner  # type: ignore[assignment]
    assert next(c for c in tools.calls if c[0] == "journalctl")[:2] == ["journalctl", "--no-pager"]


def test_a_radio_that_is_gone_costs_only_its_own_keys(tmp_path: Path) -> None:
    p = RaspberryPiPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0", "gone0"]  # type: ignore[method-assign]
    rep = reporter(p).report()
    assert rep.radios["wlan0"].channel == 36
    assert rep.radios["gone0"].channel is None
    assert rep.errors is not None
    assert {"radio.gone0", "neighbours.gone0", "stations.gone0"} <= set(rep.errors)
    assert "wlan0" in rep.ssids and "gone0" not in rep.ssids
    # What a consumer receives (nulls left out) reads back as the same report.
    assert ServiceReport.model_validate_json(encode_report(rep)) == rep


MAC = re.compile(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}")
IP = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")


def identities() -> set[str]:
    """Every MAC, IPv4 address, host name and SSID in the fixtures the report reads."""
    found: set[str] = set()
    for path in (STATIONS, UBUS, *SERVICE.glob("*.txt")):
        body = text(path)
        found |= {m.lower() for m in MAC.findall(body)} | set(IP.findall(body))
        found |= set(re.findall(r"SSID: (.+)", body))
    return found | {"Gorans-iPhone", "android-7f3a9", "WifiAP-01", "Vodafone Hotspot", "LOVER"}


@pytest.mark.parametrize("log", ["logread_openwrt.txt", "journal_short_unix.txt"])
def test_no_mac_ip_hostname_or_ssid_leaves(tmp_path: Path, log: str) -> None:
    p = OpenWrtPlatform(tmp_path, Tools(log=log))
    p.wifi_ifaces = lambda: ["wlan0", "wlan1", "gone0"]  # type: ignore[method-assign]
    r = reporter(p)
    r._log_since = 0.0
    payloads = [encode_report(r.report()).decode().lower() for _ in range(2)]
    secrets = identities()
    assert len(secrets) > 20
    for payload in payloads:
        leaked = [s for s in secrets if s.lower() in payload]
        assert leaked == []
        assert not MAC.search(payload) and not IP.search(payload)


def test_neighbour_ids_only_when_the_operator_asks(tmp_path: Path) -> None:
    p = OpenWrtPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0"]  # type: ignore[method-assign]
    rep = reporter(p, share_neighbour_ids=True).report()
    ids = rep.radios["wlan0"].nbr_ids
    assert ids is not None and {n.ssid for n in ids} == {
        "Vodafone Hotspot",
        "LOVER",
        "connect_point",
    }


# -- budget ------------------------------------------------------------------------------


def typical_report() -> ServiceReport:
    """Two radios with neighbours on three and four channels, four SSIDs, every field set."""
    radio = dict(channel=149, width_mhz=80, txpower_dbm=23.0, noise_dbm=-92, busy_pct=37.5)
    return ServiceReport(
        ts=1700000000.123,
        interval_s=300,
        radios={
            "phy0-ap0": RadioReport(
                **{**radio, "channel": 6, "width_mhz": 20},
                nbr={"1": (4, -61), "6": (7, -48), "11": (3, -70)},
            ),
            "phy1-ap0": RadioReport(
                **radio, nbr={"36": (2, -71), "44": (1, -80), "149": (3, -66), "157": (1, -75)}
            ),
        },
        ssids={
            name: SsidQuality(
                sta=23,
                rssi=[1, 4, 9, 7, 2],
                tx_mbps=144.4,
                rx_mbps=72.2,
                retry_pct=12.3,
                fail_pct=0.4,
                ev=(17, 15, 1),
            )
            for name in ("phy0-ap0", "phy0-ap1", "phy1-ap0", "phy1-ap1")
        },
        dhcp=DhcpEvents(ack=31, nak=1, no_address=0),
        probes=Probes(
            dns="ok",
            dns_ms=12.4,
            portal="open",
            portal_ms=85.2,
            inet_ms=23.1,
            loss_pct=0.0,
            jitter_ms=2.3,
            broker_ms=41.7,
        ),
    )


def test_two_radios_and_four_ssids_fit_in_one_kib() -> None:
    payload = encode_report(typical_report())
    assert len(payload) < 1024, len(payload)
    assert ServiceReport.model_validate_json(payload) == typical_report()


# -- the score ---------------------------------------------------------------------------


def test_a_healthy_ap_scores_100_and_each_fault_is_named() -> None:
    good = typical_report()
    assert scoring.score(good) == scoring.Score(100, [])
    bad = good.model_copy(
        update={
            "dhcp": DhcpEvents(ack=3, nak=0, no_address=12),
            "probes": Probes(dns="timeout", portal="broken", loss_pct=50.0),
            "radios": {
                "r": RadioReport(
                    channel=6, width_mhz=20, txpower_dbm=20.0, noise_dbm=-90, busy_pct=91.0
                )
            },
        }
    )
    s = scoring.score(bad)
    names = [d.name for d in s.deductions]
    assert names == [
        "channel_busy",
        "dhcp_pool_exhausted",
        "dns_failed",
        "portal_broken",
        "internet_loss",
    ]
    assert [d.points for d in s.deductions] == [20, 25, 25, 25, 25]
    assert s.score == 0
    assert "12" in s.deductions[1].detail


def test_unknowns_deduct_nothing() -> None:
    empty = ServiceReport(ts=0.0, interval_s=0)
    assert scoring.score(empty) == scoring.Score(100, [])


def test_the_weights_in_the_docs_are_the_codes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs/protocol.md").read_text()
    assert scoring.rules_table() in doc


# -- off by default, and costs nothing then ------------------------------------------------


def test_a_default_agent_never_imports_the_service_code() -> None:
    code = (
        "import sys; from agent.core import Agent; from agent.config import parse_config; "
        "parse_config({'mqtt': {'host': 'x'}}); "
        "print(sorted(m for m in sys.modules if 'service' in m))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.replace("'", '"')) == []


def test_the_simulated_platform_reports() -> None:
    r = ServiceReporter(service_cfg(), SimulatedPlatform(seed=3), probe=no_probes)  # type: ignore[arg-type]
    rep = r.report()
    assert len(rep.radios) == 2 and len(rep.ssids) == 2
    assert len(encode_report(rep)) < 1024
