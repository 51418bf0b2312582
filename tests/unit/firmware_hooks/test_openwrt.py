"""openwrt/wifi and openwrt/hotspot, for real under busybox sh and dash, through UCI.

uci is a STAND-IN (tests/hooks/uci_standin.py) that behaves as OpenWrt's does: changes are
delta lines in the save dir, a commit truncates the delta file to zero bytes and leaves it,
the hook's private save dir (-t) does not hide changes staged in /tmp/.uci, anonymous
sections get their cfgXXXXXX names. The fixtures are real-format UCI files; where each
shape comes from is written at its top.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from agent.protocol.remote_schema import HotspotSection
from agent.remote.hooks import HookError, flatten
from tests.unit.firmware_hooks.harness import (
    HOTSPOT,
    ODD_SSIDS,
    STANDINS,
    WIFI_FULL,
    Gateway,
    dump_wifi,
    expected,
    wifi,
)

PENDING = "uci: /etc/config/{} has uncommitted changes in /tmp/.uci"


def staged(gw: Gateway, package: str) -> str:
    """What the hook has staged and not committed: `uci changes` on its own save dir."""
    return gw.uci("-t", str(gw.root / "tmp/.titik-uci"), "changes", package).stdout


# --- openwrt/wifi ----------------------------------------------------------------------------


def test_openwrt_wifi_validate_accepts_the_radios_it_has(openwrt: Gateway) -> None:
    before = (openwrt.root / "etc/config/wireless").read_bytes()
    openwrt.runner().validate("wifi", dump_wifi(WIFI_FULL))
    assert (openwrt.root / "etc/config/wireless").read_bytes() == before
    assert openwrt.calls() == []
    assert not (openwrt.root / "tmp/.titik-uci/wireless").exists()


@pytest.mark.parametrize(
    ("data", "extra", "error"),
    [
        ({"radios": {"radio9": {"channel": 6}}}, "", "radios.radio9: no such radio"),
        (
            {"ssids": {"public": {"ssid": "x", "radios": ["radio0", "radio7"]}}},
            "",
            "ssids.public.radios: no such radio radio7",
        ),
        (
            {"ssids": {"public": {"ssid": "x"}}},
            "\nconfig wifi-device 'public_radio0'\n\toption type 'mac80211'\n",
            "ssids.public: section public_radio0 exists and is a wifi-device",
        ),
    ],
)
def test_openwrt_wifi_validate_refuses_what_the_gateway_lacks(
    openwrt: Gateway, data: dict[str, Any], extra: str, error: str
) -> None:
    wireless = openwrt.root / "etc/config/wireless"
    wireless.write_text(wireless.read_text() + extra)
    before = wireless.read_bytes()
    section = dump_wifi(data)
    with pytest.raises(HookError) as err:
        openwrt.runner().validate("wifi", section)
    assert err.value.reason == error
    assert err.value.exit_code == 1
    res = openwrt.raw("wifi", "validate", stdin=flatten(section))
    assert res.returncode == 1
    assert (
        res.stdout
        == json.dumps({"ok": False, "error": error}, separators=(",", ":")).encode() + b"\n"
    )
    # apply validates first, so it changes nothing either
    with pytest.raises(HookError):
        openwrt.runner().apply("wifi", section)
    assert wireless.read_bytes() == before
    assert openwrt.calls() == []


def test_openwrt_wifi_apply_writes_uci_and_reloads(openwrt: Gateway) -> None:
    assert openwrt.runner().apply("wifi", dump_wifi(WIFI_FULL)) is True
    assert (openwrt.root / "etc/config/wireless").read_bytes() == expected(
        "openwrt/wireless.expected"
    )
    assert openwrt.calls() == ["uci commit wireless", "wifi reload"]
    # Nothing is left staged. The delta file is still there, as libuci leaves it after a
    # commit, but empty; and no temp file is left anywhere (one would hold the key).
    assert staged(openwrt, "wireless") == ""
    delta = openwrt.root / "tmp/.titik-uci/wireless"
    assert delta.stat().st_size == 0
    assert sorted(p.name for p in (openwrt.root / "etc/config").iterdir()) == [
        "opennds",
        "wireless",
    ]
    assert list(openwrt.tmpdir.iterdir()) == []


def test_openwrt_wifi_apply_twice_changes_nothing_the_second_time(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    data = wifi(public={"ssid": "Titik"})
    assert runner.apply("wifi", data) is True
    first = (openwrt.root / "etc/config/wireless").read_bytes()
    # the zero-byte delta file the commit left is no obstacle
    assert (openwrt.root / "tmp/.titik-uci/wireless").stat().st_size == 0
    assert runner.apply("wifi", data) is False
    assert (openwrt.root / "etc/config/wireless").read_bytes() == first
    assert openwrt.calls() == ["uci commit wireless", "wifi reload"]
    assert staged(openwrt, "wireless") == ""


def test_openwrt_wifi_drops_only_its_own_stale_interfaces(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    runner.apply("wifi", wifi(public={"ssid": "Titik", "radios": ["radio0", "radio1"]}))
    runner.apply("wifi", wifi(guest={"ssid": "Guest"}))
    text = (openwrt.root / "etc/config/wireless").read_text()
    assert "'guest_radio0'" in text
    assert "public_radio" not in text
    assert "old_radio0" not in text  # made by an earlier Titik apply (titik '1')
    assert "'default_radio0'" in text
    assert "'default_radio1'" in text


def test_openwrt_wifi_snapshot_apply_restore_gives_back_the_exact_file(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    original = (openwrt.root / "etc/config/wireless").read_bytes()
    runner.snapshot("wifi")
    runner.apply("wifi", dump_wifi(WIFI_FULL))
    assert (openwrt.root / "etc/config/wireless").read_bytes() != original
    runner.restore("wifi")
    assert (openwrt.root / "etc/config/wireless").read_bytes() == original
    assert openwrt.calls() == ["uci commit wireless", "wifi reload", "wifi reload"]
    # restore keeps the snapshot: the agent may need it again
    runner.restore("wifi")
    assert (openwrt.root / "etc/config/wireless").read_bytes() == original


def test_openwrt_wifi_failed_reload_fails_apply(openwrt: Gateway) -> None:
    openwrt.extra_env["STANDIN_FAIL"] = "wifi"
    with pytest.raises(HookError) as err:
        openwrt.runner().apply("wifi", wifi(public={"ssid": "Titik"}))
    assert err.value.reason == "reload: wifi reload failed"


def test_openwrt_wifi_odd_ssids_survive(openwrt: Gateway) -> None:
    # One apply with every odd SSID on its own interface: each uci call costs a Python start.
    names = [f"odd{i}" for i in range(len(ODD_SSIDS))]
    openwrt.runner().apply(
        "wifi", wifi(**{n: {"ssid": s} for n, s in zip(names, ODD_SSIDS, strict=True)})
    )
    for name, ssid in zip(names, ODD_SSIDS, strict=True):
        assert len(ssid.encode()) <= 32
        got = subprocess.run(
            [
                str(STANDINS / "bin" / "uci"),
                "-c",
                str(openwrt.root / "etc/config"),
                "get",
                f"wireless.{name}_radio0.ssid",
            ],
            capture_output=True,
            env=openwrt.env(),
            check=True,
        )
        assert got.stdout == ssid.encode() + b"\n", name


# --- anonymous sections ----------------------------------------------------------------------


def test_openwrt_wifi_works_with_anonymous_wifi_ifaces(openwrt: Gateway) -> None:
    """OpenWrt before LEDE wrote its default interfaces anonymous, and LuCI still adds them
    so (fixture: tests/hooks/fixtures/openwrt/wireless-anonymous)."""
    wireless = openwrt.put("etc/config/wireless", "openwrt/wireless-anonymous")
    shown = openwrt.uci("show", "wireless").stdout
    assert "wireless.@wifi-iface[0].ssid='OpenWrt'" in shown
    assert "wireless.@wifi-iface[2].ssid='Cafe guests'" in shown
    assert "wireless.@wifi-iface[3].titik='1'" in shown
    runner = openwrt.runner()
    runner.snapshot("wifi")
    original = wireless.read_bytes()
    assert runner.apply("wifi", dump_wifi(WIFI_FULL)) is True
    # The firmware's and LuCI's anonymous interfaces stay as they were, still anonymous and in
    # their place; the anonymous one that carries titik '1' goes, the SSIDs are added.
    assert wireless.read_bytes() == expected("openwrt/wireless-anonymous.expected")
    assert runner.apply("wifi", dump_wifi(WIFI_FULL)) is False
    assert openwrt.calls() == ["uci commit wireless", "wifi reload"]
    runner.restore("wifi")
    assert wireless.read_bytes() == original


def test_openwrt_wifi_drops_every_stale_anonymous_interface_it_marked(openwrt: Gateway) -> None:
    # Two marked anonymous interfaces: deleting the first must not shift the name of the
    # second (the hook deletes them by their cfgXXXXXX names, not by @wifi-iface[N]).
    wireless = openwrt.put("etc/config/wireless", "openwrt/wireless-anonymous")
    wireless.write_text(
        wireless.read_text()
        + "\nconfig wifi-iface\n\toption device 'radio1'\n\toption mode 'ap'\n"
        + "\toption ssid 'Old Titik 5G'\n\toption titik '1'\n"
    )
    assert openwrt.runner().apply("wifi", wifi(public={"ssid": "Titik"})) is True
    text = wireless.read_text()
    assert "Old Titik" not in text
    assert text.count("config wifi-iface\n") == 3  # the firmware's two and LuCI's one
    assert "'public_radio0'" in text


def test_openwrt_hotspot_works_with_an_anonymous_opennds_section(openwrt: Gateway) -> None:
    """openNDS 9's /etc/config/opennds has one anonymous `config opennds` (fixture:
    tests/hooks/fixtures/openwrt/opennds-anonymous)."""
    opennds = openwrt.put("etc/config/opennds", "openwrt/opennds-anonymous")
    runner = openwrt.runner()
    runner.snapshot("hotspot")
    assert runner.apply("hotspot", HOTSPOT) is True
    assert opennds.read_bytes() == expected("openwrt/opennds-anonymous.expected")
    assert runner.apply("hotspot", HOTSPOT) is False
    runner.restore("hotspot")
    assert opennds.read_bytes() == expected("openwrt/opennds-anonymous")


# --- changes someone else staged --------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "package", "change", "data"),
    [
        ("wifi", "wireless", "wireless.default_radio0.ssid=Half done", dump_wifi(WIFI_FULL)),
        ("hotspot", "opennds", "opennds.setup.maxclients=10", HOTSPOT),
    ],
)
def test_openwrt_refuses_while_changes_are_staged_in_tmp_uci(
    openwrt: Gateway, section: str, package: str, change: str, data: dict[str, Any]
) -> None:
    """libuci reads /tmp/.uci even with -t, so a commit would also write what LuCI ("Save"
    without "Apply") or a `uci set` staged there. The hook refuses, and touches nothing."""
    config = openwrt.root / "etc/config" / package
    before = config.read_bytes()
    openwrt.uci("set", change)  # an admin's uncommitted edit, in uci's own /tmp/.uci
    assert (openwrt.root / "tmp/.uci" / package).stat().st_size > 0
    runner = openwrt.runner()
    for action in (runner.validate, runner.apply):
        with pytest.raises(HookError) as err:
            action(section, data)
        assert err.value.reason.startswith(PENDING.format(package)), err.value.reason
        assert f"uci revert {package}" in err.value.reason
    assert config.read_bytes() == before
    assert openwrt.calls() == []
    # Once the admin commits, uci leaves /tmp/.uci/<package> behind empty: no longer pending.
    openwrt.uci("commit", package)
    assert (openwrt.root / "tmp/.uci" / package).stat().st_size == 0
    assert runner.apply(section, data) is True
    assert change.split("=")[1] in config.read_text()  # the admin's edit stays


# --- openwrt/hotspot -------------------------------------------------------------------------


def test_openwrt_hotspot_apply_sets_opennds_options_and_reloads(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    assert runner.apply("hotspot", HOTSPOT) is True
    assert (openwrt.root / "etc/config/opennds").read_bytes() == expected(
        "openwrt/opennds.expected"
    )
    assert openwrt.calls() == ["uci commit opennds", "/etc/init.d/opennds reload"]
    assert runner.apply("hotspot", HOTSPOT) is False
    assert len(openwrt.calls()) == 2
    assert staged(openwrt, "opennds") == ""


def test_openwrt_hotspot_snapshot_apply_restore(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    runner.snapshot("hotspot")
    runner.apply("hotspot", HotspotSection(enabled=False).model_dump())
    assert "option enabled '0'" in (openwrt.root / "etc/config/opennds").read_text()
    runner.restore("hotspot")
    assert (openwrt.root / "etc/config/opennds").read_bytes() == expected("openwrt/opennds")
    assert openwrt.calls()[-1] == "/etc/init.d/opennds reload"


def test_openwrt_hotspot_without_opennds(openwrt: Gateway) -> None:
    (openwrt.root / "etc/config/opennds").unlink()
    runner = openwrt.runner()
    with pytest.raises(HookError) as err:
        runner.validate("hotspot", HOTSPOT)
    assert err.value.reason.startswith("enabled: openNDS is not installed")
    off = HotspotSection(enabled=False, download_kbps=128).model_dump()
    with pytest.raises(HookError) as err:
        runner.validate("hotspot", off)
    assert err.value.reason.startswith("download_kbps: needs openNDS")
    assert runner.apply("hotspot", HotspotSection(enabled=False).model_dump()) is False
    assert openwrt.calls() == []
