"""The citizen path's pure parts (issue 20, point 4): the DHCP messages it sends and the replies
it accepts, its hardware address, its settings, its section of the service report (privacy and
size), the score's deductions, and the reporter's cadence. The path itself, against a real
dnsmasq in network namespaces: tests/integration/test_citizen_path.py."""

from __future__ import annotations

import logging
import random
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import ConfigError, parse_config
from agent.platforms.openwrt import OpenWrtPlatform
from agent.protocol import score as scoring
from agent.protocol.service import CitizenPath, ServiceReport, encode_report
from agent.service import citizen, events
from agent.service.citizen import CitizenResult
from agent.service.report import ServiceReporter
from tests.unit.test_service import Tools, no_probes, service_cfg, typical_report

MAC = bytes.fromhex("02aabbccddee")
XID = 0x12345678


def reply(kind: int, *, xid: int = XID, mac: bytes = MAC, opts: bytes = b"") -> bytes:
    """A BOOTREPLY as a server sends it (RFC 2131, 2): yiaddr 192.168.1.150."""
    head = struct.pack(
        ">BBBBIHH4s4s4s4s16s64s128s",
        2,
        1,
        6,
        0,
        xid,
        0,
        0x8000,
        bytes(4),
        bytes([192, 168, 1, 150]),
        bytes(4),
        bytes(4),
        mac,
        b"",
        b"",
    )
    return head + citizen.MAGIC + bytes([53, 1, kind]) + opts + b"\xff"


# -- the DHCP messages ---------------------------------------------------------------------


def test_a_discover_is_a_broadcast_bootrequest_with_our_client_id() -> None:
    msg = citizen.dhcp_message(citizen.DISCOVER, XID, MAC)
    op, htype, hlen, _, xid, _, flags = struct.unpack(">BBBBIHH", msg[:12])
    assert (op, htype, hlen, xid, flags) == (1, 1, 6, XID, 0x8000)
    assert msg[28:34] == MAC and msg[236:240] == citizen.MAGIC
    opts = msg[240:]
    assert opts.startswith(bytes([53, 1, 1]))
    assert bytes([61, 7, 1]) + MAC in opts
    assert opts.endswith(b"\xff")
    assert bytes([12]) not in opts[:3]  # no host name option at all
    assert b"\x0c" not in opts.split(b"\x37")[0][3:]


def test_a_request_names_the_offer_and_its_server() -> None:
    msg = citizen.dhcp_message(
        citizen.REQUEST,
        XID,
        MAC,
        requested=bytes([192, 168, 1, 150]),
        server=bytes([192, 168, 1, 1]),
    )
    assert bytes([50, 4, 192, 168, 1, 150]) in msg[240:]
    assert bytes([54, 4, 192, 168, 1, 1]) in msg[240:]


def test_a_release_carries_the_leased_address() -> None:
    msg = citizen.dhcp_message(
        citizen.RELEASE, XID, MAC, ciaddr=bytes([192, 168, 1, 150]), server=bytes([192, 168, 1, 1])
    )
    assert msg[12:16] == bytes([192, 168, 1, 150])
    assert msg[240:243] == bytes([53, 1, 7])


def test_replies_for_us_are_parsed_and_others_ignored() -> None:
    dns = bytes([6, 8, 192, 168, 1, 1, 9, 9, 9, 9])
    kind, yiaddr, opts = citizen.dhcp_reply(reply(citizen.ACK, opts=dns), XID, MAC) or (0, b"", {})
    assert kind == citizen.ACK and yiaddr == bytes([192, 168, 1, 150])
    assert opts[6] == bytes([192, 168, 1, 1, 9, 9, 9, 9])
    assert citizen.dhcp_reply(reply(citizen.ACK, xid=XID + 1), XID, MAC) is None  # not ours
    assert citizen.dhcp_reply(reply(citizen.ACK, mac=bytes(6)), XID, MAC) is None  # another client
    assert citizen.dhcp_reply(reply(citizen.ACK)[:200], XID, MAC) is None  # cut short
    request = citizen.dhcp_message(citizen.REQUEST, XID, MAC)
    assert citizen.dhcp_reply(request, XID, MAC) is None  # a request, not a reply
    # an option running past the end
    assert citizen.dhcp_reply(reply(citizen.ACK)[:-1] + b"\x06", XID, MAC) is None


def test_the_probe_mac_is_local_stable_and_not_the_aps(tmp_path: Path) -> None:
    net = tmp_path / "sys/class/net/br-lan"
    net.mkdir(parents=True)
    (net / "address").write_text("a4:91:b1:00:11:22\n")
    mac = citizen.probe_mac("br-lan", str(tmp_path))
    assert len(mac) == 6 and mac[0] & 0x02 and not mac[0] & 0x01  # local, unicast
    assert mac == citizen.probe_mac("br-lan", str(tmp_path))
    assert mac.hex(":") != "a4:91:b1:00:11:22"
    other = citizen.probe_mac("nope", str(tmp_path))  # unreadable: random, still local unicast
    assert other[0] & 0x02 and not other[0] & 0x01


