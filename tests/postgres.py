"""A real PostgreSQL for the tests: Debian's ``postgresql`` package, started by the tests.

The cluster itself is :class:`central.sim.localpg.LocalPostgres` (shared with
``titik-sim --store postgresql`` and bench/bench_api.py): ``initdb`` in a fresh directory
under /tmp, ``pg_ctl`` on a free loopback port, run as the ``postgres`` user when the tests
run as root, stopped (``-m immediate``) and removed after; a cluster left by a killed session
is stopped by the next (:func:`reap_orphans`).

The tests' clusters are not durable (``fsync=off``, no synchronous commit, no full-page
writes): a crash of the machine may lose them, which does not matter here. Production
settings are the operator's (docs/central.md, "Central on PostgreSQL").
"""

from __future__ import annotations

from central.sim.localpg import PREFIX, SUPERUSER, LocalPostgres, pg_bindir, reap_orphans

__all__ = ["PREFIX", "SUPERUSER", "Postgres", "pg_bindir", "reap_orphans"]


class Postgres(LocalPostgres):
    """One throw-away, non-durable PostgreSQL cluster for a test session."""

    def __init__(self) -> None:
        super().__init__(durable=False)
