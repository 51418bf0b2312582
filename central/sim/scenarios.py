"""The fleet simulator's scenarios: steady, outage, flap, canary (chaos is in chaos.py).

Each scenario is a function of a running :class:`~central.sim.fleet.SimulatedFleet` and a
:class:`~central.sim.stack.Stack` that returns its figures as a ``Result``; ``titik-sim`` and
the tests call the same functions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.protocol.signing import public_key_text, sign
from agent.protocol.topics import CMD, CONFIG_DESIRED, group_topic
from agent.protocol.upgrade import MANIFEST_CONTEXT
from central.ctl import rollout
from central.rollout.engine import Run, to_dict
from central.rollout.plan import Limits, Plan, documents
from central.rollout.upgrade import DEFAULT_TZ, UpgradeSpec, expiry, step_percents
from central.sim.fleet import SimFleet, SimulatedFleet
from central.sim.localbroker import wait_until
from central.sim.stack import (
    LagProbe,
    LoadSampler,
    Result,
    Stack,
    api_get,
    broker_connects,
    census_poll,
    histogram_quantile,
    lag_histogram,
    lag_sample,
    listen_overflows,
    pending,
    percentile,
    records_lost,
    storm,
    wait_drained,
)
from central.store.rollouts import RolloutStore, StoredRollout

log = logging.getLogger("titik.sim")


def steady(fleet: SimFleet, stack: Stack, seconds: float) -> Result:
    """Run as is: connections held, messages/s sent and ingested, lag p50/p95."""
    probe = LagProbe(stack, devices=lag_sample(fleet))
    samples = stack.samples
    try:
        hist0 = lag_histogram(stack.api, stack.api_headers) if stack.api else {}
        sent0, rows0, t0 = fleet.sent, samples.rows() if samples else 0, time.monotonic()
        cpu0 = fleet.cpu_s()
        time.sleep(seconds)
        dt = time.monotonic() - t0
        cpu, sent = fleet.cpu_s() - cpu0, fleet.sent - sent0
        lags = probe.take()
        hist1 = lag_histogram(stack.api, stack.api_headers) if stack.api else {}
        held = fleet.connected
        rows = samples.rows() if samples else 0
        result: Result = {
            "gateways": fleet.size,
            "connected": held,
            "seconds": round(dt, 1),
            "sent_per_s": round(sent / dt, 1),
            # the fleet's processes (every gateway, the lag probe): what 50,000 would need
            "sim_cpu_pct": round(100 * cpu / dt, 1),
            "sim_cpu_ms_per_sample": round(1000 * cpu / sent, 2) if sent else None,
            # ts to the broker's delivery to a plain subscriber (of up to 1,000 gateways)
            "lag_probe_gateways": len(probe.filters),
            "lag_samples": len(lags),
            "lag_p50_s": percentile(lags, 50),
            "lag_p95_s": percentile(lags, 95),
        }
        if hist1:  # ts to central's commit (its titik_ingest_lag_seconds histogram)
            result["central_lag_samples"] = int(hist1[float("inf")] - hist0.get(float("inf"), 0))
            result["central_lag_p50_s"] = histogram_quantile(0.5, hist0, hist1)
            result["central_lag_p95_s"] = histogram_quantile(0.95, hist0, hist1)
        if samples is not None:
            result["ingested_per_s"] = round((rows - rows0) / dt, 1)
            result["devices_stored"] = len(samples.devices() & set(fleet.device_ids()))
            result["records_lost"] = records_lost(fleet, stack)
        return result
    finally:
        probe.close()


#: The deduction each planted service fault must show (agent/service/simulated.py).
FAULT_REASONS = {
    "busy_channel": "channel_busy",
    "dhcp_exhausted": "dhcp_pool_exhausted",
    "dead_portal": "portal_broken",
}


def service_faults(fleet: SimulatedFleet, stack: Stack, timeout: float) -> Result:
    """Issue 20: wait until central holds a service report of every gateway, then read its
    worst-APs list as the dashboard does: the planted faults must be its head, each with its
    reason. Needs ``--service-interval`` (and ``--service-faults``) and central's API."""
    n, planted = len(fleet.agents), fleet.faults
    t0 = time.monotonic()
    try:
        wait_until(
            lambda: len(api_get(stack, "/api/service/scores")["items"]) >= n,
            timeout,
            "every gateway's service report",
            poll=1.0,
        )
        ok = True
    except AssertionError:
        ok = False
    took = time.monotonic() - t0
    scores = api_get(stack, "/api/service/scores")["items"]
    worst = api_get(stack, f"/api/service/worst?limit={n}")["items"]
    head = worst[: len(planted)]
    found = [w for w in head if w["device"] in planted]
    right = [
        w
        for w in found
        if FAULT_REASONS[planted[w["device"]]] in [d["name"] for d in w["deductions"]]
    ]
    healthy = [w["score"] for w in worst if w["device"] not in planted]
    faulty = [w["score"] for w in worst if w["device"] in planted]
    for w in head:
        log.info(
            "worst: %s score %d (%s)%s",
            w["device"],
            w["score"],
            ", ".join(d["name"] for d in w["deductions"]) or "no deduction",
            f" planted {planted[w['device']]}" if w["device"] in planted else "",
        )
    return {
        "gateways": n,
        "reports_stored": len(scores),
        "all_reported": ok,
        "seconds_to_all_reports": round(took, 1),
        "planted": len(planted),
        "planted_at_the_head": len(found),
        "with_their_reason": len(right),
        "worst_faulty_score": min(faulty) if faulty else None,
        "best_faulty_score": max(faulty) if faulty else None,
        "worst_healthy_score": min(healthy) if healthy else None,
    }


