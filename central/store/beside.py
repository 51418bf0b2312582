"""The tables beside a store's samples, in the store's own database: its SQLite file
(``store.path``) or PostgreSQL (``store.url``), as ``[store]`` chose for the store itself.
One place decides, for the API, the alert engine and the CLI alike."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from central.store.alerting import AlertingStore
from central.store.pg.tables import PgAlertingStore, PgServiceStore
from central.store.service import ServiceStore

T = TypeVar("T")


def _beside(
    store: Any,
    sqlite: Callable[[Path, Callable[[], float]], T],
    pg: Callable[[str, Callable[[], float]], T],
    clock: Callable[[], float],
) -> T | None:
    url: str | None = getattr(store, "url", None)
    if url:
        return pg(url, clock)
    path: Path | None = getattr(store, "path", None)
    return sqlite(path, clock) if path is not None else None


def alerting_of(store: Any, clock: Callable[[], float] = time.time) -> AlertingStore | None:
    """The alert lifecycle's tables of ``store``'s database (a store, or a config's
    ``[store]``); None for one with neither a url nor a path (the API then answers 501 for
    the lifecycle's endpoints)."""
    return _beside(
        store,
        lambda p, c: AlertingStore(p, clock=c),
        lambda u, c: PgAlertingStore(u, clock=c),
        clock,
    )


def service_of(store: Any, clock: Callable[[], float] = time.time) -> ServiceStore | None:
    """The service reports' tables of ``store``'s database; None as :func:`alerting_of`."""
    return _beside(
        store,
        lambda p, c: ServiceStore(p, clock=c),
        lambda u, c: PgServiceStore(u, clock=c),
        clock,
    )
