"""titik-central: run the consumer, or check a config.

``run`` ingests in the main thread (the writer) and serves the HTTP API (``central/api/app.py``)
with uvicorn in a second thread on ``http.host:http.port``. SIGTERM or SIGINT: the writer
commits and acks what it has, the HTTP server stops, the consumer disconnects, exit 0.
``build(config)`` gives the store and the consumer without starting anything.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import uvicorn

from agent.protocol.settings import ConfigError
from central.api.app import create_app
from central.config import CentralConfig, load_config
from central.ingest.consumer import Consumer
from central.store.sqlite import SqliteStore

EXIT_CONFIG = 2
EXIT_HTTP = 1
HTTP_START_S = 15.0

log = logging.getLogger("titik.central")


def build(config: CentralConfig) -> tuple[SqliteStore, Consumer]:
    """The store and the (not yet connected) consumer for ``config``."""
    store = SqliteStore(
        config.store.path,
        raw_days=config.store.raw_days,
        rollup_days=config.store.rollup_days,
        quarantine_rows=config.ingest.quarantine_rows,
    )
    return store, Consumer(config, store)


def cmd_run(config: CentralConfig) -> int:
    logging.basicConfig(
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
        level=config.log.level.upper(),
    )
    store, consumer = build(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: committing, acking and disconnecting", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = http_server(config, store, consumer)
    # Not the main thread, so uvicorn installs no signal handlers: ours stop everything.
    http = threading.Thread(target=server.run, name="http", daemon=True)
    http.start()
    if not wait_started(server, http, stop):
        log.error("HTTP API did not start on %s:%d", config.http.host, config.http.port)
        store.close()
        return 0 if stop.is_set() else EXIT_HTTP
    log.info("dashboard: http://%s:%d/  (API docs: /docs)", config.http.host, config.http.port)
    consumer.start()
    log.info("ingesting from %s:%d into %s", config.mqtt.host, config.mqtt.port, config.store.path)
    try:
        consumer.run(stop)
    finally:
        server.should_exit = True
        http.join(10)
        consumer.stop()
        store.close()
    return 0


def http_server(config: CentralConfig, store: SqliteStore, consumer: Consumer) -> uvicorn.Server:
    app = create_app(store, consumer.stats, map_config=config.map)
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=config.http.host,
            port=config.http.port,
            log_config=None,  # keep our logging setup
            access_log=config.log.level == "debug",
            timeout_graceful_shutdown=5,
        )
    )


def wait_started(server: uvicorn.Server, thread: threading.Thread, stop: threading.Event) -> bool:
    """True once uvicorn listens; False if it failed (port taken) or we were stopped."""
    for _ in range(int(HTTP_START_S / 0.05)):
        if server.started:
            return True
        if not thread.is_alive() or stop.wait(0.05):
            break
    return server.started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="titik-central", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="consume telemetry into the store and serve the HTTP API")
    run.add_argument("--config", type=Path, default=Path("/etc/titik/central.toml"))
    check = sub.add_parser("check-config", help="validate a config file and exit")
    check.add_argument("config", type=Path)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"{args.config}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.cmd == "check-config":
        print(f"{args.config}: ok")
        return 0
    return cmd_run(config)


if __name__ == "__main__":
    sys.exit(main())
