"""openwrt/wifi and openwrt/hotspot, for real under busybox sh and dash, through UCI.

uci is a STAND-IN (tests/hooks/uci_standin.py) that behaves as OpenWrt's does: changes are
delta lines in the save dir, a commit truncates the delta file to zero bytes and leaves it,
a changed option moves to the end of its section.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from agent.remote.hooks import HookError, flatten
from agent.remote.schema import HotspotSection
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
