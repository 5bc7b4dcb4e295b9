"""Watermarks: the seam (`base`: the `Watermarker` Protocol, `WatermarkDetection`, the registry keyed by
algorithm id), the robust pixel watermark (`pixel`) and, separately, the latent watermark (`latent`).

Importing this package registers the pixel watermark under its id (and the older ids it still reads).
Mark ids are printed and parsed by `format_mark_id` / `parse_mark_id` (genguard.guard.markid): one form everywhere.
"""

from genguard.guard.markid import format_mark_id, parse_mark_id
from genguard.guard.watermark.base import (
    UnknownWatermarkError,
    WatermarkDetection,
    Watermarker,
    recorded_watermarker,
    register_watermarker,
    registered_watermarkers,
    unregister_watermarker,
    watermarker_for,
)
from genguard.guard.watermark.pixel import (
    ALGORITHM,
    READS,
    PixelDetection,
    PixelWatermarker,
    detect,
    embed,
)

register_watermarker(PixelWatermarker(), reads=READS)

__all__ = [
    "ALGORITHM",
    "PixelDetection",
    "PixelWatermarker",
    "UnknownWatermarkError",
    "WatermarkDetection",
    "Watermarker",
    "detect",
    "embed",
    "format_mark_id",
    "parse_mark_id",
    "recorded_watermarker",
    "register_watermarker",
    "registered_watermarkers",
    "unregister_watermarker",
    "watermarker_for",
]
