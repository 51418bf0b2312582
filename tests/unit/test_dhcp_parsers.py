"""dnsmasq lease counting, driven by lease files in tests/fixtures/collectors/clients/dhcp/ (see SOURCES.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.collectors.dhcp import (
    DEFAULT_LEASE_FILES,
    LeaseFileError,
    count_leases,
    parse_dnsmasq_leases,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures/collectors/clients/dhcp"
NOW = 1_700_000_000.0


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param("several.leases", 3, id="several-v4-v6"),
        pytest.param("openwisp_irregular.leases", 1, id="openwisp-irregular"),
        pytest.param("all_expired.leases", 0, id="all-expired"),
        pytest.param("empty.leases", 0, id="empty"),
        pytest.param("only_duid.leases", 0, id="only-duid"),
        pytest.param("malformed.leases", 1, id="malformed-lines-skipped"),
        pytest.param("truncated.leases", 2, id="truncated-mid-line"),
    ],
)
def test_parse_dnsmasq_leases(name: str, expected: int) -> None:
    assert parse_dnsmasq_leases(fixture(name), NOW) == expected


def test_expiry_boundaries() -> None:
    line = "{} 00:00:5e:00:53:01 192.0.2.5 * *\n"
    assert parse_dnsmasq_leases(line.format(1_700_000_000), NOW) == 0  # expires now: over
    assert parse_dnsmasq_leases(line.format(1_700_000_001), NOW) == 1
    assert parse_dnsmasq_leases(line.format(0), NOW) == 1  # 0 never expires
    assert parse_dnsmasq_leases(line.format(0), 1e12) == 1


def test_clock_moves_leases_out() -> None:
    text = fixture("several.leases")
    assert parse_dnsmasq_leases(text, 1_400_000_000) == 7  # every lease line active
    assert parse_dnsmasq_leases(text, 2_000_000_000) == 1  # only the infinite one left


@given(st.text(), st.floats(allow_nan=False))
def test_parse_never_raises(text: str, now: float) -> None:
    assert parse_dnsmasq_leases(text, now) >= 0


def test_default_lease_files() -> None:
    assert DEFAULT_LEASE_FILES == ("/tmp/dhcp.leases", "/var/lib/misc/dnsmasq.leases")


def test_count_leases_reads_first_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "dhcp.leases"
    second = tmp_path / "dnsmasq.leases"
    third = tmp_path / "other.leases"
    second.write_text(fixture("several.leases"))
    third.write_text(fixture("empty.leases"))
    assert count_leases([missing, second, third], NOW) == 3


def test_count_leases_none_when_no_file_exists(tmp_path: Path) -> None:
    paths = [tmp_path / "a.leases", tmp_path / "not-a-dir" / "b.leases"]
    (tmp_path / "not-a-dir").write_text("")  # a file where a directory should be
    assert count_leases(paths, NOW) is None
    assert count_leases([], NOW) is None


def test_count_leases_unreadable_file_names_the_path(tmp_path: Path) -> None:
    unreadable = tmp_path / "dhcp.leases"
    unreadable.mkdir()  # exists, cannot be read as a file (works as root too)
    fallback = tmp_path / "dnsmasq.leases"
    fallback.write_text(fixture("several.leases"))
    with pytest.raises(LeaseFileError, match=str(unreadable)) as info:
        count_leases([unreadable, fallback], NOW)
    assert isinstance(info.value, OSError)
