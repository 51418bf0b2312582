"""The citizen path for real, in network namespaces (issue 20, point 4).

Three namespaces, made afresh for each test and deleted after it, pass or fail:

- **ap**, the access point: a bridge ``br-lan`` (192.168.77.1/24, its own address) with the
  veth ``lan0`` as its port, and ``wan0`` (10.77.0.1/29) towards the Internet. The path runs
  here, in a process of its own (``ip netns exec``), as the agent would;
- **lan**, what sits behind the bridge: a real dnsmasq (Debian's dnsmasq-base) serving DHCP and
  DNS on 192.168.77.2, and the portal check's HTTP server (``portal.test``);
- **inet**, the stand-in Internet: an HTTP server at 10.77.0.2 (``internet.test``).

And a variant with dnsmasq on the AP itself, on ``br-lan`` (OpenWrt's own layout: its DHCP
answers then reach the probe looped back by the kernel, never through a wire). Every case checks
the whole walk's wall time (2 s budget), that the lease was released (dnsmasq's lease file is
empty again and its log has the DHCPRELEASE), that the AP's own addresses did not change, and
that the result names no address.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTP = Path(__file__).with_name("netns_http.py")
BUDGET_S = 2.0  # the steps after the lease
DHCP_S = 4.0  # the DHCP step (dnsmasq's ping wait is 3 s)
PORTAL_URL = "http://portal.test/generate_204"
FETCH_URL = "http://internet.test/success.txt"


def _netns_unavailable() -> str | None:
    if shutil.which("ip") is None:
        return "needs iproute2's ip (scripts/setup installs it)"
    if shutil.which("dnsmasq") is None:
        return "needs dnsmasq (dnsmasq-base; scripts/setup installs it)"
    name = f"tkprobe{os.getpid()}"
    done = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"cannot create a network namespace (root needed): {done.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], check=True)
    return None


_WHY = _netns_unavailable()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")
_counter = itertools.count(1)


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class Lab:
    """The three namespaces and what runs in them; :meth:`close` undoes it all."""

    def __init__(self, tmp: Path) -> None:
        tag = f"tkc{os.getpid() % 100000}x{next(_counter)}"
        self.tmp = tmp
        self.ap, self.lan, self.inet = f"{tag}ap", f"{tag}lan", f"{tag}inet"
        self.procs: list[subprocess.Popen[str]] = []
        self.made: list[str] = []
        self.leases = tmp / "leases"
        self.dnsmasq_log = tmp / "dnsmasq.log"

    def setup(self) -> None:
        for ns in (self.ap, self.lan, self.inet):
            ip("netns", "add", ns)
            self.made.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", self.ap, "link", "add", "br-lan", "type", "bridge")
        ip("-n", self.ap, "link", "add", "lan0", "type", "veth", "peer", "eth0", "netns", self.lan)
        ip("-n", self.ap, "link", "set", "lan0", "master", "br-lan")
        ip("-n", self.ap, "link", "add", "wan0", "type", "veth", "peer", "eth0", "netns", self.inet)
        ip("-n", self.ap, "addr", "add", "192.168.77.1/24", "dev", "br-lan")
        ip("-n", self.ap, "addr", "add", "10.77.0.1/29", "dev", "wan0")
        ip("-n", self.lan, "addr", "add", "192.168.77.2/24", "dev", "eth0")
        ip("-n", self.inet, "addr", "add", "10.77.0.2/29", "dev", "eth0")
        for ns, dev in (
            (self.ap, "br-lan"),
            (self.ap, "lan0"),
            (self.ap, "wan0"),
            (self.lan, "eth0"),
            (self.inet, "eth0"),
        ):
            ip("-n", ns, "link", "set", dev, "up")

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)

    # -- what runs in the namespaces
    def dnsmasq(
        self,
        *extra: str,
        on_ap: bool = False,
        dhcp: bool = True,
        ping: bool = False,
        leases: str = "",
    ) -> None:
        """A real dnsmasq, in ``lan`` on its eth0 or (``on_ap``) on the AP's br-lan. Ready when
        its log says it started. ``--no-ping`` unless ``ping``: dnsmasq's 3 s wait for an echo
        before each offer (OpenWrt's default) is what test_every_step_passes shows; the other
        cases test other things and need not wait for it."""
        self.leases.write_text(leases)
        ns, dev = (self.ap, "br-lan") if on_ap else (self.lan, "eth0")
        argv = [
            "ip",
            "netns",
            "exec",
            ns,
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--user=root",
            "--bind-interfaces",
            f"--interface={dev}",
            "--address=/portal.test/192.168.77.2",
            "--address=/internet.test/10.77.0.2",
            "--address=/dead.test/10.77.0.5",
            f"--dhcp-leasefile={self.leases}",
            f"--pid-file={self.tmp / 'dnsmasq.pid'}",
            f"--log-facility={self.dnsmasq_log}",
            "--log-dhcp",
            *([] if ping else ["--no-ping"]),
            *extra,
        ]
        if dhcp:
            argv.append("--dhcp-range=192.168.77.100,192.168.77.150,255.255.255.0,1h")
        self.procs.append(
            subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.procs[-1].poll() is not None:
                raise AssertionError(f"dnsmasq exited: {self.procs[-1].stderr.read()}")  # type: ignore[union-attr]
            if self.dnsmasq_log.exists() and "started" in self.dnsmasq_log.read_text():
                return
            time.sleep(0.02)  # polling the log for the event, with a deadline
        raise AssertionError("dnsmasq did not start within 10 s")

    def http(self, ns: str, address: str, mode: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, str(HTTP), address, "80", mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        line = proc.stdout.readline() if proc.stdout else ""  # blocks until ready or exit
        if line.strip() != "ready":
            raise AssertionError(f"HTTP server in {ns} did not start: {proc.stderr.read()}")  # type: ignore[union-attr]

    def portal(self, mode: str = "open") -> None:
        self.http(self.lan, "192.168.77.2", mode)

    def internet(self) -> None:
        self.http(self.inet, "10.77.0.2", "page")

    def addresses(self) -> str:
        return ip("-n", self.ap, "-4", "-o", "addr", "show") + ip(
            "-n", self.ap, "-4", "route", "show"
        )

    def walk(self, **kw: object) -> dict[str, object]:
        """One walk on br-lan in the AP's namespace, in a process of its own; its result."""
        before = self.addresses()
        script = (
            "import json, sys\n"
            "from agent.service.citizen import walk\n"
            "kw = json.loads(sys.argv[1])\n"
            "print(json.dumps(walk('br-lan', kw.pop('portal_url'), kw.pop('fetch_url'), **kw)"
            "._asdict()))\n"
        )
        args = {
            "portal_url": PORTAL_URL,
            "fetch_url": FETCH_URL,
            "budget": BUDGET_S,
            "dhcp_timeout": DHCP_S,
            **kw,
        }
        start = time.monotonic()
        done = subprocess.run(
            ["ip", "netns", "exec", self.ap, sys.executable, "-c", script, json.dumps(args)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, object] = json.loads(done.stdout)
        assert isinstance(result["wall_ms"], float)
        # The walk itself (the process's start-up is not part of it); + scheduling slack.
        assert result["wall_ms"] <= (DHCP_S + BUDGET_S) * 1000 + 200, result
        ms = result["ms"]
        assert isinstance(ms, list)
        assert not ms[1:] or sum(ms[1:]) <= BUDGET_S * 1000 + 200, result
        assert time.monotonic() - start < 15
        assert self.addresses() == before, "the walk changed the AP's addresses or routes"
        text = json.dumps(result)
        assert not re.search(r"\d+\.\d+\.\d+\.\d+|[0-9a-f]{2}(:[0-9a-f]{2}){5}", text), text
        return result

    def assert_released(self) -> None:
        """The probe's lease is gone from dnsmasq's lease file and its log has the release."""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            log = self.dnsmasq_log.read_text()
            if "DHCPRELEASE" in log and "192.168.77.1" not in self.leases.read_text():
                return
            time.sleep(0.02)  # dnsmasq writes the file after the packet: poll with a deadline
        raise AssertionError(
            f"lease not released: {self.leases.read_text()!r}\n{self.dnsmasq_log.read_text()}"
        )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path)
    try:
        made.setup()
        yield made
    finally:
        made.close()  # the namespaces go, whatever the test did


@pytest.mark.parametrize(
    ("on_ap", "ping"),
    [(False, True), (True, True), (False, False)],
    ids=["server-upstream", "server-on-the-ap", "server-upstream-no-ping"],
)
def test_every_step_passes(lab: Lab, on_ap: bool, ping: bool) -> None:
    lab.dnsmasq(on_ap=on_ap, ping=ping)
    lab.portal("open")
    lab.internet()
    r = lab.walk()
    assert r["fail"] is None and r["why"] is None, r
    assert r["lease"] is True and r["portal"] == "open"
    ms = r["ms"]
    assert isinstance(ms, list) and len(ms) == 4
    if ping:  # dnsmasq waits up to 3 s for an echo before it offers an address
        assert 2500 <= ms[0] <= DHCP_S * 1000, r
    else:  # then the whole walk is well within issue 20's 2 s
        assert isinstance(r["wall_ms"], float) and r["wall_ms"] < BUDGET_S * 1000, r
    log = lab.dnsmasq_log.read_text()
    assert "DHCPACK(" in log
    lab.assert_released()


def test_pool_exhausted_fails_at_dhcp(lab: Lab) -> None:
    # One address in the pool, held by someone else until 2100: dnsmasq offers nothing.
    lab.dnsmasq(
        "--dhcp-range=192.168.77.100,192.168.77.100,255.255.255.0,1h",
        dhcp=False,
        leases="4102444800 02:00:00:00:00:99 192.168.77.100 someone *\n",
    )
    lab.portal("open")
    lab.internet()
    r = lab.walk(dhcp_timeout=1.0)
    assert (r["fail"], r["why"], r["lease"]) == ("dhcp", "no_offer", False), r
    assert len(r["ms"]) == 1  # type: ignore[arg-type]
    assert "no address available" in lab.dnsmasq_log.read_text()


def test_no_dhcp_server_fails_at_dhcp(lab: Lab) -> None:
    lab.dnsmasq(dhcp=False)  # DNS only
    r = lab.walk(dhcp_timeout=1.0)
    assert (r["fail"], r["why"], r["lease"]) == ("dhcp", "no_offer", False), r


def test_no_such_interface_is_an_error_at_dhcp(lab: Lab) -> None:
    script_kw = {"budget": BUDGET_S}
    lab.dnsmasq()
    r = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            lab.ap,
            sys.executable,
            "-c",
            "import json\nfrom agent.service.citizen import walk\nnotes = []\n"
            f"r = walk('br-nope', {PORTAL_URL!r}, {FETCH_URL!r}, budget={script_kw['budget']},"
            " log=notes)\nprint(json.dumps([r._asdict(), notes]))",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=True,
    )
    result, notes = json.loads(r.stdout)
    assert (result["fail"], result["why"], result["lease"]) == ("dhcp", "error", False)
    assert notes and "br-nope" in notes[0]


