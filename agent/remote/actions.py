"""The commands a gateway runs: each takes the command's args and returns its result."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from agent import __version__
from agent.remote.commands import CommandFailed, Handler, arg_mac, arg_number, arg_unknown
from agent.remote.desired import config_hash, redact
from agent.runner import CommandError

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.platforms.base import Platform
    from agent.remote.controller import ConfigController


class Gateway(Protocol):
    """What the commands need of the agent (:class:`agent.core.Agent` is one). A port, so
    that this module and the agent's core do not import each other."""

    @property
    def cfg(self) -> AgentConfig: ...
    @property
    def platform(self) -> Platform: ...
    @property
    def remote(self) -> ConfigController: ...
    def schedule_reboot(self, delay_s: float) -> None: ...
    def collect_now(self) -> int: ...
    def service_interval(self) -> float | None: ...
    def start_upgrade(self, args: dict[str, Any]) -> dict[str, Any]: ...


#: Commands that change nothing on the gateway: running one twice does no harm, so they run
#: even when the id memory cannot be trusted or written (see agent.remote.commands).
HARMLESS = frozenset({"collect_now", "diagnostics", "get_config"})


def handlers(agent: Gateway) -> dict[str, Handler]:
    def reboot(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, {"delay_s"})
        delay = arg_number(args, "delay_s", 10, 1, 3600)
        agent.schedule_reboot(delay)  # the result goes out first; then the gateway goes down
        return {"rebooting_in_s": delay}

    def restart_wifi(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, set())
        try:
            return agent.platform.restart_wifi()
        except CommandError as exc:
            raise CommandFailed(str(exc)) from None

    def collect_now(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, set())
        return {"seq": agent.collect_now()}

    def diagnostics(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, {"ping", "dns", "http"})
        targets = {"ping": agent.cfg.mqtt.host, "dns": agent.cfg.mqtt.host}
        for key in ("ping", "dns", "http"):
            value = args.get(key)
            if value is not None:
                if not isinstance(value, str) or not 0 < len(value) <= 253 or value.startswith("-"):
                    raise CommandFailed(
                        f"args.{key}: must be a host name or address (URL for http)"
                    )
                targets[key] = value
        return agent.platform.diagnostics(targets)

    def kick_client(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, {"mac", "ban_s"})
        mac = arg_mac(args)
        ban = int(arg_number(args, "ban_s", 0, 0, 86400))
        try:
            return agent.platform.kick_client(mac, ban)
        except CommandError as exc:
            raise CommandFailed(str(exc)) from None

    def get_config(args: dict[str, Any]) -> dict[str, Any]:
        arg_unknown(args, set())
        cfg = agent.cfg
        return {
            "applied": redact(agent.remote.applied),
            "hash": config_hash(agent.remote.applied),
            "report": agent.remote.report,
            "agent": {
                "version": __version__,
                "platform": agent.platform.name,
                "interval_s": cfg.telemetry.interval_s,
                "collectors": list(cfg.telemetry.collectors),
                "broker": f"{cfg.mqtt.host}:{cfg.mqtt.port}",
                "groups": list(cfg.device.groups),
                "require_signature": cfg.security.require_signature,
                # The service report as it runs now (file and remote config): null when off.
                "service": ({"interval_s": every} if (every := agent.service_interval()) else None),
            },
        }

    def upgrade(args: dict[str, Any]) -> dict[str, Any]:
        # The arguments and the manifest's signature are checked before anything else
        # (agent/remote/upgrade.py; docs/upgrades.md).
        from agent.protocol.upgrade import UpgradeRefused, parse_args

        try:
            parse_args(args)
            return agent.start_upgrade(args)
        except UpgradeRefused as exc:
            raise CommandFailed(str(exc)) from None

    return {
        "reboot": reboot,
        "restart_wifi": restart_wifi,
        "collect_now": collect_now,
        "diagnostics": diagnostics,
        "kick_client": kick_client,
        "get_config": get_config,
        "upgrade": upgrade,
    }
