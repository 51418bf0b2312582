"""What a command on ``{prefix}/gw/{id}/cmd`` may be, as the gateway checks it: its lifetime and
its identifiers. Central's web console checks a command against the same limits before it is
signed (issue 18); the gateway's handlers are ``agent/remote/commands.py``.
"""

from __future__ import annotations

import re

#: The longest a command may live (``expires_at`` at most this far ahead).
MAX_LIFETIME_S = 7 * 86400
#: A command's id.
ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
#: A client's MAC address, as ``kick_client`` takes it.
MAC_RE = re.compile(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}")
