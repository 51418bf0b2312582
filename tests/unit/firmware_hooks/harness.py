"""What the firmware hook tests share: a gateway in a temp root, and the sections they apply.

Every hook runs for real, under BusyBox ash and under dash (tests/hooks/shells.py), against
files in a temp root (TITIK_ROOT). The firmware's tools are STAND-INS, because this machine
cannot have them: tests/hooks/bin/uci (tests/hooks/uci_standin.py) behaves as OpenWrt's uci
does, delta files and anonymous sections included (its own tests are in
test_openwrt_standins.py); tests/hooks/bin/wifi, systemctl, hostapd_cli and
tests/hooks/initd/opennds only record their invocation in a log that the tests check
(systemctl also keeps unit state as marker files). Expected results are the files under
tests/hooks/fixtures/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.protocol.remote_schema import HotspotSection, WifiSection
from agent.remote.hooks import HookRunner
from tests.hooks.shells import Shell

REPO = Path(__file__).resolve().parents[3]
HOOKS = REPO / "firmware_hooks"
STANDINS = REPO / "tests" / "hooks"
FIXTURES = STANDINS / "fixtures"
PLATFORMS = ("openwrt", "raspberrypi", "simulated")
HOOK_SECTIONS = ("wifi", "hotspot")


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
            # the root stands for "/" to the stand-ins too: uci's /tmp/.uci is root/tmp/.uci
            "STANDIN_ROOT": str(self.root),
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

    def uci(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the uci stand-in as an admin on the gateway would (uci's own /tmp/.uci)."""
        return subprocess.run(
            [str(STANDINS / "bin" / "uci"), "-c", str(self.root / "etc/config"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=check,
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


def wifi(**ssids: dict[str, Any]) -> dict[str, Any]:
    """A wifi section as the agent sends it: the schema's model_dump(), defaults filled in."""
    radios = {"radio0": {"channel": 6}}
    return WifiSection.model_validate({"radios": radios, "ssids": ssids}).model_dump()


def dump_wifi(data: dict[str, Any]) -> dict[str, Any]:
    return WifiSection.model_validate(data).model_dump()


def expected(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


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