def test_dns_dead_fails_at_dns(lab: Lab) -> None:
    # DHCP hands out 192.168.77.2 as the DNS server, but nothing answers DNS there.
    lab.dnsmasq("--port=0", "--dhcp-option=6,192.168.77.2")
    lab.portal("open")
    r = lab.walk()
    assert (r["fail"], r["why"], r["lease"]) == ("dns", "fail", True), r
    assert r["portal"] is None and len(r["ms"]) == 2  # type: ignore[arg-type]
    lab.assert_released()


def test_a_portal_in_the_way_fails_at_portal(lab: Lab) -> None:
    lab.dnsmasq()
    lab.portal("portal")  # 302 to a login page
    lab.internet()
    r = lab.walk()
    assert (r["fail"], r["why"], r["portal"]) == ("portal", "portal", "portal"), r
    assert len(r["ms"]) == 3  # type: ignore[arg-type]
    lab.assert_released()


def test_an_expected_portal_passes_and_ends_the_path(lab: Lab) -> None:
    lab.dnsmasq()
    lab.portal("portal")
    r = lab.walk(expect_portal="portal")
    assert (r["fail"], r["portal"], len(r["ms"])) == (None, "portal", 3), r  # type: ignore[arg-type]
    lab.assert_released()


@pytest.mark.parametrize("mode", ["error", "none"])
def test_a_broken_portal_fails_at_portal(lab: Lab, mode: str) -> None:
    lab.dnsmasq()
    if mode != "none":
        lab.portal(mode)  # 500; or nothing listens at all
    lab.internet()
    r = lab.walk()
    assert (r["fail"], r["why"], r["portal"]) == ("portal", "broken", "broken"), r
    lab.assert_released()


