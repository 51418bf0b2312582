"""Collectors: one module per section of a sample, each isolated from the others.

A collector is one unit (docs/collectors.md has the checklist for a new one):

- one module, ``agent/collectors/<name>.py``, holding its parsers and a ``COLLECTOR``
  (:class:`agent.collectors.base.Collector`): the Telemetry field it fills and, per platform
  kind, the function that takes the reading;
- one fixture folder, ``tests/fixtures/collectors/<name>/``, of real command output, each
  file's source named in its ``SOURCES.md``;
- one line in :data:`REGISTRY` below.

If a collector raises, the sample still goes out with ``errors[<name>]`` saying why
(node_exporter's rule: one failing collector never blocks the rest); partial failures go
through :meth:`~agent.collectors.base.Context.warn`. :mod:`agent.sampling` runs them.

This package's ``__init__`` stays this small: :mod:`agent.config` reads the names from it,
and a collector's module is imported only when it is turned on (RAM on a 128 MB router).
"""

from __future__ import annotations

#: name (what ``telemetry.collectors`` lists) -> on by default.
#: The collector is the module ``agent.collectors.<name>``.
REGISTRY: dict[str, bool] = {
    "health": True,
    "network": True,
    "clients": True,
    "radio": False,
}

__all__ = ["REGISTRY"]
