"""Active DHCP lease count from a dnsmasq lease file.

Only the count leaves this module: MACs, addresses and hostnames in the file
are never returned or put in an error.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "DEFAULT_LEASE_FILES",
    "LeaseFileError",
    "count_leases",
    "parse_dnsmasq_leases",
]

# OpenWrt's dnsmasq writes /tmp/dhcp.leases; Debian's writes /var/lib/misc.
DEFAULT_LEASE_FILES = ("/tmp/dhcp.leases", "/var/lib/misc/dnsmasq.leases")


class LeaseFileError(OSError):
    """A lease file exists but cannot be read; the message names the path."""


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_dnsmasq_leases(text: str, now: float) -> int:
    """Count active leases in a dnsmasq lease file.

    Lease lines are ``expiry mac|iaid ip name|* clientid|*`` (dnsmasq
    ``lease_update_file``) for DHCPv4 and, after the ``duid`` line, DHCPv6.
    Expiry 0 never expires; an expiry at or before ``now`` is over. The ``duid``
    line, ``vendorclass``/``agent-info`` extras, and malformed or cut-off lines
    are skipped.
    """
    count = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) != 5:
            continue
        expiry, _hw, address, _name, _clientid = fields
        if not (expiry.isascii() and expiry.isdigit()) or not _is_address(address):
            continue
        seconds = int(expiry)
        if seconds == 0 or seconds > now:
            count += 1
    return count


def count_leases(paths: Sequence[Path], now: float) -> int | None:
    """Active leases in the first of ``paths`` that exists; None if none exists.

    A file that exists but cannot be read raises :class:`LeaseFileError`.
    """
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise LeaseFileError(f"{path}: cannot read lease file: {exc.strerror or exc}") from exc
        return parse_dnsmasq_leases(text, now)
    return None
