"""The atomic-write helper moved to :mod:`agent.protocol.atomicfile` (issue 17: one helper
for the whole project, and central may import only the protocol package). This name stays
while agent modules and the agent half of issue 17 still import it; new code imports
``agent.protocol.atomicfile``."""

from agent.protocol.atomicfile import (
    WriteFaults,
    describe,
    sweep_tmp,
    sync_dir,
    tmp_path,
    write_atomic,
)

__all__ = ["WriteFaults", "describe", "sweep_tmp", "sync_dir", "tmp_path", "write_atomic"]
