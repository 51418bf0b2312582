"""The vendored web libraries are exactly the ones scripts/vendor-web's lock file records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_vendored_files_match_the_lock() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "vendor-web"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "4 packages match" in out.stdout


def test_each_library_keeps_its_licence() -> None:
    vendor = ROOT / "central" / "api" / "web" / "vendor"
    for pkg in ("leaflet", "leaflet.markercluster", "uplot", "swagger-ui-dist"):
        assert (vendor / pkg / "LICENSE").stat().st_size > 100, pkg
