"""Ingest: the MQTT consumer, wire decoding and the fleet state rules (imports store)."""