# -- settings ------------------------------------------------------------------------------


def test_off_by_default_with_sane_settings() -> None:
    cfg = service_cfg()
    assert cfg.citizen_path is False  # type: ignore[attr-defined]
    assert cfg.citizen_interface == "br-lan"  # type: ignore[attr-defined]
    assert (cfg.citizen_every, cfg.citizen_portal) == (1, "open")  # type: ignore[attr-defined]
    assert cfg.citizen_budget_s == 2.0 and cfg.citizen_dhcp_timeout_s == 4.0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("citizen_url", "https://example.com/", "citizen_url"),
        ("citizen_interface", "br lan; reboot", "citizen_interface"),
        ("citizen_interface", "a-name-far-too-long", "citizen_interface"),
        ("citizen_every", 0, "citizen_every"),
        ("citizen_portal", "maybe", "citizen_portal"),
        ("citizen_budget_s", 60, "citizen_budget_s"),
    ],
)
def test_bad_settings_are_refused_by_name(key: str, value: object, words: str) -> None:
    with pytest.raises((ConfigError, ValidationError, ValueError)) as err:
        parse_config({"mqtt": {"host": "x"}, "service": {"enabled": True, key: value}})
    assert words in str(err.value)


# -- the report's section ------------------------------------------------------------------


def with_path(**kw: object) -> ServiceReport:
    fields: dict[str, object] = {"lease": True, "ms": [3012.4, 1.2, 20.5, 48.9], "portal": "open"}
    fields.update(kw)
    return typical_report().model_copy(update={"citizen_path": CitizenPath(**fields)})  # type: ignore[arg-type]


def test_a_report_with_the_citizen_path_stays_small() -> None:
    """The typical report is 1,005 B without the path and 1,079 B with it passing; the
    longest section a walk can give (every step timed in thousands of ms, failing at the last
    with the longest reason) keeps it under 1.1 KiB (docs/protocol.md, "Service report")."""
    base = len(encode_report(typical_report()))
    payload = encode_report(with_path())
    assert len(payload) - base <= 80, len(payload) - base
    assert ServiceReport.model_validate_json(payload) == with_path()
    longest = with_path(ms=[4000.1, 2000.1, 2000.1, 2000.1], fail="inet", why="no_address")
    assert len(encode_report(longest)) < 1.1 * 1024, len(encode_report(longest))


def test_the_section_cannot_carry_an_address() -> None:
    for bad in (
        {"lease": True, "ms": [1.0], "why": "192.168.1.150"},
        {"lease": True, "ms": [1.0], "fail": "02:aa:bb:cc:dd:ee"},
        {"lease": True, "ms": [1.0] * 5},
        {"lease": True, "ms": [-1.0]},
    ):
        with pytest.raises(ValidationError):
            CitizenPath.model_validate(bad)


def test_every_reason_the_walk_gives_is_one_the_model_takes() -> None:
    for why in citizen.REASONS:
        CitizenPath(lease=True, ms=[1.0], fail="dhcp", why=why)  # type: ignore[arg-type]
    for step in citizen.STEPS:
        CitizenPath(lease=True, ms=[1.0], fail=step)  # type: ignore[arg-type]


# -- the score -----------------------------------------------------------------------------


def test_a_passing_or_absent_path_deducts_nothing() -> None:
    assert scoring.score(with_path()) == scoring.Score(100, [])
    assert scoring.score(typical_report()) == scoring.Score(100, [])


@pytest.mark.parametrize(
    ("step", "why"),
    [("dhcp", "no_offer"), ("dns", "timeout"), ("portal", "portal"), ("inet", "refused")],
)
def test_a_failed_path_is_named_by_its_step_and_reason(step: str, why: str) -> None:
    s = scoring.score(with_path(fail=step, why=why))
    assert [(d.name, d.points) for d in s.deductions] == [(f"citizen_{step}", 25)]
    assert s.score == 75
    assert f"({why})" in s.deductions[0].detail and step in s.deductions[0].detail


# -- the reporter --------------------------------------------------------------------------


def walked(cfg: object, rng: object, notes: list[str]) -> CitizenResult:
    walked.calls += 1  # type: ignore[attr-defined]
    notes.append("br-lan: No such device")
    return CitizenResult(False, [0.4], None, "dhcp", "error", 0.4)


def reporter(tmp_path: Path, **extra: object) -> ServiceReporter:
    p = OpenWrtPlatform(tmp_path, Tools())
    p.wifi_ifaces = lambda: ["wlan0"]  # type: ignore[method-assign]
    return ServiceReporter(
        service_cfg(**extra),  # type: ignore[arg-type]
        p,
        clock=lambda: 0.0,
        wall=lambda: 1_800_000_000.0,
        probe=no_probes,  # type: ignore[arg-type]
        citizen=walked,  # type: ignore[arg-type]
    )


