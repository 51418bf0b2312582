"""The chaos scenario: full state disks, clocks a day off, poison clients, a broker restart
and central killed with SIGKILL, all at once (docs/simulator.md, "chaos")."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import random
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

from agent.mqtt import poll_io
from agent.protocol import AgentInfo, Telemetry, Topics
from agent.protocol.client import make_client
from agent.protocol.topics import (
    CONFIG_REPORTED,
    STATUS,
    TELEMETRY,
    TELEMETRY_BATCH,
    gw_topic,
)
from central.sim.fleet import SimulatedFleet
from central.sim.localbroker import wait_until
from central.sim.stack import (
    Result,
    Stack,
    expected_seqs,
    missing_per_device,
    open_db,
    pending,
    wait_drained,
)
from central.sim.stored import SqliteSamples

log = logging.getLogger("titik.sim")


DAY_S = 86400.0
#: How large each disk-full gateway's own state filesystem is (a tmpfs, filled and freed).
CHAOS_DISK_SIZE = "4m"


@dataclass
class ChaosPlan:
    """Who the chaos scenario hits. ``disk`` and ``clock`` index the fleet (disjoint);
    ``poison`` clients are extra, not gateways of the fleet, and send only bad messages."""

    disk: list[int]
    clock: list[int]
    poison: int
    disks: list[Path] = field(default_factory=list)  # mounted state dirs (needs root)
    note: str = ""


def chaos_plan(n: int, share: float = 0.05, poison: int = 3, seed: int = 11) -> ChaosPlan:
    """A ``share`` of the fleet for full disks, another for clock jumps (at least one each)."""
    rng = random.Random(seed)
    k = max(1, int(n * share)) if n >= 4 else 0
    picked = rng.sample(range(n), 2 * k)
    return ChaosPlan(disk=sorted(picked[:k]), clock=sorted(picked[k:]), poison=poison)


@contextlib.contextmanager
def small_disks(plan: ChaosPlan, state_dirs: list[Path]) -> Iterator[ChaosPlan]:
    """Mount a small tmpfs on each disk-full gateway's state directory, before the fleet is
    built, and unmount them at the end. Mounting needs root: without it the plan's disk part
    is dropped and ``note`` says so."""
    mount, umount = shutil.which("mount"), shutil.which("umount")
    if os.geteuid() != 0 or mount is None or umount is None:
        plan.note = "disk full skipped: mounting a small tmpfs per gateway needs root"
        log.warning("chaos: %s", plan.note)
        plan.disk = []
        yield plan
        return
    mounted: list[Path] = []
    try:
        for i in plan.disk:
            where = state_dirs[i]
            where.mkdir(parents=True, exist_ok=True)
            subprocess.run(  # noqa: S603 - fixed argv
                [
                    mount,
                    "-t",
                    "tmpfs",
                    "-o",
                    f"size={CHAOS_DISK_SIZE},mode=0700",
                    "tmpfs",
                    str(where),
                ],
                check=True,
                capture_output=True,
            )
            mounted.append(where)
        plan.disks = mounted
        yield plan
    finally:
        for where in mounted:
            subprocess.run(  # noqa: S603 - fixed argv, umount from PATH
                [umount, "-l", str(where)], check=False, capture_output=True
            )


def fill_disk(where: Path) -> int:
    """Write a filler file until the filesystem says ENOSPC; returns the bytes written."""
    written = 0
    with (where / ".chaos-filler").open("wb", buffering=0) as f:
        for chunk in (65536, 4096, 512):
            block = b"\0" * chunk
            while True:
                try:
                    written += f.write(block) or 0
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return written


def free_disk(where: Path) -> None:
    (where / ".chaos-filler").unlink(missing_ok=True)


def poison_payloads(device: str, victim: str) -> list[tuple[str, bytes]]:
    """What a hostile or broken gateway sends on its own topics: each is refused by central
    with a named reason (docs/security.md), none may touch another gateway's records."""
    good = Telemetry(
        device=device, seq=1, boot=1, sid="poison", ts=time.time(), agent=AgentInfo(version="x")
    ).model_dump(mode="json", exclude_none=True)
    big = 2**70
    return [
        (TELEMETRY, b"\xff\xfe\x00 not json"),
        (TELEMETRY, json.dumps(good | {"seq": big}).encode()),
        (TELEMETRY, json.dumps(good).replace(f'"ts": {good["ts"]}', '"ts": NaN').encode()),
        (TELEMETRY, b"[" * 3000 + b"]" * 3000),
        (TELEMETRY, json.dumps(good | {"seq": "12"}).encode()),
        (TELEMETRY, json.dumps(good | {"device": victim}).encode()),  # impersonation
        (TELEMETRY_BATCH, b'{"records": "nope"}'),
        (STATUS, b'{"online": "yes", "boot": -1}'),
        (CONFIG_REPORTED, json.dumps({"version": big, "versions": {}}).encode()),
    ]