def outage(fleet: SimFleet, stack: Stack, down_s: float, drain_timeout: float = 300.0) -> Result:
    """The broker down for ``down_s``, then back: every gateway buffers, reconnects with
    jitter and replays. Needs a broker the sim started (it is stopped and started again);
    with edge brokers, the core and every edge (a city-wide outage), the core back first.

    Measured from the restart: the reconnect storm (CONNACKs per second as the gateways saw
    them, and clients accepted per second in the broker's log), the drain (until
    no gateway has a record left to hand over), when central has stored every record, and
    the CPU of each part meanwhile (peak, mean and seconds, the simulator's own too)."""
    if stack.broker is None:
        raise ValueError("the outage scenario stops the broker: run without --broker")
    stack.stop_brokers()
    t_down = time.monotonic()
    wait_until(
        lambda: fleet.connected == 0, 60, "every gateway to notice the outage", census_poll(fleet)
    )
    time.sleep(max(0.0, down_s - (time.monotonic() - t_down)))
    backlog = pending(fleet)
    sim_cpu = fleet.cpu_s()
    # Stamped first: gateways reconnect to the first brokers while the others start (edges).
    # Everything but the parts' CPU counts from here. The drain used to count from after the
    # brokers' start and a census of the worker processes: at 50,000 it read a minute short
    # (drain_s 109 s, when the progress log's last buffered record left at about 171 s).
    back, back_mono = time.time(), time.monotonic()
    overflows = listen_overflows()
    stack.start_brokers()
    brokers_up = round(time.monotonic() - back_mono, 1)
    load = LoadSampler(stack)  # the restarted brokers' processes: from when they are up
    try:
        drain = (
            round(time.monotonic() - back_mono, 1)
            if wait_drained(fleet, drain_timeout) is not None
            else None
        )
        lost = records_lost(fleet, stack) if stack.samples is not None else None
        stored_all = round(time.monotonic() - back_mono, 1) if lost == 0 else None
    finally:
        cpu = load.stop()
        # The gateways' side of the same window (every worker process), and the window:
        # the parts' CPU seconds against the machine's cores x this (os.cpu_count()).
        cpu["sim_cpu_s"] = round(fleet.cpu_s() - sim_cpu, 1)
        cpu["recovery_window_s"] = round(time.monotonic() - back_mono, 1)
        cpu["cores"] = os.cpu_count() or 1
        overflows_after = listen_overflows()
        if overflows is not None and overflows_after is not None:
            # Machine-wide, but in a sim run the brokers' accept queues are the ones filling.
            cpu["listen_overflows"] = overflows_after - overflows
    result: Result = {
        "gateways": fleet.size,
        "down_s": round(down_s, 1),
        "backlog_records": backlog,
        "brokers_up_s": brokers_up,
        "drain_s": drain,
        **storm(fleet.connects(), back),
        **broker_connects([b.log for b in stack.gateway_brokers], back),
    }
    if lost is not None:
        result["central_stored_all_s"] = stored_all
        result["records_lost"] = lost
    return result | cpu


