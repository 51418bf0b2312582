"""The demo: a throwaway Mosquitto, central with its dashboard, and a simulated fleet.

It makes an admin API token (``titik-central token create``) and prints it with the login
address: the dashboard and the API need a credential (docs/security.md).

Every gateway is a real agent (simulated platform) in this process; central runs as its own
process, as in production. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from central.sim.fleet import SimulatedFleet, wait_connected
from central.sim.localbroker import LocalBroker, free_port, wait_until

#: The demo token's header, once it is made.
HEADERS: dict[str, str] = {}


def get_json(url: str) -> dict[str, object] | None:
    try:
        req = urllib.request.Request(url, headers=HEADERS)  # noqa: S310 - our own localhost URL
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
            data = json.load(resp)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    return data if isinstance(data, dict) else None


def make_token(conf: Path) -> str:
    """An admin token, made with the command an administrator runs for the first one."""
    return subprocess.run(
        [sys.executable, "-m", "central.cli", "token", "create", "--name", "demo", "--role",
         "admin", "--config", str(conf)],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip


def print_urls(base: str, token: str) -> None:
    print(f"\n    Dashboard:       {base}/  (log in at {base}/login with the token below)")
    print(f"    Admin token:     {token}")
    print(f"    API docs:        {base}/docs")
    print(f"    Public summary:  {base}/api/public/summary  (no token needed)")
    print(f"    Prometheus:      {base}/metrics  (Authorization: Bearer <token>)")
    print(
        f'    Try:             curl -H "Authorization: Bearer {token}" {base}/api/summary\n',
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description="Run a local broker, central (API + dashboard) and a simulated fleet."
    )
    ap.add_argument("--gateways", type=int, default=200, help="simulated gateways (default 200)")
    ap.add_argument(
        "--interval", type=float, default=10.0, help="telemetry interval, s (default 10)"
    )
    ap.add_argument("--seconds", type=float, default=0, help="stop after this long (0 = Ctrl-C)")
    ap.add_argument("--http-port", type=int, default=0, help="dashboard port (default: a free one)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="titik-demo-"))
    (work / "broker").mkdir()
    broker = LocalBroker(work / "broker")
    broker.start()
    print(f"==> Mosquitto on {broker.host}:{broker.port} (files in {work})", flush=True)

    http_port = args.http_port or free_port()
    conf = work / "central.toml"
    conf.write_text(
        f'[mqtt]\nhost = "{broker.host}"\nport = {broker.port}\n\n'
        f'[store]\npath = "{work / "titik.db"}"\n\n'
        f'[http]\nhost = "127.0.0.1"\nport = {http_port}\n'
    )
    token = make_token(conf)
    HEADERS["Authorization"] = f"Bearer {token}"
    log = (work / "central.log").open("wb")
    central = subprocess.Popen(
        [sys.executable, "-m", "central.cli", "run", "--config", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        wait_until(lambda: get_json(f"{base}/healthz") is not None, 30, "central's HTTP API")
    except AssertionError:
        print(f"central did not start; see {work / 'central.log'}", file=sys.stderr)
        central.terminate()
        broker.stop()
        return 1
    print(f"==> central running (log: {work / 'central.log'})", flush=True)

    print(f"==> starting {args.gateways} simulated gateways ...", flush=True)
    fleet = SimulatedFleet(
        args.gateways, broker.host, broker.port, work / "gateways", interval_s=args.interval
    )
    fleet.start()
    print(f"==> {wait_connected(fleet)} gateways connected", flush=True)
    print_urls(base, token)

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda s, f: stop.set())
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    deadline_wait = args.seconds or None
    waited = 0.0
    while not stop.wait(5):
        waited += 5
        s = get_json(f"{base}/api/summary")
        if s:
            print(
                f"    fleet: {s.get('online')}/{s.get('total')} online, "
                f"{s.get('clients_total')} people connected, {s.get('alerts_open')} alerts open",
                flush=True,
            )
        if deadline_wait and waited >= deadline_wait:
            break
    print("==> stopping ...", flush=True)
    fleet.stop()
    central.send_signal(signal.SIGTERM)
    code = central.wait(20)
    broker.stop()
    print(f"==> stopped (central exited {code})")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