class Poisoner:
    """``n`` MQTT clients, each publishing one bad message every ``every_s`` (QoS 1) on its own
    device's topics, reconnecting when the broker goes away. Driven by one thread through
    ``poll()`` (this process holds a socket per gateway; see :class:`LagProbe`)."""

    def __init__(
        self,
        stack: Stack,
        devices: list[str],
        victim: str,
        every_s: float = 0.5,
        prefix: str = "titik",
    ) -> None:
        self.stack = stack
        self.acked = 0
        self.sent = 0
        self._every = every_s
        self._stop = threading.Event()
        self._clients: list[tuple[paho.Client, Topics, list[tuple[str, bytes]]]] = []
        for device in devices:
            c = make_client(f"titik-sim-{device}", protocol="3.1.1")
            c.on_publish = self._on_publish
            with contextlib.suppress(OSError):
                c.connect(stack.host, stack.port)
            self._clients.append((c, Topics(prefix, device), poison_payloads(device, victim)))
        self._thread = threading.Thread(target=self._run, name="titik-sim-poison", daemon=True)
        self._thread.start()

    def _on_publish(
        self, client: paho.Client, userdata: object, mid: int, rc: object, props: object
    ) -> None:
        self.acked += 1

    def _run(self) -> None:
        k, next_at, retry_at = 0, time.monotonic(), 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            for c, topics, payloads in self._clients:
                if c.socket() is None:
                    if now >= retry_at:
                        with contextlib.suppress(OSError):
                            c.reconnect()
                    continue
                if now >= next_at and c.is_connected():
                    leaf, payload = payloads[k % len(payloads)]
                    c.publish(gw_topic(topics.prefix, topics.device, leaf), payload, qos=1)
                    self.sent += 1
                poll_io(c, 0.01)
            if now >= next_at:
                next_at, k = now + self._every, k + 1
            if now >= retry_at:
                retry_at = now + 1.0
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        for c, _, _ in self._clients:
            with contextlib.suppress(Exception):
                c.disconnect()


def _api(stack: Stack, path: str) -> Any:
    req = urllib.request.Request(f"{stack.api}{path}", headers=stack.api_headers)  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - ours
        return json.loads(resp.read())


def _offline(stack: Stack, ids: set[str]) -> int:
    """How many of ``ids`` central shows offline."""
    doc = _api(stack, "/api/devices?status=offline&limit=10000")
    return sum(1 for d in doc["items"] if d["id"] in ids)


def _quarantined(db: Path) -> dict[str, dict[str, int]]:
    """Quarantined rows per device and reason."""
    out: dict[str, dict[str, int]] = {}
    with contextlib.closing(open_db(db)) as conn:
        for device, reason, n in conn.execute(
            "SELECT COALESCE(device, ''), reason, COUNT(*) FROM quarantine GROUP BY 1, 2"
        ):
            out.setdefault(device, {})[reason] = int(n)
    return out


