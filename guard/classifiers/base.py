"""The image-classifier seam: one small Protocol, like httpx's transports."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from genguard.guard.types import ClassifierScore


@runtime_checkable
class ImageClassifier(Protocol):
    """Scores images for policy categories.

    Images are RGB uint8 arrays of shape (H, W, 3). The result has one tuple of scores per image,
    in input order; a score is in [0, 1] and names the category from the pack's taxonomy.
    """

    name: str

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]: ...
