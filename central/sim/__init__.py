"""titik-sim: thousands of real agents in one process, scenarios, and a throwaway Mosquitto.

The one part of central that imports the agent beyond its protocol: it runs real agents
(docs/architecture.md, "Import rules").
"""
