"""Run the real agent as a subprocess (``python -m agent``), the way procd/systemd would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.broker import Broker


def write_config(
    path: Path,
    broker: Broker,
    *,
    device: str = "gw-test01",
    interval: float = 0.2,
    platform: str = "simulated",
    extra: str = "",
) -> Path:
    path.write_text(
        f"""
[device]
id = "{device}"
site = "Test site"
region = "Jakarta Pusat"
lat = -6.1754
lon = 106.8272
groups = ["test"]

[mqtt]
host = "{broker.host}"
port = {broker.port}
reconnect_min_s = 0.1
reconnect_max_s = 0.5

[telemetry]
interval_s = {interval}

[state]
dir = "{path.parent / "state"}"

[platform]
kind = "{platform}"
seed = 42
{extra}
"""
    )
    return path


class AgentProcess:
    def __init__(self, config: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log = config.parent / "agent.log"
        self._logfh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent", *args, "run", "--config", str(config)],
            stdout=self._logfh,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=Path(__file__).resolve().parents[1],
        )

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._logfh.close()
