"""Perspective tilts for the pixel watermark's detector: a homography fitted to local sync peaks.

A tilt (each corner of the image moved on its own) is no affine map: the tile's period changes across
the image, the fold of the whole image smears, and no single scale, angle or stretch undoes it. A
window of the image is smeared far less (the tilt's departure from the best affine map grows with the
square of the distance), so where a window's sync peak stands out, the mark there is found; the other
windows' peaks, looked for near that one, say how far the mark is off at each window's centre, and the
homography fitted to those shifts undoes most of the tilt. Repeated on the corrected plane, every
window's peak rises and the fit tightens. Where a strong tilt smears even single tiles, two climbs find
a start first: the map of a square around the strongest window (`climb_region`), then the whole plane's
corners (`climb_corners`). `pixel._perspective_candidates` runs the rounds and supplies the correlation:
this module knows homographies and windows, not the mark.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import numpy.typing as npt

Float32 = npt.NDArray[np.float32]
Float64 = npt.NDArray[np.float64]
# correlate(plane) -> the sync correlation's z-scores, (orientations, tile, tile)
Correlate = Callable[[Float32], Float64]


def affine_start(matrix: Float64, shape: tuple[int, int]) -> tuple[Float64, tuple[int, int]]:
    """The homography (rectified pixel -> image pixel) and canvas size of `pixel._undo_geometry`'s
    resampling by `matrix` (tile coordinates -> image pixels) of a plane of `shape`."""
    h, w = shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64).T
    mapped = np.linalg.inv(matrix) @ corners
    low = mapped.min(axis=1)
    size = np.ceil(mapped.max(axis=1) - low).astype(int)
    homography = np.eye(3)
    homography[:2, :2] = matrix
    homography[:2, 2] = matrix @ low
    return homography, (int(size[0]), int(size[1]))


def rectify(plane: Float32, homography: Float64, size: tuple[int, int]) -> Float32:
    """dst(u) = plane(homography u), on a canvas of `size` (width, height); zero outside the plane."""
    rectified: Float32 = cv2.warpPerspective(  # type: ignore[assignment]
        plane,
        homography,
        size,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return rectified


def local_linear(homography: Float64, point: Float64) -> Float64:
    """The 2 x 2 Jacobian of `homography` at `point` (rectified pixels)."""
    x = homography @ np.array([point[0], point[1], 1.0])
    mapped = x[:2] / x[2]
    return np.asarray((homography[:2, :2] - np.outer(mapped, homography[2, :2])) / x[2], dtype=np.float64)


def window_shifts(
    rectified: Float32, correlate: Correlate, window: int, stride: int, radius: int, min_z: float
) -> tuple[Float64, Float64, Float64]:
    """Where the sync peak of each window of `rectified` lies relative to the strongest peak (the whole
    plane's, or a window's where that stands out more).

    Windows of `window` pixels every `stride`; each window's correlation (in the strongest peak's
    orientation) is searched within `radius` pixels of that peak, to a sub-pixel position
    (a parabola through the peak and its neighbours on each axis). Returns the windows' centres
    (n x 2, x y), their shifts (n x 2, x y: the mark sits there as if the plane were moved by the
    shift) and their peaks' z-scores, windows below `min_z` left out."""
    h, w = rectified.shape
    tops = range(0, max(h - window, 0) + 1, stride)
    lefts = range(0, max(w - window, 0) + 1, stride)
    maps = {
        (top, left): correlate(rectified[top : top + window, left : left + window])
        for top in tops
        for left in lefts
    }
    # the reference: the whole plane's peak, or a window's where that stands out more (a tilt smears the
    # whole plane's, while a window near where the estimate is right keeps its own)
    whole = correlate(rectified)
    reference = max([whole, *maps.values()], key=lambda z_maps: float(z_maps.max()))
    orientation, dy, dx = np.unravel_index(int(np.argmax(reference)), reference.shape)
    tile = whole.shape[1]
    offsets = np.arange(-radius, radius + 1)
    rows = (dy + offsets) % tile
    columns = (dx + offsets) % tile
    centres, shifts, scores = [], [], []
    for (top, left), z_maps in maps.items():
        z_map = z_maps[orientation]
        near = z_map[np.ix_(rows, columns)]
        i, j = np.unravel_index(int(np.argmax(near)), near.shape)
        if near[i, j] < min_z:
            continue
        sub_y = _vertex(
            z_map[(rows[i] - 1) % tile, columns[j]], near[i, j], z_map[(rows[i] + 1) % tile, columns[j]]
        )
        sub_x = _vertex(
            z_map[rows[i], (columns[j] - 1) % tile], near[i, j], z_map[rows[i], (columns[j] + 1) % tile]
        )
        centres.append((left + window / 2, top + window / 2))
        shifts.append((offsets[j] + sub_x, offsets[i] + sub_y))
        scores.append(float(near[i, j]))
    return (
        np.array(centres, dtype=np.float64).reshape(-1, 2),
        np.array(shifts, dtype=np.float64).reshape(-1, 2),
        np.array(scores, dtype=np.float64),
    )


def corrected(homography: Float64, centres: Float64, shifts: Float64) -> Float64 | None:
    """`homography` composed with the map that moves the most centres by their shifts to within
    `_FIT_TOLERANCE` pixels (RANSAC, so that windows whose peak was the photo's do not pull the fit): a
    homography from `_HOMOGRAPHY_POINTS` centres on, an affine map from three, else None."""
    if len(centres) < 3:
        return None
    source = centres.astype(np.float32)
    target = (centres + shifts).astype(np.float32)
    correction: Float64 | None
    if len(centres) >= _HOMOGRAPHY_POINTS:
        found, _ = cv2.findHomography(source, target, cv2.RANSAC, _FIT_TOLERANCE)
        correction = None if found is None else np.asarray(found, dtype=np.float64)
    else:
        found, _ = cv2.estimateAffine2D(
            source, target, method=cv2.RANSAC, ransacReprojThreshold=_FIT_TOLERANCE
        )
        correction = (
            None if found is None else np.vstack([np.asarray(found, dtype=np.float64), [0.0, 0.0, 1.0]])
        )
    if correction is None or not np.all(np.isfinite(correction)):
        return None
    result = np.asarray(homography @ correction, dtype=np.float64)
    return result if np.all(np.isfinite(result)) and abs(result[2, 2]) > 1e-12 else None