def test_the_reporter_walks_with_every_nth_report(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    walked.calls = 0  # type: ignore[attr-defined]
    r = reporter(tmp_path, citizen_path=True, citizen_every=3)
    with caplog.at_level(logging.WARNING, logger="titik.service"):
        reports = [r.report() for _ in range(7)]
    assert [rep.citizen_path is not None for rep in reports] == [
        True, False, False, True, False, False, True,
    ]  # fmt: skip
    assert walked.calls == 3  # type: ignore[attr-defined]
    first = reports[0].citizen_path
    assert first == CitizenPath(lease=False, ms=[0.4], fail="dhcp", why="error")
    # The local error's words go to the log, not into the report.
    assert "No such device" in caplog.text
    assert "No such device" not in encode_report(reports[0]).decode()


def test_off_never_walks(tmp_path: Path) -> None:
    walked.calls = 0  # type: ignore[attr-defined]
    r = reporter(tmp_path)
    assert all(r.report().citizen_path is None for _ in range(3))
    assert walked.calls == 0  # type: ignore[attr-defined]


def test_the_probes_own_lease_is_not_counted_as_a_citizens(tmp_path: Path) -> None:
    net = tmp_path / "sys/class/net/br-lan"
    net.mkdir(parents=True)
    (net / "address").write_text("a4:91:b1:00:11:22\n")
    own = citizen.probe_mac("br-lan", str(tmp_path)).hex(":")
    log = (
        f"1800000001.0 ap dnsmasq-dhcp[1]: DHCPACK(br-lan) 192.168.1.150 {own}\n"
        "1800000002.0 ap dnsmasq-dhcp[1]: DHCPACK(br-lan) 192.168.1.151 a4:91:b1:00:99:88 phone\n"
    )
    assert events.parse_log(log, 0.0, journal=True).ack == 2
    assert events.parse_log(log, 0.0, journal=True, ignore=(own,)).ack == 1
    r = reporter(tmp_path, citizen_path=True)
    assert r._own_macs() == (own,)
    assert reporter(tmp_path)._own_macs() == ()


def test_walk_reports_a_missing_interface_as_an_error_without_an_address() -> None:
    notes: list[str] = []
    r = citizen.walk(
        "tk-no-such-if",
        "http://portal.test/",
        "http://internet.test/",
        rng=random.Random(1),
        log=notes,
    )
    assert (r.lease, r.fail, r.why, len(r.ms)) == (False, "dhcp", "error", 1)
    assert notes and "tk-no-such-if" in notes[0]


# -- OpenWrt's split stdlib ----------------------------------------------------------------


@pytest.mark.parametrize("release", ["openwrt-24.10", "openwrt-25.12"])
def test_its_stdlib_modules_are_in_the_packages_depends(release: str) -> None:
    """Every module the citizen path loads (on top of what the agent had) is in python3-light or
    in a package the .ipk/.apk Depends bring in (packaging/nfpm.yaml; the split as OpenWrt
    builds it: packaging/openwrt/python3-split/). The whole packaged agent runs under the split
    in tests/packaging/test_python_split.py."""
    from tests.packaging.pysplit import NOWHERE, Split

    root = Path(__file__).resolve().parents[2]
    nfpm = (root / "packaging/nfpm.yaml").read_text()
    block = nfpm.split("depends: &openwrt_depends\n", 1)[1].split("\n    scripts:", 1)[0]
    depends = re.findall(r"(?m)^\s+- ([\w.+-]+)", block)
    assert "python3-light" in depends and "python3-urllib" in depends
    code = (
        "import sys\nimport agent.service.report, agent.service.probes\nbefore = set(sys.modules)\n"
        "import agent.service.citizen\nprint(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    ).stdout.split()
    assert "agent.service.citizen" in loaded
    split = Split(release)
    closure = split.closure(depends)
    outside = {
        m: split.package_of(m)
        for m in loaded
        if m.partition(".")[0] in sys.stdlib_module_names
        and (split.package_of(m) == NOWHERE or split.package_of(m) not in closure | {None})
    }
    assert outside == {}


def test_the_simulated_platform_walks_too() -> None:
    from agent.platforms.simulated import SimulatedPlatform

    r = ServiceReporter(
        service_cfg(citizen_path=True, citizen_every=2),  # type: ignore[arg-type]
        SimulatedPlatform(seed=3),
        probe=no_probes,  # type: ignore[arg-type]
        citizen=walked,  # type: ignore[arg-type]
    )
    reports = [r.report() for _ in range(3)]
    assert [rep.citizen_path is not None for rep in reports] == [True, False, True]
    path = reports[0].citizen_path
    assert path is not None and path.fail is None and len(path.ms) == 4
    assert not [d for d in scoring.score(reports[0]).deductions if d.name.startswith("citizen")]
    off = ServiceReporter(service_cfg(), SimulatedPlatform(seed=3), probe=no_probes)  # type: ignore[arg-type]
    assert off.report().citizen_path is None
