"""The hash chain of the audit log: canonical JSON and entry hashes, as small pure functions.

An entry's hash is

    entry_hash = SHA-256(ENTRY_DOMAIN || prev_entry_hash || canonical_json(event))

where `prev_entry_hash` is the previous entry's 32-byte hash (`GENESIS_PREV`, 32 zero bytes, for
the first entry) and `event` is ``{"seq", "type", "time", "generation_id", "payload"}``.
The domain-separation prefix keeps an entry hash from ever colliding with another SHA-256 use
(RFC 6962's leaf/node prefixes serve the same purpose; the signed checkpoints hash with their own).

Canonical JSON follows RFC 8785 (JSON Canonicalization Scheme) with one deliberate difference:
- object keys sorted by their UTF-16 code units, no insignificant whitespace, UTF-8 output;
- strings escaped as JSON requires and nothing more (control characters as lower-case \\u00xx,
  exactly what CPython's C `encode_basestring` writes);
- floats written as ECMAScript's Number.prototype.toString does (shortest round-trip digits, so
  the same float always gives the same text in any language; 1.0 is written ``1``);
  NaN and infinities are rejected;
- integers are written exactly in decimal (RFC 8785 would round beyond 2**53; 64-bit perceptual
  hashes and mark ids must stay exact).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from json.encoder import encode_basestring
from typing import Any

from genguard.guard.errors import BadInputError

ENTRY_DOMAIN = b"genguard/audit-log/entry/v1\x00"
GENESIS_PREV = bytes(32)
HASH_SIZE = 32

_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def format_float(value: float) -> str:
    """ECMAScript Number::toString for a finite double (RFC 8785 section 3.2.2.3).

    Python's repr gives the shortest digits that round-trip, as ECMAScript does; only the
    placement of the decimal point and the exponent format differ, which this rewrites.
    """
    if not math.isfinite(value):
        raise BadInputError(f"canonical JSON: expected a finite number, found {value!r}")
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    assert isinstance(exponent, int)  # finite, so never "n"/"N"/"F"
    all_digits = "".join(map(str, digit_tuple))
    # value = 0.d1d2...dk * 10**n, as ECMAScript states it; trailing zeros are not digits
    n = exponent + len(all_digits)
    digits = all_digits.rstrip("0")
    k = len(digits)
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * -n + digits
    e = n - 1
    exp = ("+" if e >= 0 else "-") + str(abs(e))
    mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
    return sign + mantissa + "e" + exp


class RawJSON:
    """Text already in canonical JSON form, spliced verbatim (e.g. a stored canonical JSON column)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def _fast_float(value: float) -> str:
    text = repr(value)
    if value and "e" not in text and "n" not in text:  # plain decimal notation: the digits ECMAScript gives
        return text.removesuffix(".0")
    return format_float(value)


def number_json(value: Any) -> str:
    """The canonical text of a plain int or float (not bool, not a subclass); TypeError for anything
    else, BadInputError for NaN and infinities. For writers of fixed-shape documents."""
    kind = type(value)
    if kind is float:
        return _fast_float(value)
    if kind is int:
        return int.__repr__(value)
    raise TypeError(kind.__name__)


def string_json(value: Any) -> str:
    """The canonical text of a plain str (lone surrogates are caught when the text is encoded);
    TypeError for anything else. For writers of fixed-shape documents."""
    if type(value) is not str:
        raise TypeError(type(value).__name__)
    return encode_basestring(value)


