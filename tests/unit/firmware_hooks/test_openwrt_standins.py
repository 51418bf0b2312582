"""The OpenWrt STAND-INS themselves, held to what the real tools do.

uci (tests/hooks/uci_standin.py) and /lib/functions.sh (tests/hooks/functions.sh) stand in
for tools that are in no registry this machine reaches. A stand-in kinder than the real tool
hid two failures before (a delta file that vanished on commit; anonymous sections dropped),
so each fact below, from ../shared/reference/anchors-openwrt.md (last section: "How OpenWrt's
own tools behave") or read from OpenWrt's sources (named in each stand-in's docstring), has a
test named after it. The shell facts run under busybox sh and dash.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.hooks.shells import Shell
from tests.unit.firmware_hooks.harness import REPO, STANDINS

SHIPPED = (REPO / "packaging/openwrt/titik.config").read_text()
FUNCTIONS_SH = STANDINS / "functions.sh"


class Device:
    """A temp root standing for an OpenWrt device's "/": /etc/config and /tmp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "etc/config").mkdir(parents=True)
        (root / "tmp").mkdir()

    def env(self) -> dict[str, str]:
        return {**os.environ, "STANDIN_ROOT": str(self.root)}

    def uci(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(STANDINS / "bin/uci"), *args],
            capture_output=True,
            text=True,
            env=self.env(),
            check=False,
        )
        if check:
            assert res.returncode == 0, (args, res.stderr)
        return res

    def config(self, name: str, text: str) -> Path:
        path = self.root / "etc/config" / name
        path.write_text(text)
        return path

    def delta(self, name: str, savedir: str = "tmp/.uci") -> Path:
        return self.root / savedir / name


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path / "root")


def without_telemetry(text: str) -> str:
    """The shipped /etc/config/titik less its `config telemetry 'telemetry'` section."""
    head, _, rest = text.partition("config telemetry 'telemetry'\n")
    return head + rest.partition("\n\n")[2]


# --- uci: the delta file ------------------------------------------------------------------


def test_fact_uci_commit_leaves_a_zero_byte_delta_file(device: Device) -> None:
    device.config("titik", SHIPPED)
    device.uci("set", "titik.mqtt.host=broker.test")
    delta = device.delta("titik")
    assert delta.read_text() == "titik.mqtt.host='broker.test'\n"
    device.uci("commit", "titik")
    assert delta.exists()  # not deleted...
    assert delta.stat().st_size == 0  # ...but truncated
    assert device.uci("changes", "titik").stdout == ""
    assert "option host 'broker.test'" in (device.root / "etc/config/titik").read_text()


def test_fact_uci_commit_with_a_private_save_dir_truncates_its_delta_file(device: Device) -> None:
    device.config("titik", SHIPPED)
    private = str(device.root / "tmp/.titik-uci")
    device.uci("-t", private, "set", "titik.log.level=debug")
    device.uci("-t", private, "commit", "titik")
    assert device.delta("titik", "tmp/.titik-uci").stat().st_size == 0
    assert not device.delta("titik").exists()  # /tmp/.uci was never written


def test_fact_uci_revert_empties_the_delta_file_and_creates_none(device: Device) -> None:
    device.config("titik", SHIPPED)
    device.uci("revert", "titik")
    assert not device.delta("titik").exists()
    device.uci("set", "titik.log.level=debug")
    device.uci("revert", "titik")
    assert device.delta("titik").stat().st_size == 0


