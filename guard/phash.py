"""Perceptual hash (DCT pHash from imagehash) as a 64-bit integer, and Hamming distance.

The audit store keeps the hash as a signed 64-bit integer (what SQL databases store natively);
`to_signed64` / `to_unsigned64` convert between the two readings of the same 64 bits.
"""

from __future__ import annotations

import imagehash
import numpy as np
from PIL import Image

_MASK64 = (1 << 64) - 1


def perceptual_hash(image: np.ndarray | Image.Image) -> int:
    """The 64-bit pHash of an RGB image, as an unsigned integer."""
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    bits = imagehash.phash(pil, hash_size=8).hash.flatten()
    value = 0
    for bit in bits:
        value = (value << 1) | int(bit)
    return value


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes (signed or unsigned)."""
    return ((a ^ b) & _MASK64).bit_count()


def to_signed64(value: int) -> int:
    value &= _MASK64
    return value - (1 << 64) if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value & _MASK64
