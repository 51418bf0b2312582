from __future__ import annotations

import sys
from pathlib import Path

import pytest

from agent.collectors import clients, health
from agent.collectors.base import DISCOVERY_TTL_S, Collector, Context
from agent.platforms import detect, make_platform
from agent.platforms.linux import LinuxPlatform, normalise_mac
from agent.platforms.openwrt import OpenWrtPlatform
from agent.platforms.raspberrypi import RaspberryPiPlatform
from agent.platforms.simulated import SimulatedPlatform, daily_curve
from agent.protocol import Clients, Health
from agent.runner import CommandError, CommandResult
from agent.sampling import load_collector, run_collectors


def test_detect(tmp_path: Path) -> None:
    assert detect(tmp_path) == "linux"
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\x00")
    assert detect(tmp_path) == "raspberrypi"
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/openwrt_release").write_text("DISTRIB_ID='OpenWrt'\n")
    assert detect(tmp_path) == "openwrt"


def test_other_device_tree_boards_are_plain_linux(tmp_path: Path) -> None:
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_bytes(b"Radxa ROCK Pi 4B\x00")
    assert detect(tmp_path) == "linux"


def test_config_overrides_detection(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/openwrt_release").write_text("")
    assert isinstance(make_platform("auto", tmp_path), OpenWrtPlatform)
    assert type(make_platform("linux", tmp_path)) is LinuxPlatform
    assert isinstance(make_platform("simulated", tmp_path), SimulatedPlatform)


def _iface(root: Path, name: str, mac: str) -> None:
    (root / "sys/class/net" / name).mkdir(parents=True)
    (root / "sys/class/net" / name / "address").write_text(mac + "\n")


def test_primary_mac_prefers_the_lan_bridge(tmp_path: Path) -> None:
    _iface(tmp_path, "lo", "00:00:00:00:00:00")
    _iface(tmp_path, "eth1", "00:11:22:33:44:bb")
    _iface(tmp_path, "br-lan", "00:11:22:33:44:AA")
    assert LinuxPlatform(tmp_path).primary_mac() == "0011223344aa"


def test_primary_mac_falls_back_and_can_be_absent(tmp_path: Path) -> None:
    assert LinuxPlatform(tmp_path).primary_mac() is None
    _iface(tmp_path, "lo", "00:00:00:00:00:00")
    assert LinuxPlatform(tmp_path).primary_mac() is None
    _iface(tmp_path, "enp3s0", "02:00:00:00:00:01")
    assert LinuxPlatform(tmp_path).primary_mac() == "020000000001"


@pytest.mark.parametrize("text", ["", "garbage", "00:00:00:00:00:00", "00:11:22:33:44"])
def test_bad_macs(text: str) -> None:
    assert normalise_mac(text) is None


def test_simulated_is_seeded_and_plausible() -> None:
    a, b = SimulatedPlatform("gw-1", boot_wall=0), SimulatedPlatform("gw-1", boot_wall=0)
    ctx_a, ctx_b = Context(wall=1_800_000_000, mono=1), Context(wall=1_800_000_000, mono=1)
    assert clients.simulate(a, ctx_a) == clients.simulate(b, ctx_b)
    assert a.primary_mac() == b.primary_mac() != SimulatedPlatform("gw-2").primary_mac()
    h = health.simulate(a, ctx_a)
    assert h.temp_c is not None
    assert 0 <= (h.cpu_pct or 0) <= 100


def test_daily_curve_is_quiet_at_night_and_busy_in_the_evening() -> None:
    midnight_wib = 1_800_000_000 - (1_800_000_000 + 7 * 3600) % 86400
    assert daily_curve(midnight_wib + 4 * 3600) < 0.1
    assert daily_curve(midnight_wib + 20 * 3600) > 0.9


def test_a_platform_looks_up_readings_by_its_kind_then_its_parents() -> None:
    assert OpenWrtPlatform.kinds == ("openwrt", "linux")
    assert RaspberryPiPlatform.kinds == ("raspberrypi", "linux")
    assert SimulatedPlatform.kinds == ("simulated",)
    c = Collector("x", {"linux": lambda p, c: Health.model_construct(), "openwrt": print})
    assert c.for_platform(OpenWrtPlatform.kinds) is print
    assert c.for_platform(RaspberryPiPlatform.kinds) is not print
    assert c.for_platform(SimulatedPlatform.kinds) is None


def test_a_collector_without_a_reading_for_the_platform_says_so() -> None:
    ctx = Context(wall=1_800_000_000, mono=1)
    only_linux = {"health": Collector("health", {"linux": health.collect})}
    out = run_collectors(SimulatedPlatform(1), ["health"], ctx, only_linux)
    assert out == {"health": None}
    assert ctx.errors == {"health": "not available on platform simulated"}


def _broken(p: object, ctx: Context) -> Clients:
    raise CommandError("iw: not installed")


def _buggy(p: object, ctx: Context) -> Health:
    raise ZeroDivisionError("oops")


def _with(name: str, reading: object) -> dict[str, Collector]:
    """The registry's collectors, with ``name``'s simulated reading replaced."""
    out = {n: load_collector(n) for n in ("health", "network", "clients")}
    out[name] = Collector(out[name].field, {"simulated": reading})  # type: ignore[dict-item]
    return out


def test_a_failing_collector_becomes_an_error_field_and_the_rest_still_report() -> None:
    ctx = Context(wall=1_800_000_000, mono=1)
    out = run_collectors(
        SimulatedPlatform(1), ["health", "network", "clients"], ctx, _with("clients", _broken)
    )
    assert out["clients"] is None
    assert out["health"] is not None
    assert out["network"] is not None
    assert ctx.errors == {"clients": "iw: not installed"}


def test_even_a_bug_in_a_collector_does_not_stop_the_sample() -> None:
    ctx = Context(wall=1_800_000_000, mono=1)
    out = run_collectors(SimulatedPlatform(1), ["health", "clients"], ctx, _with("health", _buggy))
    assert out["health"] is None
    assert out["clients"] is not None
    assert "ZeroDivisionError" in ctx.errors["health"]


def test_openwrt_lists_ap_interfaces_from_ubus(tmp_path: Path) -> None:
    """Stand-in runner: this machine has no ubus."""

    def runner(argv: list[str], timeout: float = 5.0) -> CommandResult:
        if argv[:2] == ["ubus", "list"]:
            return CommandResult(0, "hostapd.phy0-ap0\nhostapd.phy1-ap0\n", "")
        if argv[:2] == ["ubus", "call"]:
            return CommandResult(
                0, '{"freq": 2462, "clients": {"02:00:00:00:00:01": {"authorized": true}}}', ""
            )
        raise CommandError(f"{argv[0]}: not installed")

    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp/dhcp.leases").write_text("0 02:00:00:00:00:01 192.0.2.10 * *\n")
    p = OpenWrtPlatform(tmp_path, runner)
    ctx = Context(wall=1_800_000_000, mono=1)
    out = run_collectors(p, ["clients"], ctx)["clients"]
    assert isinstance(out, Clients)
    assert out.by_iface == {"phy0-ap0": 1, "phy1-ap0": 1}
    assert out.total == 2
    assert out.leases == 1
    assert ctx.errors == {}


def test_no_client_identifier_leaves_the_gateway(tmp_path: Path) -> None:
    """The sample carries counts only: no station MAC, lease IP or host name (stand-in tools)."""
    mac, ip, host = "02:00:00:00:00:01", "192.0.2.10", "alices-phone"

    def runner(argv: list[str], timeout: float = 5.0) -> CommandResult:
        if argv[:2] == ["ubus", "list"]:
            return CommandResult(0, "hostapd.phy0-ap0\n", "")
        body = f'{{"clients": {{"{mac}": {{"authorized": true, "signal": -55}}}}}}'
        return CommandResult(0, body, "")

    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp/dhcp.leases").write_text(f"0 {mac} {ip} {host} *\nbroken {mac}\n")
    p = OpenWrtPlatform(tmp_path, runner)
    ctx = Context(wall=1_800_000_000, mono=1)
    text = clients.collect(p, ctx).model_dump_json() + str(ctx.errors)
    for secret in (mac, mac.replace(":", ""), ip, host):
        assert secret not in text


def test_a_steady_sample_leaves_no_churn_in_the_interned_strings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pathlib interns every part of a new Path. A part interned during a sample that is no
    # longer interned afterwards is added to CPython's interned-string table again on the
    # next sample; at one sample a second that churn forced a rebuild of the table at twice
    # its size (+0.5 MiB RSS) after ~20 minutes. So: what a sample interns must stay interned.
    (tmp_path / "proc/net").mkdir(parents=True)
    (tmp_path / "proc/uptime").write_text("350735.47 234388.90\n")
    fixtures = Path(__file__).resolve().parents[1] / "fixtures/collectors/network"
    (tmp_path / "proc/net/dev").write_bytes((fixtures / "netdev.this-machine").read_bytes())
    (tmp_path / "sys/class/net/eth0").mkdir(parents=True)
    (tmp_path / "sys/class/net/eth0/operstate").write_text("up\n")
    (tmp_path / "proc/net/route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth9\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\n"
    )
    (tmp_path / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (tmp_path / "sys/class/thermal/thermal_zone0/temp").write_text("52500\n")
    (tmp_path / "tmp").mkdir()
    (tmp_path / "tmp/dhcp.leases").write_text("")
    platform = LinuxPlatform(tmp_path, runner=lambda argv, timeout: CommandResult(0, "", ""))
    memo: dict[str, object] = {}

    def sample(mono: float = 0.0) -> None:
        ctx = Context(wall=1.0e9, mono=mono, memo=memo)
        run_collectors(platform, ["health", "network", "clients"], ctx)
        assert not ctx.errors

    sample()  # the first one may intern what it keeps (and caches what it found)
    interned: list[str] = []
    real_intern = sys.intern

    def spy(text: str) -> str:
        interned.append(text.encode().decode())  # a copy: holding it would keep it interned
        return real_intern(text)

    monkeypatch.setattr(sys, "intern", spy)
    sample()
    sample(mono=DISCOVERY_TTL_S + 1)  # radios, lease files and sensors are looked up again
    monkeypatch.setattr(sys, "intern", real_intern)
    # Nothing a sample does goes through pathlib any more (the files it reads are kept as str,
    # and discovery lists directories with os.listdir), so nothing is interned.
    assert interned == []
