"""Ed25519 signatures on desired configs and commands.

The format (docs/security.md has it for other tools):

- The signed bytes are ``b"titik-sig-v1\\n" + topic + b"\\n" + canonical(payload)``, where
  ``canonical`` is the JSON of the payload **without** its ``sig`` member, with sorted keys,
  no whitespace (``separators=(",", ":")``), UTF-8, non-ASCII left unescaped.
  Binding the topic means a command signed for one gateway or group cannot be replayed to
  another.
- The payload carries ``"sig": {"alg": "ed25519", "kid": "<16 hex>", "value": "<base64>"}``;
  ``kid`` is the first 16 hex digits of SHA-256 of the raw 32-byte public key.
- Trusted keys are written ``ed25519:<base64 of the raw 32-byte public key>``. Rotation:
  trust the old and the new key together, re-sign, then drop the old one.

``cryptography`` is imported only when a key is used, so gateways that do not verify
signatures do not pay its memory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

CONTEXT = b"titik-sig-v1"
KEY_PREFIX = "ed25519:"


class SignatureError(Exception):
    """Why a message's signature is not acceptable (missing, unknown key, forged...)."""


def canonical(payload: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in payload.items() if k != "sig"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_bytes(topic: str, payload: Mapping[str, Any]) -> bytes:
    return CONTEXT + b"\n" + topic.encode() + b"\n" + canonical(payload)


def key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def parse_public_key(text: str) -> bytes:
    """``ed25519:<base64>`` -> the raw 32-byte key; ValueError says what is wrong."""
    if not text.startswith(KEY_PREFIX):
        raise ValueError(f"must start with {KEY_PREFIX!r}")
    try:
        raw = base64.b64decode(text[len(KEY_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this is {len(raw)}")
    return raw


def public_key_text(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return KEY_PREFIX + base64.b64encode(raw).decode()


def sign(private_key: Ed25519PrivateKey, topic: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``payload`` with its ``sig`` member (replacing any old one)."""
    from cryptography.hazmat.primitives import serialization

    raw_pub = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    value = private_key.sign(signed_bytes(topic, payload))
    body = {k: v for k, v in payload.items() if k != "sig"}
    body["sig"] = {
        "alg": "ed25519",
        "kid": key_id(raw_pub),
        "value": base64.b64encode(value).decode(),
    }
    return body


class Verifier:
    """Checks signatures against the trusted keys (``security.trusted_keys``)."""

    def __init__(self, trusted_keys: Iterable[str]) -> None:
        self._raw = {key_id(raw): raw for raw in (parse_public_key(k) for k in trusted_keys)}
        self._keys: dict[str, Ed25519PublicKey] = {}

    def verify(self, topic: str, payload: Mapping[str, Any]) -> str:
        """Return the signing key's id, or raise SignatureError naming the reason."""
        sig = payload.get("sig")
        if sig is None:
            raise SignatureError("signature: missing, and this gateway requires one")
        if not isinstance(sig, Mapping) or sig.get("alg") != "ed25519":
            raise SignatureError("signature: must be {alg: ed25519, kid, value}")
        kid, value = sig.get("kid"), sig.get("value")
        if not isinstance(kid, str) or kid not in self._raw:
            raise SignatureError(f"signature: key {kid!r} is not trusted by this gateway")
        try:
            raw_sig = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise SignatureError("signature: value is not valid base64") from None
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        key = self._keys.get(kid)
        if key is None:
            key = self._keys[kid] = Ed25519PublicKey.from_public_bytes(self._raw[kid])
        try:
            key.verify(raw_sig, signed_bytes(topic, payload))
        except InvalidSignature:
            raise SignatureError(
                "signature: does not match the message (forged or altered)"
            ) from None
        return kid
