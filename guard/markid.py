"""The one printed form of a mark id, and the forms accepted on input.

A mark id is a 64-bit unsigned integer (the pixel watermark's payload, the latent watermark's seed
material, the audit record's `mark_id`). Everywhere genguard shows one — text, `--json`, `audit show`,
the C2PA soft-binding value of new manifests — it is `0x` and 16 lower-case hex digits
(`0x9e3779b97f4a7c15`): fixed width, unambiguous, and a string in JSON (a 64-bit number does not survive
JSON readers that use doubles).

Accepted on input (`parse_mark_id`): that form (any case, `0X`), decimal (`11400714819323198485`, as
older outputs and manifests wrote it), the bare 16 hex digits older `verify` / `generate` printed when
they contain a letter, and the older `12345 (0x0000000000003039)` when both halves agree. Sixteen decimal
digits alone read both as hex and as decimal: refused, naming both readings.
"""

from __future__ import annotations

import re

from genguard.guard.errors import BadInputError

MARK_ID_BITS = 64
_CANONICAL = re.compile(r"0[xX]([0-9a-fA-F]{1,16})")
_BARE_HEX = re.compile(r"[0-9a-fA-F]{16}")
_DECIMAL = re.compile(r"[0-9]{1,20}")
_BOTH = re.compile(r"([0-9]{1,20})\s*\(\s*(0[xX][0-9a-fA-F]{1,16})\s*\)")


def format_mark_id(mark_id: int) -> str:
    """`0x` + 16 lower-case hex digits."""
    if isinstance(mark_id, bool) or not isinstance(mark_id, int) or not 0 <= mark_id < 1 << MARK_ID_BITS:
        raise BadInputError(f"mark_id: expected an integer in 0 .. 2**64-1, found {mark_id!r}")
    return f"0x{mark_id:016x}"


def format_optional_mark_id(mark_id: int | None) -> str | None:
    """`format_mark_id`, with None for no mark."""
    return None if mark_id is None else format_mark_id(mark_id)


def parse_mark_id(value: str | int, where: str = "mark id") -> int:
    """A mark id from any accepted form (see the module docstring); BadInputError naming `where`."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _in_range(value, where, repr(value))
    if not isinstance(value, str):
        raise BadInputError(f"{where}: expected a mark id (0x + 16 hex digits), found {type(value).__name__}")
    text = value.strip().replace("_", "")
    if match := _CANONICAL.fullmatch(text):
        return int(match.group(1), 16)
    if match := _BOTH.fullmatch(text):
        decimal, hexadecimal = int(match.group(1)), int(match.group(2), 16)
        if decimal != hexadecimal:
            raise BadInputError(
                f"{where}: expected the decimal and hex halves to agree, found {decimal} and {match.group(2)}"
            )
        return _in_range(decimal, where, value)
    if _BARE_HEX.fullmatch(text) and not text.isdigit():
        return int(text, 16)
    if _DECIMAL.fullmatch(text):
        if len(text) == 16:
            raise BadInputError(
                f"{where}: expected an unambiguous mark id, found {value!r}, which reads as "
                f"0x{text.lower()} (hex) or {format_mark_id(int(text))} (decimal): write the one meant in the 0x form"
            )
        return _in_range(int(text), where, value)
    raise BadInputError(
        f"{where}: expected 0x and up to 16 hex digits (0x9e3779b97f4a7c15) or a decimal integer, found {value!r}"
    )


def read_mark_id(value: object) -> int | None:
    """`parse_mark_id` for untrusted content (a manifest's soft binding): None unless an accepted form."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    if value.isascii() and value.isdigit():  # manifests before the 0x form wrote decimal, any width
        number = int(value)
        return number if number < 1 << MARK_ID_BITS else None
    try:
        return parse_mark_id(value)
    except BadInputError:
        return None


def _in_range(number: int, where: str, shown: str) -> int:
    if not 0 <= number < 1 << MARK_ID_BITS:
        raise BadInputError(f"{where}: expected an integer in 0 .. 2**64-1, found {shown}")
    return number


__all__ = ["format_mark_id", "format_optional_mark_id", "parse_mark_id", "read_mark_id"]
