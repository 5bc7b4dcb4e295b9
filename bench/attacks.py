"""Image attacks for the watermark bench and tests: one small function each, uint8 RGB in and out.

One copy, imported by bench/watermark.py and tests/test_pixel_watermark.py (via sys.path).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

Array = npt.NDArray[np.uint8]
Attack = Callable[[Array], Array]


def jpeg(quality: int) -> Attack:
    def attack(image: Array) -> Array:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=quality)  # PIL default: 4:2:0
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    return attack


def _resize(image: Array, width: int, height: int) -> Array:
    shrinking = width < image.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)  # type: ignore[return-value]


def rescale(factor: float) -> Attack:
    """Resize by `factor` and keep the new size."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        return _resize(image, round(w * factor), round(h * factor))

    return attack


def resize_back(factor: float) -> Attack:
    """Resize by `factor`, then back to the original size."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        return _resize(_resize(image, round(w * factor), round(h * factor)), w, h)

    return attack


def crop(fraction: float, resize: bool = False) -> Attack:
    """Centre crop to `fraction` of each side; optionally resized back to the original size."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        ch, cw = round(h * fraction), round(w * fraction)
        top, left = (h - ch) // 2, (w - cw) // 2
        cropped = np.ascontiguousarray(image[top : top + ch, left : left + cw])
        return _resize(cropped, w, h) if resize else cropped

    return attack


def blur(sigma: float) -> Attack:
    def attack(image: Array) -> Array:
        return cv2.GaussianBlur(image, (0, 0), sigma)  # type: ignore[return-value]

    return attack


def noise(sigma: float, seed: int = 0) -> Attack:
    """Additive Gaussian noise; `sigma` on the 0..1 scale (5/255 is sigma 5 levels)."""

    def attack(image: Array) -> Array:
        rng = np.random.default_rng(seed)
        noisy = image.astype(np.float32) + rng.normal(0.0, sigma * 255.0, image.shape).astype(np.float32)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)

    return attack


def brightness(factor: float) -> Attack:
    def attack(image: Array) -> Array:
        return np.clip(np.round(image.astype(np.float32) * factor), 0, 255).astype(np.uint8)

    return attack


def contrast(factor: float) -> Attack:
    """PIL ImageEnhance.Contrast semantics: blend with the mean grey level."""

    def attack(image: Array) -> Array:
        mean = float(np.asarray(Image.fromarray(image).convert("L")).mean())
        out = mean + (image.astype(np.float32) - mean) * factor
        return np.clip(np.round(out), 0, 255).astype(np.uint8)

    return attack


def rotate(degrees: float) -> Attack:
    """Rotate about the centre, same canvas, black corners."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
        return cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)  # type: ignore[return-value]

    return attack


def hflip(image: Array) -> Array:
    return np.ascontiguousarray(image[:, ::-1])


def chain(*attacks: Attack) -> Attack:
    def attack(image: Array) -> Array:
        for step in attacks:
            image = step(image)
        return image

    return attack


# name -> (attack, geometric). Geometric attacks change the pixel grid (scale, rotation, mirror aside).
ATTACKS: dict[str, tuple[Attack, bool]] = {
    "none": (lambda image: image, False),
    "jpeg90": (jpeg(90), False),
    "jpeg75": (jpeg(75), False),
    "jpeg50": (jpeg(50), False),
    "resize0.75": (resize_back(0.75), False),
    "resize0.5": (resize_back(0.5), False),
    "crop90": (crop(0.9), False),
    "crop75": (crop(0.75), False),
    "crop90+resize": (crop(0.9, resize=True), True),
    "crop75+resize": (crop(0.75, resize=True), True),
    "blur1": (blur(1.0), False),
    "blur2": (blur(2.0), False),
    "noise5": (noise(5 / 255), False),
    "noise10": (noise(10 / 255), False),
    "bright1.3": (brightness(1.3), False),
    "bright0.7": (brightness(0.7), False),
    "contrast0.7": (contrast(0.7), False),
    "rotate2": (rotate(2.0), True),
    "rotate5": (rotate(5.0), True),
    "hflip": (hflip, False),
    "resize0.75+jpeg75": (chain(rescale(0.75), jpeg(75)), True),
    "rescale0.83": (rescale(0.83), True),
}
