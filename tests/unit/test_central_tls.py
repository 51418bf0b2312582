"""Central's own HTTPS (``[http.tls]``) and a reverse proxy's X-Forwarded-Proto, for real.

The server is the one ``titik-central run`` builds (``central.cli.http_server``: uvicorn with
the config's certificate, key and trusted proxies) on a free loopback port, with a
throwaway self-signed certificate for 127.0.0.1. Over HTTPS, and over HTTP from a trusted
proxy that says the client used HTTPS, the session cookie is ``Secure``; over plain HTTP it
is not (a browser would drop a Secure cookie there).
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.protocol.settings import ConfigError
from central.cli import http_server
from central.config import CentralConfig, parse_config
from central.ingest.consumer import Consumer
from central.store.sqlite import SqliteStore
from tests.broker import free_port, wait_until
from tests.central_auth import create_token


def self_signed(where: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    crt, pem = where / "https.crt", where / "https.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def config(tmp_path: Path, port: int, tls: str = "") -> CentralConfig:
    return parse_config(
        f'[mqtt]\nhost = "127.0.0.1"\n[store]\npath = "{tmp_path / "c.db"}"\n'
        f'[http]\nhost = "127.0.0.1"\nport = {port}\n{tls}'
    )


@contextmanager
def serving(cfg: CentralConfig) -> Iterator[None]:
    store = SqliteStore(cfg.store.path)
    server: uvicorn.Server = http_server(cfg, store, Consumer(cfg, store))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 15, "uvicorn")
        assert server.started
        yield
    finally:
        server.should_exit = True
        thread.join(10)
        store.close()


def login_cookie(
    url: str, token: str, context: ssl.SSLContext | None = None, **headers: str
) -> str:
    req = urllib.request.Request(  # noqa: S310 - loopback
        url + "/api/login",
        data=json.dumps({"token": token}).encode(),
        headers={"Content-Type": "application/json", **headers},
    )
    with urllib.request.urlopen(req, timeout=10, context=context) as r:  # noqa: S310 - loopback
        assert json.load(r)["role"] == "viewer"
        return str(r.headers["set-cookie"])


def test_central_serves_https_with_its_own_certificate(tmp_path: Path) -> None:
    crt, key = self_signed(tmp_path)
    port = free_port()
    cfg = config(tmp_path, port, f'[http.tls]\ncert = "{crt}"\nkey = "{key}"\n')
    token = create_token(cfg.store.path, "viewer")
    context = ssl.create_default_context(cafile=str(crt))
    with serving(cfg):
        url = f"https://127.0.0.1:{port}"
        cookie = login_cookie(url, token, context)
        assert "Secure" in cookie and "HttpOnly" in cookie
        me = url + "/api/me"
        req = urllib.request.Request(me, headers={"Authorization": f"Bearer {token}"})  # noqa: S310
        with urllib.request.urlopen(req, timeout=10, context=context) as r:  # noqa: S310
            assert json.load(r)["name"].startswith("test-viewer")


def test_a_trusted_proxys_https_makes_the_cookie_secure(tmp_path: Path) -> None:
    port = free_port()
    cfg = config(tmp_path, port)
    token = create_token(cfg.store.path, "viewer")
    with serving(cfg):
        url = f"http://127.0.0.1:{port}"
        assert "Secure" not in login_cookie(url, token)
        assert "Secure" in login_cookie(url, token, **{"X-Forwarded-Proto": "https"})


def test_tls_needs_both_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"http: .*cert and key go together"):
        config(tmp_path, 8443, '[http.tls]\ncert = "/x.crt"\n')
