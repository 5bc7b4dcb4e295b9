"""genguard.guard.phash computes imagehash's pHash bit for bit, without importing scipy."""

from __future__ import annotations

import subprocess
import sys

import imagehash
import numpy as np
import pytest
from PIL import Image

from genguard.guard.phash import hamming, perceptual_hash, to_signed64, to_unsigned64
from tests._photos import photographs


def _reference(image: np.ndarray) -> int:
    return int(str(imagehash.phash(Image.fromarray(image), hash_size=8)), 16)


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    images = [*photographs(512).values(), *photographs(96).values()]
    images += [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(100, 80), (33, 77), (300, 300)]]
    images += [np.full((40, 50, 3), value, np.uint8) for value in (0, 17, 200, 255)]  # flat: ties at zero
    for _ in range(20):  # smooth, like the abstract images of untrained models
        coarse = rng.integers(0, 256, (int(rng.integers(2, 9)), int(rng.integers(2, 9)), 3), dtype=np.uint8)
        images.append(np.asarray(Image.fromarray(coarse).resize((256, 256), Image.Resampling.BICUBIC)))
    half = np.zeros((128, 128, 3), np.uint8)
    half[:, :37] = 180
    images.append(half)
    return images


def test_same_bits_as_imagehash() -> None:
    images = _images()
    assert [perceptual_hash(image) for image in images] == [_reference(image) for image in images]


def test_pil_and_array_give_the_same_hash_and_near_copies_stay_near() -> None:
    photo = photographs(512)["astronaut"]
    assert perceptual_hash(Image.fromarray(photo)) == perceptual_hash(photo)
    smaller = np.asarray(Image.fromarray(photo).resize((384, 384), Image.Resampling.BILINEAR))
    other = photographs(512)["coffee"]
    assert hamming(perceptual_hash(photo), perceptual_hash(smaller)) <= 4
    assert hamming(perceptual_hash(photo), perceptual_hash(other)) > 16


@pytest.mark.parametrize("value", [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1])
def test_signed_and_unsigned_readings_round_trip(value: int) -> None:
    signed = to_signed64(value)
    assert -(1 << 63) <= signed < 1 << 63 and to_unsigned64(signed) == value
    assert hamming(signed, value) == 0 and hamming(value, value ^ 0b101) == 2


def test_importing_it_does_not_import_scipy() -> None:
    code = "import sys, genguard.guard.phash; print('scipy' in sys.modules)"
    assert (
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.strip()
        == "False"
    )
