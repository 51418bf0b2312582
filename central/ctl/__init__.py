"""titik-ctl: the operations CLI (devices, config pushes, canary rollouts, commands)."""
