"""titik-central: run the consumer, or check a config.

``build(config)`` gives the store and the consumer without starting anything, so the HTTP
API (``central/api.py``, added later) can be hooked into :func:`cmd_run` next to ingest.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from central.config import CentralConfig, ConfigError, load_config
from central.ingest import Consumer
from central.store.sqlite import SqliteStore

EXIT_CONFIG = 2

log = logging.getLogger("titik.central")


def build(config: CentralConfig) -> tuple[SqliteStore, Consumer]:
    """The store and the (not yet connected) consumer for ``config``."""
    store = SqliteStore(
        config.store.path, raw_days=config.store.raw_days, rollup_days=config.store.rollup_days
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
    consumer.start()
    log.info("ingesting from %s:%d into %s", config.mqtt.host, config.mqtt.port, config.store.path)
    try:
        consumer.run(stop)
    finally:
        consumer.stop()
        store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="titik-central", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="consume telemetry into the store")
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
