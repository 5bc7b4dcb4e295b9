"""Perceptual hash (the DCT pHash of imagehash 4.x, computed here) as a 64-bit integer, and Hamming distance.

The audit store keeps the hash as a signed 64-bit integer (what SQL databases store natively);
`to_signed64` / `to_unsigned64` convert between the two readings of the same 64 bits.

The hash is imagehash's `phash(image, hash_size=8)`, bit for bit (tested against it): grey levels,
resized to 32x32 with Lanczos, a 2-D DCT-II (scipy's unnormalised convention), the top-left 8x8
coefficients compared with their median. It is computed with numpy here because imagehash imports
scipy.fftpack on first use, which costs about half a second: more than the rest of `genguard verify`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import numpy.typing as npt
from PIL import Image

_MASK64 = (1 << 64) - 1
_HASH_SIDE = 8
_IMAGE_SIDE = 32  # hash side x imagehash's highfreq_factor 4


@lru_cache(maxsize=1)
def _dct_rows() -> npt.NDArray[np.float64]:
    """The first 8 rows of the unnormalised 32-point DCT-II matrix: 2 cos(pi k (2n + 1) / 2N)."""
    k = np.arange(_HASH_SIDE)[:, None]
    n = np.arange(_IMAGE_SIDE)[None, :]
    return 2.0 * np.cos(np.pi * k * (2 * n + 1) / (2 * _IMAGE_SIDE))


def perceptual_hash(image: np.ndarray | Image.Image) -> int:
    """The 64-bit pHash of an RGB image, as an unsigned integer (row-major, first bit most significant)."""
    pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    grey = pil.convert("L").resize((_IMAGE_SIDE, _IMAGE_SIDE), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    rows = _dct_rows()
    # The 8x8 lowest frequencies of the 2-D DCT. Rounded: in flat images the matrix product leaves
    # +-1e-11 where scipy's DCT gives exact zeros, and the sign of that noise would decide bits.
    low = np.round(rows @ pixels @ rows.T, 6)
    bits = (low > np.median(low)).flatten()
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
