"""Central on PostgreSQL with one and two instances, against a bare paho subscriber; and a
SIGKILL of the leader under load, counting what is lost and what is stored twice (issue 21).

One run, one throwaway Mosquitto, one throwaway PostgreSQL (tests/postgres.py: Debian's
``postgresql``, initdb in a temp directory; ``fsync=off`` as in the tests, so this measures
central, not the disk).

Throughput, side by side (the drain method of bench/bench_ingest.py):

1. the consumers subscribe with persistent sessions (the two instances share one group,
   ``$share/bench/...``) and go away;
2. a load generator (a separate process) publishes ``--messages`` valid Telemetry payloads
   for ``--devices`` gateways, QoS 1; the broker queues them (split between the two
   sessions of a shared group);
3. the consumers come back and drain: ``bare``, a paho subscriber that only counts
   (auto-ack); ``1 instance``, central's consumer as ``titik-central run`` builds it
   (central.cli.build: validate, batch, commit to PostgreSQL, then ack; the leader's work
   included); ``2 instances``, two of them, each pinned to its own core. Rate = messages /
   (the last commit seen in the database - the first connect); CPU per message = the
   consumers' own CPU time / messages (PostgreSQL's own CPU is shown beside it).

SIGKILL under load: two ``titik-central run`` processes (their HTTP APIs up) take a live
stream of ``--kill-messages`` at ``--kill-rate`` messages/s; once a third of it is stored,
the leader gets SIGKILL and is started again ``--restart-after`` seconds later (as systemd's
Restart= would: Mosquitto holds its share in its session meanwhile). Counted: messages sent
and acknowledged by the broker but never stored (lost), (device, sid, seq) stored more than
once (duplicated), and how long until the other instance said it leads (/healthz).

The lead's full-size run (about 10 minutes on the 2-core box; nothing else running):

    .venv/bin/python bench/bench_multi.py --devices 1000 --messages 50000 --kill-messages 20000

Small proof that it runs (under a minute): ``--messages 5000 --kill-messages 3000``.

Central's side of a city-wide outage (about 3 minutes): ``--devices 50000 --messages 50000
--batch-records 10 --no-kill`` queues one TelemetryBatch of 10 samples per gateway, the
backlog 50,000 gateways replay after 10 minutes down, and says how long one and two instances
take to store all 500,000 (no gateways, no edge brokers: those are titik-sim's outage).
Prints a markdown table, the machine and the command on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.protocol.topics import TELEMETRY, gw_topic  # noqa: E402
from bench import bench_ingest  # noqa: E402
from bench.bench_ingest import (  # noqa: E402
    child_ceiling,
    child_publish,
    cpu_now,
    footer,
    pin,
)

PREFIX = "titik"
SHARE = "bench"


def config_text(port: int, url: str, client_id: str, group: str, http_port: int = 0) -> str:
    """Each run has its own share group: the sessions of an earlier run's consumers stay in
    theirs (offline, persistent) and would be dealt their share of this run's messages."""
    return (
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "{client_id}"\n'
        f'share_group = "{group}"\nsession_expiry_s = 3600\n'
        f'[store]\nurl = "{url}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port or 1}\n'
    )


# --- the child processes ------------------------------------------------------------------


def child_central(port: int, url: str, client_id: str, phase: str, core: int) -> None:
    """central's consumer as ``titik-central run`` builds it; SIGTERM stops it."""
    import logging

    from central.cli import build
    from central.config import parse_config

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    where = pin(core)
    group = f"{SHARE}-{client_id.rsplit('-', 1)[0]}"
    store, consumer = build(parse_config(config_text(port, url, client_id, group)))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    start, cpu0 = time.time(), cpu_now()  # not the imports' CPU
    consumer.start()
    if phase == "subscribe":
        consumer.subscribed.wait(10)
        consumer.stop()
        store.close()
        return
    print(json.dumps({"start": start}), flush=True)
    consumer.run(stop)
    consumer.stop()
    store.close()
    s = consumer.stats
    out = {
        "cpu_s": cpu_now() - cpu0,
        "core": where,
        "stored": s.stored,
        "batches": s.batches,
        "commit_ms_avg": 1000 * s.commit_seconds_total / max(1, s.batches),
        "bad": sum(s.bad.values()),
        "leader": s.leader,
    }
    print(json.dumps(out), flush=True)


# --- the driver ---------------------------------------------------------------------------


def run_child(*args: str) -> dict[str, Any]:
    return bench_ingest.run_child(*args, script=__file__)


def count(url: str, sql: str = "SELECT count(*) FROM samples") -> int:
    import psycopg

    try:
        with psycopg.connect(url) as conn:
            row = conn.execute(sql.encode()).fetchone()
            return int(row[0]) if row else 0
    except psycopg.errors.UndefinedTable:
        return 0


