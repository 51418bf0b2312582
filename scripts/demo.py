"""The demo: a throwaway Mosquitto, one agent, and a live view of what it publishes."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from central.localbroker import LocalBroker


def describe(topic: str, data: dict[str, Any], size: int) -> str:
    kind = topic.rsplit("/", 1)[-1]
    if kind == "status":
        state = "ONLINE" if data.get("online") else f"OFFLINE ({data.get('reason') or 'will'})"
        return f"status    {state}  boot={data.get('boot')}  platform={data.get('platform', '-')}"
    h = data.get("health") or {}
    c = data.get("clients") or {}
    n = data.get("net") or {}
    errs = f"  errors={list(data['errors'])}" if data.get("errors") else ""
    return (
        f"telemetry seq={data.get('seq')} cpu={h.get('cpu_pct')}% mem={h.get('mem_used_pct')}% "
        f"disk={h.get('disk_used_pct')}% temp={h.get('temp_c')}C clients={c.get('total')} "
        f"wan_up={n.get('wan_up')}  [{size} B]{errs}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description="Run a local broker and one Titik agent, and watch.")
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    ap.add_argument("--interval", type=float, default=2.0, help="telemetry interval (s)")
    ap.add_argument(
        "--platform",
        default="auto",
        choices=["auto", "linux", "openwrt", "raspberrypi", "simulated"],
        help="platform.kind for the agent (auto = this machine)",
    )
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="titik-demo-"))
    broker = LocalBroker(work)
    broker.start()
    print(f"==> Mosquitto listening on {broker.host}:{broker.port} (files in {work})")
    cfg = work / "agent.toml"
    cfg.write_text(
        f'[device]\nsite = "Demo site"\nregion = "Jakarta Pusat"\ngroups = ["demo"]\n\n'
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n\n'
        f"[telemetry]\ninterval_s = {args.interval}\n\n"
        f'[state]\ndir = "{work / "state"}"\n\n'
        f'[platform]\nkind = "{args.platform}"\n'
    )
    print(f"==> agent config: {cfg}\n==> agent log: {work / 'agent.log'}")

    stop = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="titik-demo-viewer")

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        try:
            line = describe(m.topic, json.loads(m.payload), len(m.payload))
        except (ValueError, AttributeError):
            line = f"(not JSON, {len(m.payload)} B)"
        print(f"{time.strftime('%H:%M:%S')}  {m.topic.split('/')[2]}  {line}", flush=True)

    sub.on_message = on_message
    sub.connect(broker.host, broker.port)
    sub.subscribe("titik/#", qos=1)
    sub.loop_start()

    with (work / "agent.log").open("wb") as logfh:
        agent = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(cfg)],
            stdout=logfh,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        signal.signal(signal.SIGINT, lambda s, f: stop.set())
        signal.signal(signal.SIGTERM, lambda s, f: stop.set())
        print("==> watching titik/# (Ctrl-C to stop)\n", flush=True)
        stop.wait(args.seconds or None)
        agent.send_signal(signal.SIGTERM)  # the agent says goodbye: watch the OFFLINE line
        code = agent.wait(10)
    time.sleep(0.3)
    sub.loop_stop()
    broker.stop()
    print(f"\n==> agent exited {code}; broker stopped")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
