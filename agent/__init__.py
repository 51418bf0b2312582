"""Titik gateway agent: health and client telemetry over MQTT."""

__version__ = "0.1.0"
