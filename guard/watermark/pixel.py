"""The robust pixel watermark: a keyed, tiled luminance pattern carrying a 64-bit mark id.

How it works (DESIGN.md, "What a watermark prototype showed"):

- A 128x128 tile is defined in its own 2-D FFT over a mid band (0.05 to 0.16 cycles per pixel). The key
  (HKDF sub-key "genguard.pixel.v3/layout") shuffles the band's real dimensions (real and imaginary part of
  each coefficient): three dimensions go to each of the 306 coded bits of a rate-1/3 K=7 convolutional code
  over 64 id bits + a keyed CRC-32 (`_ecc`), with keyed signs; the rest (about a quarter) carry a fixed
  +-1 synchronisation pattern holding a quarter of the mark's energy (the geometric search lives on its
  peak).
- Embedding adds the tiled pattern to luminance, which alone is read (JPEG 4:2:0 keeps it at full
  resolution), spread over R, G and B in proportion to their luminance weights (`_COLOUR_GAINS`: the
  most luminance per unit of squared error; grey images stay grey). It is scaled by a perceptual mask
  and host-aware (more amplitude on bits the photo itself pushes the wrong way, as read through the sum
  of the detector's two whitenings, see below, of the image as is and blurred: gains that hold only for
  the sharp image are lost to blur; on images larger than about 362 x 362, where the folded mark is
  much of what the detector's equaliser measures, the photo is read under the marked image's
  equaliser weights, and what the mark adds is the whitenings' linear response to it, computed in the
  tile, not a whitening of a marked copy: `_linear_agreement`). The pixels' change has a fixed RMS
  (PSNR about 42.3 dB). The mask
  is local activity ** p: flat regions carry the mark best for the detector but cost the most SSIM, so
  each image gets the flattest mask (smallest p of `_MASK_POWERS`) whose SSIM, predicted in closed form
  from local statistics (`_SsimModel`), stays at `_TARGET_SSIM`; where even the steepest does not, the
  mark is scaled down (PSNR rises above 42.3 dB).
- Detection whitens the luminance (local mean removed, divided by local deviation, clipped, then weighted
  by a power of 1 / local deviation so that textured regions, mostly photo, count less; where that
  reading fails, the same with an edge-preserving prediction of the photo removed instead of the local
  mean, then the sum of both: small images, where the photo drowns the mark; then the mix of R, G and B
  that carries the mark against the least photo, the colour reading), folds it into one tile,
  equalises the fold's spectrum (1 / the noise power around each coefficient), finds the shift and
  orientation by FFT cross-correlation with the sync pattern in each of the eight symmetries of the
  square (quarter turns, as is and mirrored: flips, 90-degree turns, transposes), and list-Viterbi-decodes
  the soft bits at the strongest peak, at the grid's origin (as is and mirrored: where a small image's
  sync peak drowns in the photo), at the next peaks and at the 8 neighbours of the strongest (a weak
  sync peak is often a pixel off). Each decode gives the 16 most likely messages; the keyed CRC picks one.
  When that fails, the geometry is read from the mark's own lattice in the power spectrum
  (`_spectral_candidates`): log-polar coordinates turn any rotation with a scale of 0.5 to 2 into a
  shift, log-log coordinates of the two axes a separate scaling of width and height; one FFT
  correlation with the band's lattice finds each. The proposals are refined on the sync peak
  (coherent, half then full resolution), and those whose peak stands out are read like the identity.
  A shift is list-decoded only when its soft bits lie near the code (`_AGREEMENT_GATE` above
  `_SMALL_IMAGE_PIXELS`, where an unmarked 512 px image pays no list decode at all; the lower
  `_SMALL_AGREEMENT_GATE` on smaller images, whose marks read weaker: about 12 of 64 decodes remain).
  A perspective tilt (the fold smears: no affine map undoes it) is read through a homography fitted to
  the sync peaks of single-tile windows (`_perspective_candidates`), searched only where a window's
  peak stands out. Not read (512 px): downscale / JPEG 10 / upscale.

Why v2 missed some 512 px crops (motorcycle, crop 75%): the sync peak was found at the right shift
(z 6.7), but the soft bits read there had a raw error rate of 14%, beyond the rate-1/2 code with plain
Viterbi. v3 reads them through the local equaliser (their signal-to-noise ratio x1.15) and the stronger
code with list decoding (about 1 dB at these ratios; see `_ecc`).

What changed for 256 px images (the marks are still "genguard.pixel.v3": same layout, code and first
reading, so every mark the earlier detector read still decodes): the photo outweighed the mark about
2:1 per soft bit, so the detector has two more identity readings that keep the photo's edges out of the
soft bits (`_whiten_edges`, `_planes`), the embedder computes its host-aware gains on them, and
textured photos whose SSIM allows it take flatter masks (`_MASK_POWERS`). Images of up to about
362 x 362 pixels are also read with a non-local-means prediction of the photo removed (`_whiten_denoised`),
which repeating textures fool far less, and with those readings and the edge reading summed. Later,
the embedder alone (the detector is unchanged, so earlier marks read as before): the change is spread
over the colour channels for more luminance at the same PSNR (`_COLOUR_GAINS`; 256 px, 165 trials per
attack, misses crop 75% 25 -> 9, crop 90% 6 -> 0, blur 2 5 -> 0, noise 10 1 -> 0), and large images'
gains are computed under the marked image's equaliser weights (`_embed_array`). Last, the detector
reads that colour spread too (`_colour_reading`: the channel mix that is the matched filter for a mark
along `_COLOUR_GAINS` in the photo's colour detail): 256 px, 165 trials per attack, misses crop 75%
9 -> 0 and brightness x1.3 15 -> 0, every non-geometric attack read in every trial. Marks made before
the colour spread (grey changes) are read by the luminance planes, unchanged, as before.

False positives: "marked" needs the keyed CRC-32 to check. Each detection decodes at most
`_MAX_DECODES` lists of `_LIST_SIZE` messages, and a message that is not the embedded one checks with
probability 2**-32 over keys (the CRC mask is an HKDF output independent of the layout that, with the
image, determines the message), so an unmarked image reads "marked" with probability at most
`_MAX_DECODES * _LIST_SIZE * 2**-32` (< 9.6e-7, geometric and perspective readings included) for any key; `confidence` is -log10 of a tighter bound
that also uses the sync correlation (see `_false_positive_bound`).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar, overload

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image

from genguard.guard.errors import ImageInputError
from genguard.guard.watermark import _ecc, _perspective
from genguard.guard.watermark._keys import check_key, hkdf_sha256
from genguard.guard.watermark.base import WatermarkDetection

ALGORITHM = "genguard.pixel.v3"
# Older ids whose marks this detector still reads (registered with it, see `base.register_watermarker`);
# v2's layout and code differ, its marks do not read.
READS: tuple[str, ...] = ()
TILE = 128
MIN_SIDE = 64
_BAND = (0.05, 0.16)  # cycles per pixel
_SYNC_FRACTION = 0.12  # at least this share of the band's dimensions carries the sync pattern
_SYNC_ENERGY = 0.25  # share of the mark's energy in the sync pattern: the geometric search lives on its peak
_TARGET_RMS = 1.95  # luminance change RMS in 8-bit levels: PSNR = 20 log10(255 / 1.95) = 42.3 dB
_TARGET_SSIM = 0.9865  # predicted; the mark is scaled down on images where PSNR alone would allow less
_SSIM_WINDOW = 7
_SSIM_STRIDE = 4  # the predicted SSIM averages every 4th window of every 4th row
_MASK_SIGMA = 2.0
_MASK_FLOOR = 1.5  # local deviation (8-bit levels) below which a region counts as flat
# flattest first. 0 (uniform) and 0.2 are taken by photos textured everywhere, whose SSIM allows them
# (immunohistochemistry, motorcycle, coffee): at 256 px, 11 photos x 2 keys, with the edge reading of
# `_planes`, exact ids unattacked 90.9% -> 95.5%, JPEG 50 86.4% -> 95.5%, noise 10 72.7% -> 81.8%,
# crop 75% 59.1% -> 68.2%; 512 px unchanged.
_MASK_POWERS = (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)
_MASK_EPS = 0.25
_WHITEN_MEAN_SIGMA = 4.0
_WHITEN_DEV_SIGMA = 6.0
_WHITEN_CLIP = 3.0
_WHITEN_FLOOR = 4.0
_MASK_FACTOR = 2  # resolution divisors of the blurs (see `_blur`)
_WHITEN_MEAN_FACTOR = 2
_WHITEN_DEV_FACTOR = 4
_WEIGHT_POWER = 0.5  # whitened pixels weighted by (floor / deviation) ** this (see `_whiten`)
_EDGE_RADIUS = 2  # the guided filter that predicts the photo for the second reading (`_whiten_edges`)
_EDGE_EPS = 25.0  # its regulariser, in squared 8-bit levels: above the mark's local power, below edges'
# Small images only (see `_planes`): non-local-means predictions of the photo at these filter strengths
# (8-bit levels; the mark looks like noise of about 2 levels, blur and JPEG leave less, added noise more)
_DENOISE_STRENGTHS = (3.0, 6.0, 12.0)
_DENOISE_TEMPLATE = 7  # patch side, pixels
_DENOISE_SEARCH = 11  # search window side: 21 (OpenCV's default) read no better at 2.5x the time
# About 362 x 362. Smaller images are read with non-local means too (larger ones would pay 50+ ms per
# strength) and their host-aware gains are computed differently (see `_embed_array`).
_SMALL_IMAGE_PIXELS = 2**17
# The colour reading (`_colour_reading`): the photo's detail is what a Gaussian blur of this sigma
# (pixels) leaves, its colour covariance is estimated on every 7th pixel, and regularised by about one
# squared 8-bit level per channel (rounding and compression noise; keeps flat or saturated images finite).
# The reading's bit error rate hardly moves with them (256 px, 6 photos x 2 keys: sigma 1 / 2 / 4 and
# ridge 0.05 / 1, mean BER under crop 75% 0.082-0.087, brightness x1.3 0.036-0.041).
_COLOUR_DETAIL_SIGMA = 2.0
_COLOUR_SAMPLE_STEP = 7
_COLOUR_RIDGE = 1.0
_MIN_BIT_GAIN = 0.3
_MAX_BIT_GAIN = 3.0
# Gaussian sigma (pixels): the host-aware gains also cancel what the photo blurred by this reads. 256 px,
# 11 photos x 5 keys, exact ids: blur 2 72.7% -> 87.3%, all 16 non-geometric attacks 95.8% -> 96.6%;
# 512 px soft-bit SNR unattacked 2.20 -> 2.91, blur 2 1.55 -> 2.16; embed time about x1.5.
_HOST_BLUR_SIGMA = 2.0
# The eight symmetries of the square tile (quarter turns, each as is and mirrored): a mark read from an
# image turned by a multiple of 90 degrees, flipped either way or transposed is the same lattice.
# Orientation o = 2 * quarter_turns + mirrored; the identity and the plain mirror first.
_ORIENTATIONS = ((0, False), (0, True), (1, False), (1, True), (2, False), (2, True), (3, False), (3, True))
_PEAKS = 6  # the strongest sync peaks decoded, over all orientations (3 per mirror before the eight)
# The strongest peak's z-score from which its 8 neighbours are decoded too: unmarked reads peak at about
# 4.5 to 5 and skip them (unmarked 256 px detection 0.94 -> 0.60 s CPU under load); 256 px, 11 photos
# x 3 keys, the 16 non-geometric attacks: no miss either way.
_NEIGHBOUR_MIN_Z = 5.0
_EQUALIZE_WINDOW = 15  # side, in coefficients, of the window that estimates the noise power (`_equalize`)
_SCALE_RANGE = (0.5, 2.0)  # the scales (of each axis) the geometric search undoes; rotations: all
_SCALE_STEP = 0.01  # log scale: the refinement's first step (`_refine`)
_ANGLE_STEP = 0.5  # degrees
# The spectral geometry estimate (`_spectral_candidates`). The tiled mark puts its power on the lattice
# of a tile's frequencies (k / TILE); an affine map of the image moves that lattice by the inverse
# transpose. Rotation with scale shifts it in log-polar coordinates of the spectrum, a scaling of width
# and height independently in log-log coordinates: one FFT correlation with the lattice in each finds
# every angle and scale at once. Grids: log radius over `_LOG_POLAR_RADII` cycles per pixel (the band
# under scales 0.5 to 2) in `_LOG_POLAR_STEPS`, half a turn in `_LOG_POLAR_ANGLES` (0.5 degree).
_LOG_POLAR_RADII = (0.022, 0.36)
_LOG_POLAR_STEPS = 160
_LOG_POLAR_ANGLES = 360
_LOG_LOG_RANGE = (0.012, 0.36)  # |frequency| per axis, cycles per pixel
_LOG_LOG_STEPS = 200
_LOG_LOG_MIN_FREQUENCY = 0.03  # lattice points nearer an axis are not resolved on the log-log grid
_SPECTRUM_WINDOW = 7  # side of the window that flattens the photo's power spectrum
# z-score of the lattice correlation a geometry must reach to be read. 512 px photos, unmarked: at most
# about 4.4; marked: rotations 9-19, 0.6x and 1.8x scale 15-35, width x0.8 14-17, width x0.5 with
# height x2 10-16.
_SPECTRAL_MIN_Z = 3.5
_SPECTRAL_ROTATIONS = 3  # log-polar peaks refined (distinct modulo 90 degrees), and the best log-log peak
# `_refine`'s steps: (fraction of the first step, at full resolution)
_COARSE_LEVELS = ((1.0, False),)
_COARSE_FULL = ((1.0, True),)
_HALF_MIN_SCALE = 0.7
_FINE_LEVELS = ((0.5, False), (0.25, True), (0.125, True))
_PROMISING_Z = 6.0  # half-resolution sync z-score after the coarse step that earns the fine steps
_CONFIRM_Z = 7.0  # a refined sync peak unmarked photos do not reach (512 px, 33 unmarked: at most 5.6)
# per plane read: the peaks, the 8 neighbours of the strongest, the grid's own origin as is and mirrored;
# planes: the luminance whitened three ways, the colour reading, four more on small images (see
# `_planes`), then each geometry candidate
_DECODES_PER_READ = _PEAKS + 8 + 2
_IDENTITY_PLANES = 4 + len(_DENOISE_STRENGTHS) + 1  # the last: the edge and non-local-means readings summed
# Perspective tilts (`_perspective_candidates`): at most this many starts, those whose sync peak reached
# `_PERSPECTIVE_MIN_Z`, each read on two planes
_PERSPECTIVE_READS = 2
_PERSPECTIVE_MIN_Z = 5.5  # the whole plane's sync peak of a start
# The identity's evidence: the strongest sync peak of windows of the half-resolution plane (at most this
# many a side; the colour reading and the luminance sum, the stronger), from which the identity is a
# start. Unmarked copies (300 of bench/watermark.py's --fp-trials edits, trials 5000-5299, not those it
# reports): median 4.5, 99th percentile 5.35, at most 5.43. On the tuning photos (astronaut, camera,
# coffee, immunohistochemistry, motorcycle; `--tilts`) 5.3 read one more of 130 tilted copies than 5.5,
# at the price of the whole search on 2 % of unmarked images instead of none of the 300.
_EVIDENCE_WINDOWS = 4
_PERSPECTIVE_WINDOW_MIN_Z = 5.5
_PERSPECTIVE_WINDOW = 128  # side of the windows whose local sync peaks correct the homography: one tile
_PERSPECTIVE_STRIDE = 64  # their spacing
_PERSPECTIVE_RADIUS = 16  # how far (pixels) a window's peak is looked for around the strongest one
_PERSPECTIVE_SHIFT_MIN_Z = 3.5  # windows whose peak there is weaker are left out of the fit
_PERSPECTIVE_ROUNDS = 8
_PERSPECTIVE_STALLS = 3  # rounds in a row that do not raise the whole plane's peak end them
_PERSPECTIVE_SETBACK = 2.0  # a round whose peak falls this far below the best goes back to the best
# Below this whole-plane peak after the rounds, the mark is looked for where it reads best (see
# `_perspective_candidates`): the strongest of up to `_ANCHOR_WINDOWS` x `_ANCHOR_WINDOWS` windows, the
# map of a square of `_ANCHOR_REGION` pixels around it climbed by `_REGION_STEPS`, then the corners
_PERSPECTIVE_SETTLED_Z = 8.0
_ANCHOR_WINDOWS = 7
_ANCHOR_REGION = 256
_REGION_STEPS = (0.04, 0.02, 0.01)
_CORNER_HALF_STEPS = (8.0, 4.0, 2.0)  # image pixels, on the half-resolution plane
_CORNER_FULL_STEPS = (1.0, 0.5)
_MAX_DECODES = _DECODES_PER_READ * (_IDENTITY_PLANES + _SPECTRAL_ROTATIONS + 1 + 2 * _PERSPECTIVE_READS)
# Early rejection: on images above `_SMALL_IMAGE_PIXELS` a shift is list-decoded only when its soft
# bits' codeword agreement (`_ecc.codeword_agreement`, the plain Viterbi's best metric over the sum of
# |soft bits|) reaches this. Unmarked reads: 0.71 on average, at most 0.77 (690 reads, 256 and 512 px;
# about 1% reach 0.74). Marks read at 512 px under the bench's 22 + 25 attacks (10 photos): 0.87 or
# more; under bench/regeneration.py's attacks, where the list decoder reads at raw error rates the
# plain decoder cannot, down to 0.727 (astronaut, non-local means at 20: the one read 0.74 loses there;
# 0.80 also lost one JPEG 10 and another such read). Smaller images have their own, lower gate (below).
# A gate only removes decodes, so the false-positive bound below holds as is.
_AGREEMENT_GATE = 0.74
# The gate on images up to `_SMALL_IMAGE_PIXELS`, whose marks read weaker. Every decode's agreement
# logged under the bench's 16 non-geometric attacks (11 photos x 2 keys, 352 marked reads per size): the
# decodes that read the mark reached at least 0.741 at 256 px (352 read), 0.739 at 192 px (347 read),
# 0.727 at 128 px (297 read), and no decode below 0.74 read one at 256 px (0 of 404); unmarked decodes
# (about 4,200 per size, 64 per detection) average 0.707 and 17-19% of them reach 0.72. So the gate
# removes about four decodes in five from an unmarked small image and, on these reads, no mark.
_SMALL_AGREEMENT_GATE = 0.72
_LIST_SIZE = 16  # messages per decode that the CRC may select (see `_ecc.list_viterbi_decode`)

Float32 = npt.NDArray[np.float32]
Float64 = npt.NDArray[np.float64]
UInt8 = npt.NDArray[np.uint8]
ImageT = TypeVar("ImageT", npt.NDArray[np.uint8], Image.Image)
ArrayT = TypeVar("ArrayT", bound=np.generic)


@dataclass(frozen=True)
class PixelDetection:
    """What `detect` found.

    marked: the keyed CRC of a decoded id checked. mark_id: that id, else None.
    confidence: -log10 of an upper bound on the probability that an unmarked image gives this result
    (> 6.1 whenever marked; 0.0 when not marked). sync_score: z-score of the sync correlation peak
    (about 4 to 5 on unmarked images). flipped, quarter_turns: the image was read as turned by
    `quarter_turns` x 90 degrees counterclockwise (numpy's rot90), then mirrored left-right when
    `flipped` (a vertical flip reads as two quarter turns and a mirror). scale, angle: the geometry that
    was undone besides (1.0 and 0.0 when none), angle in degrees; aspect: the width's scale over the
    height's (1.0 unless width and height were scaled differently; scale is then their geometric mean).
    """

    marked: bool
    mark_id: int | None
    confidence: float
    sync_score: float
    flipped: bool
    scale: float
    angle: float
    quarter_turns: int = 0
    aspect: float = 1.0


class PixelWatermarker:
    """`Watermarker` over this module's `embed` and `detect` (its detection in the generic form)."""

    algorithm: str = ALGORITHM

    def embed(self, image: ImageT, mark_id: int, key: bytes | None = None) -> ImageT:
        return embed(image, mark_id, key)

    def detect(
        self, image: npt.NDArray[np.uint8] | Image.Image, key: bytes | None = None
    ) -> WatermarkDetection:
        found = detect(image, key)
        return WatermarkDetection(
            found.marked, found.mark_id, found.confidence, ALGORITHM,
            sync_score=found.sync_score, flipped=found.flipped, scale=found.scale, angle=found.angle,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Keyed layout


@dataclass(frozen=True)
class _Layout:
    rows: npt.NDArray[np.intp]  # coefficient positions in the rfft2 grid of a tile
    cols: npt.NDArray[np.intp]
    sync_dims: npt.NDArray[np.intp]  # indices into the flattened (re, im) dimension vector
    sync_chips: Float64  # +-1 times the sync amplitude (relative to a unit bit chip)
    bit_dims: npt.NDArray[np.intp]  # (CODED_BITS, dims per bit)
    bit_chips: Float64
    sync_tile_fft: npt.NDArray[np.complex128]  # rfft2 of the sync-only tile, for correlation
    half_sync_fft: npt.NDArray[np.complex128]  # the same for a half-size tile (the band fits below TILE / 4)
    crc_mask: int
    # conjugate rfft2 of the sync tile in each of `_ORIENTATIONS`, stacked (8, side, side // 2 + 1), full
    # and half size: a fold is correlated with all eight by one equalised spectrum and one inverse FFT
    oriented_sync: npt.NDArray[np.complex128]
    oriented_half_sync: npt.NDArray[np.complex128]
    # each band dimension's phase ramp per pixel of shift, for the soft bits at any shift (`_shifted_dims`)
    band_ky: Float64
    band_kx: Float64


def _band_positions() -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    ky = np.fft.fftfreq(TILE)[:, None]
    kx = np.fft.rfftfreq(TILE)[None, :]
    radius = np.hypot(ky, kx)
    in_band = (radius >= _BAND[0]) & (radius <= _BAND[1])
    # one of each conjugate pair: the kx == 0 column holds both ky and -ky, keep ky > 0 only
    in_band &= (kx > 0) | (ky > 0)
    rows, cols = np.nonzero(in_band)
    return rows.astype(np.intp), cols.astype(np.intp)


@lru_cache(maxsize=16)
def _layout(key: bytes) -> _Layout:
    """The embedding layout of `key` (`_embed_layout`) and the detector's correlation templates."""
    base = _embed_layout(key)
    rows, cols = base.rows, base.cols
    dims = np.zeros(2 * len(rows))
    dims[base.sync_dims] = base.sync_chips
    sync_fft = _dims_to_spectrum(dims, rows, cols)
    quarter = TILE // 4
    half_sync_fft = np.concatenate([sync_fft[:quarter, : quarter + 1], sync_fft[-quarter:, : quarter + 1]])
    oriented, oriented_half = (
        np.conj(np.stack([np.fft.rfft2(_orient(np.fft.irfft2(fft, s=(side, side)), o)) for o in range(len(_ORIENTATIONS))]))
        for fft, side in ((sync_fft, TILE), (half_sync_fft, TILE // 2))
    )  # fmt: skip
    band_ky = np.asarray(np.fft.fftfreq(TILE)[rows], dtype=np.float64)
    band_kx = np.asarray(np.fft.rfftfreq(TILE)[cols], dtype=np.float64)
    return _Layout(
        rows, cols, base.sync_dims, base.sync_chips, base.bit_dims, base.bit_chips, sync_fft, half_sync_fft,
        base.crc_mask, oriented, oriented_half, band_ky, band_kx,
    )  # fmt: skip


@dataclass(frozen=True)
class _EmbedLayout:
    """The part of a key's `_Layout` that embedding uses (the detector's correlation templates, about
    2 ms of FFTs per key, are left out): the band's positions, the dimensions and chips of the sync
    pattern and of each coded bit, the CRC mask."""

    rows: npt.NDArray[np.intp]
    cols: npt.NDArray[np.intp]
    sync_dims: npt.NDArray[np.intp]
    sync_chips: Float64
    bit_dims: npt.NDArray[np.intp]
    bit_chips: Float64
    crc_mask: int


@lru_cache(maxsize=16)
def _embed_layout(key: bytes) -> _EmbedLayout:
    """The band's positions, and the dimensions and chips of the sync pattern and of each coded bit,
    drawn from `key`; `_layout` adds the detector's templates to these."""
    rows, cols = _band_positions()
    n_dims = 2 * len(rows)
    seed = int.from_bytes(hkdf_sha256(key, f"{ALGORITHM}/layout".encode(), 32), "big")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_dims)
    per_bit = int((n_dims * (1 - _SYNC_FRACTION)) // _ecc.CODED_BITS)
    n_bit_dims = per_bit * _ecc.CODED_BITS
    bit_dims = order[:n_bit_dims].reshape(per_bit, _ecc.CODED_BITS).T.copy()
    sync_dims = order[n_bit_dims:]
    sync_gain = math.sqrt(_SYNC_ENERGY / (1 - _SYNC_ENERGY) * n_bit_dims / len(sync_dims))
    sync_chips = sync_gain * rng.choice([-1.0, 1.0], size=len(sync_dims))
    bit_chips = rng.choice([-1.0, 1.0], size=bit_dims.shape)
    crc_mask = int.from_bytes(hkdf_sha256(key, f"{ALGORITHM}/crc".encode(), 4), "big")
    return _EmbedLayout(rows, cols, sync_dims, sync_chips, bit_dims, bit_chips, crc_mask)


def _orient(tile: Float64, orientation: int) -> Float64:
    """`tile` turned by quarter_turns x 90 degrees counterclockwise, then mirrored left-right if asked."""
    turns, mirrored = _ORIENTATIONS[orientation]
    turned = np.rot90(tile, turns)
    return np.ascontiguousarray(turned[:, ::-1] if mirrored else turned)


def _unorient(tile: Float64, orientation: int) -> Float64:
    """The inverse of `_orient`."""
    turns, mirrored = _ORIENTATIONS[orientation]
    return np.ascontiguousarray(np.rot90(tile[:, ::-1] if mirrored else tile, -turns))


def _dims_to_spectrum(
    dims: Float64, rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]
) -> npt.NDArray[np.complex128]:
    spectrum = np.zeros((TILE, TILE // 2 + 1), dtype=np.complex128)
    half = len(rows)
    spectrum[rows, cols] = dims[:half] + 1j * dims[half:]
    return spectrum


def _spectrum_to_dims(
    spectrum: npt.NDArray[np.complex128], rows: npt.NDArray[np.intp], cols: npt.NDArray[np.intp]
) -> Float64:
    values = spectrum[rows, cols]
    return np.concatenate([values.real, values.imag])


# ---------------------------------------------------------------------------------------------------
# Image plumbing


def _as_rgb_array(image: npt.NDArray[np.uint8] | Image.Image, name: str = "image") -> UInt8:
    """A uint8 array of shape (H, W), (H, W, 3) or (H, W, 4); PIL images of any mode are converted."""
    if isinstance(image, Image.Image):
        array = _pil_to_array(image)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise ImageInputError(f"{name}: expected a numpy array or PIL image, found {type(image).__name__}")
    if array.dtype != np.uint8:
        raise ImageInputError(
            f"{name}: expected dtype uint8, found {array.dtype} (convert with genguard.guard.imageio.load_image)"
        )
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageInputError(f"{name}: expected shape (H, W), (H, W, 3) or (H, W, 4), found {array.shape}")
    if min(array.shape[:2]) < MIN_SIDE:
        raise ImageInputError(
            f"{name}: expected both sides >= {MIN_SIDE} pixels, found {array.shape[1]}x{array.shape[0]}"
        )
    return array


def _pil_to_array(image: Image.Image) -> UInt8:
    if image.mode in ("RGB", "RGBA", "L"):
        return np.asarray(image)
    has_alpha = "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info)
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit greyscale: keep the top 8 bits
        wide = np.asarray(image, dtype=np.uint32 if image.mode == "I" else np.uint16).astype(np.float64)
        top = 65535.0 if image.mode != "I" or wide.max() > 255 else 255.0
        return np.clip(np.round(wide * 255.0 / top), 0, 255).astype(np.uint8)
    return np.asarray(image.convert("RGBA" if has_alpha else "RGB"))


_LUMA_WEIGHTS = np.array([[0.299, 0.587, 0.114]], dtype=np.float32)  # ITU-R BT.601, as JPEG uses
# The change of R, G and B per unit change of luminance: proportional to the luminance weights, the
# direction that buys the most luminance for a given squared error (PSNR). A grey change (1, 1, 1)
# buys 1 / sqrt(3 * sum(w ** 2)) = 0.86 of it: at the same PSNR this mark is 16% stronger, and by the
# same first-order argument costs SSIM (averaged over the channels) about the same. The chroma it adds,
# about half the luminance change in amplitude, is what JPEG 4:2:0 may erase: the luminance readings do
# not need it, and the colour reading (`_colour_reading`) uses it where it survives.
_COLOUR_GAINS = (_LUMA_WEIGHTS[0] / float(np.sum(_LUMA_WEIGHTS**2))).astype(np.float64)
_GREY_GAINS = np.ones(3)


def _is_grey(array: UInt8) -> bool:
    """One channel, or three equal ones (a grey image stored as RGB)."""
    if array.ndim == 2:
        return True
    rgb = array[..., :3]
    sample = rgb[::16, ::16]  # most colour images differ here: no full comparison
    if not (
        np.array_equal(sample[..., 0], sample[..., 1]) and np.array_equal(sample[..., 1], sample[..., 2])
    ):
        return False
    return np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 1], rgb[..., 2])


def _channel_gains(array: UInt8) -> Float64:
    """The change of each colour channel per unit luminance change; grey images stay grey."""
    if array.ndim == 2:
        return np.ones(1)
    return _GREY_GAINS if _is_grey(array) else _COLOUR_GAINS


def _luminance(array: UInt8, scratch: _Scratch | None = None) -> Float32:
    """BT.601 luminance as float32: a fresh plane, or `scratch`'s "luma" plane when given."""
    if array.ndim == 2:
        if scratch is None:
            return array.astype(np.float32)
        plane = scratch("luma")
        np.copyto(plane, array, casting="unsafe")
        return plane
    if scratch is None:
        rgb = array[..., :3].astype(np.float32)
    else:
        rgb = scratch("rgb", 3)
        np.copyto(rgb, array[..., :3], casting="unsafe")
    luma: Float32 = cv2.transform(rgb, _LUMA_WEIGHTS, dst=scratch("luma") if scratch else None)  # type: ignore[assignment]
    return luma


def _blur(plane: Float32, sigma: float, factor: int, out: Float32 | None = None) -> Float32:
    """Gaussian blur computed at 1/`factor` resolution and interpolated back (into `out`, which may be
    `plane` itself).

    A blur this wide has almost nothing above 1/(2 * factor) cycles per pixel, so the area average
    (which suppresses what would alias), a blur of sigma / factor and a linear upsampling give nearly the
    same plane at a fraction of the cost of the full-resolution kernel (about 1/5 at sigma 4).
    """
    h, w = plane.shape
    small = cv2.resize(plane, (max(w // factor, 1), max(h // factor, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)  # type: ignore[return-value]


class _Scratch:
    """Float32 planes of one shape, by name, allocated on first use and then reused.

    At 1024 px a fresh plane's page faults cost about as much as the arithmetic done on it: the embedder
    whitens four to six planes, and reusing the same buffers for each took it from 110 to about 80 ms.
    A plane handed out is overwritten by the next call that asks for its name.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self._planes: dict[str, npt.NDArray[Any]] = {}
        self._half: _Scratch | None = None

    def half(self) -> _Scratch:
        """The planes of every other row and column of this shape (for readings at half resolution)."""
        if self._half is None:
            self._half = _Scratch(((self.shape[0] + 1) // 2, (self.shape[1] + 1) // 2))
        return self._half

    def __call__(self, name: str, channels: int = 1) -> Float32:
        shape = self.shape if channels == 1 else (*self.shape, channels)
        return self.array(name, shape, np.float32)

    def array(self, name: str, shape: tuple[int, ...], dtype: type[ArrayT]) -> npt.NDArray[ArrayT]:
        """Any other array by name (its shape and dtype must stay the same for that name)."""
        found = self._planes.get(name)
        if found is None:
            found = self._planes[name] = np.empty(shape, dtype=dtype)
        return found


# The embedder's scratch planes, kept per thread for the last image shape up to this many pixels (about
# 90 MB at 1024 x 1024, 22 MB at 512 x 512): freed and allocated again, each embedding paid their page
# faults anew (1024 px: about 25 ms of 100). Larger images get fresh planes each time rather than hold
# that much memory.
_RETAINED_SCRATCH_PIXELS = 2**20
_retained = threading.local()


def _embed_scratch(shape: tuple[int, int]) -> _Scratch:
    if shape[0] * shape[1] > _RETAINED_SCRATCH_PIXELS:
        return _Scratch(shape)
    scratch: _Scratch | None = getattr(_retained, "scratch", None)
    if scratch is None or scratch.shape != shape:
        scratch = _retained.scratch = _Scratch(shape)
    return scratch


def _local_deviation(
    plane: Float32, sigma: float, scratch: _Scratch | None = None, out: Float32 | None = None
) -> Float32:
    """Gaussian-windowed standard deviation, into `out` (else a fresh plane); `scratch` holds the
    temporaries."""
    s = scratch or _Scratch(plane.shape)
    mean = _blur(plane, sigma, _MASK_FACTOR, out=s("edge_mean"))
    squared: Float32 = cv2.multiply(plane, plane, dst=s("edge_work"))  # type: ignore[assignment]
    square = _blur(squared, sigma, _MASK_FACTOR, out=out)
    square -= cv2.multiply(mean, mean, dst=mean)
    return np.sqrt(np.maximum(square, np.float32(0.0), out=square), out=square)


def _whiten(
    luma: Float32,
    scratch: _Scratch | None = None,
    out: Float32 | None = None,
    gain: Float32 | None = None,
    resolution: int = 1,
) -> Float32:
    """Local mean removed, divided by local deviation, clipped: the photo becomes roughly white noise.

    Written into `out` (else a fresh plane); `scratch` holds the temporaries. The embedder also asks for
    `gain`, the per-pixel factor that, with the local deviation held, turns a small change of the
    residual into a change of the whitened plane (see `_normalise`), and may read a plane of every other
    row and column (`resolution` 2: the widths halved)."""
    mean = _blur(luma, _WHITEN_MEAN_SIGMA / resolution, _WHITEN_MEAN_FACTOR // resolution, out=out)
    return _normalise(np.subtract(luma, mean, out=mean), scratch, gain, resolution)


def _whiten_edges(
    luma: Float32,
    scratch: _Scratch | None = None,
    out: Float32 | None = None,
    gain: Float32 | None = None,
    resolution: int = 1,
) -> Float32:
    """Like `_whiten`, but what is removed is an edge-preserving prediction of the photo.

    The prediction is a guided filter of the luminance by itself (He, Sun and Tang 2010: in each
    (2 r + 1)-square window the best linear fit a * luma + b with a = var / (var + eps), averaged over
    the windows that hold the pixel). Where the local variance is far above `_EDGE_EPS` (edges, strong
    textures) it follows the photo, which leaves the residual; where it is below (the mark, a few levels
    of keyed noise, on smooth ground) it is the local mean, so the mark stays in the residual. The
    Gaussian local mean of `_whiten` leaves every edge in the detail, where on small images it drowns
    the mark: see `_planes` for what this reading gained.

    Written into `out` (else a fresh plane); `scratch` holds the temporaries. `gain`, `resolution`: as
    `_whiten`'s; the gain is `_normalise`'s times 1 - box(slope), what the guided filter's prediction
    leaves of a change where its slope is held.
    """
    radius = _edge_radius(resolution)
    size = (2 * radius + 1, 2 * radius + 1)
    s = scratch or _Scratch(luma.shape)

    def box(plane: Float32, out: Float32 | None) -> Float32:
        return cv2.boxFilter(plane, -1, size, dst=out, borderType=cv2.BORDER_REFLECT)  # type: ignore[return-value]

    # In place where it can be (see `_Scratch`)
    mean = box(luma, s("edge_mean"))
    work: Float32 = cv2.multiply(luma, luma, dst=s("edge_work"))  # type: ignore[assignment]
    variance = box(work, s("edge_variance"))
    variance -= cv2.multiply(mean, mean, dst=work)
    np.maximum(variance, np.float32(0.0), out=variance)
    slope = variance
    np.divide(variance, np.add(variance, np.float32(_EDGE_EPS), out=work), out=slope)
    offset = np.subtract(mean, np.multiply(slope, mean, out=work), out=mean)  # b = mean - a * mean
    predicted = box(slope, out)
    passed = None if gain is None else np.subtract(np.float32(1.0), predicted, out=s("edge_pass"))
    predicted *= luma
    predicted += box(offset, work)
    white = _normalise(np.subtract(luma, predicted, out=predicted), s, gain, resolution)
    if gain is not None and passed is not None:
        gain *= passed
    return white


def _whiten_both(luma: Float32, scratch: _Scratch | None = None, out: Float32 | None = None) -> Float32:
    """The sum of both whitenings: what the embedder's host-aware gains are computed on (see `_planes`).

    Written into `out` (else a fresh plane); `scratch` holds the temporaries."""
    s = scratch or _Scratch(luma.shape)
    both = _whiten(luma, s, out)
    both += _whiten_edges(luma, s, s("both_edges"))
    return both


def _whiten_denoised(luma: Float32, strength: float) -> Float32:
    """Like `_whiten`, but what is removed is a non-local-means prediction of the photo (Buades, Coll and
    Morel 2005, OpenCV's `fastNlMeansDenoising`) at filter strength `strength`.

    Non-local means predicts each pixel from similar patches anywhere nearby, so textures and edges
    that repeat (most of a photo) leave far less in the residual than either local filter does; the
    mark, keyed noise that no other patch repeats, stays in it. Blur leaves the photo smooth, which the
    filter then predicts well at low strength; added noise needs a strength above its own level, or the
    filter keeps the noise and the mark with it; hence several strengths.
    """
    levels = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
    predicted = cv2.fastNlMeansDenoising(levels, None, strength, _DENOISE_TEMPLATE, _DENOISE_SEARCH)
    return _normalise(luma - predicted.astype(np.float32))


def _normalise(
    detail: Float32, scratch: _Scratch | None = None, gain: Float32 | None = None, resolution: int = 1
) -> Float32:
    """Divided by local deviation, clipped and weighted: the photo's residual becomes roughly white noise.

    Overwrites and returns `detail` (every caller passes a residual it has just made). `gain` (the
    embedder's): into it, the derivative with the local deviation held, weight / deviation. The clip is
    left out of it: it takes few pixels, and zeroing their gain changed no soft-bit SNR of the marks
    (512 px, 11 photos x 2 keys, 7 attacks, to 0.01). `resolution`: the deviation's width divided by it.
    """
    # the floor keeps flat regions (little mark, mostly rounding and compression noise) from dominating
    squared: Float32 = cv2.multiply(detail, detail, dst=scratch("normalise") if scratch else None)  # type: ignore[assignment]
    sigma, factor = _WHITEN_DEV_SIGMA / resolution, _WHITEN_DEV_FACTOR // resolution
    deviation = np.sqrt(_blur(squared, sigma, factor, out=squared), out=squared)
    deviation += np.float32(_WHITEN_FLOOR)
    white = np.divide(detail, deviation, out=detail)
    np.clip(white, -_WHITEN_CLIP, _WHITEN_CLIP, out=white)
    # Weighted again by a power of 1 / deviation, towards the matched filter for a mark in noise of
    # varying power (which weights each pixel by mark amplitude / local variance): textured regions carry
    # more mark but far more photo. Power 1 is that filter for a flat mask but lets JPEG, which erases
    # the mark in flat regions, hurt; 0.5 is the compromise measured best (512 px, 11 photos x 2-3 keys,
    # crops, rotations, rescales and JPEG 50: failures 11/176 -> 2/176 and 9/132 -> 5/132 against
    # power 0, mostly through a stronger sync peak on weak photos). At 256 px the raw bit error rate
    # of the weak photos drops from 13% to 9%.
    weight = np.divide(np.float32(_WHITEN_FLOOR), deviation, out=deviation if gain is None else gain)
    weight **= _WEIGHT_POWER
    white *= weight
    if gain is not None:
        np.divide(weight, deviation, out=gain)
    return white


def _fold(plane: Float32, tile: int = TILE) -> Float64:
    """Sum of all tile x tile tiles (the last partial ones zero-padded)."""
    h, w = plane.shape
    ph, pw = -h % tile, -w % tile
    padded = np.pad(plane, ((0, ph), (0, pw))) if ph or pw else plane
    tiles = padded.reshape((h + ph) // tile, tile, (w + pw) // tile, tile)
    # rows of tiles added in float32 (contiguous, 2-3 times faster than one float64 reduction; relative
    # difference about 5e-8), the columns of tiles in float64
    folded: Float64 = np.add.reduce(tiles, axis=0).sum(axis=1, dtype=np.float64)
    return folded


# ---------------------------------------------------------------------------------------------------
# Embedding


@overload
def embed(image: npt.NDArray[np.uint8], mark_id: int, key: bytes | None = None) -> npt.NDArray[np.uint8]: ...
@overload
def embed(image: Image.Image, mark_id: int, key: bytes | None = None) -> Image.Image: ...
def embed(
    image: npt.NDArray[np.uint8] | Image.Image, mark_id: int, key: bytes | None = None
) -> npt.NDArray[np.uint8] | Image.Image:
    """Return a copy of `image` carrying `mark_id` (0 <= id < 2**64) under `key`.

    Arrays: uint8 of shape (H, W), (H, W, 3) or (H, W, 4); the same shape comes back and alpha is copied
    unchanged. PIL images: RGB, RGBA and L keep their mode; other modes are converted to RGB (RGBA when
    they carry transparency). `key=None` uses `guard.config.watermark_key()`.
    """
    if isinstance(mark_id, bool) or not isinstance(mark_id, int) or not 0 <= mark_id < 2**64:
        raise ImageInputError(f"mark_id: expected an integer in [0, 2**64), found {mark_id!r}")
    layout = _embed_layout(_resolve_key(key))
    array = _as_rgb_array(image)
    marked = _embed_array(array, mark_id, layout)
    if isinstance(image, Image.Image):
        return Image.fromarray(marked)
    return marked


def _resolve_key(key: bytes | None) -> bytes:
    if key is None:
        from genguard.guard.config import watermark_key

        key = watermark_key()
    return check_key(key)


def _embed_array(array: UInt8, mark_id: int, layout: _EmbedLayout | _Layout) -> UInt8:
    h, w = array.shape[:2]
    scratch = _embed_scratch((h, w))
    luma = _luminance(array, scratch)
    coded = _ecc.conv_encode(_ecc.message_bits(mark_id, layout.crc_mask))
    symbols = 1.0 - 2.0 * coded.astype(np.float64)  # coded bit 0 -> +1
    activity = _local_deviation(luma, _MASK_SIGMA, scratch, scratch("activity"))
    activity -= np.float32(_MASK_FLOOR)
    np.maximum(activity, np.float32(0.0), out=activity)
    activity += np.float32(_MASK_EPS)
    gains = _channel_gains(array)
    ssim_model = _SsimModel(array, gains, scratch)
    # _TARGET_RMS is the change of the pixels (what PSNR measures), not of luminance
    luma_rms = _TARGET_RMS / float(np.sqrt(np.mean(gains**2)))

    def tile_spectrum(bit_gain: Float64) -> npt.NDArray[np.complex128]:
        """The pattern's tile (sync and coded bits, each bit at its gain), as its rfft2."""
        dims = np.zeros(2 * len(layout.rows))
        dims[layout.sync_dims] = layout.sync_chips
        dims[layout.bit_dims] = layout.bit_chips * (symbols * bit_gain)[:, None]
        return _dims_to_spectrum(dims, layout.rows, layout.cols)

    def luma_change(bit_gain: Float64, mask: Float32, out: Float32) -> Float32:
        """The masked, tiled luminance pattern, at _TARGET_RMS once spread over the channels (into `out`)."""
        tile = np.fft.irfft2(tile_spectrum(bit_gain), s=(TILE, TILE))
        rows, columns = -(-h // TILE), -(-w // TILE)
        tiled = scratch.array("pattern", (rows * TILE, columns * TILE), np.float32)
        tiled.reshape(rows, TILE, columns, TILE)[:] = tile.astype(np.float32)[None, :, None, :]
        pattern = tiled[:h, :w]
        delta = np.multiply(pattern, mask, out=out)
        rms = math.sqrt(cv2.norm(delta, cv2.NORM_L2SQR) / delta.size)  # accumulated in float64
        delta *= np.float32(luma_rms / max(rms, 1e-9))
        return delta

    def agreement(plane: Float32) -> Float64:
        """What the detector reads for each coded bit at zero shift, signed so that + is correct: the sum
        of its readings of `plane` and of `plane` blurred by `_HOST_BLUR_SIGMA`. Gains that cancel the
        photo's pull on the unattacked reading alone do not survive blur (the whitening is not linear, so
        the blurred photo pulls other bits); on the sum they cancel both. Each reading is equalised by
        its own noise power (see `_equalize`)."""
        blurred: Float32 = cv2.GaussianBlur(plane, (0, 0), _HOST_BLUR_SIGMA, dst=scratch("host_blurred"))  # type: ignore[assignment]
        total = np.zeros(_ecc.CODED_BITS)
        for p in (plane, blurred):
            fold = np.fft.rfft2(_fold(_whiten_both(p, scratch, scratch("host_white"))))
            total += _embed_soft_bits(fold / _noise_power(fold), layout)
        return total * symbols

    # Perceptual mask: amplitude grows with local activity as activity ** power. Flat regions carry the
    # mark best (the detector divides by local activity) but cost the most SSIM: take the flattest mask
    # whose mark is predicted to keep SSIM at the target at the PSNR target.
    sampled_activity = activity[ssim_model.centres]
    power = next(
        (p for p in _MASK_POWERS if ssim_model.predict_mask(sampled_activity**p) >= _TARGET_SSIM),
        _MASK_POWERS[-1],
    )
    mask = np.power(activity, np.float32(power), out=activity)
    uniform = np.ones(_ecc.CODED_BITS)
    # Host-aware embedding: measure what the photo alone reads (host) and what a first, uniform mark
    # adds (response per unit gain), then choose per-bit gains that bring every bit to the same margin
    # within the same energy. Bits the photo pushes the wrong way get more, bits it helps get less.
    small = luma.size <= _SMALL_IMAGE_PIXELS
    if small:
        # Both read on the images themselves: the photo dominates the fold, and its own equaliser
        # weights did better than the marked image's (256 px crop 75%: 9 against 15 misses in 165).
        first = luma_change(uniform, mask, scratch("first"))
        marked = agreement(np.add(luma, first, out=first))
        host = agreement(luma)
        response = marked - host
    else:
        # On large images the folded mark is much of the fold's power, so the detector's equaliser weights
        # are the marked image's: the photo is read under them. Read under its own, the difference with the
        # marked reading is mostly the change of weights, not the mark's response (soft-bit SNR of the
        # plain reading, mean of 5 photos, unattacked / JPEG 50 / crop 75%: 1024 px 1.3 / 1.3 / 1.2 -> 9.5
        # / 6.9 / 3.9, 512 px 2.3 / 2.0 / 1.4 -> 3.7 / 2.6 / 1.6). The mark's reading is the whitenings'
        # linear response: two whitenings, not four.
        host, response = _linear_agreement(luma, mask, tile_spectrum(uniform), luma_rms, layout, scratch)
        host *= symbols
        response *= symbols
    response = np.maximum(response, 1e-9)
    margin = _equal_margin(host, response)
    bit_gain = np.clip((margin - host) / response, _MIN_BIT_GAIN, _MAX_BIT_GAIN)
    delta = luma_change(bit_gain, mask, scratch("first"))
    if small:
        # The mask, the whitening, rounding and clipping couple the bits: correct what the guess missed,
        # measuring the 8-bit image that will actually be returned. On large images this round gained
        # little (SNR 9.5 -> 10.3 at 1024 px) for a third of the embedding's time.
        reached = agreement(_luminance(_apply(array, delta, gains)))
        bit_gain = np.clip(bit_gain + (margin - reached) / response, _MIN_BIT_GAIN, _MAX_BIT_GAIN)
        delta = luma_change(bit_gain, mask, delta)
    cap = ssim_model.gain_cap(delta, _TARGET_SSIM)
    if cap != 1.0:
        delta *= np.float32(cap)
    return _apply(array, delta, gains, scratch)


def _embed_soft_bits(spectrum: npt.NDArray[np.complex128], layout: _EmbedLayout | _Layout) -> Float64:
    """`_soft_bits` for the embedder's layout."""
    dims = _spectrum_to_dims(spectrum, layout.rows, layout.cols)
    return (dims[layout.bit_dims] * layout.bit_chips).sum(axis=1)  # type: ignore[no-any-return]


def _linear_agreement(
    luma: Float32,
    mask: Float32,
    spectrum: npt.NDArray[np.complex128],
    luma_rms: float,
    layout: _EmbedLayout | _Layout,
    scratch: _Scratch,
) -> tuple[Float64, Float64]:
    """The host-aware gains' readings on large images, from two whitenings instead of four, one of them
    at half resolution: (host, response), each per coded bit, unsigned: what the detector reads of the
    photo (`luma`) and what a mark of tile `spectrum` under `mask`, scaled to `luma_rms`, adds to it,
    both the sum of the readings of the image as is and blurred by `_HOST_BLUR_SIGMA` (see
    `_embed_array`'s `agreement`).

    The photo as is is read as the detector reads it, the blurred one at half resolution (below). The
    mark's reading is the whitenings' linear response at
    the photo: with the local deviations held, each whitening is a high-pass filter (the local mean, or
    the guided filter's prediction, removed) followed by a per-pixel gain (`_whiten` and
    `_whiten_edges` with a `gain`). Taking the mask and those gains as locally constant next to the
    filters, the whitened mark is the tile's filtered pattern times the gains times the mask, and its
    fold is the filtered tile times the fold of gain x mask: no image-size plane of the mark is formed
    or whitened. Each reading is equalised by the noise power of the photo's fold plus the mark's, as
    the detector's equaliser sees the marked image.

    The blurred image has almost nothing above a quarter cycle per pixel (the blur passes 0.7% there),
    so it is read from its even rows and columns, whitened with half the widths (a 3-pixel box for the
    guided filter's 5), folded into a half tile; the band's coefficients (below 21 cycles per tile) and
    the equaliser's windows around them (within 28) lie below the half tile's 32.

    Against the readings of a whitened first marked image (the small images' way, twice the
    whitenings), 11 photographs x 2 keys, soft-bit SNR of the final marks at the known alignment, mean
    of the plain / edge reading: 512 px unattacked 5.15 / 4.50 -> 5.18 / 4.86, JPEG 50 2.71 / 2.99 ->
    2.71 / 3.14, blur 2 3.47 / 3.30 -> 3.35 / 3.28, crop 75% 2.18 / 2.86 -> 2.19 / 2.97; 1024 px
    unattacked 10.3 / 8.1 -> 9.8 / 8.0, JPEG 50 6.4 / 6.0 -> 6.1 / 6.0, blur 2 9.5 / 7.6 -> 8.7 / 7.5
    (the blurred image read at full resolution: 512 px blur 2 3.41 / 3.28, 1024 px unattacked 10.1 /
    8.0). Without the 1 - box(slope) factor of the edge reading's gain, 512 px unattacked fell to
    3.98 / 4.69.
    """
    h, w = luma.shape
    pattern = np.fft.irfft2(spectrum, s=(TILE, TILE))
    square = np.multiply(mask, mask, out=scratch("host_white"))
    scale = luma_rms / math.sqrt(max(float((pattern**2 * _fold(square)).sum()) / (h * w), 1e-18))
    half = scratch.half()
    blurred: Float32 = cv2.GaussianBlur(luma, (0, 0), _HOST_BLUR_SIGMA, dst=scratch("host_blurred"))  # type: ignore[assignment]
    blurred_half, mask_half = half("host_blurred"), half("mask")
    np.copyto(blurred_half, blurred[::2, ::2])
    np.copyto(mask_half, mask[::2, ::2])
    host = np.zeros(_ecc.CODED_BITS)
    response = np.zeros(_ecc.CODED_BITS)
    blur_pass = _embed_transfers(1)[2]
    for plane, plane_mask, planes, resolution, through in (
        (luma, mask, scratch, 1, 1.0),
        (blurred_half, mask_half, half, 2, blur_pass),
    ):
        mean_pass, edge_pass, _ = _embed_transfers(resolution)
        mean_pass, edge_pass = mean_pass * through, edge_pass * through
        tile = TILE // resolution
        mean_gain, edge_gain = planes("mean_gain"), planes("edge_gain")
        white = _whiten(plane, planes, planes("host_white"), mean_gain, resolution)
        white += _whiten_edges(plane, planes, planes("both_edges"), edge_gain, resolution)
        host_fold = _on_tile_grid(np.fft.rfft2(_fold(white, tile)), resolution)
        mark_tile = np.fft.irfft2(spectrum * (scale * mean_pass), s=(TILE, TILE))[
            ::resolution, ::resolution
        ] * _fold(np.multiply(mean_gain, plane_mask, out=mean_gain), tile)
        mark_tile += np.fft.irfft2(spectrum * (scale * edge_pass), s=(TILE, TILE))[
            ::resolution, ::resolution
        ] * _fold(np.multiply(edge_gain, plane_mask, out=edge_gain), tile)
        mark_fold = _on_tile_grid(np.fft.rfft2(mark_tile), resolution)
        noise = _noise_power(host_fold + mark_fold)
        host += _embed_soft_bits(host_fold / noise, layout)
        response += _embed_soft_bits(mark_fold / noise, layout)
    return host, response


def _on_tile_grid(spectrum: npt.NDArray[np.complex128], resolution: int) -> npt.NDArray[np.complex128]:
    """The rfft2 of a fold read at 1 / `resolution` of the image's resolution on a full tile's grid (the
    same cycles per tile; the higher ones 0), scaled by the pixels each sample stands for."""
    if resolution == 1:
        return spectrum
    side = TILE // resolution // 2
    grid = np.zeros((TILE, TILE // 2 + 1), dtype=np.complex128)
    grid[:side, : side + 1] = spectrum[:side, : side + 1]
    grid[-side:, : side + 1] = spectrum[-side:, : side + 1]
    grid *= resolution**2
    return grid


@lru_cache(maxsize=2)
def _embed_transfers(resolution: int = 1) -> tuple[Float64, Float64, Float64]:
    """Over a tile's rfft2 grid: what the plain whitening's local-mean removal (1 - a Gaussian of
    `_WHITEN_MEAN_SIGMA`), the edge whitening's (1 - the guided filter's two box filters, where the
    photo is flat) and the host blur (a Gaussian of `_HOST_BLUR_SIGMA`) pass of each frequency, the
    whitenings as `_whiten` and `_whiten_edges` do them at 1 / `resolution`."""
    ky = np.asarray(np.fft.fftfreq(TILE)[:, None], dtype=np.float64)
    kx = np.asarray(np.fft.rfftfreq(TILE)[None, :], dtype=np.float64)

    def gaussian(sigma: float) -> Float64:
        transfer: Float64 = np.exp(-2.0 * math.pi**2 * sigma**2 * (ky**2 + kx**2))
        return transfer

    side = 2 * _edge_radius(resolution) + 1

    def box(k: Float64) -> Float64:
        # the mean of `side` samples `resolution` pixels apart: a Dirichlet kernel, 1 at k = 0
        phase = math.pi * resolution * k
        numerator = np.sin(side * phase)
        denominator = side * np.sin(phase)
        safe = np.where(denominator == 0.0, 1.0, denominator)
        transfer: Float64 = np.where(k == 0.0, 1.0, numerator / safe)
        return transfer

    return 1.0 - gaussian(_WHITEN_MEAN_SIGMA), 1.0 - (box(ky) * box(kx)) ** 2, gaussian(_HOST_BLUR_SIGMA)


def _edge_radius(resolution: int) -> int:
    """The guided filter's radius at 1 / `resolution` of the image's resolution: at half resolution a
    3-pixel box (6 pixels of the image) for the image's 5, the nearest that is odd."""
    return max(1, _EDGE_RADIUS // resolution)


class _SsimModel:
    """Predicts the SSIM of `array + g * delta` from local statistics, without forming the image.

    SSIM as skimage computes it for the bench: 7x7 uniform windows, sample covariance, K1 0.01, K2 0.03,
    data range 255, mean over the windows (border trimmed) and the channels. With y = x + g d each window's
    SSIM is a closed form in g of the local means and variances of x and d; the covariance of x and d is
    left out (the pattern is keyed noise) and 8-bit rounding adds a variance of 1/12. Only the mean over
    windows matters, so a grid of windows (every `_SSIM_STRIDE`-th) is summed from integral images.
    """

    def __init__(self, array: UInt8, gains: Float64, scratch: _Scratch | None = None) -> None:
        h, w = array.shape[:2]
        self._scratch = scratch or _Scratch((h, w))
        win, stride = _SSIM_WINDOW, _SSIM_STRIDE
        self._rows, self._cols = -(-(h - win + 1) // stride), -(-(w - win + 1) // stride)
        self.centres = (slice(win // 2, h - win // 2, stride), slice(win // 2, w - win // 2, stride))
        if array.ndim == 2:
            channels = [array]
        else:  # one pass into reused planes (a third of the time of three strided copies at 512 px)
            planes = [
                self._scratch.array(f"ssim_channel_{c}", (h, w), np.uint8) for c in range(array.shape[2])
            ]
            cv2.split(array, planes)
            channels = planes[:3]
        stats = [self._stats(channel) for channel in channels]
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        self._c1 = c1
        self._means = np.stack([mean for mean, _ in stats])  # (channel, row, column)
        twice = 2 * np.stack([variance for _, variance in stats])
        self._numerators = twice + c2  # of the structure term, and its denominator without the change
        self._denominators = twice + (1 / 12 + c2)
        # each channel's change per unit of the luminance change, shaped to broadcast over (channel, window)
        self._gains = np.asarray(gains, dtype=np.float64).reshape(-1, 1, 1)

    def _stats(self, plane: UInt8 | Float32) -> tuple[Float64, Float64]:
        """Mean and sample variance of `plane` in the grid of windows."""
        # integer sums are exact and much faster for 8-bit planes while they cannot overflow int32
        exact = plane.dtype == np.uint8 and plane.size * 255 < 2**31
        # the tables are reused (see `_Scratch`)
        shape = (plane.shape[0] + 1, plane.shape[1] + 1)
        sums: npt.NDArray[Any]
        if exact:
            sums = self._scratch.array("ssim_sums", shape, np.int32)
        else:
            sums = self._scratch.array("ssim_float_sums", shape, np.float64)
        squares = self._scratch.array("ssim_squares", shape, np.float64)
        cv2.integral2(plane, sums, squares, sdepth=cv2.CV_32S if exact else cv2.CV_64F, sqdepth=cv2.CV_64F)
        win, stride, rows, cols = _SSIM_WINDOW, _SSIM_STRIDE, self._rows, self._cols

        def window(table: npt.NDArray[np.integer[Any] | np.floating[Any]]) -> Float64:
            def corner(dy: int, dx: int) -> Float64:
                view = table[dy : dy + rows * stride : stride, dx : dx + cols * stride : stride]
                return view.astype(np.float64)

            return corner(win, win) - corner(0, win) - corner(win, 0) + corner(0, 0)

        n = win * win
        mean = window(sums) / n
        return mean, (window(squares) / n - mean * mean) * n / (n - 1)

    def predict_mask(self, sampled_mask: Float32) -> float:
        """Predicted SSIM of a keyed-noise pattern modulated by a mask (sampled at the window centres),
        scaled to change the pixels by _TARGET_RMS."""
        variance = sampled_mask.astype(np.float64) ** 2
        variance *= _TARGET_RMS**2 / float(np.mean(variance)) / float(np.mean(np.square(self._gains)))
        return self._ssim(None, variance, 1.0)

    def gain_cap(self, delta: Float32, target: float) -> float:
        """The largest gain <= 1 at which the predicted SSIM of `array + gain * delta` stays >= `target`."""
        d_mean, d_var = self._stats(delta)
        if self._ssim(d_mean, d_var, 1.0) >= target:
            return 1.0
        low, high = 0.0, 1.0
        for _ in range(10):
            middle = (low + high) / 2
            low, high = (middle, high) if self._ssim(d_mean, d_var, middle) >= target else (low, middle)
        return low

    def _ssim(self, d_mean: Float64 | None, d_var: Float64, gain: float) -> float:
        """Mean predicted SSIM over the windows and channels; `d_mean` None: a change of zero local mean,
        whose luminance term is exactly 1."""
        scaled = self._gains * gain
        terms = self._numerators / (self._denominators + scaled**2 * d_var)
        if d_mean is not None:
            c1, x_mean = self._c1, self._means
            y_mean = x_mean + scaled * d_mean
            terms *= (2 * x_mean * y_mean + c1) / (x_mean * x_mean + y_mean * y_mean + c1)
        return float(terms.reshape(len(terms), -1).mean(axis=1).mean())


def _apply(array: UInt8, delta: Float32, gains: Float64, scratch: _Scratch | None = None) -> UInt8:
    """`array` + `delta` * `gains[c]` on each channel c, rounded and saturated to 8 bits (alpha untouched)."""
    # the pixels are integers: round(x + d) = x + round(d)
    s = scratch or _Scratch(delta.shape)
    product = s("edge_work")  # free again once the whitenings are done
    planes = []
    for c, gain in enumerate(gains):
        plane = s.array(f"apply_step_{c}", delta.shape, np.int16)
        np.copyto(
            plane, np.rint(np.multiply(delta, np.float32(gain), out=product), out=product), casting="unsafe"
        )
        planes.append(plane)
    if array.ndim == 2:
        return cv2.add(array, planes[0], dtype=cv2.CV_8U)  # type: ignore[return-value]
    steps = cv2.merge(planes, dst=s.array("apply_steps", (*delta.shape, 3), np.int16))
    if array.shape[2] == 3:
        return cv2.add(array, steps, dtype=cv2.CV_8U)  # type: ignore[return-value]
    out = array.copy()
    out[..., :3] = cv2.add(array[..., :3], steps, dtype=cv2.CV_8U)
    return out


def _equal_margin(host: Float64, response: Float64) -> float:
    """The margin T such that gains (T - host) / response cost the same energy as unit gains.

    Bits occupy disjoint frequency dimensions, so energy is about proportional to the sum of squared
    gains: solve sum(((T - host) / response) ** 2) = len(host) for the larger root.
    """
    inv2 = 1.0 / response**2
    a = float(inv2.sum())
    b = -2.0 * float((host * inv2).sum())
    c = float((host**2 * inv2).sum()) - len(host)
    disc = b * b - 4 * a * c
    return (-b + math.sqrt(disc)) / (2 * a) if disc > 0 else float(np.median(response))


# ---------------------------------------------------------------------------------------------------
# Detection


@dataclass(frozen=True)
class _Reading:
    sync_score: float
    orientation: int  # index into _ORIENTATIONS
    messages: npt.NDArray[np.uint8]  # the decoder's list, best first, one message per row


def detect(image: npt.NDArray[np.uint8] | Image.Image, key: bytes | None = None) -> PixelDetection:
    """Look for a mark made under `key` (None: `guard.config.watermark_key()`)."""
    layout = _layout(_resolve_key(key))
    array = _as_rgb_array(image)
    luma = _luminance(array)
    white = _whiten(luma)
    decodes = 0
    best_sync = 0.0
    gate = _AGREEMENT_GATE if luma.size > _SMALL_IMAGE_PIXELS else _SMALL_AGREEMENT_GATE
    for geometry, plane in _planes(array, luma, white, layout):
        for reading in _read(plane, layout, gate):
            decodes += 1
            best_sync = max(best_sync, reading.sync_score)
            found = _first_checked(reading.messages, layout.crc_mask)
            if found is not None:
                return PixelDetection(
                    marked=True,
                    mark_id=found,
                    confidence=-math.log10(_false_positive_bound(reading.sync_score)),
                    sync_score=reading.sync_score,
                    flipped=_ORIENTATIONS[reading.orientation][1],
                    scale=geometry.scale,
                    angle=geometry.angle,
                    quarter_turns=_ORIENTATIONS[reading.orientation][0],
                    aspect=geometry.aspect,
                )
    assert decodes <= _MAX_DECODES
    return PixelDetection(False, None, 0.0, best_sync, False, 1.0, 0.0)


@dataclass(frozen=True)
class _Geometry:
    """What a plane's resampling undid: scale (geometric mean of the two axes), angle, width / height."""

    scale: float = 1.0
    angle: float = 0.0
    aspect: float = 1.0


_IDENTITY = _Geometry()


def _planes(
    array: UInt8, luma: Float32, white: Float32, layout: _Layout
) -> Iterator[tuple[_Geometry, Float32]]:
    """The planes to read, with the scale and angle each undoes, cheapest and likeliest first.

    The plain whitening (it reads nearly every image of 512 px and more, and the geometric search lives
    on it); then, for marks the photo drowns there (small images), the edge-preserving whitening
    (`_whiten_edges`) and the sum of both, computed only when needed; then the geometric search's
    candidates. The edge-preserving reading keeps edges and textures out of the soft bits but loses the
    mark's low frequencies, where blur leaves it; the sum keeps some of both. The embedder's host-aware
    gains are computed on the sum, so that both readings gain.

    Measured at 256 px (11 photos x 2 keys, the bench's 16 non-geometric attacks, exact ids): 63.9%
    with the plain reading alone; 83.0% adding a bilateral-filter edge reading (marks of the earlier
    embedder); 89.5% with the flatter masks too; 93.5% with this guided-filter reading, the sum and
    gains computed on the sum (the guided filter kept more of the mark under blur: blur 2 read 58% against
    28% at the known alignment, and costs box filters only). At the known alignment (11 photos x 8 keys;
    none, JPEG 50, crop 75%, blur 2, noise 10, brightness x1.3, contrast x0.7, resize 0.5, crop 90%) the
    plain reading alone decodes 60.7%, the edge reading 90.8%, the three together 92.3%. At 512 px and
    above the plain reading stays first: it reads almost every image, and the others cost time only
    when it fails.

    Small images (up to `_SMALL_IMAGE_PIXELS`) are then read with non-local means removing the photo
    (`_whiten_denoised`), at three strengths. 256 px, 11 photos x 5 keys, exact ids, without -> with:
    blur 2 78.2% -> 96.4%, noise 10 90.9% -> 98.2%, JPEG 50 98.2% -> 100%, crop 75% 70.9% -> 81.8%,
    crop 90% unchanged at 94.5%; brightness x1.3 stays 90.9% (one photo: a third of it saturates, and with
    it the flat ground that carried most of the readable mark). The embedder's gains are not computed
    on these readings: measured, it gained nothing beyond noise and would cost three filters per embed.
    Last, the sum of the edge reading and the three: their residual photo differs, so the sum keeps the
    mark and averages some of the photo out. 256 px, 11 photos x 5 keys x 3 key sets (165 trials each),
    misses without -> with it: crop 75% 31 -> 25, crop 90% 12 -> 6, blur 2 5 -> 5, noise 10 2 -> 1 (the
    sum of all five readings: 26, 8, 4, 1; both sums as two more planes: 24, 6, 4, 1).

    The colour reading (`_colour_reading`, whitened edge-preserving) comes after the three luminance
    planes and before non-local means: it costs about 1 ms at 256 px (20 ms at 1024) against about 17
    ms per strength. At the known alignment (256 px, 2 keys) it cut the bit error rate where the photo
    drowns the luminance reading, immunohistochemistry under crop 75% 0.27 -> 0.12 and brightness x1.3
    0.29 -> 0.11 (the saturated ground gone, the stained tissue's detail lies along the stains' colours),
    astronaut under crop 75% 0.13 -> 0.10; under JPEG 50 it reads 0.36-0.45 (chroma erased) and the
    luminance planes read. 256 px, 165 trials per attack as above, misses without -> with it: crop 75%
    9 -> 0, brightness x1.3 15 -> 0, the other 14 non-geometric attacks 0 either way. Its plain and
    summed whitenings read nothing more (10 attacks x 165 trials), so only this one is read. With it,
    non-local means no longer changes a count on the bench's photos, but on monochrome copies of them
    (no colour reading; 55 trials) it still does: crop 75% 12 -> 7, blur 2 10 -> 2 misses; it stays.

    Last, perspective tilts (`_perspective_candidates`), from the identity and from the geometric
    search's refined geometries whose sync peak stood out without reading, searched on the colour
    reading (on the sum of the two luminance readings for grey images) and read on it and on the sum.
    """
    yield _IDENTITY, white
    edges = _whiten_edges(luma)
    yield _IDENTITY, edges
    both = white + edges
    yield _IDENTITY, both
    colour = _colour_reading(array)
    coloured = None if colour is None else _whiten_edges(colour)
    if coloured is not None:
        yield _IDENTITY, coloured
    if luma.size <= _SMALL_IMAGE_PIXELS and _DENOISE_STRENGTHS:
        summed = edges.copy()
        for strength in _DENOISE_STRENGTHS:
            reading = _whiten_denoised(luma, strength)
            yield _IDENTITY, reading
            summed += reading
        yield _IDENTITY, summed
    starts: list[tuple[float, _Geometry]] = []
    h, w = white.shape
    half: Float32 = cv2.resize(white, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # type: ignore[assignment]
    for geometry, matrix in _spectral_candidates(white, layout, half, starts):
        yield geometry, _undo_geometry(white, matrix)
    yield from _perspective_candidates(both if coloured is None else coloured, both, layout, starts)


def _colour_reading(array: UInt8) -> Float32 | None:
    """The mix of R, G and B that reads the mark against the least photo; None for grey images.

    The mark changes the pixels along `_COLOUR_GAINS`, c. A photo's detail is not spread evenly over
    the colours: in most photos the channels move together (light and shade), in stained tissue along
    the stains' colours. For detail of colour covariance S, the mix v = S^-1 c is the matched filter,
    the linear reading with the most mark per unit of photo; it is scaled so that v . c = 1, the mark's
    amplitude in luminance. Estimated on the image read, whose mark only adds to S along c (which does
    not turn S^-1 c). It leans on the mark's chroma, which JPEG's coarse chroma quantisation erases (the
    luminance readings read those images), and gives nothing on grey images, where there is no chroma.
    """
    if _is_grey(array):
        return None
    rgb = array[..., :3].astype(np.float32)
    detail = rgb - cv2.GaussianBlur(rgb, (0, 0), _COLOUR_DETAIL_SIGMA)
    covariance = np.cov(detail.reshape(-1, 3)[::_COLOUR_SAMPLE_STEP], rowvar=False)
    mix = np.linalg.solve(covariance + _COLOUR_RIDGE * np.eye(3), _COLOUR_GAINS)
    mix /= mix @ _COLOUR_GAINS
    reading: Float32 = cv2.transform(rgb, mix[None].astype(np.float32))  # type: ignore[assignment]
    return reading


def _first_checked(messages: npt.NDArray[np.uint8], crc_mask: int) -> int | None:
    """The id of the first message (row) whose keyed CRC checks, else None."""
    split = _ecc.PAYLOAD_BITS // 8
    for row in np.packbits(messages, axis=1):
        mark_id = int.from_bytes(row[:split].tobytes(), "big")
        if int.from_bytes(row[split:].tobytes(), "big") == _ecc.keyed_crc(mark_id, crc_mask):
            return mark_id
    return None


def _check(message: npt.NDArray[np.uint8], crc_mask: int) -> int | None:
    mark_id = _ecc.bits_to_int(message[: _ecc.PAYLOAD_BITS])
    crc = _ecc.bits_to_int(message[_ecc.PAYLOAD_BITS :])
    return mark_id if crc == _ecc.keyed_crc(mark_id, crc_mask) else None


def _false_positive_bound(sync_score: float) -> float:
    """Upper bound on P(an unmarked image decodes to a checking id with this sync score or better).

    The CRC checks by chance with probability 2**-32 per decoded message, and at most `_MAX_DECODES`
    decodes of `_LIST_SIZE` messages each run.
    The sync dimensions are disjoint from the bit dimensions, so on an unmarked image the sync peak is
    independent of the decoded bits: its z-score is at least `sync_score` with probability at most
    (number of shifts and orientations) * Q(sync_score).
    """
    tail = 0.5 * math.erfc(sync_score / math.sqrt(2.0))
    sync_p = min(1.0, len(_ORIENTATIONS) * TILE * TILE * tail)
    return max(_MAX_DECODES * _LIST_SIZE * 2.0**-_ecc.CRC_BITS * sync_p, 1e-300)


def _read(plane: Float32, layout: _Layout, gate: float = 0.0) -> Iterator[_Reading]:
    """Fold, find the shift and orientation by sync correlation, and decode the strongest peaks first.

    The fold is correlated with the sync tile in each of the eight `_ORIENTATIONS` (one equalised
    spectrum, eight templates); the `_PEAKS` strongest peaks over all of them are decoded, each from
    the fold turned back. Then the 8 neighbours of the strongest peak: on weak photos the sync peak (an
    eighth of the mark) is often a pixel off, which costs the band's high frequencies most of their
    correlation. Readings are decoded lazily, in this order, so a clear mark costs one decode; a shift
    whose soft bits' `_ecc.codeword_agreement` is below `gate` is not decoded at all.
    """
    folded = _fold(plane)
    equalized = _equalize(np.fft.rfft2(folded))
    corrs = np.fft.irfft2(equalized * layout.oriented_sync, s=(TILE, TILE)).reshape(len(_ORIENTATIONS), -1)
    tops = np.partition(corrs, corrs.shape[1] - _PEAKS, axis=1)[:, -_PEAKS:]
    z_tops = -np.sort(
        -(tops - corrs.mean(axis=1, keepdims=True)) / (corrs.std(axis=1, keepdims=True) + 1e-12)
    )
    candidates = [  # (z, orientation, rank of the peak in it)
        (float(z), orientation, rank) for orientation, row in enumerate(z_tops) for rank, z in enumerate(row)
    ]
    candidates.sort(key=lambda c: -c[0])
    spectra: dict[int, npt.NDArray[np.complex128]] = {}
    z_maps: dict[int, Float64] = {}

    def turned_back(orientation: int) -> tuple[npt.NDArray[np.complex128], Float64]:
        """The fold turned back from `orientation`: its equalised spectrum and sync z-map."""
        if orientation not in spectra:
            spectrum = _equalize(np.fft.rfft2(_unorient(folded, orientation)))
            corr = np.fft.irfft2(spectrum * np.conj(layout.sync_tile_fft), s=(TILE, TILE))
            spectra[orientation] = spectrum
            z_maps[orientation] = (corr - corr.mean()) / (corr.std() + 1e-12)
        return spectra[orientation], z_maps[orientation]

    peaks: list[tuple[int, int, int]] = []
    for _, orientation, rank in candidates[:_PEAKS]:
        _, z_map = turned_back(orientation)
        flat = z_map.ravel()
        top = np.argpartition(flat, flat.size - _PEAKS)[-_PEAKS:]
        index = int(top[np.argsort(-flat[top], kind="stable")][rank])
        peaks.append((orientation, *divmod(index, TILE)))
    top_orientation, top_dy, top_dx = peaks[0]
    neighbours = [
        (top_orientation, (top_dy + a) % TILE, (top_dx + b) % TILE)
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        if (a or b) and candidates[0][0] >= _NEIGHBOUR_MIN_Z
    ]
    # The embedding grid starts at the top-left pixel, and only crops (and rotations) move it: an image
    # whose sync peak is lost in the photo's own correlation (small images) is still read at the origin,
    # as is or mirrored (a mirror of width w moves the grid to -w mod TILE).
    origins = [(0, 0, 0), (1, 0, -plane.shape[1] % TILE)]
    shifts = peaks[:1] + [o for o in origins if o not in peaks] + peaks[1:]
    shifts += [shift for shift in neighbours if shift not in shifts]
    softs = []
    for orientation, dy, dx in shifts:
        spectrum, _ = turned_back(orientation)
        soft = _shifted_soft_bits(spectrum, dy, dx, layout)
        softs.append(soft / (np.std(soft) + 1e-12))
    # One plain Viterbi pass over every shift's soft bits at once; the list decoder (about 3.5 ms each)
    # runs only where they lie near enough to the code (see `_AGREEMENT_GATE`).
    agreements = _ecc.codeword_agreement(np.stack(softs)) if gate > 0.0 else np.ones(len(softs))
    for (orientation, dy, dx), soft, agreement in zip(shifts, softs, agreements):
        if agreement < gate:
            continue
        messages = _ecc.list_viterbi_decode(soft, _LIST_SIZE)
        yield _Reading(float(z_maps[orientation][dy, dx]), orientation, messages)


def _equalize(spectrum: npt.NDArray[np.complex128], tile: int = TILE) -> npt.NDArray[np.complex128]:
    """Divide each coefficient by the noise power around it (estimated from the fold itself).

    The photo residual and the attack's noise are far from white after folding: blur and JPEG take the
    high frequencies, the photo fills the low ones and, along its edges and textures, some directions
    far more than others. Weighting by 1 / variance is the matched filter for a mark whose own spectrum
    the attack attenuated like the photo's; the variance is the mean power in a window of
    `_EQUALIZE_WINDOW` coefficients (for a full tile) around each one. Against the mean over each
    frequency ring (blind to direction) it raised the soft bits' signal-to-noise ratio by a factor 1.2 to
    1.5 (512 px: unattacked 2.1 -> 3.2, JPEG 50 1.7 -> 2.3, blur 2 1.2 -> 1.9, crop 75% 1.04 -> 1.21;
    256 px: 1.2 -> 1.5, 0.80 -> 0.86, 0.69 -> 0.84); wider windows lose the sync peak under blur.
    """
    equalized: npt.NDArray[np.complex128] = spectrum / _noise_power(spectrum, tile)
    return equalized


def _noise_power(spectrum: npt.NDArray[np.complex128], tile: int = TILE) -> Float32:
    """The mean power in a window around each coefficient, what `_equalize` divides by."""
    power = np.fft.fftshift((spectrum.real**2 + spectrum.imag**2).astype(np.float32), axes=0)
    window = max(3, _EQUALIZE_WINDOW * tile // TILE | 1)
    local = cv2.blur(power, (window, window), borderType=cv2.BORDER_REFLECT)
    noise: Float32 = np.fft.ifftshift(local, axes=0) + np.float32(1e-12)
    return noise


def _shifted_soft_bits(spectrum: npt.NDArray[np.complex128], dy: int, dx: int, layout: _Layout) -> Float64:
    """`_soft_bits` of the tile rolled by (-dy, -dx): the band's coefficients only, each turned by its
    phase ramp (the rest of the spectrum is never read)."""
    values = spectrum[layout.rows, layout.cols] * np.exp(
        2j * np.pi * (layout.band_ky * dy + layout.band_kx * dx)
    )
    dims = np.concatenate([values.real, values.imag])
    return (dims[layout.bit_dims] * layout.bit_chips).sum(axis=1)  # type: ignore[no-any-return]


def _soft_bits(spectrum: npt.NDArray[np.complex128], layout: _Layout) -> Float64:
    """Soft value of each coded bit from the aligned fold's spectrum (+ favours coded bit 0)."""
    dims = _spectrum_to_dims(spectrum, layout.rows, layout.cols)
    return (dims[layout.bit_dims] * layout.bit_chips).sum(axis=1)  # type: ignore[no-any-return]


def _spectral_candidates(
    white: Float32, layout: _Layout, half: Float32, starts: list[tuple[float, _Geometry]]
) -> Iterator[tuple[_Geometry, Float64]]:
    """Geometries read from the mark's lattice in the power spectrum, confirmed on the sync peak.

    The whitened plane's power spectrum, divided by its local mean (the photo's smooth spectrum), is
    resampled on a log-polar grid and correlated (FFT) with the tile's band lattice drawn on the same
    grid: a peak gives a rotation (modulo 90 degrees, which `_read`'s orientations take) and a scale,
    for every angle and scales 0.5 to 2. A log-log grid of the two axes' frequencies gives the scaling
    of width and height the same way. Each proposal whose lattice z-score reaches `_SPECTRAL_MIN_Z` is
    refined by the coherent sync search (`_refine`): one step at half resolution, then, where the sync
    peak stands out there (`_PROMISING_Z`), finer steps; refined geometries are yielded by their sync
    z-score, those below `_CONFIRM_Z` only the best one. Unmarked images pay the spectrum (about 5 ms
    at 512 px) and the half-resolution steps, and read nothing more. Every refined geometry is added to
    `starts` with its sync z-score (`half`: `white` at half resolution).
    """
    power = _flattened_power(white)
    proposals = [(z, _Geometry(scale, angle)) for z, scale, angle in _log_polar_peaks(power)]
    for z, scale_x, scale_y in _log_log_peaks(power):
        # an isotropic log-log peak is a scale the log-polar peaks may have missed (textured photos)
        stretched = abs(math.log(scale_x / scale_y)) > 2 * _SCALE_STEP
        scale = math.sqrt(scale_x * scale_y)
        known = any(
            abs(math.log(g.scale / scale)) < 2 * _SCALE_STEP and abs(g.angle) < 2 * _ANGLE_STEP
            for _, g in proposals
        )
        if stretched or not known:
            proposals.append((z, _Geometry(scale, 0.0, scale_x / scale_y if stretched else 1.0)))
    # First a step at half resolution for each; the finer steps only for those whose sync peak stands
    # out there (512 px photos, 33 unmarked: at most 5.6; marked and rotated or rescaled: 9 to 15).
    # Below `_HALF_MIN_SCALE` the mark's band passes the half-resolution plane's Nyquist limit: those
    # proposals (a 2048 px release read at `verify`'s 1024 px view is exactly halved) take their first
    # step at full resolution.
    coarse = [
        _refine(g, white, half, layout, _COARSE_LEVELS if g.scale >= _HALF_MIN_SCALE else _COARSE_FULL)
        for z, g in proposals
        if z >= _SPECTRAL_MIN_Z
    ]
    coarse.sort(key=lambda r: -r[0])
    refined = [_refine(g, white, half, layout, _FINE_LEVELS) for z, g in coarse if z >= _PROMISING_Z]
    refined.sort(key=lambda r: -r[0])
    starts.extend(refined)
    for rank, (sync_z, geometry) in enumerate(refined):
        if sync_z < _CONFIRM_Z and rank > 0:
            return
        yield geometry, _geometry_matrix(geometry)


def _perspective_candidates(
    plane: Float32, other: Float32, layout: _Layout, starts: list[tuple[float, _Geometry]]
) -> Iterator[tuple[_Geometry, Float32]]:
    """Planes rectified by a homography, for images tilted in perspective (see `_perspective`).

    `plane` is the colour reading (None of it for grey images: the luminance readings' sum), where the
    mark stands out of the photo most and its windows' peaks with it: on the tuning photos, the search
    below from the identity read 24 of 25 hard tilts (3-5 %, rotated 3 degrees) on it against 10 on
    the plain whitening and 14 on the luminance sum. But JPEG erases the chroma it lives on, so the
    search runs on whichever of `plane` and `other` (the luminance sum) has the stronger windows, and
    each homography found is read on both.

    Starts, at most `_PERSPECTIVE_READS`, strongest first: the geometric search's refined geometries
    (`starts`, already read in vain) whose whole plane's sync peak reached `_PERSPECTIVE_MIN_Z`, and the
    identity where a window of the half-resolution plane reached `_PERSPECTIVE_WINDOW_MIN_Z` (a tilt
    smears the whole plane's peak far more than a window's). Unmarked images pay those windows'
    correlations (about 5 ms a plane at 512 px) and, where the photo's own peaks reach the threshold
    (none of 300 unmarked copies; 2 % at 5.3), the rest (0.3 to 1.5 s at 512 px, up to 3 s at 1024).

    From each start, rounds of local sync peaks (`_rounds`). Where those leave the whole plane's peak
    below `_PERSPECTIVE_SETTLED_Z` (the windows' peaks were mostly the photo's: a strong tilt smears
    single tiles too), the mark is first found where it reads best: the strongest of a finer grid of
    windows, the map of a square around it climbed to its sync peak (`_perspective.climb_region`), the
    whole plane's corners climbed from that map (`_perspective.climb_corners`), then the rounds again.
    The geometry reported is the homography's scale, angle and stretch at the centre.
    """
    evidence = []
    for candidate in (plane, other) if other is not plane else (plane,):
        h, w = candidate.shape
        half: Float32 = cv2.resize(candidate, (w // 2, h // 2), interpolation=cv2.INTER_AREA)  # type: ignore[assignment]
        evidence.append(
            (_window_peak(half, layout, _EVIDENCE_WINDOWS)[0], candidate is plane, candidate, half)
        )
    windows, _, plane, half = max(evidence, key=lambda e: e[:2])
    other = evidence[0][2] if plane is not evidence[0][2] else evidence[-1][2]
    chosen = [(z, g) for z, g in starts if z >= _PERSPECTIVE_MIN_Z]
    if windows >= _PERSPECTIVE_WINDOW_MIN_Z:
        chosen.append((windows, _IDENTITY))
    chosen.sort(key=lambda s: -s[0])

    def score(rectified: Float32, full: bool = True) -> float:
        sync = layout.oriented_sync if full else layout.oriented_half_sync
        return float(_sync_z_maps(rectified, sync).max())

    to_half, from_half = np.diag([2.0, 2.0, 1.0]), np.diag([0.5, 0.5, 1.0])
    for _, start in chosen[:_PERSPECTIVE_READS]:
        base, size = _perspective.affine_start(_geometry_matrix(start), plane.shape)
        z, homography = _rounds(plane, base, size, layout)
        if z < _PERSPECTIVE_SETTLED_Z:
            half_size = (size[0] // 2, size[1] // 2)
            rectified_half = _perspective.rectify(half, from_half @ base @ to_half, half_size)
            _, centre = _window_peak(rectified_half, layout, _ANCHOR_WINDOWS)
            side = min(_ANCHOR_REGION // 2, *half_size)
            _, linear = _perspective.climb_region(rectified_half, centre, side, score, _REGION_STEPS, 3)
            anchored = base.copy()
            anchored[:, :2] = base[:, :2] @ linear
            _, climbed = _perspective.climb_corners(
                plane, half, anchored, size, score, _CORNER_HALF_STEPS, _CORNER_FULL_STEPS, 3
            )
            again, rounded = _rounds(plane, climbed, size, layout)
            if again > z:
                homography = rounded
        geometry = _linear_geometry(
            _perspective.local_linear(homography, np.array([size[0] / 2, size[1] / 2]))
        )
        yield geometry, _perspective.rectify(plane, homography, size)
        if other is not plane:
            yield geometry, _perspective.rectify(other, homography, size)


def _rounds(
    plane: Float32, homography: Float64, size: tuple[int, int], layout: _Layout
) -> tuple[float, Float64]:
    """Rounds of local sync peaks from `homography` (rectified -> image pixels, canvas `size`): each
    window's peak near the strongest one tells how far the mark there is off, and the homography fitted
    to those shifts (`_perspective.window_shifts`, `_perspective.corrected`) moves it back, while the
    whole plane's peak rises. Returns the best round's peak with its homography."""

    def correlate(plane: Float32) -> Float64:
        return _sync_z_maps(plane, layout.oriented_sync)

    best = (float(correlate(_perspective.rectify(plane, homography, size)).max()), homography)
    stalled = 0
    for _ in range(_PERSPECTIVE_ROUNDS):
        centres, shifts, _ = _perspective.window_shifts(
            _perspective.rectify(plane, homography, size),
            correlate,
            _PERSPECTIVE_WINDOW,
            _PERSPECTIVE_STRIDE,
            _PERSPECTIVE_RADIUS,
            _PERSPECTIVE_SHIFT_MIN_Z,
        )
        moved = _perspective.corrected(homography, centres, shifts)
        if moved is None:
            break
        homography = moved
        z = float(correlate(_perspective.rectify(plane, homography, size)).max())
        stalled = 0 if z > best[0] + 0.1 else stalled + 1
        if z > best[0]:
            best = (z, homography)
        elif z < best[0] - _PERSPECTIVE_SETBACK:
            homography = best[1]  # a fit pulled by the photo's peaks: on from the best one
        if stalled == _PERSPECTIVE_STALLS:
            break
    return best


def _window_peak(half: Float32, layout: _Layout, per_side: int) -> tuple[float, Float64]:
    """The strongest sync peak of the half-resolution plane's windows (`_PERSPECTIVE_WINDOW` pixels of
    the full plane, every half window, at most `per_side` a side: further apart on large images) and
    that window's centre (half-resolution pixels, x y)."""
    side = _PERSPECTIVE_WINDOW // 2
    h, w = half.shape
    if h < side or w < side:
        return 0.0, np.array([w / 2, h / 2])
    stride_y = max(side // 2, -(-(h - side) // (per_side - 1)))
    stride_x = max(side // 2, -(-(w - side) // (per_side - 1)))
    peaks = [
        (
            float(_sync_z_maps(half[top : top + side, left : left + side], layout.oriented_half_sync).max()),
            top,
            left,
        )
        for top in range(0, h - side + 1, stride_y)
        for left in range(0, w - side + 1, stride_x)
    ]
    z, top, left = max(peaks)
    return z, np.array([left + side / 2, top + side / 2])


def _linear_geometry(linear: Float64) -> _Geometry:
    """Scale, angle and stretch of a 2 x 2 map (tile -> image), its shear left out."""
    angle = math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1])
    c, s = math.cos(angle), math.sin(angle)
    stretched = np.array([[c, s], [-s, c]]) @ linear
    width, height = abs(float(stretched[0, 0])), abs(float(stretched[1, 1]))
    return _Geometry(math.sqrt(width * height), math.degrees(angle), width / max(height, 1e-9))


def _geometry_matrix(geometry: _Geometry) -> Float64:
    """Tile coordinates -> image pixels: width scaled by scale * sqrt(aspect), height by scale /
    sqrt(aspect), then rotated by angle."""
    root = math.sqrt(geometry.aspect)
    return _matrix(1.0, geometry.angle) @ np.diag([geometry.scale * root, geometry.scale / root])


def _refine(
    geometry: _Geometry,
    white: Float32,
    half: Float32,
    layout: _Layout,
    levels: tuple[tuple[float, bool], ...],
) -> tuple[float, _Geometry]:
    """Hill-climb the sync peak around `geometry` (about a grid step of the spectral estimate at half
    resolution, then finer steps at full resolution, where the fold's tolerance is tightest); returns
    the last sync z-score with the geometry."""
    free_aspect = geometry.aspect != 1.0
    for fraction, full in levels:
        plane, sync = (white, layout.oriented_sync) if full else (half, layout.oriented_half_sync)
        log_step = fraction * _SCALE_STEP
        if free_aspect:
            # the two axes' scales: scale and aspect moved together
            steps = [
                _Geometry(geometry.scale * math.exp(log_step * (i + j) / 2), 0.0,
                          geometry.aspect * math.exp(log_step * (i - j)))
                for i in (-1, 0, 1) for j in (-1, 0, 1)
            ]  # fmt: skip
        else:
            steps = [
                _Geometry(
                    geometry.scale * math.exp(i * log_step), geometry.angle + j * fraction * _ANGLE_STEP
                )
                for i in (-1, 0, 1)
                for j in (-1, 0, 1)
            ]
        z, best = max((_sync_peak(plane, _geometry_matrix(g), sync), k) for k, g in enumerate(steps))
        geometry = steps[best]
    return z, geometry


def _flattened_power(white: Float32) -> Float32:
    """The power spectrum (rfft2, rows fft-shifted) divided by its local mean, minus one: about zero
    where only the photo is, positive on the mark's lattice."""
    h, w = white.shape
    spectrum = np.fft.rfft2(white, s=(_even_dft_size(h), _even_dft_size(w)))
    power = np.fft.fftshift((spectrum.real**2 + spectrum.imag**2).astype(np.float32), axes=0)
    size = (_SPECTRUM_WINDOW, _SPECTRUM_WINDOW)
    local: Float32 = cv2.blur(power, size, borderType=cv2.BORDER_REFLECT)  # type: ignore[assignment]
    flattened: Float32 = power / (local + np.float32(1e-12)) - np.float32(1.0)
    return flattened


def _even_dft_size(n: int) -> int:
    size = cv2.getOptimalDFTSize(n)
    while size % 2:
        size = cv2.getOptimalDFTSize(size + 1)
    return int(size)


def _sample_spectrum(power: Float32, fy: Float64, fx: Float64) -> Float32:
    """`_flattened_power` at frequencies (cycles per pixel, fx >= 0), bilinear; 0 outside."""
    rows, columns = power.shape
    full_rows = rows  # the shifted row axis holds every vertical frequency
    full_columns = 2 * (columns - 1)
    map_y = (fy * full_rows + full_rows // 2).astype(np.float32)
    map_x = (fx * full_columns).astype(np.float32)
    sampled: Float32 = cv2.remap(  # type: ignore[assignment]
        power, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
    )
    return sampled


def _log_polar_axes() -> tuple[Float64, Float64]:
    low, high = _LOG_POLAR_RADII
    log_radii = np.linspace(math.log(low), math.log(high), _LOG_POLAR_STEPS)
    angles = np.linspace(-math.pi / 2, math.pi / 2, _LOG_POLAR_ANGLES, endpoint=False)
    return log_radii, angles


def _log_log_axis() -> Float64:
    low, high = _LOG_LOG_RANGE
    return np.linspace(math.log(low), math.log(high), _LOG_LOG_STEPS)


def _splat(
    grid_shape: tuple[int, int], first: Float64, second: Float64, wrap_second: bool
) -> npt.NDArray[np.complex128]:
    """Unit points at fractional grid positions, blurred a little, mean removed; its rfft2."""
    grid = np.zeros(grid_shape, dtype=np.float32)
    i = np.rint(first).astype(int)
    j = np.rint(second).astype(int)
    j = j % grid_shape[1] if wrap_second else j
    keep = (i >= 0) & (i < grid_shape[0]) & (j >= 0) & (j < grid_shape[1])
    np.add.at(grid, (i[keep], j[keep]), 1.0)
    blurred = cv2.GaussianBlur(grid, (0, 0), 0.7)
    spectrum: npt.NDArray[np.complex128] = np.fft.rfft2(blurred - blurred.mean())
    return spectrum


@lru_cache(maxsize=1)
def _lattice_templates() -> tuple[npt.NDArray[np.complex128], npt.NDArray[np.complex128]]:
    """The band's lattice (key-independent: every band coefficient carries mark power) on the
    log-polar and the log-log grid, as rfft2 for the correlations."""
    rows, cols = _band_positions()
    ky = np.fft.fftfreq(TILE)[rows]
    kx = np.fft.rfftfreq(TILE)[cols]
    log_radii, angles = _log_polar_axes()
    radius_step, angle_step = log_radii[1] - log_radii[0], angles[1] - angles[0]
    polar = _splat(
        (_LOG_POLAR_STEPS, _LOG_POLAR_ANGLES),
        (np.log(np.hypot(ky, kx)) - log_radii[0]) / radius_step,
        (np.arctan2(ky, kx) - angles[0]) / angle_step,
        wrap_second=True,
    )
    axis = _log_log_axis()
    step = axis[1] - axis[0]
    resolved = (np.abs(ky) >= _LOG_LOG_MIN_FREQUENCY) & (kx >= _LOG_LOG_MIN_FREQUENCY)
    log_log = _splat(
        (_LOG_LOG_STEPS, _LOG_LOG_STEPS),
        (np.log(np.abs(ky[resolved])) - axis[0]) / step,
        (np.log(kx[resolved]) - axis[0]) / step,
        wrap_second=False,
    )
    return polar, log_log


def _shift_window(steps: int, log_step: float) -> npt.NDArray[np.bool_]:
    """Cyclic shift indices of a log axis that stand for scales in `_SCALE_RANGE`, as a mask."""
    low, high = _SCALE_RANGE
    shifts = np.arange(steps)
    shifts = np.where(shifts > steps // 2, shifts - steps, shifts)
    scales = np.exp(-shifts * log_step)
    return (scales >= low * 0.99) & (scales <= high * 1.01)  # type: ignore[no-any-return]


def _peak_offset(values: Float64, index: int) -> float:
    """Sub-sample position of a peak by a parabola through it and its neighbours (cyclic)."""
    left, centre, right = values[index - 1], values[index], values[(index + 1) % len(values)]
    curvature = left - 2 * centre + right
    return float(0.5 * (left - right) / curvature) if curvature < 0 else 0.0


def _log_polar_peaks(power: Float32) -> list[tuple[float, float, float]]:
    """(z, scale, angle) of the `_SPECTRAL_ROTATIONS` best rotations, distinct modulo 90 degrees and
    from the square lattice's own alias (its diagonals: 45 degrees on, at 1 / sqrt(2) the scale)."""
    log_radii, angles = _log_polar_axes()
    radii = np.exp(log_radii)[:, None]
    grid = _sample_spectrum(power, radii * np.sin(angles)[None, :], radii * np.cos(angles)[None, :])
    template, _ = _lattice_templates()
    corr = np.fft.irfft2(np.fft.rfft2(grid - grid.mean()) * np.conj(template), s=grid.shape)
    radius_step, angle_step = log_radii[1] - log_radii[0], angles[1] - angles[0]
    valid = _shift_window(_LOG_POLAR_STEPS, radius_step)
    scores = corr[valid]
    z = (corr - scores.mean()) / (scores.std() + 1e-12)
    z[~valid] = -np.inf
    peaks: list[tuple[float, float, float]] = []
    quarter = _LOG_POLAR_ANGLES // 2
    for _ in range(_SPECTRAL_ROTATIONS):
        i, j = np.unravel_index(int(np.argmax(z)), z.shape)
        shift = float(i - _LOG_POLAR_STEPS if i > _LOG_POLAR_STEPS // 2 else i)
        shift += _peak_offset(corr[:, j], int(i))
        turn = j + _peak_offset(corr[i], int(j))
        angle = math.degrees(turn * angle_step)
        angle = (angle + 45.0) % 90.0 - 45.0  # the lattice's quarter-turn symmetry: `_read` takes the rest
        peaks.append((float(z[i, j]), math.exp(-shift * radius_step), angle))
        # the same peak a quarter turn on, and its close neighbours, are not distinct rotations
        alias = round(math.log(math.sqrt(2.0)) / radius_step)
        for row_offset, column_offsets in ((0, (0, quarter)), (alias, (quarter // 2, 3 * quarter // 2))):
            for sign in (1, -1):
                near_rows = np.arange(i + sign * row_offset - 3, i + sign * row_offset + 4) % _LOG_POLAR_STEPS
                for offset in column_offsets:
                    columns = np.arange(j + offset - 4, j + offset + 5) % _LOG_POLAR_ANGLES
                    z[np.ix_(near_rows, columns)] = -np.inf
    return peaks


def _log_log_peaks(power: Float32) -> list[tuple[float, float, float]]:
    """(z, width scale, height scale) of the best independent scaling of the two axes."""
    axis = np.exp(_log_log_axis())
    fy = np.repeat(axis[:, None], _LOG_LOG_STEPS, axis=1)
    fx = np.repeat(axis[None, :], _LOG_LOG_STEPS, axis=0)
    grid = _sample_spectrum(power, fy, fx) + _sample_spectrum(power, -fy, fx)
    _, template = _lattice_templates()
    corr = np.fft.irfft2(np.fft.rfft2(grid - grid.mean()) * np.conj(template), s=grid.shape)
    step = float(np.log(axis[1] / axis[0]))
    valid_axis = _shift_window(_LOG_LOG_STEPS, step)
    valid = valid_axis[:, None] & valid_axis[None, :]
    scores = corr[valid]
    z = (corr - scores.mean()) / (scores.std() + 1e-12)
    z[~valid] = -np.inf
    i, j = np.unravel_index(int(np.argmax(z)), z.shape)
    shift_y = (i - _LOG_LOG_STEPS if i > _LOG_LOG_STEPS // 2 else i) + _peak_offset(corr[:, j], int(i))
    shift_x = (j - _LOG_LOG_STEPS if j > _LOG_LOG_STEPS // 2 else j) + _peak_offset(corr[i], int(j))
    return [(float(z[i, j]), math.exp(-shift_x * step), math.exp(-shift_y * step))]


def _matrix(scale: float, angle: float) -> Float64:
    """Tile coordinates -> image pixels for an image scaled by `scale` and rotated by `angle` degrees."""
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return scale * np.array([[c, -s], [s, c]])


def _sync_peak(plane: Float32, matrix: Float64, sync_fft: npt.NDArray[np.complex128]) -> float:
    """z-score of the sync correlation peak (best of the eight orientations) after undoing `matrix`;
    `sync_fft` (the stacked conjugate oriented templates) sets the tile."""
    tile = sync_fft.shape[1]
    equalized = _equalize(np.fft.rfft2(_fold(_undo_geometry(plane, matrix), tile)), tile)
    corrs = np.fft.irfft2(equalized * sync_fft, s=(tile, tile)).reshape(len(sync_fft), -1)
    z = (corrs.max(axis=1) - corrs.mean(axis=1)) / (corrs.std(axis=1) + 1e-12)
    return max(0.0, float(z.max()))


def _sync_z_maps(plane: Float32, sync_fft: npt.NDArray[np.complex128]) -> Float64:
    """The sync correlation's z-scores of `plane` as it is, (orientation, dy, dx); `sync_fft` (the
    stacked conjugate oriented templates) sets the tile."""
    tile = sync_fft.shape[1]
    equalized = _equalize(np.fft.rfft2(_fold(plane, tile)), tile)
    corrs = np.fft.irfft2(equalized * sync_fft, s=(tile, tile)).reshape(len(sync_fft), -1)
    z: Float64 = (corrs - corrs.mean(axis=1, keepdims=True)) / (corrs.std(axis=1, keepdims=True) + 1e-12)
    return z.reshape(len(sync_fft), tile, tile)


def _undo_geometry(white: Float32, matrix: Float64) -> Float32:
    """Resample so that one tile is TILE pixels again: dst(u) = white(matrix @ u + offset)."""
    h, w = white.shape
    corners = np.array([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64).T
    inverse = np.linalg.inv(matrix)
    mapped = inverse @ corners
    low = mapped.min(axis=1)
    size = np.ceil(mapped.max(axis=1) - low).astype(int)
    affine = np.hstack([matrix, (matrix @ low)[:, None]]).astype(np.float64)
    return cv2.warpAffine(  # type: ignore[return-value]
        white,
        affine,
        (int(size[0]), int(size[1])),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