def flap(
    fleet: SimulatedFleet, stack: Stack, seconds: float, share: float = 0.1, seed: int = 7
) -> Result:
    """A ``share`` of the gateways lose their connection at random moments for ``seconds``."""
    rng = random.Random(seed)
    n = len(fleet.agents)
    flappers = rng.sample(range(n), max(1, int(n * share)))
    drops = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i in flappers:
            if rng.random() < 0.2:
                fleet.call_soon(lambda i=i: fleet.drop(i))  # type: ignore[misc]
                drops += 1
        time.sleep(1.0)
    drain = wait_drained(fleet, 120)
    result: Result = {
        "gateways": n,
        "flapping": len(flappers),
        "drops": drops,
        "drain_s": drain,
    }
    if stack.samples is not None:
        result["records_lost"] = records_lost(fleet, stack)
    return result


def canary(
    fleet: SimulatedFleet,
    stack: Stack,
    group: str,
    workdir: Path,
    *,
    batch: str = "2",
    fail: bool = False,
    timeout: float = 60.0,
) -> Result:
    """``titik-ctl config push --group G --canary BATCH`` of a Wi-Fi config; with ``fail`` the
    canaries' simulated firmware refuses to apply it and the rollout must halt."""
    members = [a.device_id for a in fleet.agents if group in a.cfg.device.groups]
    canaries, _ = rollout.select_canaries(members, rollout.parse_batch(batch))
    by_id = {a.device_id: root for a, root in zip(fleet.agents, fleet.roots, strict=True)}
    markers = [by_id[d] / "etc/titik-sim/fail-apply" for d in canaries] if fail else []
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    ssid = f"Titik {'never' if fail else 'canary'} {int(time.time())}"
    cfg = workdir / f"canary-{group}.json"
    cfg.write_text(
        json.dumps({"wifi": {"ssids": {"public": {"ssid": ssid, "radios": ["radio0"]}}}})
    )
    t0 = time.monotonic()
    # titik-ctl in its own process, as an operator runs it (and since this one holds a socket
    # per gateway, where paho's select() in titik-ctl's client would fail).
    argv = [
        sys.executable, "-m", "central.ctl.cli",
        "--broker", f"{stack.host}:{stack.port}", "--timeout", str(timeout),
        "config", "push", "--group", group, "--file", str(cfg), "--canary", batch,
    ]  # fmt: skip
    try:
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            argv,
            capture_output=True,
            text=True,
            timeout=timeout * 4 + 60,
            check=False,
        )
    finally:
        for m in markers:
            m.unlink()
    code, text = proc.returncode, proc.stdout + proc.stderr
    return {
        "group": group,
        "members": len(members),
        "canaries": len(canaries),
        "failing": fail,
        "exit": code,
        "halted": "HALTED" in text,
        "seconds": round(time.monotonic() - t0, 1),
        "applied": _applied(fleet, ssid),
        "output": text,
    }


