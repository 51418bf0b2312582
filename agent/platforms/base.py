"""The platform port: every firmware family returns the same structures (psutil's rule)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.collectors import Context
    from agent.protocol import Clients, Health, Net


class Platform(ABC):
    #: The value of ``platform.kind`` that selects this platform.
    name: str = ""

    @abstractmethod
    def health(self, ctx: Context) -> Health: ...

    @abstractmethod
    def network(self, ctx: Context) -> Net: ...

    @abstractmethod
    def clients(self, ctx: Context) -> Clients: ...

    @abstractmethod
    def primary_mac(self) -> str | None:
        """The MAC the default device id derives from, as 12 lowercase hex digits."""

    @abstractmethod
    def boot_id(self) -> str | None: ...

    def model(self) -> str | None:
        """Hardware model, for the status message; None when unknown."""
        return None

    def state_dir(self) -> Path:
        return Path("/var/lib/titik")

    # -- actions for commands; each returns a small result or raises CommandError
    @abstractmethod
    def restart_wifi(self) -> dict[str, Any]: ...

    @abstractmethod
    def kick_client(self, mac: str, ban_s: int) -> dict[str, Any]:
        """Disconnect one station; the MAC is not logged or echoed (privacy)."""

    @abstractmethod
    def reboot(self) -> None: ...

    @abstractmethod
    def diagnostics(self, targets: dict[str, str]) -> dict[str, Any]: ...