def _foreign_rows(db: Path, fleet: SimulatedFleet) -> int:
    """Rows stored for the fleet's devices under a (sid, seq) they never drew. The rows are
    read first: each was drawn before it was stored, so the ranges taken after hold it."""
    ids = {a.device_id for a in fleet.agents}
    with contextlib.closing(open_db(db)) as conn:
        rows = [r for r in conn.execute("SELECT device, sid, seq FROM samples") if r[0] in ids]
    ranges: dict[tuple[str, str], list[int]] = expected_seqs(fleet)
    n = 0
    for device, sid, seq in rows:
        r = ranges.get((device, sid))
        if r is None or not r[0] <= seq <= r[1]:
            n += 1
            if n <= 10:
                log.warning("foreign row: %s sid %s seq %d (drawn: %s)", device, sid, seq, r)
    return n


def chaos(
    fleet: SimulatedFleet,
    stack: Stack,
    seconds: float,
    plan: ChaosPlan,
    *,
    down_s: float | None = None,
    drain_timeout: float = 300.0,
) -> Result:
    """Everything at once, in four equal phases of ``seconds / 4``, with ``plan.poison``
    clients sending bad messages throughout:

    1. the disk-full gateways' state filesystems are filled (ENOSPC on every write) and the
       clock-jump gateways' clocks jump a day ahead (half of them) or a day back;
    2. the broker stops for ``down_s`` and starts again (every gateway buffers, reconnects);
    3. central is killed with SIGKILL, left down for ``down_s``, and started again;
    4. the disks are freed and the clocks put right.

    Then, once every gateway has drained, central's SQLite must hold every (sid, seq) every
    gateway of the fleet drew, once, and nothing else under their names; the poison
    clients' messages must all be refused with a reason, none under an honest name."""
    if stack.broker is None or not stack.central_argv or stack.db is None:
        raise ValueError("the chaos scenario restarts the broker and central: run without --broker")
    t0 = time.monotonic()
    down = min(30.0, seconds / 8) if down_s is None else down_s
    poison_ids = [f"gw-poison-{k}" for k in range(plan.poison)]
    poison = Poisoner(stack, poison_ids, victim=fleet.agents[0].device_id)
    try:
        played = _play_chaos(fleet, stack, plan, seconds / 4, down)
    finally:
        poison.stop()
        for d in plan.disks:
            free_disk(d)
        for i in plan.clock:
            fleet.skew[i] = 0.0
    result: Result = {
        "gateways": len(fleet.agents),
        "disk_full_gateways": len(plan.disk),
        "clock_jump_gateways": len(plan.clock),
        **played,
        "broker_down_s": round(down, 1),
        "central_down_s": round(down, 1),
        "poison_clients": plan.poison,
        "poison_sent": poison.sent,
        "poison_acked_by_broker": poison.acked,
        "drain_s": wait_drained(fleet, drain_timeout),
    }
    result |= _chaos_outcome(fleet, stack, stack.db, plan, poison_ids)
    result["seconds"] = round(time.monotonic() - t0, 1)
    if plan.note:
        result["note"] = plan.note
    return result


