"""NudeNet's bundled ONNX detector (nudenet 3.4.2, `pip install 'genguard[nudenet]'`) as an `ImageClassifier`.

NudeNet is AGPL-3.0, so it is an optional extra and imported only when this classifier is built.
It detects body parts; the "exposed" labels below count as evidence for the pack's `sexual`
category, and an image's score is the highest detection score among them (0 with none).
NudeNet expects BGR pixels (OpenCV's order): genguard's RGB arrays are converted here.
Known false positive kept as a test fixture: scikit-image's colorwheel reads as exposed buttocks (~0.83).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.types import ClassifierScore

KIND = "nudenet"
VERSION = "3.4.2"

# NudeNet label -> pack category. Covered parts, faces, feet, belly and armpits are not evidence.
DEFAULT_LABELS: dict[str, str] = {
    "FEMALE_GENITALIA_EXPOSED": "sexual",
    "MALE_GENITALIA_EXPOSED": "sexual",
    "FEMALE_BREAST_EXPOSED": "sexual",
    "BUTTOCKS_EXPOSED": "sexual",
    "ANUS_EXPOSED": "sexual",
}


class NudeNetClassifier:
    """NudeNet's 320n detector on the CPU (onnxruntime), `threads` intra-op threads (0: onnxruntime's choice).

    `model`: None or "bundled" for the ONNX file in the nudenet wheel, else a path to another export.
    `labels`: NudeNet label -> category (default: the exposed labels -> sexual).
    """

    name = KIND

    def __init__(
        self,
        model: str | None = None,
        *,
        labels: Mapping[str, str] | None = None,
        threads: int = 0,
        batch_size: int = 8,
    ) -> None:
        try:
            import nudenet
            import onnxruntime
        except ImportError as exc:
            raise ModelLoadError(
                f"{KIND}: expected the optional extra to be installed (pip install 'genguard[nudenet]'): {exc}"
            ) from exc
        path = (
            os.path.join(os.path.dirname(nudenet.__file__), "320n.onnx")
            if model in (None, "", "bundled")
            else str(model)
        )
        if not os.path.isfile(path):
            raise ModelLoadError(f"{KIND}: model: expected an ONNX file, found nothing at {path!r}")
        self.labels = dict(labels) if labels else dict(DEFAULT_LABELS)
        # The module keeps its label list in a double-underscore global (not mangled at module level).
        known: list[str] = list(getattr(nudenet.nudenet, "__labels"))
        unknown = sorted(set(self.labels) - set(known))
        if unknown:
            raise PolicyError(
                f"{KIND}: labels: expected NudeNet labels ({', '.join(sorted(known))}); found {', '.join(unknown)}"
            )
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._detector: Any = nudenet.NudeDetector(model_path=path)
            self._detector.onnx_session = onnxruntime.InferenceSession(
                path, options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for unusable files
            raise ModelLoadError(f"{KIND}: could not load an ONNX detector from {path!r}: {exc}") from exc
        self.batch_size = batch_size
        self.version = f"nudenet-{VERSION}/{_models.model_version(path)}"
        bundled = model in (None, "", "bundled")
        self.model_id = _models.versioned_id("nudenet:bundled-320n" if bundled else path, self.version)
        self.categories = tuple(sorted(set(self.labels.values())))

    def detections(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """NudeNet's raw detections per image: {"class", "score", "box"}."""
        _models.check_images(images, KIND)
        bgr = [cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR) for image in images]
        result: list[list[dict[str, Any]]] = self._detector.detect_batch(bgr, batch_size=self.batch_size)
        return result

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        if not images:
            return []
        scored: list[tuple[ClassifierScore, ...]] = []
        for found in self.detections(images):
            best = dict.fromkeys(self.categories, 0.0)
            for detection in found:
                category = self.labels.get(detection["class"])
                if category is not None:
                    best[category] = max(best[category], float(detection["score"]))
            scored.append(
                tuple(ClassifierScore(self.name, self.model_id, category, s) for category, s in best.items())
            )
        return scored