def test_internet_refused_fails_at_inet(lab: Lab) -> None:
    lab.dnsmasq()
    lab.portal("open")  # and no Internet server
    r = lab.walk()
    assert (r["fail"], r["why"], r["portal"]) == ("inet", "refused", "open"), r
    assert len(r["ms"]) == 4  # type: ignore[arg-type]
    lab.assert_released()


def test_internet_unreachable_times_out_within_the_budget(lab: Lab) -> None:
    lab.dnsmasq()
    lab.portal("open")
    lab.internet()
    r = lab.walk(fetch_url="http://dead.test/")  # an address nobody holds: ARP never answers
    assert (r["fail"], r["why"]) == ("inet", "timeout"), r
    lab.assert_released()


def test_internet_name_unknown_fails_at_inet(lab: Lab) -> None:
    lab.dnsmasq()
    lab.portal("open")
    r = lab.walk(fetch_url="http://unknown.test/")
    assert (r["fail"], r["why"]) == ("inet", "no_address"), r


def test_the_configured_walk_makes_the_reports_section_and_score(lab: Lab) -> None:
    """From agent.toml's [service] to the report: run_citizen_path with the parsed settings, the
    section built from its result, and the score naming the failed step (here the portal is in
    the way where open Internet is expected)."""
    lab.dnsmasq()
    lab.portal("portal")
    lab.internet()
    script = (
        "import json, random\n"
        "from agent.config import parse_config\n"
        "from agent.protocol.score import score\n"
        "from agent.protocol.service import CitizenPath, ServiceReport, encode_report\n"
        "from agent.service.citizen import run_citizen_path\n"
        "cfg = parse_config({'mqtt': {'host': 'x'}, 'service': {'enabled': True,"
        f" 'citizen_path': True, 'portal_url': {PORTAL_URL!r}, 'citizen_url': {FETCH_URL!r}}}}})"
        ".service\n"
        "r = run_citizen_path(cfg, random.Random(7))\n"
        "section = CitizenPath(lease=r.lease, ms=r.ms, portal=r.portal, fail=r.fail, why=r.why)\n"
        "report = ServiceReport(ts=1.0, interval_s=300, citizen_path=section)\n"
        "s = score(report)\n"
        "print(json.dumps([encode_report(report).decode(), s.score, [d._asdict() for d in"
        " s.deductions]]))\n"
    )
    done = subprocess.run(
        ["ip", "netns", "exec", lab.ap, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    payload, points, deductions = json.loads(done.stdout)
    section = json.loads(payload)["citizen_path"]
    assert (section["fail"], section["why"], section["lease"]) == ("portal", "portal", True)
    assert points == 75 and [d["name"] for d in deductions] == ["citizen_portal"]
    assert "(portal)" in deductions[0]["detail"]
    assert not re.search(r"192\.168\.|10\.77\.|[0-9a-f]{2}(:[0-9a-f]{2}){5}", payload), payload
    lab.assert_released()


def test_an_ap_without_an_address_on_the_bridge_gets_and_releases_a_lease(lab: Lab) -> None:
    """A bridged AP with no IPv4 address on br-lan: the DHCP step works (it needs none), the
    lease's DNS server is then out of the AP's reach, and the lease is still released."""
    ip("-n", lab.ap, "addr", "del", "192.168.77.1/24", "dev", "br-lan")
    lab.dnsmasq()
    lab.portal("open")
    r = lab.walk()
    assert (r["lease"], r["fail"], r["why"]) == (True, "dns", "fail"), r
    lab.assert_released()


def test_a_lease_without_a_dns_server_fails_at_dhcp(lab: Lab) -> None:
    lab.dnsmasq("--dhcp-option=6")  # dnsmasq: an option without a value is not sent
    r = lab.walk()
    assert (r["lease"], r["fail"], r["why"], len(r["ms"])) == (True, "dhcp", "no_dns", 1), r  # type: ignore[arg-type]
    lab.assert_released()


def test_addresses_in_the_urls_and_a_dns_name_of_its_own(lab: Lab) -> None:
    """URLs with addresses need no lookup; the DNS step then looks up service.dns_name."""
    lab.dnsmasq()
    lab.portal("open")
    lab.internet()
    r = lab.walk(
        portal_url="http://192.168.77.2/generate_204",
        fetch_url="http://10.77.0.2/success.txt",
        dns_name="internet.test",
    )
    assert (r["fail"], r["portal"], len(r["ms"])) == (None, "open", 4), r  # type: ignore[arg-type]
    r = lab.walk(dns_name="nowhere.test")  # dnsmasq has no such name, and forwards nothing
    assert (r["fail"], r["why"]) == ("dns", "fail"), r
    lab.assert_released()