def _play_chaos(
    fleet: SimulatedFleet, stack: Stack, plan: ChaosPlan, phase: float, down: float
) -> Result:
    """The four phases of :func:`chaos`; returns what was seen on the way."""
    assert stack.broker is not None  # noqa: S101 - checked by chaos()
    t0 = time.monotonic()
    ids = [a.device_id for a in fleet.agents]
    filled = [fill_disk(d) for d in plan.disks]
    ahead = {ids[i] for j, i in enumerate(plan.clock) if j % 2 == 0}
    for j, i in enumerate(plan.clock):
        fleet.skew[i] = DAY_S if j % 2 == 0 else -DAY_S
    log.info(
        "chaos: %d state disks full (%d KiB of filler), %d clocks a day off",
        len(filled),
        sum(filled) // 1024,
        len(plan.clock),
    )
    time.sleep(phase)
    alerts = _api(stack, "/api/alerts?open=true")["items"]
    clock_alerts = sum(1 for a in alerts if a["kind"] == "clock" and a["device"] in ahead)
    log.info("chaos: broker down for %.0f s", down)
    stack.broker.stop()
    wait_until(lambda: fleet.connected == 0, 60, "every gateway to notice the broker is down")
    time.sleep(down)
    backlog = pending(fleet)
    stack.broker.start()
    time.sleep(max(0.0, t0 + 2 * phase - time.monotonic()))
    log.info("chaos: central killed (SIGKILL), down for %.0f s", down)
    stack.stop_central(kill=True)
    time.sleep(down)
    stack.start_central()
    stack.wait_api(60)
    time.sleep(max(0.0, t0 + 3 * phase - time.monotonic()))
    log.info("chaos: disks freed, clocks put right")
    for d in plan.disks:
        free_disk(d)
    for i in plan.clock:
        fleet.skew[i] = 0.0
    time.sleep(max(0.0, t0 + 4 * phase - time.monotonic()))
    return {"clock_alerts_opened": clock_alerts, "backlog_at_broker_restart": backlog}


def _chaos_outcome(
    fleet: SimulatedFleet, stack: Stack, db: Path, plan: ChaosPlan, poison_ids: list[str]
) -> Result:
    """What central's store holds once the fleet has drained: per honest gateway, the
    records lost, duplicated or foreign; the poison's refusals by reason."""
    expected = expected_seqs(fleet)
    deadline = time.monotonic() + 120
    samples = SqliteSamples(db)
    lost = missing_per_device(samples, expected)
    while lost and time.monotonic() < deadline:
        time.sleep(0.5)
        lost = missing_per_device(samples, expected)
    with contextlib.closing(open_db(db)) as conn:
        (dupes,) = conn.execute(
            "SELECT COUNT(*) - COUNT(DISTINCT device || ' ' || sid || ' ' || seq) FROM samples"
        ).fetchone()
    ids = [a.device_id for a in fleet.agents]
    honest = set(ids)
    quarantined = _quarantined(db)
    poison_q: dict[str, int] = {}
    for d in poison_ids:
        for reason, k in quarantined.get(d, {}).items():
            poison_q[reason] = poison_q.get(reason, 0) + k
    disk_ids = {ids[i] for i in plan.disk}
    clock_ids = {ids[i] for i in plan.clock}
    # Central shows a gateway offline after 3 intervals without a current sample; those whose
    # clock was ahead become current with their first sample stamped right.
    deadline = time.monotonic() + 3 * fleet.interval_s + 30
    offline = _offline(stack, honest)
    while offline and time.monotonic() < deadline:
        time.sleep(1.0)
        offline = _offline(stack, honest)
    full = [a for a in fleet.agents if a.device_id in disk_ids]
    failed = [a.faults.total + a.state.faults.total + a.spool.faults.total for a in full]
    return {
        "samples_drawn": sum(r[2] for r in expected.values()),
        # each counted in the agent and reported in its next sample's errors (write.*)
        "write_failures_on_full_disks": sum(failed),
        "full_disk_gateways_that_saw_enospc": sum(1 for f in failed if f),
        "records_lost": sum(lost.values()),
        "gateways_with_loss": len(lost),
        "records_lost_disk_full": sum(v for d, v in lost.items() if d in disk_ids),
        "records_lost_clock_jump": sum(v for d, v in lost.items() if d in clock_ids),
        "records_duplicated": int(dupes),
        "foreign_rows_under_honest_names": _foreign_rows(db, fleet),
        "honest_quarantined": sum(sum(v.values()) for d, v in quarantined.items() if d in honest),
        "poison_quarantined": sum(poison_q.values()),
        "poison_quarantined_by_reason": ", ".join(f"{r} {k}" for r, k in sorted(poison_q.items())),
        "offline_at_end": offline,
    }
