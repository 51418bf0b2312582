"""raspberrypi/wifi (hostapd.conf) and raspberrypi/hotspot (openNDS 9, dnsmasq), for real
under busybox sh and dash; systemctl and hostapd_cli are stand-ins (tests/hooks/bin)."""

from __future__ import annotations

import stat
from typing import Any

import pytest

from agent.protocol.remote_schema import HotspotSection
from agent.remote.hooks import HookError
from tests.unit.firmware_hooks.harness import (
    HOTSPOT,
    ODD_SSIDS,
    PI_WIFI,
    Gateway,
    dump_wifi,
    expected,
    wifi,
)

# --- raspberrypi/wifi ------------------------------------------------------------------------


def test_pi_wifi_apply_edits_hostapd_conf_and_reloads_through_systemd(pi: Gateway) -> None:
    pi.unit("hostapd", "active")
    conf = pi.root / "etc/hostapd/hostapd.conf"
    conf.chmod(0o600)
    assert pi.runner().apply("wifi", dump_wifi(PI_WIFI)) is True
    assert conf.read_bytes() == expected("raspberrypi/hostapd.conf.expected")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds the passphrase
    assert pi.calls() == ["systemctl is-active --quiet hostapd", "systemctl reload hostapd"]
    assert list(pi.tmpdir.iterdir()) == []
    assert [p.name for p in conf.parent.iterdir()] == ["hostapd.conf"]  # no temp left


def test_pi_wifi_reloads_through_hostapd_cli_when_hostapd_is_not_a_running_unit(
    pi: Gateway,
) -> None:
    pi.runner().apply("wifi", wifi(public={"ssid": "Titik"}))
    assert pi.calls() == ["systemctl is-active --quiet hostapd", "hostapd_cli reload"]
    pi.extra_env["STANDIN_FAIL"] = "hostapd_cli"
    with pytest.raises(HookError) as err:
        pi.runner().apply("wifi", wifi(public={"ssid": "Titik 2"}))
    assert err.value.reason == "reload: hostapd_cli reload failed"


def test_pi_wifi_apply_twice_and_restore(pi: Gateway) -> None:
    pi.unit("hostapd", "active")
    runner = pi.runner()
    runner.snapshot("wifi")
    assert runner.apply("wifi", dump_wifi(PI_WIFI)) is True
    assert runner.apply("wifi", dump_wifi(PI_WIFI)) is False
    runner.restore("wifi")
    conf = pi.root / "etc/hostapd/hostapd.conf"
    assert conf.read_bytes() == expected("raspberrypi/hostapd.conf")
    assert pi.calls().count("systemctl reload hostapd") == 2


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"radios": {"radio1": {}}}, "radios.radio1: no such radio"),
        (
            {"ssids": {"public": {"ssid": "x", "radios": ["radio0", "radio1"]}}},
            "ssids.public.radios: no such radio radio1",
        ),
        (
            {"ssids": {"a": {"ssid": "A"}, "b": {"ssid": "B"}}},
            "ssids.b: a Raspberry Pi gateway serves one SSID",
        ),
    ],
)
def test_pi_wifi_validate_refuses_a_second_radio_or_ssid(
    pi: Gateway, data: dict[str, Any], error: str
) -> None:
    with pytest.raises(HookError) as err:
        pi.runner().validate("wifi", dump_wifi(data))
    assert err.value.reason.startswith(error)
    assert err.value.exit_code == 1
    assert (pi.root / "etc/hostapd/hostapd.conf").read_bytes() == expected(
        "raspberrypi/hostapd.conf"
    )
    assert pi.calls() == []


def test_bad_values_are_invalid_input(pi: Gateway) -> None:
    bad = {"radios": {"radio0": {"channel": "six"}}}
    with pytest.raises(HookError) as err:
        pi.runner().validate("wifi", bad)
    assert err.value.exit_code == 2
    assert (
        err.value.reason == "invalid input: radios.radio0.channel: must be a channel number or auto"
    )


@pytest.mark.parametrize(
    ("encryption", "key", "lines"),
    [
        ("none", None, []),
        ("owe", None, ["wpa=2", "wpa_key_mgmt=OWE", "rsn_pairwise=CCMP", "ieee80211w=2"]),
        (
            "psk2",
            "k" * 8,
            ["wpa=2", "wpa_key_mgmt=WPA-PSK", "rsn_pairwise=CCMP", "wpa_passphrase=kkkkkkkk"],
        ),
        ("sae-mixed", "k" * 8, ["wpa=2", "wpa_key_mgmt=WPA-PSK SAE", "ieee80211w=1"]),
    ],
)
def test_pi_wifi_encryption(
    pi: Gateway, encryption: str, key: str | None, lines: list[str]
) -> None:
    pi.runner().apply("wifi", wifi(public={"ssid": "T", "encryption": encryption, "key": key}))
    conf = (pi.root / "etc/hostapd/hostapd.conf").read_text().splitlines()
    for line in lines:
        assert line in conf
    if encryption == "none":
        assert not [c for c in conf if c.startswith(("wpa", "rsn_pairwise", "ieee80211w"))]
    if key is None:
        assert not [c for c in conf if c.startswith("wpa_passphrase")]


