"""Several centrals on one PostgreSQL and one Mosquitto (issue 21, 3): two ``titik-central
run`` processes with the same ``[store] url`` and ``[mqtt] share_group`` (their own client
ids and HTTP ports), a real Mosquitto (tests/broker.py), a real PostgreSQL
(tests/postgres.py). One of them is the leader (central/store/pg/leader.py); SIGKILL it under
load and the other takes over, nothing is lost or stored twice, an open alert stays one
alert, and a rollout under way goes on."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.broker import Broker, wait_until
from tests.centralproc import stop_central
from tests.integration.test_central_ingest import Publisher, telemetry
from tests.integration.test_central_pg import pg_rows, pg_toml

pytestmark = pytest.mark.broker

ROOT = Path(__file__).resolve().parents[2]
#: The standby tries the lock every 3 s (leader.RETRY_S); a killed leader's session ends when
#: the kernel closes its socket. Generous for a loaded 2-core machine.
TAKEOVER_S = 20.0


def http_port(conf: Path) -> int:
    return int(conf.read_text().split("[http]\nport = ", 1)[1].split("\n", 1)[0])


@dataclass
class Central:
    name: str
    conf: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    starts: int = field(default=0)

    def start(self) -> None:
        self.port = http_port(self.conf)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "central.cli", "run", "--config", str(self.conf)],
            cwd=ROOT,
            stderr=self.log.open("ab"),
        )
        self.starts += 1
        wait_until(lambda: self.health() is not None, 30, f"{self.name}'s HTTP API")

    def health(self) -> dict[str, Any] | None:
        try:
            url = f"http://127.0.0.1:{self.port}/healthz"
            with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 - loopback
                got: dict[str, Any] = json.load(r)["ingest"]
                return got
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None

    def leader(self) -> bool:
        h = self.health()
        return bool(h and h["leader"])

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            assert stop_central(self.proc, self.log, 15) == 0, f"{self.name} did not stop cleanly"


def centrals(tmp_path: Path, broker: Broker, url: str, extra: str = "") -> list[Central]:
    out: list[Central] = []
    for name in ("m1", "m2"):
        d = tmp_path / name
        d.mkdir()
        conf = pg_toml(d, broker, url, f"c-{name}")
        # Two free ports asked one after the other may be the same one (seen once: m2 could
        # not bind, and its /healthz answered from m1).
        while http_port(conf) in {http_port(c.conf) for c in out}:
            conf = pg_toml(d, broker, url, f"c-{name}")
        conf.write_text(conf.read_text() + extra)
        log = d / "central.log"
        log.touch()
        out.append(Central(name, conf, log))
    return out


@pytest.fixture
def pair(tmp_path: Path, broker: Broker, pg_url: str) -> Iterator[list[Central]]:
    cs = centrals(tmp_path, broker, pg_url)
    try:
        yield cs
    finally:
        for c in cs:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()


def one_leader(cs: list[Central]) -> Central:
    """The one instance that says it leads, once exactly one does (the standby's answer
    may lag a second behind: the writer updates it each round)."""
    found: list[Central] = []

    def exactly_one() -> bool:
        found[:] = [c for c in cs if c.proc is not None and c.proc.poll() is None and c.leader()]
        return len(found) == 1

    wait_until(exactly_one, TAKEOVER_S, "exactly one leader", poll=0.2)
    return found[0]


def hot(device: str, seq: int, temp: float) -> bytes:
    return telemetry(device, seq).replace(b'"temp_c":50.0', f'"temp_c":{temp}'.encode())


def test_kill_9_of_the_leader_under_load_loses_nothing_and_the_other_takes_over(
    pair: list[Central], broker: Broker, pg_url: str
) -> None:
    for c in pair:
        c.start()
    # Both subscribed and taking messages: probes until each has taken one.
    probe = Publisher(broker, "probe")
    probes = 0

    def both_take() -> bool:
        nonlocal probes
        if all((c.health() or {}).get("accepted", {}).get("telemetry", 0) > 0 for c in pair):
            return True
        probe.publish("titik/gw/gw-probe/telemetry", telemetry("gw-probe", probes))
        probes += 1  # lost until the first central has subscribed
        threading.Event().wait(0.1)  # pacing the probes, not synchronising
        return False

    wait_until(both_take, 30, "both centrals taking messages")
    probe.close(probes)
    leader = one_leader(pair)
    other = next(c for c in pair if c is not leader)
    assert not other.leader()

    # An alert under way: gw-hot is over the temperature limit, its samples spread over both.
    alerts = "SELECT kind, closed FROM alerts WHERE device = 'gw-hot'"
    gw = Publisher(broker, "gw-hot")
    for seq in range(10):
        gw.publish("titik/gw/gw-hot/telemetry", hot("gw-hot", seq, 91.0))
    wait_until(lambda: pg_rows(pg_url, alerts) == [("temp", None)], 20, "the temp alert open")

    load = "SELECT device, sid, seq FROM samples WHERE device LIKE 'gw-load%'"
    pub = Publisher(broker)
    result: dict[str, set[tuple[str, int]]] = {}
    streamer = threading.Thread(target=lambda: result.update(sent=pub.stream(200, 40, 4000.0)))
    streamer.start()
    try:
        wait_until(lambda: len(pg_rows(pg_url, load)) > 1500, 30, "ingest under way")
        leader.kill()
        killed_at = time.monotonic()
        assert len(pg_rows(pg_url, load)) < 7000, "killed too late to mean anything"
        assert one_leader(pair) is other
        took_over = time.monotonic() - killed_at
        for seq in range(10, 20):  # still hot, while the survivor alone ingests
            gw.publish("titik/gw/gw-hot/telemetry", hot("gw-hot", seq, 92.0))
        # Mosquitto keeps the killed instance's share of the queue (unacked in flight, and
        # what the group sent its session since) until that session comes back.
        leader.start()
        streamer.join(60)
        pub.close(8000)
        want = {(d, "s1", seq) for d, seq in result["sent"]}
        wait_until(lambda: len(pg_rows(pg_url, load)) >= len(want), 60, "all messages stored")
        got = pg_rows(pg_url, load)
        assert len(got) == len(set(got)) == len(want) == 8000
        assert set(got) == want
        assert one_leader(pair) is other, "a restarted instance must not take the lock back"

        hot_rows = "SELECT seq FROM samples WHERE device = 'gw-hot' ORDER BY seq"
        wait_until(lambda: len(pg_rows(pg_url, hot_rows)) == 20, 30, "gw-hot's samples")
        assert pg_rows(pg_url, alerts) == [("temp", None)], "one alert, opened once"
        # Cooled down: whichever instance takes the samples, the one alert closes, once.
        for seq in range(20, 30):
            gw.publish("titik/gw/gw-hot/telemetry", hot("gw-hot", seq, 50.0))
        gw.close(30)
        wait_until(
            lambda: [k for k, closed in pg_rows(pg_url, alerts) if closed is not None] == ["temp"],
            30,
            "the temp alert closed",
        )
        assert len(pg_rows(pg_url, alerts)) == 1
        for c in pair:
            c.stop()
    finally:
        for c in pair:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
    print(f"takeover after SIGKILL of the leader: {took_over:.1f} s")
    old, new = roles(leader.log), roles(other.log)
    assert "leader" in old and old[-1] == "standby"  # led, killed, back as a standby
    assert new[-1] == "leader"
    for said in (old, new):  # once per change
        assert all(a != b for a, b in itertools.pairwise(said)), said


def roles(log: Path) -> list[str]:
    """What an instance said it was, in order (leader.py logs each change once)."""
    out = []
    for line in log.read_text().splitlines():
        if "leader: this instance evaluates alerts and rollouts" in line:
            out.append("leader")
        elif "standby: another instance evaluates alerts and rollouts" in line:
            out.append("standby")
    return out


ROLL_IDS = [f"gw-m{n:02d}" for n in range(1, 5)]
GROUP_TOPIC = "titik/group/g1/config/desired"


def test_a_rollout_goes_on_when_the_leader_is_killed_mid_wave(
    pair: list[Central], broker: Broker, pg_url: str, tmp_path: Path
) -> None:
    """Real agents (simulated platform, tests/agentproc.py) in group g1 take the waves; the
    leader runs the rollout and is killed once the first wave is out; the survivor takes
    over, republishes the current wave (retained, same version: harmless) and completes the
    rollout, each wave published once in the rollout's own record."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.protocol.signing import public_key_text, sign
    from central.rollout.engine import Run, to_dict
    from central.rollout.plan import Limits, Plan, documents
    from central.store.pg.tables import PgRolloutStore
    from tests.agentproc import AgentProcess, write_config
    from tests.integration.test_rollout_runner import sim_ssid, ssid

    for c in pair:
        c.start()
    key = Ed25519PrivateKey.generate()
    trust = (
        f'[security]\ntrusted_keys = ["{public_key_text(key.public_key())}"]\n'
        "require_signature = true\n"
    )

    def agent(device: str) -> AgentProcess:
        root = tmp_path / device / "root"
        root.mkdir(parents=True)
        cfg = write_config(
            tmp_path / device / "agent.toml",
            broker,
            device=device,
            interval=1.0,
            extra=f'root = "{root}"\n[config]\nrollback_timeout_s = 3\n{trust}',
        )
        cfg.write_text(cfg.read_text().replace('groups = ["test"]', 'groups = ["g1"]'))
        return AgentProcess(cfg)

    with ThreadPoolExecutor(len(ROLL_IDS)) as pool:
        agents = list(pool.map(agent, ROLL_IDS))
    rollouts = PgRolloutStore(pg_url)
    try:
        online = "SELECT device FROM devices WHERE online AND 'g1' = ANY(groups)"
        wait_until(lambda: len(pg_rows(pg_url, online)) == len(ROLL_IDS), 30, "g1 online")
        leader = one_leader(pair)
        other = next(c for c in pair if c is not leader)
        plan = Plan("r-multi", "g1", (50, 100), 0, ssid("New"), ssid("Old"), Limits(soak_s=12))
        waves, restore = documents(plan)
        run = Run(
            plan,
            tuple(sign(key, GROUP_TOPIC, d) for d in waves),
            sign(key, GROUP_TOPIC, restore),
        )
        rollouts.create(plan.id, plan.group, "test", to_dict(run))

        def state() -> dict[str, Any]:
            got = rollouts.get("r-multi")
            assert got is not None
            return {"status": got.status, "wave": got.state["wave"], "events": got.state["events"]}

        wait_until(lambda: state()["wave"] == 0, 30, "the first wave out", poll=0.2)
        leader.kill()
        assert state()["status"] == "running"
        assert one_leader(pair) is other
        # Back, as systemd's Restart= brings it: Mosquitto holds its share of the gateways'
        # reports in its session meanwhile (docs/central.md, "Several instances"), so the
        # soak is long enough for the restart (a report later than the soak fails the gate).
        leader.start()
        assert one_leader(pair) is other
        wait_until(lambda: state()["status"] != "running", 90, "the rollout's end", poll=0.5)
        got = state()
        assert got["status"] == "completed", got
        assert [e.split(" ", 1)[1] for e in got["events"]] == [
            "wave 1/2 (50%) published",
            "wave 2/2 (100%) published",
            "completed: wave 2 passed",
        ]
        assert all(sim_ssid(tmp_path / d / "root") == "New" for d in ROLL_IDS)
        assert "rollout r-multi: completed" in other.log.read_text()
        assert "rollout r-multi" not in leader.log.read_text()
        for c in pair:
            c.stop()
    finally:
        rollouts.close()
        for a in agents:
            a.stop()


