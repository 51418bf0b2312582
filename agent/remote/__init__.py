"""Remote configuration and commands: desired/reported config, hooks, signatures, rollback."""