def test_fact_uci_delta_lines_are_libuci_lines(device: Device) -> None:
    """delta.c uci_delta_save: a command character, PKG.SEC[.OPT], ='value' with ' escaped."""
    device.config("titik", without_telemetry(SHIPPED))
    device.uci("set", "titik.mqtt.password=it's")
    name = device.uci("add", "titik", "telemetry").stdout.strip()
    device.uci("add_list", "titik.@telemetry[0].collectors=health")
    device.uci("add_list", "titik.@telemetry[0].collectors=wifi")
    device.uci("del_list", "titik.@telemetry[0].collectors=wifi")
    device.uci("delete", "titik.log")
    device.uci("set", "titik.mqtt.host=broker.example.net")  # the value it has: no line
    assert device.delta("titik").read_text() == (
        "titik.mqtt.password='it'\\''s'\n"
        f"+titik.{name}='telemetry'\n"
        f"|titik.{name}.collectors='health'\n"
        f"|titik.{name}.collectors='wifi'\n"
        f"~titik.{name}.collectors='wifi'\n"
        "-titik.log\n"
    )
    assert device.uci("changes", "titik").stdout == (
        "titik.mqtt.password='it'\\''s'\n"
        f"titik.{name}='telemetry'\n"
        f"titik.{name}.collectors+='health'\n"
        f"titik.{name}.collectors+='wifi'\n"
        f"titik.{name}.collectors-='wifi'\n"
        "-titik.log\n"
    )


def test_fact_uci_commit_without_changes_does_not_rewrite_the_file(device: Device) -> None:
    path = device.config("titik", SHIPPED)
    inode = path.stat().st_ino
    device.uci("commit", "titik")
    device.uci("set", "titik.log=log")  # a section's type: a line, but no change
    assert path.stat().st_ino == inode
    device.uci("revert", "titik")
    device.uci("commit", "titik")
    assert path.stat().st_ino == inode
    assert path.read_text() == SHIPPED  # comments and all
    device.uci("set", "titik.log.level=debug")
    device.uci("commit", "titik")
    assert path.stat().st_ino != inode  # rewritten through a temp file and a rename


def test_fact_uci_reads_tmp_uci_even_with_a_private_save_dir(device: Device) -> None:
    """libuci.c puts /tmp/.uci on the delta path and -t appends to it: changes staged there
    (LuCI's "Save") are seen and committed through -t as well, and stay staged there."""
    path = device.config("titik", SHIPPED)
    private = str(device.root / "tmp/.titik-uci")
    device.uci("set", "titik.log.level=debug")  # in /tmp/.uci
    assert device.uci("-t", private, "get", "titik.log.level").stdout == "debug\n"
    device.uci("-t", private, "set", "titik.mqtt.port=8883")
    device.uci("-t", private, "commit", "titik")
    text = path.read_text()
    assert "option level 'debug'" in text
    assert "option port '8883'" in text
    assert device.delta("titik").read_text() == "titik.log.level='debug'\n"


def test_fact_uci_recreates_a_changed_option_at_the_end_of_its_section(device: Device) -> None:
    path = device.config("t", "config s 's'\n\toption a '1'\n\toption b '2'\n")
    device.uci("set", "t.s.a=3")
    device.uci("commit", "t")
    assert path.read_text() == "\nconfig s 's'\n\toption b '2'\n\toption a '3'\n\n"


# --- uci: anonymous sections --------------------------------------------------------------


def test_fact_uci_add_titik_telemetry_makes_anonymous_cfg0832a0(device: Device) -> None:
    """As observed: `uci add titik telemetry` on the shipped config (its own telemetry
    section deleted first) prints cfg0832a0; uci show calls it @telemetry[0]."""
    path = device.config("titik", without_telemetry(SHIPPED))
    assert device.uci("add", "titik", "telemetry").stdout == "cfg0832a0\n"
    device.uci("set", "titik.@telemetry[0].interval_s=30")
    assert device.delta("titik").read_text() == (
        "+titik.cfg0832a0='telemetry'\ntitik.cfg0832a0.interval_s='30'\n"
    )
    shown = device.uci("show", "titik").stdout.splitlines()
    assert shown[-2:] == ["titik.@telemetry[0]=telemetry", "titik.@telemetry[0].interval_s='30'"]
    # named by its cfg name when shown alone, with -X, or exported with -n (config_load)
    assert device.uci("show", "titik.@telemetry[0]").stdout.startswith("titik.cfg0832a0=")
    assert "titik.cfg0832a0=telemetry" in device.uci("-X", "show", "titik").stdout
    device.uci("commit", "titik")
    assert path.read_text().endswith("\nconfig telemetry\n\toption interval_s '30'\n\n")
    exported = device.uci("-n", "export", "titik").stdout
    assert "\nconfig telemetry 'cfg0832a0'\n" in exported
    assert "\nconfig telemetry\n" in device.uci("export", "titik").stdout


