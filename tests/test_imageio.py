from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.guard.errors import ImageInputError
from genguard.guard.imageio import encode_image, load_image


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _gradient(h: int = 80, w: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 2, y * 3, (x + y)]).astype(np.uint8)


def test_rgb_png_round_trips_exactly() -> None:
    rgb = _gradient()
    loaded = load_image(encode_image(rgb, "png"))
    assert loaded.alpha is None and loaded.mode == "RGB" and loaded.format == "PNG"
    assert np.array_equal(loaded.rgb, rgb)
    assert loaded.size == (96, 80)


def test_file_path_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode_image(_gradient(), "png"))
    assert load_image(path).rgb.shape == (80, 96, 3)
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_grayscale_becomes_rgb() -> None:
    grey = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) % 256
    loaded = load_image(_png_bytes(Image.fromarray(grey.astype(np.uint8))))
    assert loaded.mode == "L" and loaded.rgb.shape == (64, 64, 3)
    assert np.array_equal(loaded.rgb[..., 1], grey.astype(np.uint8))


def test_sixteen_bit_is_scaled_to_eight() -> None:
    wide = np.full((70, 70), 65535, dtype=np.uint16)
    wide[:, :35] = 257 * 100
    loaded = load_image(_png_bytes(Image.fromarray(wide)))
    assert loaded.mode.startswith("I")
    assert loaded.rgb.dtype == np.uint8
    assert loaded.rgb[0, 0, 0] == 100 and loaded.rgb[0, 69, 2] == 255


def test_rgba_keeps_alpha_apart() -> None:
    rgba = np.dstack([_gradient(), np.full((80, 96), 77, np.uint8)])
    loaded = load_image(encode_image(rgba, "png"))
    assert loaded.alpha is not None and int(loaded.alpha[5, 5]) == 77
    assert np.array_equal(loaded.with_alpha(loaded.rgb), rgba)


def test_palette_with_transparency() -> None:
    image = Image.fromarray(_gradient()).convert("P")
    image.info["transparency"] = 0
    loaded = load_image(_png_bytes(image))
    assert loaded.mode == "P" and loaded.rgb.shape == (80, 96, 3) and loaded.alpha is not None


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16))


def test_huge_image_refused_from_its_header() -> None:
    # 60000 x 60000 would need 10 GB decoded; the refusal must come from the header alone
    with pytest.raises(ImageInputError, match="refused before decoding"):
        load_image(_png_header_only(60000, 60000))
    with pytest.raises(ImageInputError, match="at most 100 pixels"):
        load_image(encode_image(_gradient(), "png"), max_pixels=100)


def test_truncated_corrupt_and_random_bytes() -> None:
    data = encode_image(_gradient(200, 200), "jpeg", quality=90)
    with pytest.raises(ImageInputError, match="truncated or corrupt"):
        load_image(encode_image(_gradient(200, 200), "png")[:300])
    with pytest.raises(ImageInputError):
        load_image(data[: len(data) // 3])
    with pytest.raises(ImageInputError, match="not a recognised image format"):
        load_image(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ImageInputError, match="empty"):
        load_image(b"")


def test_encode_refuses_bad_arrays() -> None:
    with pytest.raises(ImageInputError, match="uint8"):
        encode_image(np.zeros((8, 8, 3), np.uint16))
    with pytest.raises(ImageInputError, match="shape"):
        encode_image(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(ImageInputError, match="format"):
        encode_image(np.zeros((8, 8, 3), np.uint8), "gif")  # type: ignore[arg-type]
    jpeg = encode_image(np.dstack([_gradient(), np.zeros((80, 96), np.uint8)]), "jpeg")
    assert load_image(jpeg).alpha is None
