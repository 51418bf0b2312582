"""Config rollouts in waves, run by central: the plan an operator signs, the health gate of a
wave, and the state machine that publishes the next wave or halts and restores.

Pure logic, no I/O: the process that runs rollouts (central's consumer) feeds it the fleet's
state and publishes what it returns. docs/rollouts.md explains the whole workflow.
"""
