"""The commands a gateway runs, as models central checks a command against before it is sent.

The agent checks each command's arguments in its handler (agent/remote/actions.py, with the
helpers ``arg_number``, ``arg_mac``, ``arg_unknown`` of agent/remote/commands.py); these
models say the same in pydantic, so the console refuses with a 422 naming the argument what
the gateway would refuse anyway. tests/unit/test_console_commands.py runs the agent's own
handlers on the same generated arguments and fails when the two disagree, or when the agent
gains a command these models lack.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    ValidationError,
)

from agent.protocol.commands import MAC_RE, MAX_LIFETIME_S
from agent.protocol.settings import format_validation_error
from agent.protocol.upgrade import UpgradeArgs

#: A number as the agent's ``arg_number`` takes it: int or float, never a bool or a string.
Number = Annotated[StrictInt, Field()] | Annotated[StrictFloat, Field(allow_inf_nan=False)]


def _host(value: str) -> str:
    if not 0 < len(value) <= 253 or value.startswith("-"):
        raise ValueError("must be a host name or address (URL for http)")
    return value


def _mac(value: str) -> str:
    if not MAC_RE.fullmatch(value):
        raise ValueError("must be a MAC address like 02:00:00:00:00:01")
    return value


Host = Annotated[str, Field(strict=True), AfterValidator(_host)]


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(Args):
    pass


class RebootArgs(Args):
    delay_s: Number = Field(default=10, ge=1, le=3600, description="Seconds before the reboot")


class DiagnosticsArgs(Args):
    ping: Host | None = Field(default=None, description="Default: the broker's host")
    dns: Host | None = Field(default=None, description="Default: the broker's host")
    http: Host | None = Field(default=None, description="A URL to fetch")


class KickClientArgs(Args):
    mac: Annotated[str, Field(strict=True), AfterValidator(_mac)] = Field(
        description="The client's MAC address (it stays in central's audit log redacted)"
    )
    ban_s: Number = Field(default=0, ge=0, le=86400, description="Seconds it may not rejoin")


#: Command name -> its arguments' model; the same names as agent.remote.actions.handlers.
COMMANDS: dict[str, type[BaseModel]] = {
    "reboot": RebootArgs,
    "restart_wifi": NoArgs,
    "collect_now": NoArgs,
    "diagnostics": DiagnosticsArgs,
    "kick_client": KickClientArgs,
    "get_config": NoArgs,
    "upgrade": UpgradeArgs,  # the manifest's signature is the gateway's to check
}
#: Arguments never written to the audit log as they are (a client's MAC stays on the gateway).
REDACTED_ARGS = frozenset({"mac"})


def check_args(command: str, args: Any) -> dict[str, Any]:
    """The arguments as they are sent (only the ones given); ValueError names what is wrong
    as ``args.<key>: <reason>`` (or ``name: ...``)."""
    model = COMMANDS.get(command)
    if model is None:
        raise ValueError(f"name: unknown command {command!r}; one of {', '.join(sorted(COMMANDS))}")
    if not isinstance(args, dict):
        raise ValueError("args: must be an object")  # noqa: TRY004 (callers expect ValueError)
    try:
        model.model_validate(args)
    except ValidationError as exc:
        first = format_validation_error(exc).splitlines()[0]
        raise ValueError(f"args.{first}") from None
    return dict(args)


def redacted(args: dict[str, Any]) -> dict[str, Any]:
    return {k: ("(redacted)" if k in REDACTED_ARGS else v) for k, v in args.items()}


__all__ = ["COMMANDS", "MAX_LIFETIME_S", "check_args", "redacted"]
