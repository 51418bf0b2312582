from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker
from tests.postgres import Postgres


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A fresh Mosquitto on a free loopback port, for this test only."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def stopped_broker(tmp_path: Path) -> Iterator[Broker]:
    """A configured but not yet started Mosquitto (for 'broker down at start' tests)."""
    b = Broker(tmp_path)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """One real PostgreSQL for the whole session (tests/postgres.py); stopped at the end."""
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def pg_url(postgres: Postgres) -> Iterator[str]:
    """A fresh, empty database on the session's PostgreSQL, for this test only."""
    url = postgres.create_database()
    try:
        yield url
    finally:
        postgres.drop_database(url.rsplit("/", 1)[1])


#: Open files past which a test's end frees what dead apps still hold (below 1,024, where
#: paho's ``select()`` cannot take a socket any more).
OPEN_FILES_HIGH = 384


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """A test that runs a CLI's main in this process (titik-sim's) may add handlers or
    filters to the root logger; after it, the root logger is as it was, so no later test's
    caplog misses records (pytest's handlers are the same objects for the whole session)."""
    root = logging.getLogger()
    handlers = list(root.handlers)
    filters = {h: list(h.filters) for h in handlers}
    level = root.level
    yield
    for h in list(root.handlers):
        if h not in filters:
            root.removeHandler(h)
    for h, kept in filters.items():
        h.filters[:] = kept
    root.setLevel(level)


@pytest.fixture(autouse=True)
def _free_dead_apps() -> Iterator[None]:
    """Let the apps of finished tests go, with the SQLite files they hold open.

    FastAPI remembers up to 4,096 endpoint callables per cache for the process's life
    (``fastapi.dependencies.models``, functools.lru_cache keyed by the callable), and our
    endpoints are closures over their app, so every app a test made stayed alive, and with it
    its stores' per-thread SQLite connections: ~780 open files after tests/unit alone, and the
    broker tests after them failed to connect. In a served central there is one app, so this
    is the suite's problem only: past :data:`OPEN_FILES_HIGH` open files, those caches are
    emptied and a collection frees what nobody holds."""
    yield
    if len(os.listdir("/proc/self/fd")) > OPEN_FILES_HIGH:
        import fastapi.dependencies.models as fastapi_models

        for value in vars(fastapi_models).values():
            if callable(getattr(value, "cache_clear", None)):
                value.cache_clear()
        gc.collect()
