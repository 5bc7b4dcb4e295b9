"""Builds the image classifiers a policy pack names (`image_checks.classifiers`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guard.classifiers.base import ImageClassifier
from guard.errors import PolicyError


def _sd_safety_checker(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from guard.classifiers.sd_safety import StableDiffusionSafetyClassifier

    if not model:
        raise PolicyError(
            "image_checks.classifiers[kind=sd-safety-checker].model: expected a path or hub id, found none"
        )
    return StableDiffusionSafetyClassifier(model, **options)


CLASSIFIER_KINDS: dict[str, Callable[[str | None, dict[str, Any]], ImageClassifier]] = {
    "sd-safety-checker": _sd_safety_checker,
}


def build_classifier(kind: str, model: str | None, options: dict[str, Any] | None = None) -> ImageClassifier:
    """One classifier by kind. Unknown kinds are an error that lists the known ones."""
    try:
        factory = CLASSIFIER_KINDS[kind]
    except KeyError:
        raise PolicyError(
            f"image_checks.classifiers.kind: expected one of {sorted(CLASSIFIER_KINDS)}, found {kind!r}"
        ) from None
    return factory(model, dict(options or {}))
