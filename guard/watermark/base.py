"""The watermark seam: the `Watermarker` Protocol, its generic `WatermarkDetection`, and the registry.

Every image the pipeline releases is marked by one `Watermarker` and its generation records that
watermarker's `algorithm` id (the record's `extra["watermarks"]`, the manifest's soft binding). Whoever
reads the image later (verify, review approval, `genguard watermark`) picks the watermarker by that id
with `watermarker_for`, so a watermarker passed to the pipeline marks images that verify and review can
read, provided it is registered (`register_watermarker`). The pixel watermark registers itself under its
ids when `genguard.guard.watermark` is imported.

A watermarker's `detect` answers for its own algorithm only: `marked` means its own check passed (for
the pixel watermark a keyed CRC), and `confidence` is -log10 of an upper bound on the probability that
an unmarked image reads "marked". A reader that tries several watermarkers on an unknown copy adds their
false-positive bounds.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
from PIL import Image

from genguard.guard.errors import BadInputError

ImageT = TypeVar("ImageT", npt.NDArray[np.uint8], Image.Image)


@dataclass(frozen=True)
class WatermarkDetection:
    """What a watermarker's `detect` found, in a form every implementation fills.

    marked: the implementation's own check of a decoded id passed. mark_id: that id (0 .. 2**64-1), else
    None. confidence: -log10 of an upper bound on the probability that an unmarked image gives this
    result (0.0 when not marked). algorithm: the id of the watermarker that read it.
    Evidence an implementation fills where it has it (the defaults mean "none"): sync_score, the
    z-score of a synchronisation peak; flipped, the mark was read from the mirror image; scale and
    angle (degrees), the geometry undone to read it.
    """

    marked: bool
    mark_id: int | None
    confidence: float
    algorithm: str
    sync_score: float | None = None
    flipped: bool = False
    scale: float = 1.0
    angle: float = 0.0


@runtime_checkable
class Watermarker(Protocol):
    """The seam the pipeline, verify and review use: one algorithm id, embed an id, detect it.

    `embed` returns the image in the form it was given (array or PIL image); `key` None means the
    organisation's key (`genguard.guard.config.watermark_key()`). `detect` raises ImageInputError for an
    image it cannot read at all (for example too small), and otherwise returns a `WatermarkDetection`
    whose `algorithm` is this watermarker's.
    """

    algorithm: str

    def embed(self, image: ImageT, mark_id: int, key: bytes | None = None) -> ImageT: ...

    def detect(
        self, image: npt.NDArray[np.uint8] | Image.Image, key: bytes | None = None
    ) -> WatermarkDetection: ...


class UnknownWatermarkError(BadInputError):
    """An algorithm id that no registered watermarker reads (register it with `register_watermarker`)."""


_lock = threading.Lock()
_by_algorithm: dict[str, Watermarker] = {}  # every id a watermarker reads -> it; insertion order kept


def register_watermarker(watermarker: Watermarker, *, reads: Iterable[str] = ()) -> None:
    """Register `watermarker` under its `algorithm` and under the older ids it still `reads`.

    Registering the same object again is a no-op (its extra ids are added); an id already held by
    another watermarker raises BadInputError naming it (`unregister_watermarker` first to replace one).
    """
    if not isinstance(watermarker, Watermarker):
        raise BadInputError(
            "watermarker: expected an object with `algorithm`, `embed` and `detect` (the Watermarker "
            f"Protocol), found {type(watermarker).__name__}"
        )
    ids = (watermarker.algorithm, *reads)
    for algorithm in ids:
        if not isinstance(algorithm, str) or not algorithm.strip():
            raise BadInputError(f"watermarker algorithm id: expected a non-empty string, found {algorithm!r}")
    with _lock:
        for algorithm in ids:
            held = _by_algorithm.get(algorithm)
            if held is not None and held is not watermarker:
                raise BadInputError(
                    f"watermarker algorithm id {algorithm!r}: expected an id no other watermarker holds, "
                    f"found it held by {type(held).__name__} (unregister_watermarker it first)"
                )
        for algorithm in ids:
            _by_algorithm[algorithm] = watermarker


def unregister_watermarker(watermarker: Watermarker) -> None:
    """Remove `watermarker` under every id it was registered with (nothing if it was not)."""
    with _lock:
        for algorithm in [a for a, held in _by_algorithm.items() if held is watermarker]:
            del _by_algorithm[algorithm]


def watermarker_for(algorithm: str) -> Watermarker:
    """The registered watermarker that reads `algorithm` (its own id or an older one it still reads)."""
    with _lock:
        found = _by_algorithm.get(algorithm) if isinstance(algorithm, str) else None
        known = sorted(_by_algorithm)
    if found is None:
        raise UnknownWatermarkError(
            f"watermark algorithm: expected one of {known} (registered watermarkers), found {algorithm!r}"
        )
    return found


def registered_watermarkers() -> tuple[Watermarker, ...]:
    """Every registered watermarker once, in registration order (the pixel watermark first)."""
    with _lock:
        unique: dict[int, Watermarker] = {}
        for watermarker in _by_algorithm.values():
            unique.setdefault(id(watermarker), watermarker)
    return tuple(unique.values())


def recorded_watermarker(algorithms: object) -> Watermarker:
    """The watermarker that marked a recorded generation's images, from its record's algorithm ids.

    `algorithms` is what the record's `extra["watermarks"]` holds: the image watermarker's id first, then
    layers that are not image watermarkers (the latent watermark). The first id a registered watermarker
    reads wins. A record that names no ids (None or empty) was marked by the pixel watermark, the only
    one before the seam. Raises UnknownWatermarkError naming the ids when none is registered.
    """
    if algorithms is None or algorithms == []:
        from genguard.guard.watermark.pixel import ALGORITHM

        return watermarker_for(ALGORITHM)
    if not isinstance(algorithms, list | tuple) or not all(isinstance(a, str) for a in algorithms):
        raise BadInputError(f"recorded watermarks: expected a list of algorithm ids, found {algorithms!r}")
    with _lock:
        found = next((_by_algorithm[a] for a in algorithms if a in _by_algorithm), None)
        known = sorted(_by_algorithm)
    if found is None:
        raise UnknownWatermarkError(
            f"recorded watermarks: expected an algorithm id among {known} (registered watermarkers), "
            f"found {list(algorithms)}"
        )
    return found
