"""Bias observations: faces, perceived skin tone and perceived gender presentation, and batch statistics.

Everything here is *perceived*: what an image appears to show, never who anyone is.

Faces: OpenCV's frontal-face Haar cascade (shipped with opencv-python-headless 4.x; DESIGN.md pins <5).

Perceived skin tone: skin pixels inside the face's central ellipse (Chai & Ngan 1999 YCrCb rule:
133 <= Cr <= 173, 77 <= Cb <= 127), converted to CIELAB (OpenCV, float RGB in [0, 1], D65) and
summarised by the Individual Typology Angle of their medians, ITA = arctan((L* - 50) / b*) * 180/pi
(Chardon, Cretois & Hourseau 1991; Del Bino & Bernerd 2013). The angle is binned to the 10-point
Monk Skin Tone scale (Monk 2019; scale published by Google, skintone.google) by the nearest of the
ITA values of the scale's ten published reference colours, computed here with the same conversion;
the bin edges are the midpoints between neighbouring reference angles. This mapping is approximate:
the Monk scale is defined by colour swatches for human raters, not by an angle, and lighting moves
ITA a lot. Too few skin pixels (a grayscale image, a face in shadow) or a non-skin hue give "unknown".

Perceived gender presentation: a CLIP zero-shot reader on the face crop when the pack configures a
model (genguard.guard.classifiers.clip_zero_shot.ClipAttributeReader); without one it is "not_measured".

Batch statistics: the distribution of each attribute with explicit "unknown" / "not_measured" bins,
the normalised Shannon entropy of the measured values (H / ln K over the K values the attribute can
take: 1 = spread evenly, 0 = all the same) and the total variation distance to a target distribution
(half the L1 distance: 0 = on target, 1 = disjoint).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from genguard.guard.errors import ImageInputError, ModelLoadError
from genguard.guard.types import PerceivedFace

if TYPE_CHECKING:
    from genguard.guard.policy.schema import BiasSpec

UNKNOWN = "unknown"
NOT_MEASURED = "not_measured"

# The Monk Skin Tone scale's ten reference colours (sRGB hex), lightest (1) to darkest (10).
MONK_REFERENCE_COLOURS: tuple[str, ...] = (
    "f6ede4", "f3e7db", "f7ead0", "eadaba", "d7bd96", "a07e56", "825c43", "604134", "3a312a", "292420",
)  # fmt: skip
SKIN_TONE_VALUES: tuple[str, ...] = tuple(f"monk-{i}" for i in range(1, 11))

_MIN_SKIN_PIXELS = 60
_DETECT_SIDE = 320
_MIN_SKIN_FRACTION = 0.05


class AttributeReader(Protocol):
    """Reads a perceived attribute from face crops (ClipAttributeReader is one)."""

    model_id: str
    values: tuple[str, ...]

    def read(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]: ...


def _lab(rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """CIELAB (L* in 0..100, a*, b* in about -128..127) of RGB uint8 pixels, shape (..., 3)."""
    flat = rgb.reshape(1, -1, 3).astype(np.float32) * np.float32(1 / 255)
    lab: npt.NDArray[np.float32] = np.asarray(cv2.cvtColor(flat, cv2.COLOR_RGB2Lab), np.float32)
    return lab.reshape(rgb.shape)


def ita_of_lab(lightness: float, b_star: float) -> float | None:
    """ITA in degrees; None when b* <= 0 (a blue-ish or grey colour, not skin)."""
    if b_star <= 0.0:
        return None
    return math.degrees(math.atan((lightness - 50.0) / b_star))


def _monk_reference_angles() -> tuple[float, ...]:
    rgb = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in MONK_REFERENCE_COLOURS], np.uint8)
    lab = _lab(rgb)
    angles = [ita_of_lab(float(L), float(b)) for L, _, b in lab]
    assert all(a is not None for a in angles)
    return tuple(float(a) for a in angles if a is not None)


MONK_REFERENCE_ITA: tuple[float, ...] = _monk_reference_angles()
# Bin edges, decreasing: ITA above edge[0] is monk-1, below edge[8] is monk-10.
MONK_ITA_EDGES: tuple[float, ...] = tuple((a + b) / 2.0 for a, b in itertools.pairwise(MONK_REFERENCE_ITA))


def monk_bin(ita: float | None) -> str:
    """The (approximate) Monk scale value for an ITA, "unknown" for None."""
    if ita is None or math.isnan(ita):
        return UNKNOWN
    for index, edge in enumerate(MONK_ITA_EDGES):
        if ita > edge:
            return SKIN_TONE_VALUES[index]
    return SKIN_TONE_VALUES[-1]


@lru_cache(maxsize=2)
def _cascade(name: str) -> cv2.CascadeClassifier:
    if not hasattr(cv2, "CascadeClassifier"):
        # OpenCV 5 moved the Haar cascades out of the main wheel; an environment that ignored the
        # package's pin (a GPU image's own OpenCV) would otherwise fail with a bare AttributeError
        raise ModelLoadError(
            f"bias: expected OpenCV 4 (Haar cascade face detection), found OpenCV {cv2.__version__} "
            "without CascadeClassifier; install opencv-python-headless>=4.8,<5"
        )
    path = cv2.data.haarcascades + name  # type: ignore[attr-defined]
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise ModelLoadError(
            f"bias: expected OpenCV's Haar cascade at {path}; opencv-python-headless<5 has it"
        )
    return cascade


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        found = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ImageInputError(f"bias: image: expected an RGB uint8 array (H, W, 3), found {found}")


Box = tuple[int, int, int, int]


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    return inter / max(1, min(a[2] * a[3], b[2] * b[3]))


def detect_faces(image: np.ndarray, *, profiles: bool = False) -> list[Box]:
    """Faces as (x, y, width, height), largest first. A flat image has none.

    OpenCV's frontal cascade (alt2); with `profiles`, also its profile cascade on the image and its
    mirror (it only knows one side), which triples the cost (about 25 ms to 75 ms at 256 px on one
    core) for faces whose skin tone is read less reliably anyway. Boxes that overlap by more than a
    third are one face. Thresholds were chosen on scikit-image's photographs: the astronaut's and the
    cameraman's faces are found and no face in coffee, chelsea (a cat), rocket or the other shipped
    photographs.
    """
    _check_image(image)
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    # Detection runs at most _DETECT_SIDE pixels on the long side (3 to 4 times faster at 512 px).
    scale = min(1.0, _DETECT_SIDE / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    width = gray.shape[1]
    # Faces under a tenth of the short side are skipped: too few pixels for a skin-tone reading, and
    # the smallest scales are most of the detection time.
    side = max(20, min(gray.shape) // 10)
    size = (side, side)
    found = [_cascade("haarcascade_frontalface_alt2.xml").detectMultiScale(gray, 1.2, 4, minSize=size)]
    candidates: list[Box] = []
    if profiles:
        profile = _cascade("haarcascade_profileface.xml")
        found.append(profile.detectMultiScale(gray, 1.15, 3, minSize=size))
        mirrored = profile.detectMultiScale(np.ascontiguousarray(gray[:, ::-1]), 1.15, 3, minSize=size)
        candidates += [(width - int(x) - int(w), int(y), int(w), int(h)) for x, y, w, h in mirrored]
    candidates += [(int(x), int(y), int(w), int(h)) for group in found for x, y, w, h in group]
    boxes: list[Box] = []
    for box in sorted(candidates, key=lambda b: -b[2] * b[3]):
        if all(_overlap(box, kept) <= 1 / 3 for kept in boxes):
            boxes.append(box)
    return [_rescaled(box, 1.0 / scale, image.shape) for box in boxes]


def _rescaled(box: Box, factor: float, shape: tuple[int, ...]) -> Box:
    x, y, w, h = (round(v * factor) for v in box)
    x, y = min(max(0, x), shape[1] - 1), min(max(0, y), shape[0] - 1)
    return (x, y, min(w, shape[1] - x), min(h, shape[0] - y))


def skin_pixels(image: np.ndarray, box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
    """The face's skin pixels (N, 3), RGB: the central ellipse of the box, by the YCrCb skin rule."""
    x, y, w, h = box
    face = image[y : y + h, x : x + w]
    ellipse = np.zeros(face.shape[:2], np.uint8)
    cv2.ellipse(ellipse, (w // 2, h // 2), (max(1, int(w * 0.35)), max(1, int(h * 0.45))), 0, 0, 360, 1, -1)
    ycrcb = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb)
    cr, cb = ycrcb[..., 1], ycrcb[..., 2]
    mask = (ellipse == 1) & (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
    pixels: npt.NDArray[np.uint8] = face[mask]
    if len(pixels) < max(_MIN_SKIN_PIXELS, _MIN_SKIN_FRACTION * int(ellipse.sum())):
        return np.zeros((0, 3), np.uint8)
    return pixels


def individual_typology_angle(pixels: npt.NDArray[np.uint8]) -> float | None:
    """ITA in degrees of the median L* and b* of RGB skin pixels (N, 3); None for no pixels."""
    if len(pixels) == 0:
        return None
    lab = _lab(pixels)
    return ita_of_lab(float(np.median(lab[:, 0])), float(np.median(lab[:, 2])))


def observe_images(
    images: Sequence[np.ndarray], gender_reader: AttributeReader | None = None, *, profiles: bool = False
) -> list[tuple[PerceivedFace, ...]]:
    """Per image, its faces with perceived skin tone and (when a reader is given) gender presentation.

    `profiles` also looks for faces in profile (see `detect_faces`)."""
    faces_per_image: list[list[tuple[tuple[int, int, int, int], float | None]]] = []
    crops: list[np.ndarray] = []
    for image in images:
        found = []
        for box in detect_faces(image, profiles=profiles):
            found.append((box, individual_typology_angle(skin_pixels(image, box))))
            x, y, w, h = box
            crops.append(np.ascontiguousarray(image[y : y + h, x : x + w]))
        faces_per_image.append(found)
    readings: list[tuple[str, float]] = gender_reader.read(crops) if gender_reader and crops else []
    result: list[tuple[PerceivedFace, ...]] = []
    position = 0
    for found in faces_per_image:
        faces = []
        for box, ita in found:
            gender, score, model_id = NOT_MEASURED, None, None
            if gender_reader is not None:
                gender, score = readings[position]
                model_id = gender_reader.model_id
            position += 1
            faces.append(
                PerceivedFace(
                    box=box,
                    ita=None if ita is None else round(ita, 2),
                    perceived_skin_tone=monk_bin(ita),
                    perceived_gender_presentation=gender,
                    gender_score=None if score is None else round(score, 4),
                    gender_model_id=model_id,
                )
            )
        result.append(tuple(faces))
    return result


# ----------------------------------------------------------------------------------- statistics


def normalised_entropy(counts: Mapping[str, int], possible: int) -> float | None:
    """Shannon entropy of `counts` divided by ln(possible); None with no counts or fewer than 2 values."""
    total = sum(counts.values())
    if total == 0 or possible < 2:
        return None
    entropy = -sum((c / total) * math.log(c / total) for c in counts.values() if c > 0)
    return min(1.0, entropy / math.log(possible))


def total_variation(counts: Mapping[str, int], target: Mapping[str, float]) -> float | None:
    """Half the L1 distance between the normalised counts and the normalised target; None if either is empty."""
    total, weight = sum(counts.values()), sum(target.values())
    if total == 0 or weight <= 0:
        return None
    keys = set(counts) | set(target)
    return 0.5 * sum(abs(counts.get(k, 0) / total - target.get(k, 0.0) / weight) for k in keys)


@dataclass(frozen=True)
class AttributeDistribution:
    """One perceived attribute over a batch (or a report's group).

    `counts` covers every value seen, "unknown" and "not_measured" included; `entropy` and
    `distance_to_target` are over the measured values only.
    """

    attribute: str
    counts: tuple[tuple[str, int], ...]
    faces: int
    measured: int
    entropy: float | None
    distance_to_target: float | None


def distribution(
    attribute: str,
    values: Iterable[str],
    possible: Sequence[str],
    target: Mapping[str, float] | None = None,
) -> AttributeDistribution:
    """The distribution of `values` over `possible` (plus unknown / not measured)."""
    return distribution_from_counts(attribute, Counter(values), possible, target)


def distribution_from_counts(
    attribute: str,
    counts: Mapping[str, int],
    possible: Sequence[str],
    target: Mapping[str, float] | None = None,
) -> AttributeDistribution:
    """As `distribution`, from counts already summed (what the audit history stores per batch)."""
    counts = {k: int(v) for k, v in counts.items() if v}
    measured = {k: counts[k] for k in possible if counts.get(k)}
    wanted = dict(target) if target else dict.fromkeys(possible, 1.0)
    return AttributeDistribution(
        attribute=attribute,
        counts=tuple(sorted(counts.items(), key=lambda kv: _order(kv[0], possible))),
        faces=sum(counts.values()),
        measured=sum(measured.values()),
        entropy=normalised_entropy(measured, len(possible)),
        distance_to_target=total_variation(measured, wanted),
    )


def _order(value: str, possible: Sequence[str]) -> tuple[int, str]:
    return (possible.index(value), value) if value in possible else (len(possible), value)


@dataclass(frozen=True)
class BatchBias:
    """A batch's perceived attributes and what the pack's uniform-batch rule made of them.

    `uniform`: attributes whose measured entropy fell below the pack's minimum. `action`: "none",
    "flag" or "regenerate" (asks for a more diverse regeneration; the caller decides).
    """

    images: int
    faces: int
    skin_tone: AttributeDistribution
    gender_presentation: AttributeDistribution
    uniform: tuple[str, ...]
    action: str

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for name in ("skin_tone", "gender_presentation"):
            data[name]["counts"] = dict(data[name]["counts"])
        data["label"] = "perceived"
        return data


def batch_bias(
    observations: Sequence[Sequence[PerceivedFace]],
    spec: BiasSpec,
    gender_values: Sequence[str] = (),
) -> BatchBias:
    """Statistics over a batch's observations, with the pack's targets and uniform-batch rule."""
    faces = [face for image in observations for face in image]
    skin = distribution(
        "skin_tone", (f.perceived_skin_tone for f in faces), SKIN_TONE_VALUES, spec.targets.get("skin_tone")
    )
    gender = distribution(
        "gender_presentation",
        (f.perceived_gender_presentation for f in faces),
        tuple(gender_values),
        spec.targets.get("gender_presentation"),
    )
    rule = spec.uniform_batch
    uniform: list[str] = []
    if rule.action != "none" and len(faces) >= rule.min_faces:
        for stats in (skin, gender):
            if (
                stats.measured >= rule.min_faces
                and stats.entropy is not None
                and stats.entropy < rule.min_entropy
            ):
                uniform.append(stats.attribute)
    return BatchBias(
        images=len(observations),
        faces=len(faces),
        skin_tone=skin,
        gender_presentation=gender,
        uniform=tuple(uniform),
        action=rule.action if uniform else "none",
    )
