"""Watermarks: the robust pixel watermark (`pixel`) and, separately, the latent watermark (`latent`)."""

from guard.watermark.pixel import ALGORITHM, PixelDetection, PixelWatermarker, Watermarker, detect, embed

__all__ = ["ALGORITHM", "PixelDetection", "PixelWatermarker", "Watermarker", "detect", "embed"]
