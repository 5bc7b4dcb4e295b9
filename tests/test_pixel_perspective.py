"""Perspective tilts: the pixel watermark's homography search (`pixel._perspective_candidates`,
guard/watermark/_perspective.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from genguard.guard.watermark import _perspective, pixel
from tests._photos import photographs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import attacks

cv2.setNumThreads(1)
KEY = bytes(range(32))
MARK = 0xDEADBEEF_12345678


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    # not among the photographs the search's thresholds were chosen on (astronaut, camera, coffee,
    # immunohistochemistry, motorcycle)
    return photographs(512, ("rocket", "chelsea"))


@pytest.fixture(scope="module")
def marked_rocket(photos: dict[str, np.ndarray]) -> np.ndarray:
    return pixel.embed(photos["rocket"], MARK, KEY)


@pytest.mark.parametrize("tilt", ["tilt3%/s0", "tilt5%/s1", "tilt4%/s0+jpeg85", "rotate5+tilt4%/s2"])
def test_exact_id_on_tilted_copies(marked_rocket: np.ndarray, tilt: str) -> None:
    found = pixel.detect(attacks.TILT_ATTACKS[tilt](marked_rocket), KEY)
    assert found.marked and found.mark_id == MARK, (tilt, found)


def test_the_tilt_is_read_through_the_homography(
    marked_rocket: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the corners moved on their own: no rotation, scale or stretch of the affine search undoes it
    tilted = attacks.TILT_ATTACKS["tilt3%/s0"](marked_rocket)
    found = pixel.detect(tilted, KEY)
    assert found.mark_id == MARK
    assert found.scale == pytest.approx(1.0, abs=0.05) and found.angle == pytest.approx(0.0, abs=3.0)

    def nothing(*args: object) -> Iterator[tuple[pixel._Geometry, np.ndarray]]:
        return iter(())

    monkeypatch.setattr(pixel, "_perspective_candidates", nothing)
    assert pixel.detect(tilted, KEY).mark_id is None


def test_unmarked_tilted_photographs_are_not_marked(photos: dict[str, np.ndarray]) -> None:
    tilts = (
        attacks.perspective(0.03, 11),
        attacks.perspective(0.05, 12),
        attacks.chain(attacks.rotate(4.0), attacks.perspective(0.04, 13)),
    )
    for name, image in photos.items():
        for tilt in tilts:
            for key in (KEY, bytes(range(1, 33))):
                found = pixel.detect(tilt(image), key)
                assert not found.marked and found.mark_id is None, (name, found)


def test_unmarked_photographs_pay_only_the_windows(
    photos: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # the homography search runs only on evidence of a mark; the windows' peaks of these photographs
    # stay below it
    def refused(*args: object) -> tuple[float, np.ndarray]:
        raise AssertionError("the homography search ran on an unmarked photograph")

    monkeypatch.setattr(pixel, "_rounds", refused)
    for image in photos.values():
        for copy in (image, attacks.jpeg(75)(image)):
            assert not pixel.detect(copy, KEY).marked


def test_false_positive_bound_counts_the_perspective_reads() -> None:
    # every read decodes at most _DECODES_PER_READ lists; the perspective search adds two reads (the
    # colour reading and the luminance readings' sum) for each of its starts
    assert pixel._MAX_DECODES == pixel._DECODES_PER_READ * (
        pixel._IDENTITY_PLANES + pixel._SPECTRAL_ROTATIONS + 1 + 2 * pixel._PERSPECTIVE_READS
    )
    assert pixel._MAX_DECODES * pixel._LIST_SIZE * 2.0**-32 <= 1e-6


def _apply(homography: np.ndarray, points: np.ndarray) -> np.ndarray:
    mapped = np.hstack([points, np.ones((len(points), 1))]) @ homography.T
    return mapped[:, :2] / mapped[:, 2:]


def test_fit_of_window_shifts_recovers_a_homography_despite_outliers() -> None:
    truth = np.array([[1.02, 0.01, 3.0], [-0.015, 0.99, -2.0], [3e-5, -2e-5, 1.0]])
    ys, xs = np.mgrid[64:512:64, 64:512:64]
    centres = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    shifts = _apply(truth, centres) - centres
    rng = np.random.default_rng(3)
    outliers = rng.choice(len(centres), 8, replace=False)  # windows whose peak was the photo's
    shifts[outliers] = rng.uniform(-16, 16, (8, 2))
    base = np.eye(3)
    fitted = _perspective.corrected(base, centres, shifts)
    assert fitted is not None
    corners = np.array([[0.0, 0.0], [512.0, 0.0], [512.0, 512.0], [0.0, 512.0]])
    assert np.abs(_apply(fitted, corners) - _apply(truth, corners)).max() < 0.5
    assert _perspective.corrected(base, centres[:2], shifts[:2]) is None


def test_moved_corners_and_rectify_undo_a_known_tilt() -> None:
    rng = np.random.default_rng(5)
    plane = cv2.GaussianBlur(rng.normal(0, 1, (256, 256)).astype(np.float32), (0, 0), 2.0)
    base, size = _perspective.affine_start(np.eye(2), plane.shape)
    assert size == (256, 256) and np.allclose(base, np.eye(3))
    offsets = np.array([[3.0, -2.0], [-4.0, 1.0], [2.0, 3.0], [-1.0, -3.0]])
    tilt = _perspective.moved_corners(base, size, offsets)
    assert np.allclose(_perspective.moved_corners(base, size, np.zeros((4, 2))), base)
    tilted = cv2.warpPerspective(plane, tilt, size, flags=cv2.INTER_LINEAR)  # tilted(tilt p) = plane(p)
    restored = _perspective.rectify(tilted, tilt, size)
    inner = (slice(16, -16), slice(16, -16))
    assert np.abs(restored[inner] - plane[inner]).max() < 0.1 * np.abs(plane).max()
