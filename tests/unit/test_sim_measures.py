"""What titik-sim reads from the kernel to explain a reconnect storm."""

from __future__ import annotations

from pathlib import Path

from central.sim.stack import listen_overflows

NETSTAT = (
    "TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops\n"
    "TcpExt: 0 0 497 497\n"
    "IpExt: InNoRoutes InTruncatedPkts\n"
    "IpExt: 0 0\n"
)


def test_listen_overflows_reads_the_tcpext_counter(tmp_path: Path) -> None:
    netstat = tmp_path / "netstat"
    netstat.write_text(NETSTAT)
    assert listen_overflows(netstat) == 497


def test_listen_overflows_is_none_where_the_kernel_does_not_say(tmp_path: Path) -> None:
    assert listen_overflows(tmp_path / "missing") is None
    netstat = tmp_path / "netstat"
    netstat.write_text("TcpExt: SyncookiesSent\nTcpExt: 0\n")  # no such counter
    assert listen_overflows(netstat) is None
    netstat.write_text("TcpExt: ListenOverflows\nTcpExt: -\n")  # not a count
    assert listen_overflows(netstat) is None


def test_listen_overflows_reads_this_machine() -> None:
    n = listen_overflows()
    assert n is None or n >= 0
