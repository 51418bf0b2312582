"""Fixtures for the firmware hook tests: a shell (busybox or dash) and gateways per platform."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hooks import shells
from tests.hooks.shells import Shell
from tests.unit.firmware_hooks.harness import STANDINS, Gateway


@pytest.fixture(scope="session")
def python_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shells.python_dir(tmp_path_factory.mktemp("python"))


@pytest.fixture(scope="session")
def busybox_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return shells.busybox_dir(tmp_path_factory.mktemp("busybox"))


@pytest.fixture(params=shells.SHELLS)
def shell(request: pytest.FixtureRequest, python_dir: Path) -> Shell:
    bb = request.getfixturevalue("busybox_dir") if request.param == "busybox" else None
    return shells.make_shell(request.param, python_dir, bb)


@pytest.fixture
def make_gateway(tmp_path: Path, shell: Shell) -> Callable[[str], Gateway]:
    def make(platform: str) -> Gateway:
        gw = Gateway(tmp_path, shell, platform)
        (gw.root / "tmp").mkdir(parents=True)  # /tmp exists on every gateway
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
