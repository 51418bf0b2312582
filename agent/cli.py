"""titik-agent: run the gateway agent, or inspect what it would do."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

from agent import __version__
from agent.config import AgentConfig, ConfigError, env_overrides, load_config
from agent.core import Agent, resolve_device_id
from agent.daemon import run
from agent.delivery import open_spool
from agent.platforms import Platform, make_platform
from agent.state import AgentState

if TYPE_CHECKING:
    import argparse

DEFAULT_CONFIG = Path(os.environ.get("TITIK_CONFIG", "/etc/titik/agent.toml"))
PID_FILE = "agent.pid"
EXIT_CONFIG = 2

log = logging.getLogger("titik")


def _setup_logging(level: str) -> None:
    # One line per event on stderr; procd/journald add the timestamp and the unit.
    logging.basicConfig(
        stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s", level=level.upper()
    )


def _platform(cfg: AgentConfig) -> tuple[AgentConfig, Platform]:
    """The platform the config asks for (detected once), and the config with its device id."""
    platform = make_platform(
        cfg.platform.kind,
        cfg.platform.root,
        interfaces=list(cfg.telemetry.interfaces),
        seed=cfg.platform.seed if cfg.platform.seed is not None else (cfg.device.id or 0),
    )
    return resolve_device_id(cfg, platform), platform


def _load(path: Path) -> tuple[AgentConfig, Agent]:
    cfg, platform = _platform(load_config(path))
    state_dir = cfg.state.dir or platform.state_dir()
    return cfg, Agent(cfg, platform, AgentState(state_dir), open_spool(cfg, state_dir))


def state_dir_of(cfg: AgentConfig) -> Path:
    if cfg.state.dir:
        return cfg.state.dir
    return make_platform(cfg.platform.kind, cfg.platform.root).state_dir()


def cmd_run(args: argparse.Namespace | SimpleNamespace) -> int:
    cfg, agent = _load(args.config)
    _setup_logging(cfg.log.level)
    ignored = env_overrides(os.environ).ignored
    if ignored:
        log.debug("environment: %s are not config keys (ignored)", ", ".join(ignored))
    pid_path = state_dir_of(cfg) / PID_FILE
    try:
        pid_path.write_text(f"{os.getpid()}\n")
    except OSError as exc:
        log.warning(
            "cannot write %s (%s); 'titik-agent kick' will not find this agent",
            pid_path,
            exc.strerror,
        )
    try:
        run(agent)
    finally:
        pid_path.unlink(missing_ok=True)
    return 0


def cmd_once(args: argparse.Namespace) -> int:
    _setup_logging("warning")
    cfg, platform = _platform(load_config(args.config))
    import tempfile

    with tempfile.TemporaryDirectory(prefix="titik-once-") as tmp:
        # Touches neither the real state, nor the buffer, nor a remote-config journal (whose
        # recovery would run the firmware hooks): seq and boot stay 0.
        cfg = cfg.model_copy(update={"state": cfg.state.model_copy(update={"dir": Path(tmp)})})
        agent = Agent(cfg, platform, AgentState(None), open_spool(cfg, Path(tmp)))
        agent.sample(seq=0)  # rates and CPU need a previous reading
        time.sleep(args.warmup)
        print(agent.sample(seq=0).model_dump_json(indent=2))
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg, platform = _platform(load_config(args.file))
    effective = cfg.model_dump(mode="json")  # SecretStr prints as '**********'
    effective["platform"]["detected"] = platform.name
    effective["state"]["dir"] = str(cfg.state.dir or platform.state_dir())
    print(json.dumps(effective, indent=2))
    return 0


def cmd_kick(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    pid_path = state_dir_of(cfg) / PID_FILE
    try:
        pid = int(pid_path.read_text().strip())
        os.kill(pid, signal.SIGUSR1)
    except (OSError, ValueError) as exc:
        print(f"titik-agent: no running agent found via {pid_path}: {exc}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    import argparse  # not at module level: see SERVICE_ARGV

    parser = argparse.ArgumentParser(
        prog="titik-agent",
        description="Titik gateway agent: reports health and Wi-Fi client counts over MQTT.",
        epilog="Config keys can be overridden with TITIK_<SECTION>_<KEY> variables, "
        "e.g. TITIK_MQTT_PASSWORD; one that names a section but no key of it is an error. "
        "Other TITIK_ variables (TITIK_CONFIG, TITIK_VENDOR, TITIK_BROKER ...) are not "
        "config and are ignored. Exit status 2 means the config is invalid.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--config",
            "-c",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"agent config (TOML); default {DEFAULT_CONFIG} or $TITIK_CONFIG",
        )

    p = sub.add_parser("run", help="run the agent until SIGTERM")
    with_config(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("once", help="print one sample as JSON; does not touch the broker or state")
    with_config(p)
    p.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds between the two readings that CPU%% and rates need (default 1)",
    )
    p.set_defaults(func=cmd_once)
    p = sub.add_parser("check-config", help="validate a config and print the effective one")
    p.add_argument("file", type=Path, help="agent config (TOML)")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("kick", help="make the running agent reconnect and send at once (SIGUSR1)")
    with_config(p)
    p.set_defaults(func=cmd_kick)
    return parser


#: The command line both services start (procd's titik.init and titik-agent.service run
#: exactly ``titik-agent run``, the config named by TITIK_CONFIG). It has no option to parse,
#: so it is run without building the argparse parser: argparse and gettext stay resident for
#: the life of the process once imported (~340 KiB of a ~37 MiB agent, docs/benchmarks.md),
#: for one parse at start. Every other command line, ``--help`` included, goes to argparse.
SERVICE_ARGV = ("run",)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if tuple(argv) == SERVICE_ARGV:
        args: argparse.Namespace | SimpleNamespace = SimpleNamespace(
            command="run", config=DEFAULT_CONFIG, func=cmd_run
        )
    else:
        args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"titik-agent: invalid config:\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    return code


if __name__ == "__main__":
    sys.exit(main())
