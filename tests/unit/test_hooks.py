"""Firmware hooks (firmware_hooks/) and their runner (agent/remote/hooks.py).

Every hook runs for real, under BusyBox ash and under dash, against files in a temp root
(TITIK_ROOT). Under BusyBox the hooks also find BusyBox's applets (sed, awk, grep, mktemp,
...) first on PATH, as on OpenWrt; under dash they get this machine's GNU tools.

The firmware's tools are STAND-INS, because this machine cannot have them: there is no uci
outside OpenWrt and no radio here. tests/hooks/bin/uci (tests/hooks/uci_standin.py) edits
real UCI files the way uci does, for the subset the hooks use; tests/hooks/bin/wifi,
systemctl, hostapd_cli and tests/hooks/initd/opennds only record their invocation in a log
that the tests check (systemctl also keeps unit state as marker files). Expected results are
the files under tests/hooks/fixtures/.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.remote.hooks import DEFAULT_HOOKS_DIR, HookError, HookRunner, flatten
from agent.remote.schema import HotspotSection, WifiSection

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / "firmware_hooks"
STANDINS = REPO / "tests" / "hooks"
FIXTURES = STANDINS / "fixtures"
PLATFORMS = ("openwrt", "raspberrypi", "simulated")
HOOK_SECTIONS = ("wifi", "hotspot")


# --- interpreters and gateways -------------------------------------------------------------


@dataclass(frozen=True)
class Shell:
    path: str  # what HookRunner runs the hooks with: [path, hook, action]
    path_dirs: tuple[str, ...]  # put on PATH before this machine's own


@pytest.fixture(scope="session")
def python_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `python3` for the uci stand-in: this interpreter, without any wrapper (pyenv shims
    cost more start-up time than the stand-in itself)."""
    d = tmp_path_factory.mktemp("python")
    (d / "python3").symlink_to(os.path.realpath(sys.executable))
    return d


@pytest.fixture(scope="session")
def busybox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every BusyBox applet as a symlink, so the hooks run with OpenWrt's userland."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (Debian package: busybox)")
    d = tmp_path_factory.mktemp("busybox")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        if "/" not in applet:
            (d / applet).symlink_to(busybox)
    return d


@pytest.fixture(params=["busybox", "dash"])
def shell(request: pytest.FixtureRequest, python_dir: Path) -> Shell:
    if request.param == "busybox":
        bb: Path = request.getfixturevalue("busybox_dir")
        return Shell(str(bb / "sh"), (str(python_dir), str(bb)))
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("dash is not installed (Debian package: dash)")
    return Shell(dash, (str(python_dir),))


