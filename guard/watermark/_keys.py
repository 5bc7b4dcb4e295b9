"""Sub-keys for the watermarks: HKDF-SHA256 (RFC 5869) with a domain label per use."""

from __future__ import annotations

import hashlib
import hmac

from genguard.guard.errors import BadInputError

_SALT = b"genguard.watermark.v1"


def hkdf_sha256(key: bytes, info: bytes, length: int, salt: bytes = _SALT) -> bytes:
    """RFC 5869 extract-then-expand. `info` is the domain label that separates the uses of one key."""
    if length > 255 * 32:
        raise ValueError(f"length: expected at most {255 * 32} bytes, found {length}")
    prk = hmac.new(salt, key, hashlib.sha256).digest()
    output = b""
    block = b""
    counter = 1
    while len(output) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        output += block
        counter += 1
    return output[:length]


def check_key(key: bytes) -> bytes:
    """A watermark key must be bytes of at least 16 (genguard.guard.config gives 32)."""
    if not isinstance(key, bytes | bytearray):
        raise BadInputError(f"key: expected bytes, found {type(key).__name__}")
    if len(key) < 16:
        raise BadInputError(f"key: expected at least 16 bytes, found {len(key)}")
    return bytes(key)