def test_fact_uci_names_anonymous_sections_by_counter_and_type(device: Device) -> None:
    """list.c uci_fixup_section: cfg + %02x of the section counter (one per section, one
    more per anonymous section) + %04x of a djb hash of the type."""
    device.config(
        "p", "config a 'x'\nconfig telemetry\nconfig a 'y'\nconfig telemetry\nconfig other\n"
    )
    names = device.uci("-X", "show", "p").stdout.split()
    assert [n.split("=")[0] for n in names] == [
        "p.x",
        "p.cfg0332a0",  # x is 1; this one is 2, then 3
        "p.y",  # 4
        "p.cfg0632a0",  # 5, 6: the same type hashes the same
        f"p.cfg08{djb('other'):04x}",
    ]
    device.uci("delete", "p.@telemetry[0]")
    assert device.uci("get", "p.cfg0632a0").stdout == "telemetry\n"  # its name stays


def djb(text: str) -> int:
    h = 5381
    for b in text.encode():
        h = (h * 33 + b) & 0xFFFFFFFF
    return (h & 0x7FFFFFFF) % 65536


# --- /lib/functions.sh ----------------------------------------------------------------------


def run_sh(shell: Shell, device: Device, script: str, **env: str) -> str:
    path = [str(STANDINS / "bin"), *shell.path_dirs, "/usr/bin:/bin"]
    res = subprocess.run(
        [shell.path, "-c", f'. "{FUNCTIONS_SH}"\n{script}'],
        capture_output=True,
        text=True,
        env={"PATH": os.pathsep.join(path), "STANDIN_ROOT": str(device.root), **env},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    return res.stdout


CALLBACKS = """
config_cb() { echo "config_cb $#:$*"; }
option_cb() { echo "option_cb $1=$2"; }
list_cb() { echo "list_cb $1+=$2"; }
"""


def test_fact_config_load_returns_at_once_when_ipkg_instroot_is_set(
    shell: Shell, device: Device
) -> None:
    device.config("titik", SHIPPED)
    out = run_sh(
        shell,
        device,
        CALLBACKS + 'config_load titik; echo "rc=$? sections=$CONFIG_SECTIONS"\n'
        "if command -v uci_load >/dev/null; then echo uci_load defined; fi\n",
        IPKG_INSTROOT=str(device.root),
    )
    assert out == "rc=0 sections=\n"  # no callback, nothing loaded, no uci_load at all


def test_fact_uci_load_ends_with_a_bare_config_cb(shell: Shell, device: Device) -> None:
    device.config("t", "config s 'one'\n\toption a '1'\n\tlist l 'x'\n\tlist l 'y z'\n")
    out = run_sh(shell, device, CALLBACKS + "config_load t\n").splitlines()
    assert out == [
        "config_cb 2:s one",
        "option_cb a=1",
        "list_cb l+=x",
        "list_cb l+=y z",
        "config_cb 0:",  # the bare call after the last section
    ]
    device.config("t", "# nothing\n")
    assert run_sh(shell, device, CALLBACKS + "config_load t\n") == ""  # no section: no call


def test_fact_config_foreach_names_anonymous_sections_cfg(shell: Shell, device: Device) -> None:
    device.config("titik", without_telemetry(SHIPPED))
    device.uci("add", "titik", "telemetry")
    device.uci("set", "titik.@telemetry[0].interval_s=30")
    device.uci("commit", "titik")
    out = run_sh(
        shell,
        device,
        'each() { config_get v "$1" interval_s; echo "$1 $v"; }\n'
        "config_load titik\nconfig_foreach each telemetry\n",
    )
    assert out == "cfg0832a0 30\n"


def test_fact_config_load_sees_uncommitted_changes(shell: Shell, device: Device) -> None:
    """uci_load exports with /tmp/.uci (and -P /var/state) on the delta path."""
    device.config("titik", SHIPPED)
    device.uci("set", "titik.log.level=debug")
    out = run_sh(shell, device, "config_load titik\nconfig_get v log level\necho $v\n")
    assert out == "debug\n"