# A homography (eight parameters) is fitted to the windows' shifts from this many windows on; fewer
# (three or more) fit an affine map
_HOMOGRAPHY_POINTS = 6
_FIT_TOLERANCE = 3.0  # pixels: a window whose shift the fit misses by more is an outlier


def _vertex(left: float, centre: float, right: float) -> float:
    curvature = left - 2 * centre + right
    return float(0.5 * (left - right) / curvature) if curvature < 0 else 0.0


# score(plane, at_full_resolution) -> the plane's sync peak z-score
Score = Callable[[Float32, bool], float]


def climb_region(
    half: Float32, centre: Float64, side: int, score: Score, steps: tuple[float, ...], sweeps: int
) -> tuple[float, Float64]:
    """The 2 x 2 map (tile -> image) whose resampling of the `side`-pixel square of `half` (the plane at
    half resolution) around `centre` (half-resolution pixels) has the strongest sync peak: each of its
    four entries moved by +-step in turn, for each of `steps`, while that raises the peak (at most
    `sweeps` sweeps a step). Returns the peak's z-score with the map."""
    corner = np.array([side / 2, side / 2])

    def evaluate(linear: Float64) -> float:
        affine = np.hstack([linear, (centre - linear @ corner)[:, None]])
        region: Float32 = cv2.warpAffine(  # type: ignore[assignment]
            half, affine, (side, side), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
        )
        return score(region, False)

    linear = np.eye(2)
    best = evaluate(linear)
    units = [np.eye(2)[:, [i]] @ np.eye(2)[[j]] for i in range(2) for j in range(2)]
    for step in steps:
        for _ in range(sweeps):
            moved = False
            for unit in units:
                for sign in (1.0, -1.0):
                    candidate = linear + sign * step * unit
                    value = evaluate(candidate)
                    if value > best:
                        best, linear, moved = value, candidate, True
                        break
            if not moved:
                break
    return best, linear


def climb_corners(
    plane: Float32,
    half: Float32,
    base: Float64,
    size: tuple[int, int],
    score: Score,
    half_steps: tuple[float, ...],
    full_steps: tuple[float, ...],
    sweeps: int,
) -> tuple[float, Float64]:
    """Climb the whole plane's sync peak from `base` (rectified -> image pixels, canvas `size`) by moving
    the images of the canvas's corners along `_MODES`: each step (image pixels; `half_steps` scored on
    `half`, the plane at half resolution, then `full_steps` on `plane`), +-step on each mode in turn
    while that raises the peak (at most `sweeps` sweeps a step). Returns the last peak with the
    homography."""
    offsets = np.zeros((4, 2))
    half_size = (max(size[0] // 2, 1), max(size[1] // 2, 1))
    to_half, from_half = np.diag([2.0, 2.0, 1.0]), np.diag([0.5, 0.5, 1.0])

    def evaluate(candidate: Float64, full: bool) -> float:
        homography = moved_corners(base, size, candidate)
        if full:
            return score(rectify(plane, homography, size), True)
        return score(rectify(half, from_half @ homography @ to_half, half_size), False)

    best = evaluate(offsets, not half_steps)
    for index, step in enumerate((*half_steps, *full_steps)):
        full = index >= len(half_steps)
        if half_steps and index == len(half_steps):
            best = evaluate(offsets, True)
        for _ in range(sweeps):
            moved = False
            for mode in _MODES:
                for sign in (1.0, -1.0):
                    candidate = offsets + sign * step * mode
                    value = evaluate(candidate, full)
                    if value > best:
                        best, offsets, moved = value, candidate, True
                        break
            if not moved:
                break
    return best, moved_corners(base, size, offsets)


def moved_corners(base: Float64, size: tuple[int, int], offsets: Float64) -> Float64:
    """`base` (rectified -> image) with the images of the canvas's four corners moved by `offsets`
    (4 x 2, image pixels: top-left, top-right, bottom-right, bottom-left)."""
    w, h = size
    canvas = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float64)
    mapped = np.hstack([canvas, np.ones((4, 1))]) @ base.T
    image = mapped[:, :2] / mapped[:, 2:] + offsets
    return np.asarray(
        cv2.getPerspectiveTransform(canvas.astype(np.float32), image.astype(np.float32)), dtype=np.float64
    )


# The corners' moves of `climb_corners` (top-left, top-right, bottom-right, bottom-left; x, y): along
# each axis a stretch (each corner moved by its own position on that axis), a shear (by its position on
# the other) and a twist (by the product of both: what no affine map does). A move of all four together
# is a shift, which the sync correlation finds by itself.
_SIDE_X = np.array([-1.0, 1.0, 1.0, -1.0])
_SIDE_Y = np.array([-1.0, -1.0, 1.0, 1.0])
_MODES = tuple(
    np.stack([pattern, np.zeros(4)], axis=1) for pattern in (_SIDE_X, _SIDE_Y, _SIDE_X * _SIDE_Y)
) + tuple(np.stack([np.zeros(4), pattern], axis=1) for pattern in (_SIDE_Y, _SIDE_X, _SIDE_X * _SIDE_Y))
