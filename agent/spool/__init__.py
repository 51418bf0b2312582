"""The durable outbound queue (store-and-forward) for telemetry records.

``Spool`` is the only class the agent needs; ``Record`` is what goes in and out.
The bookkeeping (``ledger``) is pure and the file format (``segment``) is pure; only
``store`` touches the filesystem. docs/spool.md explains the design.
"""

from agent.spool.record import Record
from agent.spool.spool import Spool, SpoolStats

__all__ = ["Record", "Spool", "SpoolStats"]
