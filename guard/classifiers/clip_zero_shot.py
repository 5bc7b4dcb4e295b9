"""CLIP zero-shot: policy categories (`ClipZeroShotClassifier`) and perceived attributes (`ClipAttributeReader`).

Each category (or attribute value) is described by a few text prompts. An image's similarity to
every prompt, times CLIP's learned logit scale, goes through one softmax together with neutral
prompts ("a photo", ...) so that an ordinary image spreads its probability over those rather than
being forced into a category; a category's score is the summed probability of its prompts.
The model comes from a path or hub id (`CLIPModel` with its tokenizer and image processor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.types import ClassifierScore

KIND = "clip-zero-shot"
GENDER_KIND = "clip-gender"

# Default prompts per pack category (the categories CLIP reads well from pixels).
DEFAULT_CATEGORY_PROMPTS: dict[str, tuple[str, ...]] = {
    "violence": (
        "a photo of graphic violence and gore",
        "a photo of a bloody wound",
        "a photo of a violent attack",
    ),
    "hate": ("a photo of a hate symbol", "a photo of a swastika", "a photo of racist propaganda"),
    "self_harm": (
        "a photo of self-harm",
        "a photo of cuts on a wrist",
        "a photo of a person hurting themselves",
    ),
    "illegal_weapons": ("a photo of a gun", "a photo of a rifle", "a photo of a weapon"),
}
NEUTRAL_PROMPTS: tuple[str, ...] = (
    "a photo",
    "an ordinary photo of everyday life",
    "a photo of a landscape",
    "a portrait photo of a person",
    "a painting",
)
# Default prompts per perceived gender presentation (read from a face crop).
DEFAULT_GENDER_PROMPTS: dict[str, tuple[str, ...]] = {
    "feminine": ("a photo of a woman's face", "a photo of a feminine-presenting person"),
    "masculine": ("a photo of a man's face", "a photo of a masculine-presenting person"),
}


class _ClipScorer:
    """A CLIP model and fixed groups of prompts: per image, the probability of each group."""

    def __init__(
        self,
        model: str | Path,
        groups: Mapping[str, Sequence[str]],
        neutral: Sequence[str],
        *,
        who: str,
        device: str,
        batch_size: int,
    ) -> None:
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, CLIPModel

        source = str(model)
        if not groups or any(not prompts for prompts in groups.values()):
            raise PolicyError(f"{who} {source!r}: prompts: expected at least one prompt per category")
        if batch_size < 1:
            raise PolicyError(f"{who}: options.batch_size: expected at least 1, found {batch_size}")
        _models.check_source(source, who)
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{who}: could not load a model config from {source!r}: {exc}") from exc
        if getattr(config, "model_type", None) != "clip":
            raise ModelLoadError(
                f"{who}: model {source!r}: expected a CLIP model (model_type 'clip'), "
                f"found model_type {getattr(config, 'model_type', None)!r}"
            )
        try:
            network: Any = CLIPModel.from_pretrained(source)
            tokenizer = AutoTokenizer.from_pretrained(source)
            self._processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{who}: could not load CLIP from {source!r}: {exc}") from exc
        self._torch = torch
        self.device = _models.resolve_device(device)
        self._network = network.to(self.device).eval()
        self.batch_size = batch_size
        self.version = _models.model_version(source, config)
        self.model_id = _models.versioned_id(source, self.version)
        self.groups = tuple(groups)
        prompts = [p for group in groups.values() for p in group] + list(neutral)
        owner = [i for i, group in enumerate(groups.values()) for _ in group] + [-1] * len(neutral)
        self._owner = np.asarray(owner)
        tokens = tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            text = network.get_text_features(
                input_ids=tokens["input_ids"].to(self.device),
                attention_mask=tokens["attention_mask"].to(self.device),
            )
            text = getattr(text, "pooler_output", text)  # transformers 5 may return an output object
            self._text = torch.nn.functional.normalize(text.float(), dim=-1)
            self._scale = float(network.logit_scale.exp())

    def group_probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, groups) probabilities; the neutral prompts take the rest."""
        torch = self._torch
        rows: list[np.ndarray] = []
        for chunk in _models.batched(images, self.batch_size):
            pixels = self._processor(images=list(chunk), return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                embeds = self._network.get_image_features(pixel_values=pixels.to(self.device))
                embeds = getattr(embeds, "pooler_output", embeds)
                embeds = torch.nn.functional.normalize(embeds.float(), dim=-1)
                probs = torch.softmax(self._scale * embeds @ self._text.T, dim=-1).cpu().numpy()
            rows.append(
                np.stack([probs[:, self._owner == g].sum(axis=1) for g in range(len(self.groups))], axis=1)
            )
        return np.concatenate(rows) if rows else np.zeros((0, len(self.groups)))


class ClipZeroShotClassifier:
    """CLIP zero-shot scores for pack categories (default: violence, hate, self_harm, illegal_weapons)."""

    name = KIND

    def __init__(
        self,
        model: str | Path,
        *,
        prompts: Mapping[str, Sequence[str]] | None = None,
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        self._scorer = _ClipScorer(
            model,
            dict(prompts) if prompts else DEFAULT_CATEGORY_PROMPTS,
            NEUTRAL_PROMPTS,
            who=KIND,
            device=device,
            batch_size=batch_size,
        )
        self.model_id = self._scorer.model_id
        self.categories = self._scorer.groups

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        if not images:
            return []
        _models.check_images(images, KIND)
        probs = self._scorer.group_probabilities(images)
        return [
            tuple(
                ClassifierScore(self.name, self.model_id, category, float(score))
                for category, score in zip(self.categories, row, strict=True)
            )
            for row in probs
        ]


class ClipAttributeReader:
    """Reads a perceived attribute (gender presentation by default) from face crops by CLIP zero-shot.

    A crop gets the most probable value when its probability (among the values only) reaches
    `min_confidence`, else "unknown". The result is a perception of appearance, never identity.
    """

    name = GENDER_KIND

    def __init__(
        self,
        model: str | Path,
        *,
        labels: Mapping[str, Sequence[str]] | None = None,
        min_confidence: float = 0.6,
        device: str = "auto",
        batch_size: int = 16,
    ) -> None:
        if not 0.0 < min_confidence <= 1.0:
            raise PolicyError(
                f"{GENDER_KIND}: min_confidence: expected a value in (0, 1], found {min_confidence}"
            )
        self._scorer = _ClipScorer(
            model,
            dict(labels) if labels else DEFAULT_GENDER_PROMPTS,
            (),
            who=GENDER_KIND,
            device=device,
            batch_size=batch_size,
        )
        self.model_id = self._scorer.model_id
        self.values = self._scorer.groups
        self.min_confidence = min_confidence

    def read(self, crops: Sequence[np.ndarray]) -> list[tuple[str, float]]:
        """Per crop: (value or "unknown", the probability of the most probable value)."""
        if not crops:
            return []
        _models.check_images(crops, GENDER_KIND)
        probs = self._scorer.group_probabilities(crops)
        result: list[tuple[str, float]] = []
        for row in probs:
            best = int(np.argmax(row))
            score = float(row[best])
            result.append((self.values[best] if score >= self.min_confidence else "unknown", score))
        return result
