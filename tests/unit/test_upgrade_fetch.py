"""Downloading a package (agent/remote/fetch.py) from a real HTTP server on loopback.

tests/upgrade_rig.py's server answers Range requests with 206 and can cut a transfer in the
middle (it closes the connection), ignore ranges, or send more than the manifest says.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from agent.protocol.upgrade import Package
from agent.remote.fetch import FetchError, download
from tests.upgrade_rig import Files, http_server, package_entry

BLOB = os.urandom(300_000)


def pkg(url: str, blob: bytes = BLOB, **over: object) -> Package:
    return Package.model_validate({**package_entry(url, blob), **over})


def test_a_whole_download_is_checked_and_renamed(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB})
    seen: list[int] = []
    with http_server(files) as base:
        out = download(
            pkg(f"{base}/p.sim"), tmp_path / "p.sim", progress=lambda n, _: seen.append(n)
        )
    assert out.read_bytes() == BLOB
    assert not (tmp_path / "p.sim.part").exists()
    assert seen[-1] == len(BLOB)
    assert "Range" not in files.requests[0]


def test_an_interrupted_download_resumes_with_a_range(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB}, cut_after={"/p.sim": 100_000}, cuts_left={"/p.sim": 1})
    dest = tmp_path / "p.sim"
    with http_server(files) as base:
        with pytest.raises(FetchError) as err:
            download(pkg(f"{base}/p.sim"), dest)
        assert err.value.resumable
        part = dest.with_name("p.sim.part")
        assert 0 < part.stat().st_size < len(BLOB)  # what arrived is kept
        have = part.stat().st_size
        out = download(pkg(f"{base}/p.sim"), dest)
    assert out.read_bytes() == BLOB
    assert files.requests[1]["Range"] == f"bytes={have}-"
    assert len(files.requests) == 2


def test_a_server_without_ranges_sends_it_all_again(tmp_path: Path) -> None:
    files = Files(
        blobs={"/p.sim": BLOB},
        cut_after={"/p.sim": 50_000},
        cuts_left={"/p.sim": 1},
        ignore_range=True,
    )
    dest = tmp_path / "p.sim"
    with http_server(files) as base:
        with pytest.raises(FetchError):
            download(pkg(f"{base}/p.sim"), dest)
        out = download(pkg(f"{base}/p.sim"), dest)
    assert out.read_bytes() == BLOB  # 200 to a ranged request: restarted, not appended


def test_a_wrong_hash_deletes_the_file(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB})
    dest = tmp_path / "p.sim"
    with http_server(files) as base, pytest.raises(FetchError, match="SHA-256") as err:
        download(pkg(f"{base}/p.sim", sha256=hashlib.sha256(b"other").hexdigest()), dest)
    assert not err.value.resumable
    assert not dest.exists()
    assert not dest.with_name("p.sim.part").exists()


def test_more_than_the_manifest_says_is_not_downloaded(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB})
    small = package_entry("http://x/p.sim", BLOB[:1000])
    with http_server(files) as base, pytest.raises(FetchError, match="manifest says 1000"):
        download(pkg(f"{base}/p.sim", size=small["size"]), tmp_path / "p.sim")
    assert not (tmp_path / "p.sim.part").exists()


def test_a_slow_download_stops_at_its_deadline_and_keeps_the_part(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB})
    ticks = iter(range(1000))
    with http_server(files) as base, pytest.raises(FetchError, match="not complete after") as err:
        download(
            pkg(f"{base}/p.sim"),
            tmp_path / "p.sim",
            deadline_s=2,
            clock=lambda: float(next(ticks)),
        )
    assert err.value.resumable


def test_http_errors_and_unreachable_servers(tmp_path: Path) -> None:
    files = Files()
    with http_server(files) as base:
        with pytest.raises(FetchError, match="HTTP 404") as err:
            download(pkg(f"{base}/missing.sim"), tmp_path / "p.sim")
        assert not err.value.resumable
    with pytest.raises(FetchError) as err:
        download(pkg(base + "/gone.sim"), tmp_path / "p.sim", timeout_s=2)
    assert err.value.resumable  # the server is down: try again later


def test_credentials_go_as_basic_auth_and_never_into_errors(tmp_path: Path) -> None:
    files = Files()
    with http_server(files) as base:
        url = base.replace("http://", "http://fleet:s3cret@") + "/missing.sim?token=t0k3n"
        with pytest.raises(FetchError) as err:
            download(pkg(url), tmp_path / "p.sim")
    assert "s3cret" not in str(err.value)
    assert "t0k3n" not in str(err.value)
    assert files.requests[0]["Authorization"] == "Basic ZmxlZXQ6czNjcmV0"  # fleet:s3cret
    assert files.requests[0]["path"] == "/missing.sim?token=t0k3n"


def test_credentials_never_follow_a_redirect_to_another_host(tmp_path: Path) -> None:
    files = Files(blobs={"/p.sim": BLOB})
    with http_server(files) as base:
        other = base.replace("127.0.0.1", "localhost")  # the same server, another host name
        files.redirects["/moved.sim"] = f"{other}/p.sim"
        url = base.replace("http://", "http://fleet:s3cret@") + "/moved.sim"
        out = download(pkg(url), tmp_path / "p.sim")
    assert out.read_bytes() == BLOB
    assert files.requests[0]["Authorization"] == "Basic ZmxlZXQ6czNjcmV0"
    assert "Authorization" not in files.requests[1]


def test_a_redirect_out_of_http_is_refused(tmp_path: Path) -> None:
    files = Files(redirects={"/p.sim": "ftp://files.example/p.sim"})
    with http_server(files) as base, pytest.raises(FetchError, match="non-HTTP") as err:
        download(pkg(f"{base}/p.sim"), tmp_path / "p.sim")
    assert not err.value.resumable