def test_the_leader_opens_and_closes_offline_alerts_from_what_either_instance_took(
    tmp_path: Path, broker: Broker, pg_url: str
) -> None:
    """Each gateway's Will and its return go to either instance (the broker alternates); only
    the leader runs the offline rule, so it must take in what the standby stored: every
    gateway's offline alert opens once and closes once. Without the leader's merge, a Will
    the standby took never opens an alert, and a return the standby took never closes the
    leader's (with six gateways, all landing on the leader by chance is 1 in 64)."""
    pair = centrals(tmp_path, broker, pg_url, "[alerts]\noffline_after_min = 0.05\n")
    ids = [f"gw-w{n}" for n in range(6)]
    try:
        for c in pair:
            c.start()
        one_leader(pair)
        pub = Publisher(broker, "wills")
        for d in ids:
            pub.publish(f"titik/gw/{d}/telemetry", telemetry(d, 0))
        online = "SELECT device FROM devices WHERE online AND device LIKE 'gw-w%'"
        wait_until(lambda: len(pg_rows(pg_url, online)) == len(ids), 30, "all online")
        for d in ids:
            pub.publish(f"titik/gw/{d}/status", b'{"online":false,"boot":1}')
        alerts = "SELECT device, closed FROM alerts WHERE kind = 'offline'"
        wait_until(
            lambda: sorted(d for d, closed in pg_rows(pg_url, alerts) if closed is None) == ids,
            30,
            "an offline alert for each",
        )
        for d in ids:  # back after a reboot (a new boot: a sample right after a Will is not)
            pub.publish(
                f"titik/gw/{d}/telemetry", telemetry(d, 1).replace(b'"boot":1', b'"boot":2')
            )
        pub.close(3 * len(ids))
        wait_until(
            lambda: sorted(d for d, closed in pg_rows(pg_url, alerts) if closed) == ids,
            30,
            "each offline alert closed",
        )
        assert len(pg_rows(pg_url, alerts)) == len(ids)  # each opened once
        wait_until(lambda: len(pg_rows(pg_url, online)) == len(ids), 15, "all online again")
        for c in pair:
            c.stop()
    finally:
        for c in pair:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.kill()
                c.proc.wait()