def stored_at_least(url: str, n: int) -> bool:
    """Whether ``n`` samples are stored, cheaply enough to ask every 50 ms: the highest id
    first (an index lookup; every row has its own id, so fewer than ``n`` rows while it is
    below ``n``), the exact count (a scan of every row) only once it is not. A ``count(*)``
    each time read the whole table 20 times a second: ~10 µs of PostgreSQL's CPU per message
    at 20,000 messages (bench/diag/pg_statements.py), more the longer the run, taken from
    the consumers being measured."""
    return count(url, "SELECT coalesce(max(id), 0) FROM samples") >= n and count(url) >= n


class PgCpu:
    """PostgreSQL's CPU seconds: the postmaster's own and its reaped children's (backends
    that ended) plus its living children's."""

    def __init__(self, data: Path) -> None:
        import psutil

        self.proc = psutil.Process(int((data / "postmaster.pid").read_text().split()[0]))

    def seconds(self) -> float:
        t = self.proc.cpu_times()
        total = t.user + t.system + t.children_user + t.children_system
        for child in self.proc.children():
            try:
                c = child.cpu_times()
                total += c.user + c.system
            except Exception:  # noqa: S112 - it ended meanwhile: counted as reaped next time
                continue
        return float(total)


def drain_central(
    broker_port: int, url: str, n: int, instances: int, pg_cpu: PgCpu, devices: int, batch: int = 0
) -> dict[str, Any]:
    """``n`` messages queued for ``instances`` consumers, then drained; with ``batch`` each
    message is a TelemetryBatch of that many samples, and the drain ends when all
    ``n`` x ``batch`` samples are stored."""
    ids = [f"bench{instances}-c{i}" for i in range(instances)]
    for i, cid in enumerate(ids):
        run_child("central", str(broker_port), url, cid, "subscribe", str(i))
    print(f"{instances} instance(s): publishing {n} messages", file=sys.stderr)
    pub = run_child("publish", str(broker_port), str(devices), str(n), str(batch))
    records = n * max(1, batch)
    print(f"{instances} instance(s): draining", file=sys.stderr)
    pg0 = pg_cpu.seconds()
    argv = [sys.executable, __file__, "_child", "central", str(broker_port), url]
    procs = [
        subprocess.Popen([*argv, cid, "drain", str(i)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for i, cid in enumerate(ids)
    ]
    starts = []
    for p in procs:
        line = p.stdout.readline() if p.stdout is not None else ""
        starts.append(float(json.loads(line)["start"]))
    deadline = time.monotonic() + 900
    while not stored_at_least(url, records):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{instances} instance(s): {count(url)} of {records} stored")
        time.sleep(0.05)  # polling the database for the end, not synchronising
    end = time.time()
    pg_s = pg_cpu.seconds() - pg0
    outs = []
    for p in procs:
        p.send_signal(signal.SIGTERM)
        out, _ = p.communicate(timeout=60)
        outs.append(json.loads(out.strip().splitlines()[-1]))
    return {
        "rate": n / (end - min(starts)),
        "all_s": end - min(starts),
        "records": records,
        "cpu_s": sum(float(o["cpu_s"]) for o in outs),
        "pg_cpu_s": pg_s,
        "per_instance": [o["stored"] for o in outs],
        "leaders": sum(bool(o["leader"]) for o in outs),
        "commit_ms_avg": max(float(o["commit_ms_avg"]) for o in outs),
        "bad": sum(int(o["bad"]) for o in outs),
        "cores": ", ".join(str(o["core"]) for o in outs),
        "pub_rate": float(pub["rate"]),
    }


def health(port: int) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            got: dict[str, Any] = json.load(r)["ingest"]
            return got
    except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
        return None


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)  # polling a condition with a deadline


def kill_under_load(  # noqa: PLR0915 - one scenario, step by step
    broker: Any, url: str, n: int, rate: float, restart_after: float, tmp: Path, devices: int
) -> dict[str, Any]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from central.sim.localbroker import free_port

    def start(name: str, conf: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
            cwd=ROOT, stderr=(tmp / f"{name}.log").open("ab"),
        )  # fmt: skip

    names, ports, confs = ["k1", "k2"], [free_port(), free_port()], []
    for name, hp in zip(names, ports, strict=True):
        conf = tmp / f"{name}.toml"
        conf.write_text(config_text(broker.port, url, f"bench-{name}", f"{SHARE}-kill", hp))
        confs.append(conf)
    procs = {name: start(name, c) for name, c in zip(names, confs, strict=True)}
    try:
        wait(lambda: all(health(p) for p in ports), 60, "both HTTP APIs")
        leaders: list[int] = []

        def one_leader() -> bool:
            leaders[:] = [i for i, p in enumerate(ports) if (health(p) or {}).get("leader")]
            return len(leaders) == 1

        wait(one_leader, 30, "one leader")
        leader = leaders[0]
        acked = threading.Semaphore(0)
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-kill-load")
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.on_publish = lambda *a: acked.release()
        c.connect("127.0.0.1", broker.port)
        c.loop_start()
        # Both subscribed: a probe stream until each instance has taken a message.
        probes = 0
        while not all((health(p) or {}).get("accepted", {}).get("telemetry") for p in ports):
            c.publish(gw_topic(PREFIX, "bench-probe", TELEMETRY),
                      _payload("bench-probe", probes), qos=1)  # fmt: skip
            probes += 1
            time.sleep(0.1)  # pacing the probes
        load = "SELECT count(*) FROM samples WHERE device LIKE 'gw-bench%'"

        def stream() -> None:
            t0 = time.monotonic()
            for i in range(n):
                dev = f"gw-bench{i % devices:05d}"
                c.publish(gw_topic(PREFIX, dev, TELEMETRY), _payload(dev, i // devices), qos=1)
                ahead = t0 + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)  # pacing the load

        streamer = threading.Thread(target=stream)
        t_start = time.monotonic()
        streamer.start()
        wait(lambda: count(url, load) >= n // 3, 300, "a third stored")
        victim = names[leader]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        killed = time.monotonic()
        stored_at_kill = count(url, load)
        other = ports[1 - leader]
        wait(lambda: bool((health(other) or {}).get("leader")), 60, "the takeover")
        takeover = time.monotonic() - killed
        time.sleep(max(0.0, restart_after - (time.monotonic() - killed)))  # the restart delay
        procs[victim] = start(victim, confs[leader])
        streamer.join()
        for _ in range(n + probes):
            acked.acquire(timeout=120)
        c.loop_stop()
        c.disconnect()
        drained_by = time.monotonic() + 300
        while count(url, load) < n and time.monotonic() < drained_by:
            time.sleep(0.1)  # polling the database for the end
        took = time.monotonic() - t_start
        rows = count(url, load)
        distinct = count(
            url,
            "SELECT count(*) FROM (SELECT DISTINCT device, sid, seq FROM samples "
            "WHERE device LIKE 'gw-bench%') d",
        )
        wait(one_leader, 30, "one leader after the restart")
        return {
            "sent": n,
            "stored": rows,
            "lost": n - distinct,
            "duplicated": rows - distinct,
            "stored_at_kill": stored_at_kill,
            "takeover_s": takeover,
            "leader_after": names[leaders[0]],
            "killed": victim,
            "took_s": took,
        }
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _payload(device: str, seq: int) -> bytes:
    from bench.bench_ingest import payload

    return payload(device, seq)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=50000, help="per throughput run")
    ap.add_argument("--kill-messages", type=int, default=20000, help="the SIGKILL run's stream")
    ap.add_argument("--kill-rate", type=float, default=1500.0, help="messages/s in that stream")
    ap.add_argument("--restart-after", type=float, default=5.0, help="s before the restart")
    ap.add_argument(
        "--batch-records",
        type=int,
        default=0,
        metavar="K",
        help="each message a TelemetryBatch of K samples, as gateways replay after an outage "
        "(with --devices 50000 --messages 50000 --batch-records 10: a 10-minute city-wide "
        "outage's backlog, one batch per gateway)",
    )
    ap.add_argument("--no-kill", action="store_true", help="throughput only, no SIGKILL run")
    args = ap.parse_args()
    from central.sim.localbroker import LocalBroker
    from tests.postgres import Postgres

    n = args.messages
    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp))
        broker.start()
        pg = Postgres().start()
        try:
            pg_cpu = PgCpu(pg.data)
            run_child("bare", str(broker.port), str(n), "subscribe")
            print(f"bare: publishing {n} messages", file=sys.stderr)
            k = str(args.batch_records)
            pub = run_child("publish", str(broker.port), str(args.devices), str(n), k)
            print("bare: draining", file=sys.stderr)
            bare = run_child("bare", str(broker.port), str(n), "drain")
            bare["pub_rate"] = pub["rate"]
            one = drain_central(
                broker.port, pg.create_database(), n, 1, pg_cpu, args.devices, args.batch_records
            )
            print(f"1 instance: {one}", file=sys.stderr)
            two = drain_central(
                broker.port, pg.create_database(), n, 2, pg_cpu, args.devices, args.batch_records
            )
            print(f"2 instances: {two}", file=sys.stderr)
            kill = None
            if not args.no_kill:
                print("SIGKILL under load", file=sys.stderr)
                kill = kill_under_load(
                    broker, pg.create_database(), args.kill_messages, args.kill_rate,
                    args.restart_after, Path(tmp), args.devices,
                )  # fmt: skip
                print(f"SIGKILL: {kill}", file=sys.stderr)
        finally:
            pg.stop()
            broker.stop()
    report(args, bare, one, two, kill)
    return 0


