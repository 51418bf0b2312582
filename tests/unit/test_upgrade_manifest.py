"""The upgrade manifest (agent/protocol/upgrade.py): signature first, shape, versions, fuzzing.

Real Ed25519 keys (cryptography), the same signing code as configs and commands.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.protocol.signing import Verifier, public_key_text, sign
from agent.protocol.upgrade import (
    MANIFEST_CONTEXT,
    MAX_PACKAGE_BYTES,
    Manifest,
    UpgradeRefused,
    check_versions,
    parse_args,
    parse_version,
    redact_url,
    verify_manifest,
)
from tests.upgrade_rig import package_entry, signed_manifest

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
VERIFIER = Verifier([public_key_text(KEY.public_key())])
BLOB = b"package bytes"
PKGS = [
    package_entry("https://dl.example/titik-agent_0.2.0_arm64.deb", BLOB, "deb", "arm64"),
    package_entry("https://dl.example/titik-agent_0.2.0_all.ipk", BLOB, "ipk", "all"),
]


def manifest(version: str = "0.2.0", min_from: str = "0.1.0") -> dict[str, Any]:
    return signed_manifest(KEY, version, PKGS, min_from)


def test_a_signed_manifest_verifies_and_names_its_key() -> None:
    m, kid = verify_manifest(manifest(), VERIFIER)
    assert m.version == "0.2.0"
    assert kid == manifest()["sig"]["kid"]
    assert m.package_for("deb", "arm64").format == "deb"
    assert m.package_for("ipk", "aarch64_cortex-a53").arch == "all"  # 'all' fits any


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.update(version="0.3.0"), "does not match"),
        (lambda m: m["packages"][0].update(url="https://evil.example/x.deb"), "does not match"),
        (lambda m: m["packages"][0].update(size=1), "does not match"),
        (lambda m: m.pop("sig"), "signature: missing"),
    ],
)
def test_any_change_after_signing_is_refused(change: Any, why: str) -> None:
    m = manifest()
    change(m)
    with pytest.raises(UpgradeRefused, match=why):
        verify_manifest(m, VERIFIER)


def test_an_untrusted_key_is_refused() -> None:
    with pytest.raises(UpgradeRefused, match="not trusted"):
        verify_manifest(signed_manifest(OTHER, "0.2.0", PKGS), VERIFIER)


def test_without_trusted_keys_every_upgrade_is_refused() -> None:
    with pytest.raises(UpgradeRefused, match="trusts no keys"):
        verify_manifest(manifest(), None)


def test_a_command_signature_is_not_a_manifest_signature() -> None:
    """A manifest signs a fixed context, a command its topic: one cannot pass as the other."""
    body = {k: v for k, v in manifest().items() if k != "sig"}
    as_command = sign(KEY, "titik/gw/gw-1/cmd", body)
    with pytest.raises(UpgradeRefused, match="does not match"):
        verify_manifest(as_command, VERIFIER)
    VERIFIER.verify(MANIFEST_CONTEXT, manifest())  # the manifest's own context verifies


def test_the_signature_is_checked_before_the_shape() -> None:
    """Garbage without a valid signature is refused for its signature, not parsed."""
    with pytest.raises(UpgradeRefused, match="signature"):
        verify_manifest({"version": [1] * 10_000}, VERIFIER)


@pytest.mark.parametrize(
    ("packages", "where"),
    [
        ([{**PKGS[0], "url": "file:///etc/shadow"}], "packages.0.url"),
        ([{**PKGS[0], "url": "ftp://x/y"}], "packages.0.url"),
        ([{**PKGS[0], "size": MAX_PACKAGE_BYTES + 1}], "packages.0.size"),
        ([{**PKGS[0], "size": 0}], "packages.0.size"),
        ([{**PKGS[0], "sha256": "ABC"}], "packages.0.sha256"),
        ([{**PKGS[0], "format": "rpm"}], "packages.0.format"),
        ([{**PKGS[0], "arch": "arm 64"}], "packages.0.arch"),
        ([{**PKGS[0], "extra": 1}], "packages.0.extra"),
        ([], "packages"),
    ],
)
def test_a_bad_manifest_names_the_key(packages: list[dict[str, Any]], where: str) -> None:
    with pytest.raises(UpgradeRefused, match=re.escape(f"manifest.{where}:")):
        verify_manifest(signed_manifest(KEY, "0.2.0", packages), VERIFIER)


def test_no_package_for_this_gateway_says_what_there_is() -> None:
    m, _ = verify_manifest(manifest(), VERIFIER)
    with pytest.raises(UpgradeRefused, match=r"no package for apk/x86_64 \(it has deb/arm64"):
        m.package_for("apk", "x86_64")


@pytest.mark.parametrize(
    ("version", "min_from", "running", "why"),
    [
        ("0.2.0", "0.1.0", "0.3.0", "older than the running 0.3.0; downgrades are refused"),
        ("0.2.0", "0.1.0", "0.2.0", "0.2.0 is running already"),
        ("0.2.0", "0.1.5", "0.1.4", "upgrades from 0.1.5 or later"),
        ("0.10.0", "0.1.0", "0.9.0", None),  # numbers, not text: 10 > 9
        ("1.0", "0.1.0", "0.9.9", None),
    ],
)
def test_versions(version: str, min_from: str, running: str, why: str | None) -> None:
    m = Manifest.model_validate({"version": version, "min_from": min_from, "packages": PKGS})
    if why is None:
        check_versions(m, running)
    else:
        with pytest.raises(UpgradeRefused, match=why):
            check_versions(m, running)


@pytest.mark.parametrize("bad", ["1", "01.2", "1.2.x", "1.2.3-1", " 1.2", "1..2", "1.2.3.4.5"])
def test_parse_version_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not a version"):
        parse_version(bad)


def test_redact_url_drops_credentials_and_query() -> None:
    url = "https://user:s3cret@dl.example:8443/pkg/a.deb?token=t0k3n#frag"
    shown = redact_url(url)
    assert shown == "https://dl.example:8443/pkg/a.deb"
    assert "s3cret" not in shown
    assert "t0k3n" not in shown


def test_args_bounds() -> None:
    with pytest.raises(UpgradeRefused, match=r"args\.health_timeout_s"):
        parse_args({"manifest": {}, "health_timeout_s": 1})
    with pytest.raises(UpgradeRefused, match=r"args\.health_timeout_s"):
        parse_args({"manifest": {}, "health_timeout_s": True})
    with pytest.raises(UpgradeRefused, match=r"args\.rollout\.percent"):
        parse_args({"manifest": {}, "rollout": {"id": "r1", "percent": 101}})
    with pytest.raises(UpgradeRefused, match=r"args\.other"):
        parse_args({"manifest": {}, "other": 1})
    with pytest.raises(UpgradeRefused, match=r"args\.manifest"):
        parse_args({})
    assert parse_args({"manifest": {}, "rollout": {"id": "r1", "percent": 5}}).rollout


# --- fuzzing: nothing but UpgradeRefused, whatever arrives ----------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["0.2.0", "1.0", "deb", "all", "https://x/y", "a" * 64]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=25,
)
package_like = st.fixed_dictionaries(
    {},
    optional={
        "format": json_values | st.sampled_from(["deb", "ipk", "apk", "sim"]),
        "arch": json_values,
        "url": json_values | st.sampled_from(["http://h/p", "https://u:p@h:99/p?q", "http://[::1"]),
        "size": json_values | st.integers(-1, MAX_PACKAGE_BYTES + 1),
        "sha256": json_values | st.just("0" * 64),
        "extra": json_values,
    },
)
manifest_like = st.fixed_dictionaries(
    {},
    optional={
        "version": json_values | st.sampled_from(["0.2.0", "99999.0", "1.2.3.4"]),
        "min_from": json_values | st.sampled_from(["0.1.0", "0.0"]),
        "packages": st.lists(package_like, max_size=3) | json_values,
        "sig": json_values,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=manifest_like | json_values)
def test_fuzz_unsigned_garbage_is_refused_for_its_signature(raw: Any) -> None:
    with pytest.raises(UpgradeRefused) as err:
        verify_manifest(raw, VERIFIER)
    assert str(err.value).startswith(("manifest signature", "args.manifest"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=manifest_like)
def test_fuzz_signed_garbage_is_parsed_or_refused_with_a_key(body: dict[str, Any]) -> None:
    """A trusted key signing nonsense: the parser must still only refuse, naming a key."""
    body = {k: v for k, v in body.items() if k != "sig"}
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        return  # not JSON: no signature could be made over it on the wire
    raw = sign(KEY, MANIFEST_CONTEXT, body)
    try:
        m, _ = verify_manifest(raw, VERIFIER)
    except UpgradeRefused as exc:
        refusal = str(exc)
    else:
        refusal = ""
    if refusal:
        assert refusal.startswith("manifest."), refusal
        return
    assert m.packages
    for p in m.packages:
        assert 0 < p.size <= MAX_PACKAGE_BYTES
        assert p.url.startswith(("http://", "https://"))