@pytest.mark.parametrize("ssid", ODD_SSIDS)
def test_pi_wifi_odd_ssids_survive(pi: Gateway, ssid: str) -> None:
    pi.runner().apply("wifi", wifi(public={"ssid": ssid}))
    lines = (pi.root / "etc/hostapd/hostapd.conf").read_bytes().splitlines()
    assert b"ssid=" + ssid.encode() in lines
    assert (b"utf8_ssid=1" in lines) == (not ssid.isascii())


def test_pi_wifi_channel_sets_the_band(pi: Gateway) -> None:
    runner = pi.runner()
    conf = pi.root / "etc/hostapd/hostapd.conf"
    runner.apply("wifi", dump_wifi({"radios": {"radio0": {"channel": 149}}}))
    assert {"channel=149", "hw_mode=a"} <= set(conf.read_text().splitlines())
    runner.apply("wifi", dump_wifi({"radios": {"radio0": {"channel": "auto", "enabled": False}}}))
    assert {"channel=0", "hw_mode=a", "start_disabled=1"} <= set(conf.read_text().splitlines())
    runner.apply("wifi", dump_wifi({"radios": {"radio0": {"channel": 11}}}))
    lines = set(conf.read_text().splitlines())
    assert {"channel=11", "hw_mode=g"} <= lines
    assert "start_disabled=1" not in lines


# --- raspberrypi/hotspot ---------------------------------------------------------------------


def test_pi_hotspot_apply_edits_opennds_and_the_dnsmasq_lease(pi: Gateway) -> None:
    pi.unit("opennds", "enabled", "active")
    runner = pi.runner()
    assert runner.apply("hotspot", HOTSPOT) is True
    assert (pi.root / "etc/opennds/opennds.conf").read_bytes() == expected(
        "raspberrypi/opennds.conf.expected"
    )
    assert (pi.root / "etc/dnsmasq.d/titik-hotspot.conf").read_bytes() == expected(
        "raspberrypi/titik-hotspot.conf.expected"
    )
    assert pi.calls() == [
        "systemctl is-enabled --quiet opennds",
        "systemctl restart opennds",
        "systemctl restart dnsmasq",
    ]
    assert runner.apply("hotspot", HOTSPOT) is False
    assert pi.calls()[3:] == ["systemctl is-enabled --quiet opennds"]


def test_pi_hotspot_disable_then_restore(pi: Gateway) -> None:
    pi.unit("opennds", "enabled", "active")
    runner = pi.runner()
    runner.snapshot("hotspot")
    assert runner.apply(
        "hotspot", HotspotSection(enabled=False, session_timeout_min=1).model_dump()
    )
    assert "systemctl disable --now opennds" in pi.calls()
    assert pi.units() == {"dnsmasq.active"}
    assert (
        "dhcp-range=10.42.0.10,10.42.3.250,255.255.252.0,2m"
        in (pi.root / "etc/dnsmasq.d/titik-hotspot.conf").read_text().splitlines()
    )
    runner.restore("hotspot")
    for name in ("opennds.conf", "titik-hotspot.conf"):
        found = next((pi.root / "etc").rglob(name))
        assert found.read_bytes() == expected(f"raspberrypi/{name}")
    assert pi.units() == {"opennds.enabled", "opennds.active", "dnsmasq.active"}
    assert pi.calls()[-3:] == [
        "systemctl enable opennds",
        "systemctl restart opennds",
        "systemctl restart dnsmasq",
    ]


def test_pi_hotspot_without_opennds_still_sets_the_lease(pi: Gateway) -> None:
    (pi.root / "etc/opennds/opennds.conf").unlink()
    runner = pi.runner()
    with pytest.raises(HookError) as err:
        runner.validate("hotspot", HOTSPOT)
    assert err.value.reason.startswith("enabled: openNDS is not installed")
    data = HotspotSection(enabled=False, session_timeout_min=None).model_dump()
    assert runner.apply("hotspot", data) is True
    assert (
        "dhcp-range=10.42.0.10,10.42.3.250,255.255.252.0"
        in (pi.root / "etc/dnsmasq.d/titik-hotspot.conf").read_text().splitlines()
    )
    assert pi.calls() == ["systemctl restart dnsmasq"]
