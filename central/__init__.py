"""Titik central: one subpackage per part (docs/architecture.md, "Shape").

``ingest`` (MQTT -> store), ``store`` (SQLite behind a protocol), ``api`` (FastAPI, /metrics,
the dashboard in ``api/web``), ``ctl`` (titik-ctl), ``broker`` (the broker kit behind
``titik-ctl broker``), ``sim`` (titik-sim). Central takes the wire only from ``agent.protocol``.
"""
