"""Safe image loading and encoding.

`load_image` reads the header first and refuses images over `max_pixels` BEFORE decoding (no
decompression bombs), then decodes fully so that truncated files fail here and not later.

Conversions (defined, never silent guesses):
- greyscale (L, 1), palette (P), CMYK, YCbCr, LAB, HSV: converted to RGB 8-bit.
- 16-bit and 32-bit integer greyscale (I;16*, I): scaled to 8 bits (value * 255 / 65535) then RGB.
- 32-bit float greyscale (F): values are taken to be in [0, 1] when the maximum is <= 1, else 0..255.
- alpha (RGBA, LA, PA, P with transparency): the RGB part is returned in `rgb` and the alpha plane,
  8-bit, in `alpha`; callers that write the image back reattach it with `LoadedImage.with_alpha`.

Bounded reading (`working_pixels`): readers that only need a view of the image (verification: the
watermark detector and the perceptual hash) pass a pixel budget; a larger image is then decoded at a
reduced scale where the format allows it (JPEG: `Image.draft`, the decoder's 1/2 to 1/8 DCT scaling)
and reduced by area (`Image.resize` with BOX and `reducing_gap`, which reduces by an integer factor
first) to at most that many pixels, before the conversions above, so that no full-size float or
converted copy is ever made. `LoadedImage.file_size` keeps the file's own size.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from genguard.guard.errors import ImageInputError

DEFAULT_MAX_PIXELS = 50_000_000
# Modes Pillow reduces by area as they are (P and 1 it would only sample: converted first)
_REDUCIBLE_MODES = frozenset(("L", "LA", "RGB", "RGBA", "I", "F"))
MIN_SIDE = 1

UInt8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class LoadedImage:
    """A decoded image. rgb: (H, W, 3) uint8. alpha: (H, W) uint8 or None.

    mode: the file's PIL mode (e.g. "RGB", "I;16", "P"). format: the file's format (e.g. "PNG"), or
    None when PIL could not tell.
    """

    rgb: UInt8
    alpha: UInt8 | None
    mode: str
    format: str | None
    source_size: tuple[int, int] | None = None  # the file's (width, height) when it was reduced

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of `rgb`."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def file_size(self) -> tuple[int, int]:
        """(width, height) of the file: `size` unless a `working_pixels` budget reduced it."""
        return self.source_size if self.source_size is not None else self.size

    @property
    def reduced(self) -> bool:
        return self.source_size is not None

    def with_alpha(self, rgb: UInt8) -> UInt8:
        """`rgb` (same size) with this image's alpha reattached when it had one."""
        if self.alpha is None:
            return rgb
        if rgb.shape[:2] != self.alpha.shape:
            raise ImageInputError(
                f"rgb: expected size {self.alpha.shape[1]}x{self.alpha.shape[0]} to match the alpha plane, "
                f"found {rgb.shape[1]}x{rgb.shape[0]}"
            )
        return np.dstack([rgb, self.alpha])


def load_image(
    source: str | Path | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, working_pixels: int | None = None
) -> LoadedImage:
    """Decode an image file or bytes into 8-bit RGB (+ alpha), refusing anything unsafe or broken.

    `working_pixels`: at most this many pixels are returned (see the module docstring); None: full size.
    """
    if working_pixels is not None and working_pixels < 1:
        raise ImageInputError(f"working_pixels: expected a positive number of pixels, found {working_pixels}")
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageInputError(f"{name}: no such file") from None
        except IsADirectoryError:
            raise ImageInputError(f"{name}: expected an image file, found a directory") from None
        except OSError as error:
            raise ImageInputError(f"{name}: cannot read ({error.strerror})") from None
    if not data:
        raise ImageInputError(f"{name}: empty file")

    # PIL's own bomb check (warns at Image.MAX_IMAGE_PIXELS, raises at twice that) runs in the header
    # read too; ours is exact and also comes before any pixel is decoded.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))  # lazy: reads the header only
        except UnidentifiedImageError:
            raise ImageInputError(f"{name}: not a recognised image format") from None
        except (OSError, ValueError, SyntaxError) as error:
            raise ImageInputError(f"{name}: unreadable image header ({error})") from None
        except Image.DecompressionBombError as error:  # PIL's own limit, also from the header alone
            raise ImageInputError(
                f"{name}: expected at most {max_pixels} pixels, found more ({error}; refused before decoding)"
            ) from None
        width, height = image.size
        if width * height > max_pixels:
            raise ImageInputError(
                f"{name}: expected at most {max_pixels} pixels, found {width}x{height} = {width * height} "
                "(refused before decoding)"
            )
        if width < MIN_SIDE or height < MIN_SIDE:
            raise ImageInputError(f"{name}: expected a non-empty image, found {width}x{height}")
        target = _working_size(width, height, working_pixels)
        try:
            if target is not None:
                image.draft(image.mode, target)  # JPEG: decode at 1/2..1/8 scale, still >= target
            image.load()
        except (OSError, ValueError, SyntaxError, EOFError) as error:
            raise ImageInputError(f"{name}: truncated or corrupt image data ({error})") from None
    mode, file_format = image.mode, image.format
    view: Image.Image = image if target is None else _reduce(image, target, name)
    rgb, alpha = _to_rgb8(view, name)
    return LoadedImage(
        rgb=rgb,
        alpha=alpha,
        mode=mode,
        format=file_format,
        source_size=(width, height) if target is not None else None,
    )


