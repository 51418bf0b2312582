"""Central's store on PostgreSQL (``[store] url = "postgresql://..."``): docs/central.md,
"Central on PostgreSQL"; the decisions in docs/architecture.md."""

from central.store.pg.store import PgStore

__all__ = ["PgStore"]
