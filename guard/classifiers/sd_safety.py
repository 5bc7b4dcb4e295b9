"""The Stable Diffusion safety checker as an `ImageClassifier`.

diffusers runs this checker inside the pipeline and silently replaces flagged images with black
ones. genguard switches that off and runs the same model here instead, so that the score is
recorded and the policy pack decides what happens.

Score: the checker flags an image when, for any of its 17 concepts, the cosine similarity of the
image embedding minus the concept's threshold (plus 0.01 when a "special care" concept fired) is
above zero. We report `0.5 + margin / 2` clipped to [0, 1], where margin is the largest such value,
so the checker's own decision sits exactly at 0.5 and the pack's `thresholds.image` can move it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError
from genguard.guard.types import ClassifierScore

# The checker is trained on sexual content; that is the category its flag stands for.
SAFETY_CHECKER_CATEGORY = "sexual"


class StableDiffusionSafetyClassifier:
    """Loads `StableDiffusionSafetyChecker` and its CLIP image processor from a path or hub id.

    `subfolder` reads the checker out of a full pipeline folder (`safety_checker`), in which case
    the processor is read from the sibling `feature_extractor` folder unless `processor` is given.
    On CUDA the checker runs in float16, as diffusers' pipelines run it (by its FLOP count, its CLIP
    ViT-L/14 tower in float32 takes some 20 ms of an H100 per batch of 8, about 1% of an SD 1.5 batch,
    on the GPU that samples); the similarities are taken in float32 either way. Elsewhere: float32.
    torch and diffusers are imported here, not at module load, so that guard stays light.
    """

    name = "sd-safety-checker"

    def __init__(
        self,
        model: str | Path,
        *,
        processor: str | Path | None = None,
        subfolder: str | None = None,
        device: str = "auto",
        batch_size: int = 8,
    ) -> None:
        import torch
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker

        try:  # transformers 5 names the torchvision-free processor separately
            from transformers import CLIPImageProcessorPil as CLIPImageProcessor
        except ImportError:
            from transformers import CLIPImageProcessor  # type: ignore[assignment]

        self._torch = torch
        _models.check_source(str(model), self.name)
        self.device = _models.resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        try:
            kwargs: dict[str, Any] = {"subfolder": subfolder} if subfolder else {}
            checker: Any = StableDiffusionSafetyChecker.from_pretrained(str(model), **kwargs)
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
            self._checker = checker.to(self.device, dtype).eval()
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"sd-safety-checker: could not load a StableDiffusionSafetyChecker from {str(model)!r}"
                f"{f' (subfolder {subfolder!r})' if subfolder else ''}: {exc}"
            ) from exc
        processor_kwargs: dict[str, Any] = {}
        if processor is None:
            processor_source = str(model)
            if subfolder:
                processor_kwargs["subfolder"] = "feature_extractor"
        else:
            processor_source = str(processor)
        try:
            self._processor = CLIPImageProcessor.from_pretrained(processor_source, **processor_kwargs)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"sd-safety-checker: expected a CLIP image processor config at {processor_source!r}"
                f"{' (subfolder feature_extractor)' if processor_kwargs else ''}; pass `processor=` to name one"
                f" ({exc})"
            ) from exc
        weights = Path(str(model)) / subfolder if subfolder else str(model)
        self.version = _models.model_version(weights, getattr(self._checker, "config", None))
        self.model_id = _models.versioned_id(str(model), self.version)

    @classmethod
    def from_modules(
        cls, checker: Any, processor: Any, *, source: str, device: str = "auto", batch_size: int = 8
    ) -> StableDiffusionSafetyClassifier:
        """The safety checker a loaded diffusion pipeline ships (`pipe.safety_checker`, `pipe.feature_extractor`).

        Its weights are reused as they are (moved to `device`); diffusers' own black-image path stays
        off, since the pipeline no longer holds the module. `source` names the pipeline in the model id.
        """
        import torch

        self = cls.__new__(cls)
        self._torch = torch
        self.device = _models.resolve_device(device)
        self.batch_size = max(1, int(batch_size))
        dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        self._checker = checker.to(self.device, dtype).eval()
        self._processor = processor
        local = Path(source) / "safety_checker"
        config = getattr(checker, "config", None)
        self.version = _models.model_version(local if local.is_dir() else source, config)
        self.model_id = _models.versioned_id(f"{source}/safety_checker", self.version)
        return self

    @staticmethod
    def ships_checker(model: str) -> bool:
        """Whether the pipeline `model` (a folder, or a hub id in the local cache) has a `safety_checker` folder."""
        if (Path(model) / "safety_checker" / "config.json").is_file():
            return True
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return False
        try:
            found = try_to_load_from_cache(model, "safety_checker/config.json")
        except (ValueError, OSError):  # not a hub id
            return False
        return isinstance(found, str)

    def margins(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """The checker's decision margin per image (> 0 means the checker flags it), `batch_size` at a time."""
        _models.check_images(images, self.name)
        return np.concatenate([self._margins(chunk) for chunk in _models.batched(images, self.batch_size)])

    def _margins(self, images: Sequence[np.ndarray]) -> np.ndarray:
        torch = self._torch
        pixel_values = self._processor(images=list(images), return_tensors="pt").pixel_values
        checker = self._checker
        with torch.no_grad():
            pooled = checker.vision_model(pixel_values.to(self.device, checker.dtype))[1]
            embeds = torch.nn.functional.normalize(checker.visual_projection(pooled).float())
            special = embeds @ torch.nn.functional.normalize(checker.special_care_embeds.float()).T
            concept = embeds @ torch.nn.functional.normalize(checker.concept_embeds.float()).T
            special_scores = special - checker.special_care_embeds_weights.float()
            adjustment = (special_scores > 0).any(dim=1, keepdim=True).float() * 0.01
            concept_scores = concept - checker.concept_embeds_weights.float() + adjustment
        margins: np.ndarray = concept_scores.max(dim=1).values.cpu().numpy()
        return margins

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        if not images:
            return []
        margins = self.margins(images)
        return [
            (
                ClassifierScore(
                    classifier=self.name,
                    model_id=self.model_id,
                    category=SAFETY_CHECKER_CATEGORY,
                    score=float(np.clip(0.5 + margin / 2.0, 0.0, 1.0)),
                ),
            )
            for margin in margins
        ]
