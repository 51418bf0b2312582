"""Collectors: one module per section of a sample, each isolated from the others.

A collector is one unit (docs/collectors.md has the checklist for a new one):

- one module, ``agent/collectors/<name>.py``, holding its parsers and a ``COLLECTOR``
  (:class:`agent.collectors.base.Collector`): the Telemetry field it fills and, per platform
  kind, the function that takes the reading;
- one fixture folder, ``tests/fixtures/collectors/<name>/``, of real command output, each
  file's source named in its ``SOURCES.md``;
- one line in :data:`REGISTRY` (``agent/protocol/collectors.py``: the names are on the wire).

If a collector raises, the sample still goes out with ``errors[<name>]`` saying why
(node_exporter's rule: one failing collector never blocks the rest); partial failures go
through :meth:`~agent.collectors.base.Context.warn`. :mod:`agent.sampling` runs them.

A collector's module is imported only when it is turned on (RAM on a 128 MB router).
"""

from __future__ import annotations

# The registry is the collectors' names, which the wire shares (the remote config names them):
# its one line per collector is in agent/protocol/collectors.py.
from agent.protocol.collectors import REGISTRY as REGISTRY

__all__ = ["REGISTRY"]
