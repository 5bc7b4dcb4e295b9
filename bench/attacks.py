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


def quarter_turns(turns: int) -> Attack:
    """Rotate by `turns` x 90 degrees counterclockwise (the canvas turns with it)."""

    def attack(image: Array) -> Array:
        return np.ascontiguousarray(np.rot90(image, turns))

    return attack


def vflip(image: Array) -> Array:
    return np.ascontiguousarray(image[::-1])


def transpose(image: Array) -> Array:
    return np.ascontiguousarray(image.swapaxes(0, 1))


def straighten(degrees: float) -> Attack:
    """A phone's "straighten": rotate, crop the largest centred rectangle without corners, resize back."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        rotated = rotate(degrees)(image)
        t = np.radians(abs(degrees))
        # the centred w' x h' rectangle of the same aspect inside the rotated w x h one
        shrink = min(w / (w * np.cos(t) + h * np.sin(t)), h / (w * np.sin(t) + h * np.cos(t)))
        ch, cw = int(h * shrink), int(w * shrink)
        top, left = (h - ch) // 2, (w - cw) // 2
        return _resize(np.ascontiguousarray(rotated[top : top + ch, left : left + cw]), w, h)

    return attack


def stretch(width_factor: float, height_factor: float) -> Attack:
    """Scale width and height independently (an aspect-ratio change), keeping the new size."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        width, height = round(w * width_factor), round(h * height_factor)
        shrinking = width * height < w * h
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
        return cv2.resize(image, (width, height), interpolation=interpolation)  # type: ignore[return-value]

    return attack


def perspective(fraction: float, seed: int = 0) -> Attack:
    """Move each corner by up to `fraction` of the side, at random (seeded), same canvas."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        rng = np.random.default_rng(seed)
        source = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
        moved = source + (rng.uniform(-fraction, fraction, (4, 2)) * np.array([w, h])).astype(np.float32)
        matrix = cv2.getPerspectiveTransform(source, moved)
        return cv2.warpPerspective(image, matrix, (w, h), flags=cv2.INTER_LINEAR)  # type: ignore[return-value]

    return attack


def collage(position: int, scale: float = 0.5, seed: int = 0) -> Attack:
    """The image at `scale`, placed at one of four positions of a layout of its own size whose other
    cells hold unmarked detail (smoothed noise, seeded) on a light background."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        rng = np.random.default_rng(seed)
        noise = rng.normal(128.0, 60.0, (h, w, 3)).astype(np.float32)
        canvas: Array = np.clip(cv2.GaussianBlur(noise, (0, 0), 3.0) * 2.0 - 128.0, 0, 255).astype(np.uint8)
        small = _resize(image, round(w * scale), round(h * scale))
        sh, sw = small.shape[:2]
        top = 0 if position in (0, 1) else h - sh
        left = 0 if position in (0, 2) else w - sw
        canvas[top : top + sh, left : left + sw] = small
        return canvas

    return attack


def crop_at(fraction: float, row: float, column: float) -> Attack:
    """Crop to `fraction` of each side, its top-left corner at (row, column) of the free margin (0-1)."""

    def attack(image: Array) -> Array:
        h, w = image.shape[:2]
        ch, cw = round(h * fraction), round(w * fraction)
        top, left = round((h - ch) * row), round((w - cw) * column)
        return np.ascontiguousarray(image[top : top + ch, left : left + cw])

    return attack


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


# The geometric families of issue 20 (bench/watermark.py --geometry): every rotation, the eight symmetries
# of the square, straightening, independent scaling of width and height, perspective tilts, crops
# anywhere, the image as part of a layout, and the downscale / JPEG 10 / upscale chain.
GEOMETRIC_ATTACKS: dict[str, Attack] = {
    "rot90": quarter_turns(1),
    "rot180": quarter_turns(2),
    "rot270": quarter_turns(3),
    "vflip": vflip,
    "transpose": transpose,
    "rotate10": rotate(10.0),
    "rotate15": rotate(15.0),
    "rotate-33": rotate(-33.0),
    "rotate45": rotate(45.0),
    "rotate-72": rotate(-72.0),
    "rotate135": rotate(135.0),
    "straighten3": straighten(3.0),
    "straighten-7": straighten(-7.0),
    "straighten10": straighten(10.0),
    "width0.8": stretch(0.8, 1.0),
    "height0.6": stretch(1.0, 0.6),
    "width0.5+height2": stretch(0.5, 2.0),
    "width1.7+height1.2": stretch(1.7, 1.2),
    "perspective3%": perspective(0.03),
    "perspective5%": perspective(0.05, seed=1),
    "crop40%@topleft": crop_at(0.4, 0.0, 0.0),
    "crop40%@right": crop_at(0.4, 0.3, 1.0),
    "collage2x2@topright": collage(1),
    "collage2x2@bottomleft": collage(2, seed=1),
    "half+jpeg10+up": chain(rescale(0.5), jpeg(10), rescale(2.0)),
}


# Perspective tilts beyond the --geometry table's two (bench/watermark.py --tilts): each corner moved by
# up to 2-5 % of the side, five seeds each; a few combined with a rotation of a few degrees, and tilted
# copies saved as JPEG 85.
TILT_ATTACKS: dict[str, Attack] = {
    **{
        f"tilt{percent}%/s{seed}": perspective(percent / 100, seed)
        for percent in (2, 3, 4, 5)
        for seed in range(5)
    },
    "rotate3+tilt3%/s0": chain(rotate(3.0), perspective(0.03, 0)),
    "rotate-4+tilt3%/s1": chain(rotate(-4.0), perspective(0.03, 1)),
    "rotate5+tilt4%/s2": chain(rotate(5.0), perspective(0.04, 2)),
    "tilt4%/s0+jpeg85": chain(perspective(0.04, 0), jpeg(85)),
    "tilt4%/s3+jpeg85": chain(perspective(0.04, 3), jpeg(85)),
    "tilt3%/s4+jpeg85": chain(perspective(0.03, 4), jpeg(85)),
}