def _applied(fleet: SimulatedFleet, ssid: str) -> int:
    """Gateways whose simulated firmware now has ``ssid``."""
    n = 0
    for root in fleet.roots:
        state = root / "var/lib/titik-sim/wifi.json"
        with contextlib.suppress(OSError, ValueError):
            if json.loads(state.read_text()).get("ssids.public.ssid") == ssid:
                n += 1
    return n


@dataclass(frozen=True)
class RolloutBase:
    """The config a group had before the rollout: its document's version and its SSID."""

    group: str
    version: int
    ssid: str


def seed_rollout_base(stack: Stack, workdir: Path, n: int, group: str) -> RolloutBase:
    """Give the gateways of ``group`` the group's current config before they start, as a city's
    fleet that has run it for months has: its document published once (retained, by
    titik-ctl), and each member's state already showing it applied (its ``remote.json``, and
    its simulated firmware's state file), so the fleet starts on it without 9,000 applies.

    Call it before :class:`SimulatedFleet` is built on ``workdir``, with the same ``n``.
    Pushing it to 9,000 connected gateways at once instead ran 9,000 firmware hooks at once:
    on two cores the fleet's loop starved and 1,947 gateways rolled back (docs/benchmarks.md).
    """
    from agent.remote.desired import validate
    from agent.remote.hooks import flatten
    from central.sim.fleet import gateway_plan

    ssid = f"Titik before {int(time.time())}"
    version = _push_with_ctl(stack, group, _ssid(ssid), 2.0, new=True)
    applied = validate(_ssid(ssid))
    source = f"group/{group}"
    state = {
        "docs": {source: {"version": version, "config": _ssid(ssid)}},
        "acted": {source: version},
        "applied": applied,
        "report": None,
    }
    for device in gateway_plan(n):
        if group not in device["groups"]:  # type: ignore[operator]
            continue
        gw = workdir / str(device["id"])
        (gw / "remote").mkdir(parents=True, exist_ok=True)
        (gw / "remote" / "remote.json").write_text(json.dumps(state))
        sim = gw / "root" / "var/lib/titik-sim"
        sim.mkdir(parents=True, exist_ok=True)
        (sim / "wifi.json").write_bytes(flatten(applied["wifi"]))
    return RolloutBase(group, version, ssid)


