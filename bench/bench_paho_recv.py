"""paho's receive path, plain against central's BufferedClient (agent/protocol/client.py).

One throwaway Mosquitto. For each round and each client: a persistent MQTT 5 session is
made, ``--messages`` QoS 1 messages of ``--size`` bytes are queued for it while it is away,
then it reconnects and drains them; the process's CPU seconds from the reconnect to the last
message, per message. ``--ack manual`` acks as central does (``manual_ack``; the plain client
with paho's ``ack`` per message, BufferedClient with ``ack_many`` per 200, central's batch);
``auto`` lets paho ack (the bare subscriber of bench_multi.py). The two clients alternate,
so the machine's other load falls on both alike.

Run: .venv/bin/python bench/bench_paho_recv.py [--messages 50000] [--rounds 3] [--ack manual]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.protocol.client import BufferedClient  # noqa: E402
from bench.bench_ingest import footer  # noqa: E402
from central.sim.localbroker import LocalBroker  # noqa: E402

BATCH = 200


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def session(port: int, cls: type[paho.Client], cid: str, manual: bool) -> paho.Client:
    c = cls(
        CallbackAPIVersion.VERSION2,
        client_id=cid,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual,
    )
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 4 * BATCH
    c.connect("127.0.0.1", port, clean_start=False, properties=props)
    return c


def fill(port: int, n: int, size: int) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-recv-pub")
    pub.max_inflight_messages_set(1000)
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    payload = b"x" * size
    infos = [pub.publish(f"t/{i % 1000}", payload, qos=1) for i in range(n)]
    for info in infos:
        info.wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()


def drain(port: int, cls: type[paho.Client], cid: str, n: int, size: int, manual: bool) -> float:
    """CPU µs per message to drain ``n`` queued messages."""
    subscribed = threading.Event()
    c = session(port, cls, cid, manual)
    c.on_subscribe = lambda *_: subscribed.set()
    c.subscribe("t/#", qos=1)
    c.loop_start()
    subscribed.wait(10)
    c.disconnect()
    c.loop_stop()
    fill(port, n, size)
    done = threading.Event()
    got: list[int] = []

    def on_message(cl: paho.Client, _u: object, m: paho.MQTTMessage) -> None:
        got.append(m.mid)
        k = len(got)
        if manual and (k % BATCH == 0 or k >= n):
            mids = got[k - (k % BATCH or BATCH) :]
            if isinstance(cl, BufferedClient):
                cl.ack_many(mids)  # central's writer does it from its thread: the same cost
            else:
                for mid in mids:
                    cl.ack(mid, 1)
        if k >= n:
            done.set()

    c = session(port, cls, cid, manual)
    c.on_message = on_message
    c0 = cpu_s()
    c.loop_start()
    done.wait(600)
    used = cpu_s() - c0
    c.disconnect()
    c.loop_stop()
    return used / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=600, help="payload bytes (a telemetry record)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ack", choices=("manual", "auto"), default="manual")
    a = ap.parse_args()
    manual = a.ack == "manual"
    broker = LocalBroker(Path(tempfile.mkdtemp(prefix="titik-bench-recv-")))
    broker.start()
    res: dict[str, list[float]] = {"paho.Client": [], "BufferedClient": []}
    try:
        for r in range(a.rounds):
            for name, cls in (("paho.Client", paho.Client), ("BufferedClient", BufferedClient)):
                us = drain(broker.port, cls, f"recv-{name}-{r}", a.messages, a.size, manual)
                res[name].append(us)
                print(f"round {r + 1}: {name}: {us:.1f} µs/msg", file=sys.stderr)
    finally:
        broker.stop()
    plain, buf = statistics.median(res["paho.Client"]), statistics.median(res["BufferedClient"])
    print(f"## paho receive, {a.messages:,} QoS 1 messages of {a.size} bytes, acks {a.ack}\n")
    print("| client | CPU µs/msg, each round | median | x plain |\n| --- | --- | ---: | ---: |")
    for name, med in (("paho.Client", plain), ("BufferedClient", buf)):
        each = ", ".join(f"{v:.1f}" for v in res[name])
        print(f"| {name} | {each} | {med:.1f} | {med / plain:.2f} |")
    footer("Mosquitto and the client not pinned")


if __name__ == "__main__":
    main()
