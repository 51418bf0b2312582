"""The alert lifecycle: maintenance windows, incidents and webhook notifications
(docs/alerts.md). The engine runs in central's writer thread after each fleet check; the
webhook sends from a thread of its own."""
