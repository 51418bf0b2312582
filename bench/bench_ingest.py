"""Central ingest throughput against the ceiling of a bare paho subscriber.

One run, one throwaway Mosquitto. For each consumer (1) ``ceiling``: a bare paho MQTT 5
subscriber that only counts messages (auto-ack), and (2) ``ingest``: the real
``central.ingest.Consumer`` into SQLite (validate, batch, commit, then ack):

1. the consumer subscribes with a persistent session and goes away;
2. a load generator (a separate process) publishes ``--messages`` valid Telemetry payloads
   for ``--devices`` gateways, QoS 1, as fast as it can; the broker queues them;
3. the consumer comes back (a separate process, pinned to one core with
   ``os.sched_setaffinity``) and drains the queue; rate = messages / (last - connect).

Draining a queue measures the consumer alone: a live stream would be capped by the
Python publisher. Same broker, same receive maximum, same core for both.

Run: .venv/bin/python bench/bench_ingest.py [--devices 1000] [--messages 50000]
Prints a markdown table, the machine and the command on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = "titik"
SHARE = "bench"
RECEIVE_MAX = 2000


def pin(core: int | None = -1) -> str:
    """Pin this process to one CPU, the ``core``-th of those it may use (-1: the last); None
    leaves it unpinned."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return "not pinned"
    cpus = sorted(os.sched_getaffinity(0))
    cpu = cpus[core % len(cpus)]
    os.sched_setaffinity(0, {cpu})
    return f"cpu {cpu}"


def payload(device: str, seq: int) -> bytes:
    return (
        f'{{"v":1,"device":"{device}","seq":{seq},"boot":3,"sid":"5f0c2d0b7e614a55",'
        f'"ts":{time.time():.3f},"health":{{"cpu_pct":23.4,"load1":0.82,"load5":0.74,'
        f'"load15":0.66,"mem_used_pct":48.2,"mem_avail_b":118234726,"disk_used_pct":22.3,'
        f'"temp_c":53.1,"uptime_s":864211}},"net":{{"wan_up":true,"wan":"wan","ifaces":'
        f'{{"br-lan":{{"up":true,"rx":48812233,"tx":291223841,"rx_bps":41230,"tx_bps":247380,'
        f'"err":0}},"wan":{{"up":true,"rx":291223841,"tx":48812233,"rx_bps":247380,'
        f'"tx_bps":41230,"err":0}}}}}},"clients":{{"total":{seq % 60},"by_iface":'
        f'{{"phy0-ap0":15,"phy1-ap0":22}},"leases":39}},"agent":{{"version":"0.1.0"}}}}'
    ).encode()


# --- the child processes ------------------------------------------------------------------


def batch_payload(device: str, first: int, records: int) -> bytes:
    """A TelemetryBatch of ``records`` samples with seqs ``first`` on, as a gateway replays its
    buffer after an outage (docs/protocol.md, "TelemetryBatch")."""
    body = b",".join(payload(device, first + r) for r in range(records))
    return b'{"v":1,"device":"%s","historical":true,"records":[%s]}' % (device.encode(), body)


def status_payload(device: int, online: bool) -> bytes:
    """A gateway's status as the agent sends it: online on connecting, and its Will (offline),
    each with the place the simulator gives it (central.sim.fleet.gateway_plan's fields)."""
    return (
        f'{{"online":{"true" if online else "false"},"boot":3,"v":1,"ts":{time.time():.3f},'
        f'"version":"0.1.0","platform":"openwrt","site":"site-{device % 500:03d}",'
        f'"region":"region-{device % 12}","lat":-6.2{device % 1000:03d},'
        f'"lon":106.8{device % 997:03d},"groups":["all","region-{device % 12}"]}}'
    ).encode()