def _working_size(width: int, height: int, working_pixels: int | None) -> tuple[int, int] | None:
    """The size to reduce to (aspect kept, at most `working_pixels`), None when it fits already."""
    if working_pixels is None or width * height <= working_pixels:
        return None
    scale = (working_pixels / (width * height)) ** 0.5
    w, h = max(1, int(width * scale)), max(1, int(height * scale))
    while w * h > working_pixels:  # float rounding
        w, h = max(1, w - (w >= h)), max(1, h - (h > w))
    return w, h


def _reduce(image: Image.Image, size: tuple[int, int], name: str) -> Image.Image:
    """`image` reduced by area to `size`, in its own mode where Pillow averages it (else converted to
    8-bit RGB(A) first; 16-bit greyscale to 32-bit, whose values `_to_rgb8` scales as before)."""
    if image.mode.startswith("I;16"):
        image = image.convert("I")
    elif image.mode not in _REDUCIBLE_MODES:
        has_alpha = "A" in image.getbands() or "transparency" in image.info
        try:
            image = image.convert("RGBA" if has_alpha else "RGB")
        except (ValueError, OSError) as error:
            raise ImageInputError(f"{name}: unsupported image mode {image.mode!r} ({error})") from None
    if image.size == size:
        return image
    return image.resize(size, Image.Resampling.BOX, reducing_gap=2.0)


def _to_rgb8(image: Image.Image, name: str) -> tuple[UInt8, UInt8 | None]:
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        # round(v * 255 / 65535) = round(v / 257) = (v + 128) // 257 (no ties: 257 is odd), clipped,
        # in 32-bit integers: no float copy of the image
        wide = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        wide += 128
        wide //= 257
        grey = wide.astype(np.uint8)
        return np.dstack([grey] * 3), None
    if mode == "F":
        values = np.asarray(image).astype(np.float64)
        if not np.all(np.isfinite(values)):
            raise ImageInputError(f"{name}: expected finite pixel values, found NaN or infinity")
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        grey = np.clip(np.round(values * scale), 0, 255).astype(np.uint8)
        return np.dstack([grey] * 3), None
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    if has_alpha:
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    try:
        rgb = np.asarray(image.convert("RGB"))
    except (ValueError, OSError) as error:
        raise ImageInputError(f"{name}: unsupported image mode {mode!r} ({error})") from None
    return rgb, None


# zlib level of the PNGs genguard writes. PNG is lossless at every level; PIL's default, 6, took 13 ms
# against 4 ms at level 1 for a 256 px photograph and 49 against 16 ms at 512 px (6 photographs) for
# files 7% to 10% smaller: a large share of the governance time per image (bench/generate.py).
PNG_COMPRESS_LEVEL = 1


def encode_image(array: UInt8, format: Literal["png", "jpeg", "webp"] = "png", quality: int = 95) -> bytes:
    """Encode a uint8 array of shape (H, W), (H, W, 3) or (H, W, 4). JPEG drops alpha (it has none)."""
    if not isinstance(array, np.ndarray) or array.dtype != np.uint8:
        found = array.dtype if isinstance(array, np.ndarray) else type(array).__name__
        raise ImageInputError(f"array: expected a uint8 numpy array, found {found}")
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(f"array: expected shape (H, W), (H, W, 3) or (H, W, 4), found {array.shape}")
    if format not in ("png", "jpeg", "webp"):
        raise ImageInputError(f"format: expected 'png', 'jpeg' or 'webp', found {format!r}")
    if not 1 <= quality <= 100:
        raise ImageInputError(f"quality: expected 1..100, found {quality}")
    image = Image.fromarray(array)
    if format == "jpeg" and image.mode == "RGBA":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    if format == "png":
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        image.save(buffer, format=format.upper(), quality=quality)
    return buffer.getvalue()
