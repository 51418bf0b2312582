"""The kit's certificate listener on a real Mosquitto: who gets through the TLS handshake.

A raw TLS probe (Python's ``ssl``, OpenSSL 3) connects with a pinned TLS version and sends an
MQTT CONNECT, so each outcome is told apart exactly:

- TLS 1.2: the broker checks the client certificate inside the handshake and refuses with a
  named alert (``handshake failure`` without a certificate, ``unknown ca``, ``certificate
  revoked``);
- TLS 1.3 (what clients negotiate by default): the client's side of the handshake is over
  before the broker has checked its certificate; the broker's alert (``certificate required``,
  ``unknown ca``, ``certificate revoked``) arrives just after it, and no CONNACK ever does.

Each test has its own broker: revocation changes the kit.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.kitbroker import RunningKit, connected, gw, init_kit, running, titik_ctl

pytestmark = pytest.mark.broker

TLS12, TLS13 = ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3
#: MQTT 3.1.1 CONNECT, clean session, keepalive 30, client id "probe"; CONNACK accepted.
CONNECT = bytes([0x10, 17, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 30, 0, 5]) + b"probe"
CONNACK_OK = bytes([0x20, 2, 0, 0])


@dataclass(frozen=True)
class HandshakeOutcome:
    kind: str  # "connack", "alert" (TLS alert in the handshake) or "closed" (no CONNACK)
    detail: str

    @property
    def accepted(self) -> bool:
        return self.kind == "connack" and self.detail == CONNACK_OK.hex()


def probe(
    kit: RunningKit,
    version: ssl.TLSVersion,
    cert: Path | None,
    key: Path | None,
    *,
    connect: bool = True,
) -> HandshakeOutcome:
    """Handshake with ``version``, then send CONNECT and read the CONNACK. With
    ``connect=False`` nothing is sent after the handshake and the broker's answer (a TLS 1.3
    alert) is read: a CONNECT sent into a connection the broker is closing would meet a TCP
    reset instead, and the alert would be lost about two times in three."""
    ctx = ssl.create_default_context(cafile=str(kit.dir / "ca" / "ca.pem"))
    ctx.minimum_version = ctx.maximum_version = version
    if cert is not None:
        ctx.load_cert_chain(str(cert), str(key))
    try:
        with (
            socket.create_connection(("127.0.0.1", kit.cert_port), 5) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            if connect:
                tls.sendall(CONNECT)
            got = tls.recv(4)
            return (
                HandshakeOutcome("connack", got.hex()) if got else HandshakeOutcome("closed", "EOF")
            )
    except ssl.SSLError as exc:
        if exc.reason and "ALERT" in exc.reason:
            return HandshakeOutcome("alert", exc.reason)
        return HandshakeOutcome("closed", str(exc))
    except (ConnectionResetError, BrokenPipeError, TimeoutError) as exc:
        return HandshakeOutcome("closed", type(exc).__name__)


def files(bundle: Path) -> tuple[Path, Path]:
    return bundle / "client.pem", bundle / "client.key"


@pytest.fixture
def kit(tmp_path: Path) -> Iterator[RunningKit]:
    d, cert_port, password_port, log = init_kit(tmp_path)
    for dev in ("gw-x", "gw-y"):
        titik_ctl("broker", "add-gateway", "--dir", str(d), dev, "--cert")
    titik_ctl("broker", "add-central", "--dir", str(d), "central", "--cert")
    with running(d, cert_port, password_port, log) as k:
        yield k


def alerts(kit: RunningKit, cert: Path | None, key: Path | None) -> tuple[str, str]:
    """The alert the broker refuses this certificate with, over TLS 1.2 and over TLS 1.3."""
    out = probe(kit, TLS12, cert, key), probe(kit, TLS13, cert, key, connect=False)
    assert all(o.kind == "alert" for o in out), out
    return out[0].detail, out[1].detail


REVOKED = ("SSLV3_ALERT_CERTIFICATE_REVOKED", "SSLV3_ALERT_CERTIFICATE_REVOKED")


def test_a_valid_client_certificate_connects_and_publishes(kit: RunningKit) -> None:
    for version in (TLS12, TLS13):
        assert probe(kit, version, *files(kit.bundle("gw-x"))).accepted, version
    with (
        connected(kit, "central", cert=True) as central,
        connected(kit, "gw-x", cert=True) as x,
    ):
        central.subscribe(f"$share/titik-central/{gw('+', 'telemetry')}")
        assert x.publish(gw("gw-x", "telemetry"), "hello").value == 0
        central.expect(gw("gw-x", "telemetry"), "hello")


def test_no_certificate_or_another_cas_certificate_is_refused_in_the_handshake(
    kit: RunningKit, tmp_path: Path
) -> None:
    # Another kit: its own CA, and a certificate for a name this broker knows.
    other = tmp_path / "other"
    titik_ctl("broker", "init", "--dir", str(other), "--hostname", "localhost")
    titik_ctl("broker", "add-gateway", "--dir", str(other), "gw-x", "--cert")
    foreign = files(other / "bundles" / "gw-x")

    assert alerts(kit, None, None) == (
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
    )
    assert alerts(kit, *foreign) == ("TLSV1_ALERT_UNKNOWN_CA", "TLSV1_ALERT_UNKNOWN_CA")


def test_a_revoked_certificate_is_refused_once_the_broker_reloads(
    kit: RunningKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As docs/security.md § Revoke tells the operator: ``revoke``, then reload (SIGHUP, what
    Debian's ``systemctl reload mosquitto`` sends). Mosquitto reads the CRL file at start and
    on a reload only: the revocation takes effect at the reload, and is enough."""
    stolen = tmp_path / "stolen"  # the thief keeps the gateway's files
    stolen.mkdir()
    for f in files(kit.bundle("gw-x")):
        (stolen / f.name).write_bytes(f.read_bytes())
    x = files(stolen)
    assert probe(kit, TLS12, *x).accepted

    capsys.readouterr()
    titik_ctl("broker", "revoke", "--dir", str(kit.dir), "gw-x")
    out = capsys.readouterr().out
    assert "revoked gw-x (certificate serials [" in out
    assert "reload the broker now: kill -HUP $(pidof mosquitto)" in out
    assert "until it reloads, gw-x's password and certificate still work" in out

    # Not yet reloaded: the broker still has the old CRL.
    assert probe(kit, TLS12, *x).accepted
    kit.reload()
    assert alerts(kit, *x) == REVOKED
    # The CRL shuts out that certificate only.
    for version in (TLS12, TLS13):
        assert probe(kit, version, *files(kit.bundle("gw-y"))).accepted, version

    # A replacement gateway under the same id gets a new certificate; the old stays out.
    titik_ctl("broker", "add-gateway", "--dir", str(kit.dir), "gw-x", "--cert")
    kit.reload()
    assert probe(kit, TLS12, *files(kit.bundle("gw-x"))).accepted
    assert alerts(kit, *x) == REVOKED

    # A second revocation adds to the CRL: both are out, after a restart as after a reload.
    y = files(kit.bundle("gw-y"))
    y_saved = tmp_path / "y"
    y_saved.mkdir()
    for f in y:
        (y_saved / f.name).write_bytes(f.read_bytes())
    titik_ctl("broker", "revoke", "--dir", str(kit.dir), "gw-y")
    kit.reload()
    y = files(y_saved)
    for pair in (x, y):
        assert alerts(kit, *pair) == REVOKED
    kit.proc.terminate()
    kit.proc.wait(5)
    with running(kit.dir, kit.cert_port, kit.password_port, kit.log) as restarted:
        for pair in (x, y):
            assert alerts(restarted, *pair) == REVOKED
        assert probe(restarted, TLS12, *files(restarted.bundle("gw-x"))).accepted