def child_publish(
    port: int, devices: int, messages: int, batch: int = 0, status: bool = False
) -> None:
    """``messages`` QoS 1 messages over ``devices`` gateways, each a Telemetry sample, or with
    ``batch`` a TelemetryBatch of that many samples (on ``telemetry/batch``), or with
    ``status`` a status, every gateway online and then its Will, and so on (on ``status``)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.protocol.topics import STATUS, TELEMETRY, TELEMETRY_BATCH, gw_topic

    acked = threading.Semaphore(0)
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-load")
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    c.on_publish = lambda *a: acked.release()
    c.connect("127.0.0.1", port)
    c.loop_start()
    t0 = time.perf_counter()
    for i in range(messages):
        dev = f"gw-bench{i % devices:05d}"
        if status:
            online = (i // devices) % 2 == 0
            c.publish(gw_topic(PREFIX, dev, STATUS), status_payload(i % devices, online), qos=1)
        elif batch:
            body = batch_payload(dev, (i // devices) * batch, batch)
            c.publish(gw_topic(PREFIX, dev, TELEMETRY_BATCH), body, qos=1)
        else:
            c.publish(gw_topic(PREFIX, dev, TELEMETRY), payload(dev, i // devices), qos=1)
    for _ in range(messages):
        acked.acquire()
    took = time.perf_counter() - t0
    c.loop_stop()
    c.disconnect()
    print(json.dumps({"rate": messages / took}), flush=True)


def _config(port: int, db: Path, client_id: str) -> object:
    from central.config import parse_config

    return parse_config(
        f'[mqtt]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "{client_id}"\n'
        f'share_group = "{SHARE}"\n[store]\npath = "{db}"\n'
    )


def child_ceiling(
    port: int, messages: int, phase: str, name: str = "ceiling", core: int | None = -1
) -> None:
    """The bare paho MQTT 5 subscriber that only counts (auto-ack), client ``bench-<name>``
    in share group ``bench-<name>``, pinned as :func:`pin` does (bench_multi.py's ``bare``
    too). ``subscribe``: make the persistent session and leave; ``drain``: take
    ``messages``, then print the rate, ``cpu_s`` (from its connect: the subscriber's own)
    and ``process_cpu_s`` (the whole process's, imports included, as child_ingest counts)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from central.ingest.decode import subscriptions

    where = pin(core)
    done, subscribed = threading.Event(), threading.Event()
    count = 0
    t: dict[str, float] = {}

    def on_message(*a: object) -> None:
        nonlocal count
        count += 1
        if count >= messages:
            t["end"] = time.time()
            done.set()

    c = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-{name}", protocol=MQTTProtocolVersion.MQTTv5
    )
    c.on_message = on_message
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_connect = lambda cl, *a: cl.subscribe(
        [(s, 1) for s in subscriptions(PREFIX, f"{SHARE}-{name}")]
    )
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = RECEIVE_MAX
    t["start"], cpu0 = time.time(), cpu_now()
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    c.loop_start()
    if phase == "subscribe":
        subscribed.wait(10)
        c.disconnect()
        c.loop_stop()
        return
    done.wait(900)
    c.loop_stop()
    out = {
        "start": t["start"],
        "end": t["end"],
        "rate": messages / (t["end"] - t["start"]),
        "cpu_s": cpu_now() - cpu0,
        "process_cpu_s": cpu_now(),
        "core": where,
    }
    print(json.dumps(out), flush=True)


def cpu_now() -> float:
    """This process's CPU time so far, user and system."""
    t = os.times()
    return t.user + t.system


def child_ingest(port: int, messages: int, phase: str, db: Path) -> None:
    from central.config import CentralConfig
    from central.ingest.consumer import Consumer
    from central.store.sqlite import SqliteStore

    core = pin()
    cfg = _config(port, db, "bench-ingest")
    if not isinstance(cfg, CentralConfig):
        raise TypeError(cfg)
    store = SqliteStore(cfg.store.path)
    consumer = Consumer(cfg, store)
    stop = threading.Event()
    t0 = time.perf_counter()
    consumer.start()
    if phase == "subscribe":
        consumer.subscribed.wait(10)
        consumer.stop()
        return

    def watch() -> None:
        while consumer.stats.stored + consumer.stats.duplicates < messages:
            time.sleep(0.005)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    consumer.run(stop)
    took = time.perf_counter() - t0
    consumer.stop()
    s = consumer.stats
    cpu = os.times()
    print(
        json.dumps(
            {
                "rate": messages / took,
                "cpu_s": cpu.user + cpu.system,
                "core": core,
                "batches": s.batches,
                "commit_ms_avg": 1000 * s.commit_seconds_total / max(1, s.batches),
                "commit_ms_max": 1000 * s.commit_seconds_max,
                "bad": sum(s.bad.values()),
            }
        ),
        flush=True,
    )


# --- the driver ---------------------------------------------------------------------------


def run_child(*args: str, script: str = __file__) -> dict[str, Any]:
    """``script _child ARGS...`` in a process of its own (bench_multi.py's too); the JSON
    object it printed last."""
    out = subprocess.run(
        [sys.executable, script, "_child", *args],
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    lines = out.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}  # type: ignore[no-any-return]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--messages", type=int, default=50000)
    args = ap.parse_args()
    from central.sim.localbroker import LocalBroker

    with tempfile.TemporaryDirectory() as tmp:
        broker = LocalBroker(Path(tmp))
        broker.start()
        results: dict[str, dict[str, Any]] = {}
        pub_rates = []
        try:
            for kind in ("ceiling", "ingest"):
                extra = [str(Path(tmp) / "bench.db")] if kind == "ingest" else []
                n = str(args.messages)
                port = str(broker.port)
                run_child(kind, port, n, "subscribe", *extra)
                print(f"{kind}: publishing {n} messages", file=sys.stderr)
                pub = run_child("publish", port, str(args.devices), n)
                pub_rates.append(float(pub["rate"]))
                print(f"{kind}: draining", file=sys.stderr)
                results[kind] = run_child(kind, port, n, "drain", *extra)
                print(f"{kind}: {results[kind]}", file=sys.stderr)
        finally:
            broker.stop()

    ceiling = float(results["ceiling"]["rate"])
    ingest = float(results["ingest"]["rate"])
    ratio = ingest / ceiling
    r = results["ingest"]
    print(f"## Ingest throughput ({args.messages} messages, {args.devices} devices, QoS 1)\n")
    print("| consumer | messages/s | CPU s | target | verdict |")
    print("| --- | ---: | ---: | --- | --- |")
    print(
        f"| bare paho subscriber (ceiling) | {ceiling:,.0f} | {float(results['ceiling']['process_cpu_s']):.1f} | | |"
    )
    print(
        f"| central ingest into SQLite | {ingest:,.0f} | {float(r['cpu_s']):.1f} | ≥ 5,000 msg/s | "
        f"{'PASS' if ingest >= 5000 else 'FAIL'} |"
    )
    print(
        f"| ratio ingest / ceiling | {ratio:.2f} | | ≥ 0.70 | {'PASS' if ratio >= 0.7 else 'FAIL'} |"
    )
    print()
    print(
        f"Ingest: {r['batches']} batches, commit {float(r['commit_ms_avg']):.1f} ms avg, "
        f"{float(r['commit_ms_max']):.1f} ms max; {r['bad']} bad. Load generator: "
        + ", ".join(f"{p:,.0f}" for p in pub_rates)
        + " msg/s (separate process, QoS 1, not pinned)."
    )
    footer(f"consumers pinned to {r['core']}")
    return 0


def footer(machine_too: str) -> None:
    """The lines under a benchmark's table: the machine (then ``machine_too``: how it was
    used) and the command that printed it."""
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, {_cpu_model()}, "
        f"Linux {platform.release()}, Python {platform.python_version()}, {machine_too}"
    )
    print(f"Command: `{shlex.join([sys.executable, *sys.argv])}`")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, port, n, *rest = sys.argv[2:]
        if kind == "publish":
            child_publish(int(port), int(n), int(rest[0]))
        elif kind == "ceiling":
            child_ceiling(int(port), int(n), rest[0])
        else:
            child_ingest(int(port), int(n), rest[0], Path(rest[1]))
        sys.exit(0)
    sys.exit(main())
