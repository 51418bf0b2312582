"""``titik-ctl rollout`` against a real central, a real Mosquitto and real agents (issue 19).

ctl runs as a subprocess, as an operator runs it: it reaches central's HTTP API with an
operator token from --token-file, signs the plan's documents with its own key (the one the
gateways and ``[console] signing_keys`` trust) and follows the rollout central runs. The city
(tests/rollout_city.py) is shared by the module's tests, which run in order and each leave
no rollout under way; soak times are 1 s, or 4 s where ctl must see a wave (central's runner
ticks every second here: tests/rollout_city.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.protocol.cohort import cohort
from central.store.audit import AuditLog
from tests.broker import ctrl_c_works, wait_until
from tests.rollout_city import ROOT, City, rollout_city, sim_ssid, ssid

pytestmark = [pytest.mark.broker, pytest.mark.slow]

IDS = [f"gw-c{n:02d}" for n in range(1, 7)]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    with rollout_city(tmp_path_factory.mktemp("ctl-rollout"), IDS) as c:
        token = c.db.parent / "ops.token"
        token.write_text(c.token("operator", "ana") + "\n")
        yield c


def ctl(city: City, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "central.ctl.cli", *rollout_args(city, *args)],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env(city), check=False,
    )  # fmt: skip


def rollout_args(city: City, *args: str) -> list[str]:
    return ["--key", str(city.key_file), "rollout", *args]


def env(city: City) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("TITIK_")}
    return {**e, "TITIK_API": city.url, "TITIK_API_TOKEN_FILE": str(city.db.parent / "ops.token")}


def config_file(city: City, name: str) -> str:
    path = city.db.parent / f"{name}.json"
    path.write_text(json.dumps(ssid(name)))
    return str(path)


def test_start_follows_every_wave_to_completed(city: City) -> None:
    r = ctl(city, "start", "--group", "g1", "--file", config_file(city, "New"),
            "--id", "c-ok", "--waves", "50,100", "--soak", "4")  # fmt: skip
    # (a soak of 4 s: each wave lasts two of ctl's 2 s polls, so it prints both)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    n = len(cohort("c-ok", IDS, 50))
    assert f"in 2 waves: 50% ({n}), 100% (6)" in out
    assert "rollout c-ok started in central (signed with key " + city.kid + ")" in out
    assert f"wave 1/2 (50%, {n} gateways)" in out and "wave 2/2 (100%, 6 gateways)" in out
    assert out.rstrip().endswith("rollout c-ok completed: every wave passed its gate")
    assert all(sim_ssid(city.roots[d]) == "New" for d in IDS)
    # Audited as ctl's, with the key that signed it.
    log = AuditLog(city.db)
    try:
        starts = [e for e in log.page(limit=100).items if e.action == "rollout.start"]
    finally:
        log.close()
    assert [(e.actor, e.via, e.key_id, e.result) for e in starts] == [
        ("ana", "ctl", city.kid, "started")
    ]


def test_a_failing_wave_halts_exit_1_and_the_old_config_comes_back(city: City) -> None:
    before = {d: sim_ssid(city.roots[d]) for d in IDS}
    bad = city.fail_apply("c-bad", 50)
    try:
        r = ctl(city, "start", "--group", "g1", "--file", config_file(city, "Bad"),
                "--id", "c-bad", "--waves", "50,100", "--soak", "1")  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr
        assert "rollout c-bad halted: wave 1 failed its gate" in r.stdout
        assert f"{bad}: rolled back" in r.stdout
        assert "central published the restore" in r.stdout
        wait_until(
            lambda: {d: sim_ssid(city.roots[d]) for d in IDS} == before, 60, "restore", poll=0.5
        )
        shown = ctl(city, "status", "c-bad")
        assert shown.returncode == 0
        assert "c-bad: halted" in shown.stdout and f"{bad}: rolled back" in shown.stdout
    finally:
        (city.roots[bad] / "etc/titik-sim/fail-apply").unlink()


def test_pause_resume_abort(city: City) -> None:
    r = ctl(city, "start", "--group", "g1", "--file", config_file(city, "Paused"),
            "--id", "c-pra", "--waves", "50,100", "--soak", "600", "--no-wait")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    assert "follow it: titik-ctl rollout status c-pra --wait" in r.stdout
    r = ctl(city, "pause", "c-pra")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollout c-pra is paused" in r.stdout
    r = ctl(city, "resume", "c-pra")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollout c-pra is running" in r.stdout
    listing = ctl(city, "status")
    assert listing.returncode == 0
    assert any(
        line.split()[:3] == ["c-pra", "g1", "running"] for line in listing.stdout.splitlines()
    )
    r = ctl(city, "abort", "c-pra")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "rollout c-pra is aborted: aborted by ana" in r.stdout
    r = ctl(city, "abort", "c-pra")
    assert r.returncode == 1
    assert "cannot abort rollout 'c-pra': it is aborted (it has ended)" in r.stderr


def test_ctrl_c_says_the_rollout_goes_on_in_central(city: City) -> None:
    p = subprocess.Popen(
        [sys.executable, "-m", "central.ctl.cli", *rollout_args(
            city, "start", "--group", "g1", "--file", config_file(city, "Later"),
            "--id", "c-int", "--waves", "50,100", "--soak", "600", "--poll", "0.5")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(city),
        preexec_fn=ctrl_c_works,  # noqa: PLW1509 - resets one signal, takes no lock
    )  # fmt: skip
    try:
        assert p.stdout is not None
        lines: list[str] = []
        while not any("wave 1/2" in line for line in lines):
            line = p.stdout.readline()
            assert line, f"ctl ended: {lines} {p.stderr.read() if p.stderr else ''}"
            lines.append(line)
        p.send_signal(signal.SIGINT)
        out, _ = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130
    assert "Rollout c-int goes on in central (running, wave 1/2" in out
    assert "titik-ctl rollout abort c-int" in out
    assert city.rollout("c-int")["status"] == "running"
    assert ctl(city, "abort", "c-int").returncode == 0


def test_unknown_rollout_or_group_is_exit_2_with_a_clear_message(city: City) -> None:
    r = ctl(city, "status", "no-such")
    assert r.returncode == 2
    assert "no rollout 'no-such'" in r.stderr
    r = ctl(city, "pause", "no-such")
    assert r.returncode == 2 and "no rollout 'no-such'" in r.stderr
    r = ctl(city, "start", "--group", "g-typo", "--file", config_file(city, "X"), "--soak", "1")
    assert r.returncode == 2
    assert "group 'g-typo': no gateway known to central is in it" in r.stderr
    bad = Path(city.db.parent / "bad.json")
    bad.write_text(json.dumps({"telemetry": {"interval_s": -5}}))
    r = ctl(city, "start", "--group", "g1", "--file", str(bad))
    assert r.returncode == 2 and "interval_s" in r.stderr
    no_token = {k: v for k, v in env(city).items() if k != "TITIK_API_TOKEN_FILE"}
    r = subprocess.run(
        [sys.executable, "-m", "central.ctl.cli", "rollout", "status"],
        cwd=ROOT, capture_output=True, text=True, env=no_token, check=False, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2 and "no API token" in r.stderr


# -- titik-ctl upgrade: the same city, its agents upgraded through central's rollout runner --


def sim_release(city: City, version: str, base: str, *, name: str) -> tuple[str, bytes]:
    """An unsigned manifest file of a simulated-platform release served at ``base``."""
    from tests.upgrade_rig import package_entry

    blob = json.dumps({"package": "titik-agent", "version": version, "healthy": True}) + "\n"
    data = blob.encode() + b"#" * 4096
    manifest = {"version": version, "min_from": "0.0.1",
                "packages": [package_entry(f"{base}/{name}", data)]}  # fmt: skip
    path = city.db.parent / f"manifest-{version}.json"
    path.write_text(json.dumps(manifest))
    return str(path), data


def running(city: City, device: str) -> str | None:
    pkg = city.roots[device] / "var/lib/titik-sim/agent.pkg"
    return json.loads(pkg.read_text().splitlines()[0])["version"] if pkg.exists() else None


def upgrade_ctl(city: City, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "central.ctl.cli", "--key", str(city.key_file), "upgrade", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env(city), check=False,
    )  # fmt: skip


def test_upgrade_start_upgrades_every_gateway_in_spread_waves(city: City) -> None:
    from tests.upgrade_rig import Files, http_server

    files = Files()
    with http_server(files) as base:
        path, data = sim_release(city, "9.0.0", base, name="a.sim")
        files.blobs["/a.sim"] = data
        r = upgrade_ctl(city, "start", "--group", "g1", "--manifest", path, "--id", "u-ok",
                        "--waves", "50,100", "--steps", "2", "--spread", "1",
                        "--health-timeout", "10", "--soak", "10")  # fmt: skip
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert "signed the manifest of 9.0.0 with key " + city.kid in out
    assert "upgrade the agent to 9.0.0 in group g1 (6 gateways) in 2 waves" in out
    assert "4 commands to sign" in out
    assert out.rstrip().endswith("rollout u-ok completed: every wave passed its gate"), out
    assert all(running(city, d) == "9.0.0" for d in IDS)
    shown = upgrade_ctl(city, "status", "u-ok")
    assert "upgrade   agent 9.0.0; window any hour; 4/4 commands sent" in shown.stdout
    assert "wave 2's gate passed: 6/6 upgraded, 0 failed (0% of 6 that answered)" in shown.stdout
    # Each gateway's steps, as the broker audit kept them (one audit entry per step too).
    # Each gateway's latest step, as the broker audit kept it: confirmed, or (reached again by
    # a later command: cohorts nest) "running already"; both done.
    from central.store.rollouts import RolloutStore, outcome

    store = RolloutStore(city.db)
    try:
        steps = store.steps("u-ok")
    finally:
        store.close()
    assert {d: outcome(steps.get(d)) for d in IDS} == dict.fromkeys(IDS, "done")
    assert {
        "confirmed" if s.step == "confirmed" else s.error.split(";")[0] if s.error else s.step
        for s in steps.values()
    } <= {"confirmed", "version: 9.0.0 is running already"}


def test_an_upgrade_whose_canary_fails_halts_and_the_rest_is_never_sent(city: City) -> None:
    """A gateway of the first command's cohort cannot install (the simulated hook's
    fail-install marker): it rolls back at once, and as one failure is already more than 1 %
    of the cohort whatever the others do, the upgrade halts at once: its second command is
    never sent, and the gateways outside the first cohort never hear of the release."""
    from tests.upgrade_rig import Files, http_server

    rid = next(r for r in (f"u-bad{n}" for n in range(50)) if cohort(r, IDS, 25))
    bad = cohort(rid, IDS, 25)[0]
    marker = city.roots[bad] / "etc/titik-sim/fail-install"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    files = Files()
    try:
        with http_server(files) as base:
            path, data = sim_release(city, "9.1.0", base, name="b.sim")
            files.blobs["/b.sim"] = data
            r = upgrade_ctl(city, "start", "--group", "g1", "--manifest", path, "--id", rid,
                            "--waves", "50,100", "--steps", "2", "--spread", "1",
                            "--health-timeout", "10", "--soak", "10",
                            "--max-failure-pct", "1")  # fmt: skip
    finally:
        marker.unlink()
    print(r.stdout)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"rollout {rid} halted: wave 1 failed its gate" in r.stdout
    assert f"{bad}: rolled back" in r.stdout
    assert "central sends no further upgrade command; nothing is downgraded" in r.stdout
    assert running(city, bad) == "9.0.0"  # rolled back by itself
    outside = [d for d in IDS if d not in cohort(rid, IDS, 25)]
    assert outside and all(running(city, d) == "9.0.0" for d in outside)
    shown = upgrade_ctl(city, "status", rid)
    print(shown.stdout)
    assert "1/4 commands sent" in shown.stdout, shown.stdout
