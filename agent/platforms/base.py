"""The platform port: identity, where state lives, and the actions commands run.

Readings are not here: each collector (:mod:`agent.collectors`) says, per platform kind, how
it takes its reading, and reads through what the platform offers
(:class:`agent.collectors.base.LinuxHost`). A platform looks up a collector's reading by
:attr:`Platform.kinds`: its own kind first, then its parents' (``openwrt`` -> ``linux``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar


class Platform(ABC):
    #: The value of ``platform.kind`` that selects this platform.
    name: str = ""
    #: This platform's kind, then its parents' kinds: how collectors' readings are looked up.
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.kinds = tuple(dict.fromkeys(n for c in cls.__mro__ if (n := c.__dict__.get("name"))))

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