def report(
    args: argparse.Namespace,
    bare: dict[str, Any],
    one: dict[str, Any],
    two: dict[str, Any],
    kill: dict[str, Any] | None,
) -> None:
    n = args.messages
    what = f"{n} messages"
    if args.batch_records:
        what = f"{n} batches of {args.batch_records} samples"

    def per_msg(cpu: float) -> str:
        return f"{1e6 * cpu / n:,.0f}"

    print(f"## Central on PostgreSQL: 1 and 2 instances ({what}, {args.devices} devices)\n")
    print(
        "| consumer | messages/s | x bare | CPU µs/msg (consumers) | x bare | PostgreSQL CPU µs/msg |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    b_rate, b_cpu = float(bare["rate"]), float(bare["cpu_s"])
    print(f"| bare paho subscriber | {b_rate:,.0f} | 1.00 | {per_msg(b_cpu)} | 1.00 | |")
    for label, r in (("central, 1 instance", one), ("central, 2 instances (shared)", two)):
        print(
            f"| {label} | {r['rate']:,.0f} | {r['rate'] / b_rate:.2f} | {per_msg(r['cpu_s'])} "
            f"| {r['cpu_s'] / b_cpu:.2f} | {per_msg(r['pg_cpu_s'])} |"
        )
    scale = two["rate"] / one["rate"]
    cpu_ratio = one["cpu_s"] / b_cpu

    def goal(text: str, ok: bool) -> str:
        # issue 21's goals are for single samples: a batch's figures are per K samples
        return "" if args.batch_records else f" ({text}: {'PASS' if ok else 'FAIL'})"

    print(
        f"\n2 instances / 1 instance: **{scale:.2f}x**{goal('goal ≥ 1.3', scale >= 1.3)}; "
        f"1 instance's CPU per message / bare: "
        f"**{cpu_ratio:.2f}x**{goal('goal ≤ 1.2', cpu_ratio <= 1.2)}. "
        f"Split between the 2 instances: {two['per_instance']} stored; leaders: "
        f"{two['leaders']} of 2. Commit avg {one['commit_ms_avg']:.1f} ms (1), "
        f"{two['commit_ms_avg']:.1f} ms (2, the slower); bad: {one['bad'] + two['bad']}. "
        f"Load generator: {bare['pub_rate']:,.0f}, {one['pub_rate']:,.0f}, "
        f"{two['pub_rate']:,.0f} msg/s."
    )
    if args.batch_records:
        print(
            f"\nEvery sample stored ({one['records']:,}): 1 instance in **{one['all_s']:.1f} s** "
            f"({one['records'] / one['all_s']:,.0f} samples/s), 2 instances in "
            f"**{two['all_s']:.1f} s** ({two['records'] / two['all_s']:,.0f} samples/s), "
            f"from the first connect to the last commit; the bare subscriber took "
            f"{n / float(bare['rate']):.1f} s for the messages."
        )
    if kill is not None:
        kill_report(args, kill)
    footer(
        f"bare and 1 instance pinned to {bare['core']}, 2 instances to {two['cores']}; "
        "Mosquitto and PostgreSQL not pinned"
    )


def kill_report(args: argparse.Namespace, kill: dict[str, Any]) -> None:
    print(f"\n## SIGKILL of the leader under load ({kill['sent']} messages at "
          f"{args.kill_rate:g}/s, restarted after {args.restart_after:g} s)\n")  # fmt: skip
    print(
        "| sent | stored | lost | duplicated | stored at the kill | takeover | all stored after |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(
        f"| {kill['sent']} | {kill['stored']} | **{kill['lost']}** | **{kill['duplicated']}** "
        f"| {kill['stored_at_kill']} | {kill['takeover_s']:.1f} s | {kill['took_s']:.1f} s |"
    )
    print(
        f"\nKilled {kill['killed']} (the leader); leader after its restart: {kill['leader_after']}."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, *rest = sys.argv[2:]
        if kind == "publish":
            child_publish(int(rest[0]), int(rest[1]), int(rest[2]), int(rest[3]))
        elif kind == "bare":
            child_ceiling(int(rest[0]), int(rest[1]), rest[2], name="bare", core=0)
        else:
            child_central(int(rest[0]), rest[1], rest[2], rest[3], int(rest[4]))
        sys.exit(0)
    sys.exit(main())
