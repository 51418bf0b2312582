"""Central serving agent packages (``[http] releases_dir``, central/api/routes/releases.py):
a real uvicorn on loopback, and the agent's own downloader (agent/remote/fetch.py) resuming
a part file with a ``Range`` request against it."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from agent.protocol.upgrade import Package
from agent.remote.fetch import download
from central.api.routes.releases import releases_router
from tests.broker import free_port


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, bytes]]:
    rel = tmp_path / "releases"
    rel.mkdir()
    blob = bytes(range(256)) * 4096  # 1 MiB
    (rel / "titik-agent_0.2.0-1_arm64.deb").write_bytes(blob)
    (tmp_path / "secret.txt").write_text("not to be served")
    (rel / ".hidden").write_text("no")
    app = FastAPI()
    app.include_router(releases_router(rel))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)  # uvicorn offers no event for "listening"
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}", blob
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_agent_resumes_a_package_central_serves(
    served: tuple[str, bytes], tmp_path: Path
) -> None:
    base, blob = served
    url = f"{base}/releases/titik-agent_0.2.0-1_arm64.deb"
    pkg = Package(format="deb", arch="arm64", url=url, size=len(blob),
                  sha256=hashlib.sha256(blob).hexdigest())  # fmt: skip
    dest = tmp_path / "dl" / "titik-agent_0.2.0.deb"
    dest.parent.mkdir()
    half = len(blob) // 2
    (dest.parent / (dest.name + ".part")).write_bytes(blob[:half])  # an interrupted download
    seen: list[int] = []
    assert download(pkg, dest, progress=lambda have, size: seen.append(have)) == dest
    assert dest.read_bytes() == blob
    assert seen[0] > half  # it went on from the part, not from zero


def test_only_plain_files_of_the_directory_are_served(served: tuple[str, bytes]) -> None:
    import urllib.error
    import urllib.request

    base, _ = served
    for name in ("..%2Fsecret.txt", ".hidden", "nope.deb", "%2Fetc%2Fpasswd"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{base}/releases/{name}", timeout=5)  # noqa: S310
        assert err.value.code == 404, name
    req = urllib.request.Request(  # noqa: S310
        f"{base}/releases/titik-agent_0.2.0-1_arm64.deb", headers={"Range": "bytes=10-19"}
    )
    with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
        assert r.status == 206 and r.read() == bytes(range(10, 20))