def rollout_in_waves(
    fleet: SimulatedFleet,
    stack: Stack,
    group: str,
    *,
    base: RolloutBase | None = None,
    failing_pct: float = 2.0,
    waves: tuple[float, ...] = (1.0, 5.0, 25.0, 100.0),
    soak_s: float = 30.0,
    max_failures_pct: float = 1.0,
    timeout: float = 600.0,
    seed: int = 7,
) -> Result:
    """A Wi-Fi config rolled out in waves by central (central/rollout/) to ``group``, with the
    firmware of ``failing_pct`` % of its gateways refusing it: the rollout must halt at the
    first wave whose failures pass ``max_failures_pct`` % of it, and the restore must give
    every gateway the config it had before."""
    if stack.samples is None:
        raise ValueError("the rollout scenario needs central's database: run without --broker")
    members = sorted(a.device_id for a in fleet.agents if group in a.cfg.device.groups)
    by_id = {a.device_id: root for a, root in zip(fleet.agents, fleet.roots, strict=True)}
    rng = random.Random(seed)
    failing = sorted(rng.sample(members, round(len(members) * failing_pct / 100)))
    key = Ed25519PrivateKey.generate()
    topic = group_topic("titik", group, CONFIG_DESIRED)
    stamp = int(time.time())
    new = f"Titik rollout {stamp}"
    t0 = time.monotonic()
    if base is not None and base.group == group:
        old, version = base.ssid, base.version  # seeded before the fleet started
    else:
        # The config the group has before the rollout, applied everywhere first: pushed with
        # titik-ctl in its own process, as an operator would (this process holds a socket per
        # gateway, past what paho's select() in an in-process client can take).
        old = f"Titik before {stamp}"
        version = _push_with_ctl(stack, group, _ssid(old), timeout)
    wait_until(lambda: _applied(fleet, old) >= len(members), timeout, "the group's config")
    base_s = time.monotonic() - t0
    markers = [by_id[d] / "etc/titik-sim/fail-apply" for d in failing]
    for m in markers:
        m.parent.mkdir(parents=True, exist_ok=True)
        m.touch()
    plan = Plan(
        f"sim-{stamp}",
        group,
        waves,
        version,
        _ssid(new),
        _ssid(old),
        Limits(soak_s=soak_s, max_failures=max_failures_pct, max_failures_percent=True),
    )
    docs, restore = documents(plan)
    run = Run(plan, tuple(sign(key, topic, d) for d in docs), sign(key, topic, restore))
    store = stack.rollouts()
    try:
        final, ended_s = _run_to_end(store, run, timeout, "the rollout to end")
        state = final.state
        restored_s = None
        if final.status in ("halted", "aborted"):
            t1 = time.monotonic()
            wait_until(
                lambda: _applied(fleet, old) >= len(members), timeout, "the restore", poll=1.0
            )
            restored_s = round(time.monotonic() - t1, 1)
    finally:
        store.close()
        for m in markers:
            m.unlink(missing_ok=True)
    published = [e for e in state["events"] if e.split(" ", 2)[1:2] == ["wave"]]
    return {
        "group": group,
        "members": len(members),
        "failing": len(failing),
        "waves": " / ".join(f"{w:g}%" for w in waves),
        "soak_s": soak_s,
        "max_failures": f"{max_failures_pct:g}% of a wave",
        "base_config": "seeded at start" if base is not None else "pushed by titik-ctl",
        "base_config_s": round(base_s, 1),
        "status": final.status,
        "waves_published": len(published),
        "gate": json.dumps(final.gate, sort_keys=True) if final.gate else None,
        "reason": state.get("reason"),
        "seconds_to_end": round(ended_s, 1),
        "restore_reached_all_s": restored_s,
        "on_new_config_after": _applied(fleet, new),
        "on_old_config_after": _applied(fleet, old),
    }


def _run_to_end(
    store: RolloutStore, run: Run, timeout: float, what: str
) -> tuple[StoredRollout, float]:
    """Create ``run`` in central's rollouts table (central's runner takes it from there, as
    one the API submitted) and wait until it ends (neither running nor paused): its last
    state, and the seconds from its creation to its end."""
    store.create(run.plan.id, run.plan.group, "titik-sim", to_dict(run))
    t0 = time.monotonic()
    final = None

    def ended() -> bool:
        nonlocal final
        got = store.get(run.plan.id)
        final = got if got is not None and got.status not in ("running", "paused") else None
        return final is not None

    wait_until(ended, timeout, what, poll=1.0)
    assert final is not None  # noqa: S101 - wait_until raised otherwise
    return final, time.monotonic() - t0


@dataclass(frozen=True)
class UpgradeRelease:
    """The operations key of the upgrade scenario: the fleet must trust it from the start
    (``security.trusted_keys``), as a city's gateways trust their operators' key."""

    key: Ed25519PrivateKey

    @classmethod
    def new(cls) -> UpgradeRelease:
        return cls(Ed25519PrivateKey.generate())

    @property
    def public(self) -> str:
        return public_key_text(self.key.public_key())


class _PackageServer:
    """One package over HTTP on loopback, as any static web server would serve a release (no
    ranges: the agent then fetches the whole file again, docs/upgrades.md)."""

    def __init__(self, path: str, blob: bytes) -> None:
        class PackageHandler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != path:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(blob)))
                self.end_headers()
                self.wfile.write(blob)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), PackageHandler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{path}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _next_version() -> str:
    from agent import __version__

    parts = [int(x) for x in __version__.split(".")]
    return ".".join(str(x) for x in [*parts[:-1], parts[-1] + 1])


