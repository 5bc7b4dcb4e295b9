"""Watermarks: the robust pixel watermark (`pixel`) and, separately, the latent watermark (`latent`).

Mark ids are printed and parsed by `format_mark_id` / `parse_mark_id` (genguard.guard.markid): one form everywhere.
"""

from genguard.guard.markid import format_mark_id, parse_mark_id
from genguard.guard.watermark.pixel import (
    ALGORITHM,
    PixelDetection,
    PixelWatermarker,
    Watermarker,
    detect,
    embed,
)

__all__ = [
    "ALGORITHM",
    "PixelDetection",
    "PixelWatermarker",
    "Watermarker",
    "detect",
    "embed",
    "format_mark_id",
    "parse_mark_id",
]
