"""Builds the image classifiers a policy pack names (`image_checks.classifiers`) and the bias readers.

Each kind's factory takes the model (path, hub id or None) and the options; `labels` (a model's
label -> category) and `prompts` (category -> text prompts) come from the pack's classifier entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from guard.classifiers.base import ImageClassifier
from guard.errors import PolicyError

if TYPE_CHECKING:
    from guard.classifiers.clip_zero_shot import ClipAttributeReader
    from guard.policy.schema import ClassifierSpec


def _require_model(kind: str, model: str | None) -> str:
    if not model:
        raise PolicyError(
            f"image_checks.classifiers[kind={kind}].model: expected a path or hub id, found none"
        )
    return model


def _sd_safety_checker(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from guard.classifiers.sd_safety import StableDiffusionSafetyClassifier

    return StableDiffusionSafetyClassifier(_require_model("sd-safety-checker", model), **options)


def _nudenet(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from guard.classifiers.nudenet import NudeNetClassifier

    options.pop("prompts", None)
    return NudeNetClassifier(model, labels=options.pop("labels", None) or None, **options)


def _hf_image(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from guard.classifiers.hf_image import HFImageClassifier

    options.pop("prompts", None)
    return HFImageClassifier(
        _require_model("hf-image-classification", model), labels=options.pop("labels", {}), **options
    )


def _clip_zero_shot(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from guard.classifiers.clip_zero_shot import ClipZeroShotClassifier

    options.pop("labels", None)
    return ClipZeroShotClassifier(
        _require_model("clip-zero-shot", model), prompts=options.pop("prompts", None) or None, **options
    )


CLASSIFIER_KINDS: dict[str, Callable[[str | None, dict[str, Any]], ImageClassifier]] = {
    "sd-safety-checker": _sd_safety_checker,
    "nudenet": _nudenet,
    "hf-image-classification": _hf_image,
    "clip-zero-shot": _clip_zero_shot,
}

# Readers of perceived attributes for the bias observations (not policy classifiers: no action follows).
READER_KINDS = ("clip-gender",)


def build_classifier(kind: str, model: str | None, options: dict[str, Any] | None = None) -> ImageClassifier:
    """One classifier by kind. Unknown kinds and unknown options are errors that name them."""
    try:
        factory = CLASSIFIER_KINDS[kind]
    except KeyError:
        raise PolicyError(
            f"image_checks.classifiers.kind: expected one of {sorted(CLASSIFIER_KINDS)}, found {kind!r}"
        ) from None
    try:
        return factory(model, dict(options or {}))
    except TypeError as exc:  # an option the classifier does not take
        raise PolicyError(f"image_checks.classifiers[kind={kind}].options: {exc}") from None


def build_from_spec(spec: ClassifierSpec) -> ImageClassifier:
    """The classifier a pack entry describes, with its label map and prompts."""
    options: dict[str, Any] = dict(spec.options)
    if spec.labels:
        options["labels"] = dict(spec.labels)
    if spec.prompts:
        options["prompts"] = {category: list(prompts) for category, prompts in spec.prompts.items()}
    return build_classifier(spec.kind, spec.model, options)


def build_gender_reader(
    model: str | None, labels: dict[str, list[str]] | None = None, **options: Any
) -> ClipAttributeReader | None:
    """The perceived gender presentation reader (kind clip-gender), or None: "not measured"."""
    if model is None:
        return None
    from guard.classifiers.clip_zero_shot import ClipAttributeReader

    try:
        return ClipAttributeReader(model, labels=labels or None, **options)
    except TypeError as exc:
        raise PolicyError(f"bias.gender_model options: {exc}") from None