def _sim_phase(state_dir: Path) -> str | None:
    """The phase of a simulated gateway's upgrade journal, None without one."""
    try:
        body = json.loads((state_dir / "upgrade" / "journal.json").read_text())
    except (OSError, ValueError):
        return None
    phase = body.get("phase") if isinstance(body, dict) else None
    return phase if isinstance(phase, str) else None


def upgrade_in_waves(
    fleet: SimulatedFleet,
    stack: Stack,
    group: str,
    release: UpgradeRelease,
    *,
    failing_pct: float = 2.0,
    waves: tuple[float, ...] = (1.0, 10.0, 50.0, 100.0),
    steps: int = 2,
    spread_s: float = 20.0,
    health_timeout_s: float | None = None,
    soak_s: float | None = None,
    max_failure_pct: float = 1.0,
    window: str | None = None,
    timeout: float = 900.0,
    seed: int = 7,
    rollout_id: str | None = None,
) -> Result:
    """The agent upgraded in waves by central (central/rollout/, an upgrade rollout) in
    ``group``, with ``failing_pct`` % of its gateways unable to install (the simulated hook's
    ``etc/titik-sim/fail-install``: rolled back at once): it must halt at the first wave (or
    spread step) whose failures pass ``max_failure_pct`` %, and the gateways of the later
    waves must never be reached.

    The gateways are the fleet's real agents: each checks the manifest's signature (the key of
    ``release``, which the fleet trusts), fetches the package from a local HTTP server, and
    its simulated upgrade hook installs it with a detached worker that waits for the agent's
    confirmation (an acknowledged sample, so up to one sample interval). The health gate
    defaults to twice the interval plus 30 s, the soak to the health gate: short, so the
    workers end soon (each one sleeps a second at a time). The cohorts follow the rollout's
    id, new each run (``sim-up-<time>``) unless ``rollout_id`` fixes it (a test's)."""
    health = health_timeout_s or min(3600.0, max(10.0, 2 * fleet.interval_s + 30))
    soak = max(soak_s or 0.0, health)
    members = sorted(a.device_id for a in fleet.agents if group in a.cfg.device.groups)
    index = {a.device_id: i for i, a in enumerate(fleet.agents)}
    failing = sorted(random.Random(seed).sample(members, round(len(members) * failing_pct / 100)))
    version = _next_version()
    stamp = int(time.time())
    body = {"package": "titik-agent", "version": version, "healthy": True}
    blob = (json.dumps(body) + "\n").encode() + b"#" * 2048
    server = _PackageServer(f"/titik-agent_{version}.sim", blob)
    markers = [fleet.roots[index[d]] / "etc/titik-sim/fail-install" for d in failing]
    store = stack.rollouts()
    try:
        for m in markers:
            m.parent.mkdir(parents=True, exist_ok=True)
            m.touch()
        entry = {"format": "sim", "arch": "all", "url": server.url, "size": len(blob),
                 "sha256": hashlib.sha256(blob).hexdigest()}  # fmt: skip
        manifest = sign(
            release.key,
            MANIFEST_CONTEXT,
            {"version": version, "min_from": "0.0.1", "packages": [entry]},
        )
        spec = UpgradeSpec(
            manifest, health, steps, spread_s, window, DEFAULT_TZ, expiry(time.time())
        )
        plan = Plan(
            rollout_id or f"sim-up-{stamp}", group, waves, 0, {"agent": version}, {},
            Limits(soak_s=soak, max_failures=max_failure_pct, max_failures_percent=True),
            spec,
        )  # fmt: skip
        cmds, _ = documents(plan)
        topic = group_topic("titik", group, CMD)
        run = Run(plan, tuple(sign(release.key, topic, c) for c in cmds), {})
        final, ended_s = _run_to_end(store, run, timeout, "the upgrade rollout to end")
        # The gateways in their health gate when it halted finish by themselves.
        states = [fleet.roots[index[d]].parent for d in members]

        def settled() -> bool:
            return not any(_sim_phase(sd) in ("installing", "installed") for sd in states)

        wait_until(settled, health + 60, "the gateways in their health gate", poll=1.0)
        steps_seen = store.steps(plan.id)
    finally:
        store.close()
        server.close()
        for m in markers:
            m.unlink(missing_ok=True)
    phases = [_sim_phase(sd) for sd in states]
    upgraded = sum(1 for d in members if _sim_version(fleet.roots[index[d]]) == version)
    gate = final.gate or {}
    state = final.state
    return {
        "group": group,
        "members": len(members),
        "failing": len(failing),
        "release": version,
        "waves": " / ".join(f"{w:g}%" for w in waves),
        "commands_per_wave": steps,
        "spread_s": spread_s,
        "health_timeout_s": health,
        "soak_s": soak,
        "max_failure_pct": max_failure_pct,
        "status": final.status,
        "halted_at_wave": state["wave"] + 1 if final.status == "halted" else None,
        "commands_sent": f"{state['sent']}/{len(cmds)}",
        "cohort_reached_pct": step_percents(waves, steps)[state["sent"] - 1]
        if state["sent"]
        else 0,
        "gate_size": gate.get("size"),
        "gate_answered": gate.get("answered"),
        "gate_failed": gate.get("failures"),
        "failure_pct_seen": gate.get("failure_pct"),
        "reason": state.get("reason"),
        "seconds_to_end": round(ended_s, 1),
        "gateways_that_acted": sum(1 for ph in phases if ph is not None),
        "confirmed": sum(1 for ph in phases if ph == "confirmed"),
        "rolled_back": sum(1 for ph in phases if ph == "rolled_back"),
        "upgraded_after": upgraded,
        "never_reached": sum(1 for ph in phases if ph is None),
        "steps_kept_by_central": len(steps_seen),
    }