def _encode(value: Any, out: list[str]) -> None:
    """Append the canonical text of `value` to `out`; raises TypeError/ValueError/BadInputError when it
    is not JSON (canonical_json then finds where, on the slow path)."""
    kind = type(value)
    if kind is str:
        out.append(encode_basestring(value))
    elif kind is RawJSON:
        out.append(value.text)
    elif kind is int:
        out.append(int.__repr__(value))
    elif kind is float:
        out.append(_fast_float(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Mapping):
        keys = sorted(value)
        if _ASTRAL.search("".join(keys)):
            keys.sort(key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        out.append("{")
        for position, key in enumerate(keys):
            out.append(("," if position else "") + encode_basestring(key) + ":")
            _encode(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _encode(item, out)
        out.append("]")
    elif isinstance(value, (str, int, float)):  # subclasses (e.g. StrEnum, IntEnum): their plain value
        _encode((str if isinstance(value, str) else float if isinstance(value, float) else int)(value), out)
    else:
        raise TypeError(type(value).__name__)


def _fault(value: Any, where: str) -> str | None:
    """The first reason `value` is not encodable, naming where it is (slow path, for messages)."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{where}: expected a finite number, found {value!r}"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{where}: expected valid Unicode text, found a lone surrogate"
        return None
    if value is None or isinstance(value, (bool, int, float)):
        return None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{where}: expected string keys, found {key!r}"
            found = _fault(key, f"{where} key") or _fault(item, f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(value, (list, tuple)):
        return next((f for i, v in enumerate(value) if (f := _fault(v, f"{where}[{i}]"))), None)
    return f"{where}: expected a JSON value, found {type(value).__name__}"


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


_C_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), default=_refuse
)
# Where CPython's encoder can differ from the canonical form: float reprs "1.0" / "1e-05" (ECMAScript
# writes "1" / "0.00001") and keys outside the BMP (UTF-16 order differs from code-point order).
# Matches inside strings are harmless: they only send the value down the slow path. (Astral keys are
# looked for only in text that is not ASCII: the character class made the search 5 times slower.)
_MAYBE_NOT_CANONICAL_FLOAT = re.compile("[0-9]\\.0(?![0-9])|[0-9]e[+-]")


def _c_encoded(value: Any) -> bytes | None:
    """The canonical bytes by CPython's C encoder when that is provably the same, else None.

    Proof: the text has no float or key form that differs, and it parses back equal to `value`
    (which rules out non-string keys, tuples and other values json would coerce silently).
    """
    try:
        text = _C_ENCODER.encode(value)
        if (
            _MAYBE_NOT_CANONICAL_FLOAT.search(text)
            or (not text.isascii() and _ASTRAL.search(text))
            or json.loads(text) != value
        ):
            return None
        return text.encode("utf-8")
    except (TypeError, ValueError, RecursionError):
        return None


def canonical_json(value: Any, where: str = "payload") -> bytes:
    """The canonical UTF-8 bytes of a JSON value (see the module docstring for the rules).

    `where` names the value in error messages, e.g. ``payload.scores[2]``.
    """
    fast = _c_encoded(value)
    if fast is not None:
        return fast
    out: list[str] = []
    try:
        _encode(value, out)
        return "".join(out).encode("utf-8")
    except (TypeError, ValueError, BadInputError, RecursionError):
        message = _fault(value, where)
        if message is None:
            raise
        raise BadInputError(message) from None


def format_time(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: fixed width, so text order is time order."""
    if moment.tzinfo is None:
        raise BadInputError("time: expected a timezone-aware datetime, found a naive one")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """The inverse of `format_time`."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def event_document(
    seq: int, event_type: str, time: str, generation_id: str | None, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """The JSON object an entry hash covers: position, type, time, link and payload."""
    return {"seq": seq, "type": event_type, "time": time, "generation_id": generation_id, "payload": payload}


def entry_hash(prev_hash: bytes, event_json: bytes) -> bytes:
    """SHA-256(ENTRY_DOMAIN || prev_hash || event_json); `prev_hash` must be 32 bytes."""
    if len(prev_hash) != HASH_SIZE:
        raise ValueError(f"prev_hash: expected {HASH_SIZE} bytes, found {len(prev_hash)}")
    return hashlib.sha256(ENTRY_DOMAIN + prev_hash + event_json).digest()


def _string_json(value: str, where: str) -> bytes:
    """canonical_json of a plain string, without the general encoder's proof (a string needs none)."""
    if type(value) is not str:
        return canonical_json(value, where)
    try:
        return encode_basestring(value).encode("utf-8")
    except UnicodeEncodeError:
        raise BadInputError(f"{where}: expected valid Unicode text, found a lone surrogate") from None


def flat_object_json(fields: Mapping[str, Any], where: str = "payload") -> bytes:
    """canonical_json of an object whose keys are ASCII and whose values are str, int, None or RawJSON.

    The shape of every domain row's payload: written directly, it costs a fraction of the general
    encoder. Any other object goes through `canonical_json` (same bytes, checked by the tests).
    """
    out: list[str] = []
    for key in sorted(fields):
        value = fields[key]
        kind = type(value)
        if not key.isascii():
            return canonical_json(fields, where)  # UTF-16 key order: the general encoder handles it
        if kind is str:
            text = encode_basestring(value)
        elif kind is RawJSON:
            text = value.text
        elif kind is int:
            text = int.__repr__(value)
        elif value is None:
            text = "null"
        else:
            return canonical_json(fields, where)
        out.append(f"{encode_basestring(key)}:{text}")
    try:
        return ("{" + ",".join(out) + "}").encode("utf-8")
    except UnicodeEncodeError:
        return canonical_json(fields, where)  # a lone surrogate: the general encoder names where


def event_json(seq: int, event_type: str, time: str, generation_id: str | None, payload_json: bytes) -> bytes:
    """canonical_json(event_document(...)) spliced around an already canonical payload.

    Equal to the long form byte for byte (the keys below are in canonical order); it saves
    encoding the payload twice on the write path and lets verify hash the stored payload bytes.
    """
    return b"".join(
        (
            b'{"generation_id":',
            b"null" if generation_id is None else _string_json(generation_id, "generation_id"),
            b',"payload":',
            payload_json,
            b',"seq":',
            str(int(seq)).encode("ascii"),
            b',"time":',
            _string_json(time, "time"),
            b',"type":',
            _string_json(event_type, "type"),
            b"}",
        )
    )
