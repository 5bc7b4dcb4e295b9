"""Any transformers image-classification model as an `ImageClassifier`.

The pack maps the model's labels to policy categories (`labels: {nsfw: sexual, gore: violence}`);
a category's score is the highest probability among its labels. Labels the map does not name are
ignored. Probabilities are a softmax over the labels, or a sigmoid per label when the model's
config says `problem_type: multi_label_classification`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.types import ClassifierScore

KIND = "hf-image-classification"


class HFImageClassifier:
    """Loads `AutoModelForImageClassification` and its image processor from a path or hub id.

    `labels`: the model's label -> the pack's category. `device`: "auto" (GPU when there is one),
    "cpu", "cuda", ... Images are scored `batch_size` at a time.
    """

    name = KIND

    def __init__(
        self,
        model: str | Path,
        *,
        labels: Mapping[str, str],
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModelForImageClassification

        source = str(model)
        if not labels:
            raise PolicyError(
                f"{KIND} {source!r}: labels: expected a map from the model's labels to categories, found none"
            )
        if batch_size < 1:
            raise PolicyError(f"{KIND}: options.batch_size: expected at least 1, found {batch_size}")
        _models.check_source(source, KIND)
        config = _models.load_task_config(
            source, KIND, task="an image-classification", suffix="ForImageClassification"
        )
        try:
            network: Any = AutoModelForImageClassification.from_pretrained(source)
            self._processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{KIND}: could not load {source!r}: {exc}") from exc
        id2label = _models.check_labels(labels, network.config.id2label, f"{KIND} {source!r}")
        self._torch = torch
        self.device = _models.resolve_device(device)
        self._network = network.to(self.device).eval()
        self.batch_size = batch_size
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.version = _models.model_version(source, config)
        self.model_id = _models.versioned_id(source, self.version)
        # category -> the output columns of its labels
        columns: dict[str, list[int]] = {}
        for index, label in sorted(id2label.items()):
            if label in labels:
                columns.setdefault(labels[label], []).append(index)
        self._columns = {category: np.asarray(idx) for category, idx in sorted(columns.items())}

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, num_labels) probabilities in the model's label order."""
        torch = self._torch
        _models.check_images(images, KIND)
        rows: list[np.ndarray] = []
        for chunk in _models.batched(images, self.batch_size):
            inputs = self._processor(images=list(chunk), return_tensors="pt")
            with torch.no_grad():
                logits = self._network(pixel_values=inputs["pixel_values"].to(self.device)).logits.float()
            probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
            rows.append(probs.cpu().numpy())
        return np.concatenate(rows) if rows else np.zeros((0, len(self._columns)))

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        if not images:
            return []
        probs = self.probabilities(images)
        return [
            tuple(
                ClassifierScore(self.name, self.model_id, category, float(row[cols].max()))
                for category, cols in self._columns.items()
            )
            for row in probs
        ]