def _sim_version(root: Path) -> str | None:
    """The agent version a simulated gateway runs: its hook's installed package, if any."""
    try:
        with (root / "var/lib/titik-sim/agent.pkg").open("rb") as f:
            version = json.loads(f.readline(4096)).get("version")
    except (OSError, ValueError, AttributeError):
        return None
    return version if isinstance(version, str) else None


def _ssid(name: str) -> dict[str, object]:
    return {"wifi": {"ssids": {"public": {"ssid": name, "radios": ["radio0"]}}}}


def _push_with_ctl(
    stack: Stack, group: str, config: dict[str, object], timeout: float, *, new: bool = False
) -> int:
    """``titik-ctl config push --group`` in a subprocess; the version it published. With
    ``new``: a group no gateway has reported yet (before the fleet starts)."""
    with tempfile.TemporaryDirectory(prefix="titik-sim-") as tmp:
        cfg = Path(tmp) / "config.json"
        cfg.write_text(json.dumps(config))
        argv = [
            sys.executable, "-m", "central.ctl.cli",
            "--broker", f"{stack.host}:{stack.port}", "--timeout", str(timeout),
            "config", "push", "--group", group, "--file", str(cfg), *(["--new"] if new else []),
        ]  # fmt: skip
        proc = subprocess.run(  # noqa: S603 - our own interpreter and module
            argv, capture_output=True, text=True, timeout=timeout * 2 + 60, check=False
        )
    found = re.search(r"published \S+ version (\d+)", proc.stdout)
    if found is None:
        raise RuntimeError(f"titik-ctl config push failed: {proc.stdout}{proc.stderr}")
    return int(found.group(1))


# -- chaos ---------------------------------------------------------------------------------


@dataclass
class Report:
    """Markdown of every scenario's figures, in the order they ran."""

    command: str
    sections: list[tuple[str, Result]] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["# titik-sim report", "", f"`{self.command}`", ""]
        for name, result in self.sections:
            lines += [f"## {name}", "", "| measure | value |", "| --- | --- |"]
            lines += [f"| {k} | {v} |" for k, v in result.items() if k != "output"]
            if "output" in result:
                lines += ["", "```", str(result["output"]).strip(), "```"]
            lines.append("")
        return "\n".join(lines)
