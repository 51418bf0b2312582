"""The HTTP side: the JSON API, /metrics and the dashboard (web/); reads the store."""