@dataclass
class Gateway:
    """A temp root with stand-ins on PATH, and a runner for one platform's hooks."""

    tmp: Path
    shell: Shell
    platform: str
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def root(self) -> Path:
        return self.tmp / "root"

    @property
    def snapshots(self) -> Path:
        return self.tmp / "snapshots"

    @property
    def log(self) -> Path:
        return self.tmp / "calls.log"

    @property
    def tmpdir(self) -> Path:
        return self.tmp / "tmpdir"

    def env(self) -> dict[str, str]:
        path = [str(STANDINS / "bin"), *self.shell.path_dirs, os.environ.get("PATH", "")]
        return {
            "PATH": os.pathsep.join(path),
            "STANDIN_LOG": str(self.log),
            "TMPDIR": str(self.tmpdir),
            **self.extra_env,
        }

    def runner(self, timeout_s: float = 30.0) -> HookRunner:
        return HookRunner(
            HOOKS,
            self.platform,
            root=self.root,
            snapshot_dir=self.snapshots,
            timeout_s=timeout_s,
            env=self.env(),
            shell=self.shell.path,
        )

    def raw(
        self, section: str, *args: str, stdin: bytes = b"{}\n"
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a hook without the runner, to see its exact stdout and exit status."""
        env = {
            **self.env(),
            "TITIK_ROOT": str(self.root),
            "TITIK_SNAPSHOT_DIR": str(self.snapshots),
        }
        hook = str(HOOKS / self.platform / section)
        return subprocess.run(
            [self.shell.path, hook, *args], input=stdin, capture_output=True, env=env, check=False
        )

    def put(self, rel: str, fixture: str) -> Path:
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(FIXTURES / fixture, dest)
        return dest

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def unit(self, name: str, *states: str) -> None:
        """Mark a unit as active and/or enabled for the systemctl stand-in."""
        d = self.root / "run" / "standin-systemd"
        d.mkdir(parents=True, exist_ok=True)
        for s in states:
            (d / f"{name}.{s}").touch()

    def units(self) -> set[str]:
        d = self.root / "run" / "standin-systemd"
        return {p.name for p in d.iterdir()} if d.exists() else set()


@pytest.fixture
def make_gateway(tmp_path: Path, shell: Shell) -> Callable[[str], Gateway]:
    def make(platform: str) -> Gateway:
        gw = Gateway(tmp_path, shell, platform)
        gw.root.mkdir()
        gw.tmpdir.mkdir()
        return gw

    return make


@pytest.fixture
def openwrt(make_gateway: Callable[[str], Gateway]) -> Gateway:
    gw = make_gateway("openwrt")
    gw.put("etc/config/wireless", "openwrt/wireless")
    gw.put("etc/config/opennds", "openwrt/opennds")
    init = gw.root / "etc/init.d/opennds"
    init.parent.mkdir(parents=True)
    shutil.copy(STANDINS / "initd" / "opennds", init)
    return gw


@pytest.fixture
def pi(make_gateway: Callable[[str], Gateway]) -> Gateway:
    gw = make_gateway("raspberrypi")
    gw.put("etc/hostapd/hostapd.conf", "raspberrypi/hostapd.conf")
    gw.put("etc/opennds/opennds.conf", "raspberrypi/opennds.conf")
    gw.put("etc/dnsmasq.d/titik-hotspot.conf", "raspberrypi/titik-hotspot.conf")
    return gw


@pytest.fixture
def sim(make_gateway: Callable[[str], Gateway]) -> Gateway:
    return make_gateway("simulated")


def wifi(**ssids: dict[str, Any]) -> dict[str, Any]:
    """A wifi section as the agent sends it: the schema's model_dump(), defaults filled in."""
    radios = {"radio0": {"channel": 6}}
    return WifiSection.model_validate({"radios": radios, "ssids": ssids}).model_dump()


# The big case, compared with tests/hooks/fixtures/*/...expected.
WIFI_FULL = {
    "radios": {
        "radio0": {"channel": 6, "txpower": 20},
        "radio1": {"channel": "auto", "htmode": "VHT80"},
    },
    "ssids": {
        "public": {
            "ssid": 'Jakarta "Free" WiFi \\o/ ✓',
            "radios": ["radio0", "radio1"],
            "max_clients": 64,
        },
        "staff": {
            "ssid": "Staff",
            "radios": ["radio1"],
            "hidden": True,
            "isolation": False,
            "encryption": "sae-mixed",
            "key": "s3cret'pass\"word",
        },
    },
}
PI_WIFI = {
    "radios": {"radio0": {"channel": 36, "htmode": "VHT80"}},
    "ssids": {
        "public": {
            "ssid": 'Jakarta "Free" WiFi \\o/ ✓',
            "encryption": "sae",
            "key": "correct horse \\ battery",
            "max_clients": 40,
        }
    },
}
HOTSPOT = HotspotSection(download_kbps=2048, session_timeout_min=90).model_dump()


def dump_wifi(data: dict[str, Any]) -> dict[str, Any]:
    return WifiSection.model_validate(data).model_dump()


def expected(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


# --- the contract, for every hook ------------------------------------------------------------


def hook_files() -> list[Path]:
    return sorted(p for p in HOOKS.glob("*/*") if p.is_file())


def test_every_platform_has_an_executable_posix_sh_hook_per_section() -> None:
    for platform in PLATFORMS:
        for section in HOOK_SECTIONS:
            hook = HOOKS / platform / section
            assert hook.is_file(), hook
            assert hook.stat().st_mode & stat.S_IXUSR, f"{hook} is not executable"
            assert hook.read_text().startswith("#!/bin/sh\n"), hook


def test_shellcheck_passes_on_every_hook_and_lib_file() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (Debian package: shellcheck)")
    files = [str(p) for p in hook_files()]
    assert any(f.endswith("lib/common.sh") for f in files)
    res = subprocess.run(
        ["shellcheck", "-s", "sh", *files], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout == ""


@pytest.mark.parametrize("platform", PLATFORMS)
@pytest.mark.parametrize("section", HOOK_SECTIONS)
def test_usage_and_malformed_input_exit_2_with_a_json_reply(
    make_gateway: Callable[[str], Gateway], platform: str, section: str
) -> None:
    gw = make_gateway(platform)
    for args, stdin, error in [
        (("reboot",), b"{}\n", "usage: unknown action"),
        ((), b"{}\n", "usage: "),
        (("validate",), b"", "stdin: "),
        (("validate",), b'{"radios": {"radio0": {}}}\n', "stdin: "),
        (("apply",), b'{\n"ssids.a.ssid": "x",\n\n}\n', "stdin: "),
    ]:
        res = gw.raw(section, *args, stdin=stdin)
        assert res.returncode == 2, (args, res)
        reply = json.loads(res.stdout)
        assert reply["ok"] is False
        assert reply["error"].startswith(error), reply
        assert res.stdout.count(b"\n") == 1


@pytest.mark.parametrize(
    ("platform", "section"), [(p, s) for p in PLATFORMS for s in HOOK_SECTIONS]
)
def test_restore_without_a_snapshot_fails(
    make_gateway: Callable[[str], Gateway], platform: str, section: str
) -> None:
    gw = make_gateway(platform)
    with pytest.raises(HookError) as err:
        gw.runner().restore(section)
    assert err.value.reason == "snapshot: no snapshot to restore"
    assert err.value.exit_code == 1
    assert str(err.value) == f"{section} restore: snapshot: no snapshot to restore"
    assert gw.calls() == []


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
    # nothing staged is left behind, and no temp file (one would hold the key)
    assert list((openwrt.root / "tmp/.titik-uci").iterdir()) == []
    assert list(openwrt.tmpdir.iterdir()) == []


def test_openwrt_wifi_apply_twice_changes_nothing_the_second_time(openwrt: Gateway) -> None:
    runner = openwrt.runner()
    data = wifi(public={"ssid": "Titik"})
    assert runner.apply("wifi", data) is True
    first = (openwrt.root / "etc/config/wireless").read_bytes()
    assert runner.apply("wifi", data) is False
    assert (openwrt.root / "etc/config/wireless").read_bytes() == first
    assert openwrt.calls() == ["uci commit wireless", "wifi reload"]


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


ODD_SSIDS = [
    'Jakarta "Free" WiFi',
    "back\\slash\\\\",
    "it's 'quoted'",
    "Kafé ☕ 📶",
    " spaced  out ",
    '\\"',
    'a,b",',
    "$(reboot)`id`;*",
]


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
                "-t",
                str(openwrt.root / "tmp/.titik-uci"),
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


# --- simulated -------------------------------------------------------------------------------


@pytest.mark.parametrize("section", HOOK_SECTIONS)
def test_simulated_keeps_a_state_file(sim: Gateway, section: str) -> None:
    runner = sim.runner()
    data = dump_wifi(WIFI_FULL) if section == "wifi" else HOTSPOT
    state = sim.root / f"var/lib/titik-sim/{section}.json"
    runner.validate(section, data)
    runner.snapshot(section)
    assert runner.apply(section, data) is True
    assert state.read_bytes() == flatten(data)
    assert json.loads(state.read_bytes())  # still JSON
    assert runner.apply(section, data) is False
    runner.restore(section)
    assert not state.exists()  # there was none at the snapshot
    events = (sim.root / "var/lib/titik-sim/events.log").read_text().splitlines()
    assert events == [f"{section} apply changed", f"{section} restore reloaded"]


@pytest.mark.parametrize("action", ["validate", "snapshot", "apply", "restore"])
def test_simulated_failure_markers(sim: Gateway, action: str) -> None:
    marker = sim.root / "etc/titik-sim" / f"fail-{action}"
    marker.parent.mkdir(parents=True)
    marker.touch()
    res = sim.raw("wifi", action, stdin=flatten(wifi(public={"ssid": "x"})))
    assert res.returncode == 1
    assert res.stdout == b'{"ok":false,"error":"simulated failure"}\n'
    runner = sim.runner()
    with pytest.raises(HookError, match=rf"^wifi {action}: simulated failure$"):
        getattr(runner, action)("wifi", *([{}] if action in ("validate", "apply") else []))
    assert not (sim.root / "var/lib/titik-sim/wifi.json").exists()


def test_a_new_snapshot_replaces_the_old_one(sim: Gateway) -> None:
    runner = sim.runner()
    state = sim.root / "var/lib/titik-sim/hotspot.json"
    runner.apply("hotspot", {"enabled": True})
    runner.snapshot("hotspot")
    runner.apply("hotspot", {"enabled": False})
    runner.snapshot("hotspot")
    runner.apply("hotspot", {"enabled": True, "upload_kbps": 64})
    runner.restore("hotspot")
    assert state.read_bytes() == flatten({"enabled": False})
    assert sorted(p.name for p in sim.snapshots.iterdir()) == ["hotspot"]


def test_restore_falls_back_to_a_snapshot_left_by_an_interrupted_replacement(sim: Gateway) -> None:
    runner = sim.runner()
    runner.apply("wifi", {"a": 1})
    runner.snapshot("wifi")
    # as if power failed between snap_commit's two renames
    (sim.snapshots / "wifi").rename(sim.snapshots / "wifi.old")
    runner.apply("wifi", {"a": 2})
    runner.restore("wifi")
    assert (sim.root / "var/lib/titik-sim/wifi.json").read_bytes() == flatten({"a": 1})


def test_hooks_run_directly_through_their_shebang(tmp_path: Path) -> None:
    runner = HookRunner(None, "simulated", root=tmp_path, snapshot_dir=tmp_path / "snap")
    assert runner.apply("hotspot", HOTSPOT) is True


# --- the runner ------------------------------------------------------------------------------


def test_flatten_layout() -> None:
    section = {
        "radios": {"radio0": {"enabled": True, "channel": 6, "txpower": None, "rate": 1.5}},
        "ssids": {"public": {"ssid": 'Jakarta "Free" WiFi\\ ✓', "radios": ["radio0", "radio1"]}},
        "empty": {},
    }
    assert (
        flatten(section)
        == (
            "{\n"
            '"empty": null,\n'
            '"radios.radio0.channel": 6,\n'
            '"radios.radio0.enabled": true,\n'
            '"radios.radio0.rate": 1.5,\n'
            '"radios.radio0.txpower": null,\n'
            '"ssids.public.radios": "radio0 radio1",\n'
            '"ssids.public.ssid": "Jakarta \\"Free\\" WiFi\\\\ ✓"\n'
            "}\n"
        ).encode()
    )
    assert flatten({}) == b"{}\n"


@pytest.mark.parametrize(
    "bad",
    [
        {"ssid": "two\nlines"},
        {"ssid": "tab\there"},
        {"a.b": 1},
        {"a": {'q"': 1}},
        {"radios": ["radio 0"]},
        {"x": float("nan")},
        {"s": "\ud800"},
    ],
)
def test_flatten_refuses_what_would_break_the_layout(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any of the messages
        flatten(bad)


def test_flatten_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        flatten({"a": object()})


def test_default_hooks_dir_is_the_projects() -> None:
    assert DEFAULT_HOOKS_DIR == HOOKS
    runner = HookRunner(None, "openwrt", snapshot_dir=Path("/nonexistent"))
    assert runner.has("wifi")
    assert runner.has("hotspot")
    assert not runner.has("mqtt")
    assert not runner.has("../openwrt/wifi")
    assert not HookRunner(None, "linux", snapshot_dir=Path("/nonexistent")).has("wifi")


def test_missing_hook_is_a_hook_error(tmp_path: Path) -> None:
    runner = HookRunner(None, "linux", root=tmp_path, snapshot_dir=tmp_path)
    with pytest.raises(HookError, match=r"^wifi validate: no hook linux/wifi in "):
        runner.validate("wifi", {})


def stand_in_hook(tmp_path: Path, body: str) -> HookRunner:
    """A throwaway platform "test" whose wifi hook is ``body``."""
    hook = tmp_path / "hooks" / "test" / "wifi"
    hook.parent.mkdir(parents=True)
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)
    return HookRunner(
        tmp_path / "hooks", "test", root=tmp_path, snapshot_dir=tmp_path / "snap", timeout_s=0.5
    )


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_runner_kills_a_hook_that_times_out_and_what_it_started(tmp_path: Path) -> None:
    runner = stand_in_hook(tmp_path, 'sleep 60 &\necho $! >"$TITIK_ROOT/child"\nwait\n')
    started = time.monotonic()
    with pytest.raises(HookError, match=r"^wifi apply: timed out after 0.5s; killed$") as err:
        runner.apply("wifi", {})
    assert time.monotonic() - started < 10
    assert err.value.exit_code is None
    child = int((tmp_path / "child").read_text())
    deadline = time.monotonic() + 5
    while not process_gone(child):
        assert time.monotonic() < deadline, "the hook's child survived the timeout"
        time.sleep(0.01)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("echo hello\n", "exit 0, no valid JSON reply on stdout"),
        ("echo '{\"ok\":true}'; echo more\n", "exit 0, no valid JSON reply on stdout"),
        ("echo '[1]'\n", "exit 0, no valid JSON reply on stdout"),
        ('echo \'{"ok":"yes"}\'\n', "exit 0, no valid JSON reply on stdout"),
        ("exit 0\n", "exit 0, no valid JSON reply on stdout"),
        ("echo boom >&2; exit 127\n", "exit 127, no valid JSON reply on stdout (boom)"),
        ("echo '{\"ok\":true}'; exit 3\n", "exit 3 despite an ok reply"),
        ('echo \'{"ok":false,"error":"x: y"}\'\n', "x: y (exit 0)"),
        ("echo '{\"ok\":false}'; exit 1\n", "failed without saying why"),
        ('echo \'{"ok":false,"error":"x: y"}\'; exit 5\n', "x: y (exit 5)"),
        ('echo \'{"ok":false,"error":"stdin: bad"}\'; exit 2\n', "invalid input: stdin: bad"),
        ("printf '\\377\\376garbage'\n", "exit 0, no valid JSON reply on stdout"),
        ("kill -9 $$\n", "exit -9, no valid JSON reply on stdout"),
    ],
)
def test_runner_refuses_anything_but_a_proper_reply(tmp_path: Path, body: str, reason: str) -> None:
    runner = stand_in_hook(tmp_path, body)
    with pytest.raises(HookError) as err:
        runner.apply("wifi", {})
    assert err.value.reason == reason
    assert err.value.section == "wifi"
    assert err.value.action == "apply"


def test_runner_apply_without_changed_counts_as_changed(tmp_path: Path) -> None:
    assert stand_in_hook(tmp_path, "echo '{\"ok\":true}'\n").apply("wifi", {}) is True


def test_runner_never_shows_the_wifi_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    key = "hunter2-hunter2"
    body = (
        'key=$(sed -n \'s/^"ssids.public.key": "\\(.*\\)",*$/\\1/p\')\n'
        'echo "debug: got key $key" >&2\n'
        'printf \'{"ok":false,"error":"ssids.public.key: %s is weak"}\\n\' "$key"\n'
        "exit 1\n"
    )
    runner = stand_in_hook(tmp_path, body)
    data = wifi(public={"ssid": "x", "encryption": "psk2", "key": key})
    with (
        caplog.at_level(logging.DEBUG, logger="agent.remote.hooks"),
        pytest.raises(HookError) as err,
    ):
        runner.apply("wifi", data)
    assert err.value.reason == "ssids.public.key: *** is weak"
    assert "debug: got key ***" in caplog.text
    assert key not in caplog.text
    assert key not in str(err.value)


def test_runner_logs_stderr_of_a_failure(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    runner = stand_in_hook(tmp_path, "echo 'first' >&2; echo 'last words' >&2; exit 9\n")
    with caplog.at_level(logging.WARNING, logger="agent.remote.hooks"), pytest.raises(HookError):
        runner.validate("wifi", {})
    assert [r.getMessage() for r in caplog.records] == [
        "hook wifi validate: first",
        "hook wifi validate: last words",
    ]


def test_an_unusable_snapshot_dir_is_a_hook_error(tmp_path: Path) -> None:
    (tmp_path / "file").touch()
    runner = HookRunner(None, "simulated", root=tmp_path, snapshot_dir=tmp_path / "file" / "snap")
    with pytest.raises(HookError, match=r"^wifi snapshot: cannot create "):
        runner.snapshot("wifi")


def test_runner_takes_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runner = HookRunner(
        Path(os.path.relpath(HOOKS, tmp_path)),
        "simulated",
        root=Path("."),
        snapshot_dir=Path("snap"),
    )
    runner.snapshot("wifi")
    assert (tmp_path / "snap" / "wifi" / "state.json.absent").exists()
    assert runner.apply("wifi", {"a": 1}) is True
    assert (tmp_path / "var/lib/titik-sim/wifi.json").read_bytes() == b'{\n"a": 1\n}\n'
