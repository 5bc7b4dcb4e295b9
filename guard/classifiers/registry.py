"""Builds the image classifiers a policy pack names (`image_checks.classifiers`) and the bias readers.

Each kind's factory takes the model (path, hub id or None) and the options; `labels` (a model's
label -> category) and `prompts` (category -> text prompts) come from the pack's classifier entry.

The rule for a pack's checks (`build_pack_checks`): every entry runs on every image, or the
generation fails closed (ModelLoadError, exit 4) naming the entry and why it could not load. Two
fields soften that, and every record says which checks ran and which did not, and why:
- `when: real-model`: the entry runs only with a real model; on the embedded demonstration models
  (untrained weights, abstract images) it is recorded as not run. Hub-id checks are marked so,
  since hub ids cannot load offline and the embedded demo must run with no download.
- `optional: true`: an entry that cannot load (a missing extra, a missing model) is recorded as not
  run, with the load error as the reason, instead of failing the generation.
A configuration error (unknown kind, option or label) is always a PolicyError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genguard.guard.classifiers.base import ImageClassifier
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.types import CheckStatus

if TYPE_CHECKING:
    from genguard.guard.classifiers.clip_zero_shot import ClipAttributeReader
    from genguard.guard.policy import PolicyPack
    from genguard.guard.policy.schema import ClassifierSpec

# Registry-level option of sd-safety-checker entries: use the safety checker weights the diffusion
# pipeline ships (SD 1.x/2.x repositories carry a `safety_checker` folder) instead of `model`.
FROM_PIPELINE = "from_pipeline"
NOT_REAL_MODEL = (
    "not run: the pack runs this check only with a real model (this is an embedded demonstration model)"
)


def _require_model(kind: str, model: str | None) -> str:
    if not model:
        raise ModelLoadError(
            f"image_checks.classifiers[kind={kind}].model: expected a path or hub id, found none"
        )
    return model


def _sd_safety_checker(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from genguard.guard.classifiers.sd_safety import StableDiffusionSafetyClassifier

    return StableDiffusionSafetyClassifier(_require_model("sd-safety-checker", model), **options)


def _nudenet(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from genguard.guard.classifiers.nudenet import NudeNetClassifier

    options.pop("prompts", None)
    return NudeNetClassifier(model, labels=options.pop("labels", None) or None, **options)


def _hf_image(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from genguard.guard.classifiers.hf_image import HFImageClassifier

    options.pop("prompts", None)
    return HFImageClassifier(
        _require_model("hf-image-classification", model), labels=options.pop("labels", {}), **options
    )


def _clip_zero_shot(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from genguard.guard.classifiers.clip_zero_shot import ClipZeroShotClassifier

    options.pop("labels", None)
    return ClipZeroShotClassifier(
        _require_model("clip-zero-shot", model), prompts=options.pop("prompts", None) or None, **options
    )


def _vlm_guard(model: str | None, options: dict[str, Any]) -> ImageClassifier:
    from genguard.guard.classifiers.vlm_guard import VLMGuardClassifier

    options.pop("labels", None)
    return VLMGuardClassifier(
        _require_model("vlm-guard", model), prompts=options.pop("prompts", None) or None, **options
    )


CLASSIFIER_KINDS: dict[str, Callable[[str | None, dict[str, Any]], ImageClassifier]] = {
    "sd-safety-checker": _sd_safety_checker,
    "nudenet": _nudenet,
    "hf-image-classification": _hf_image,
    "clip-zero-shot": _clip_zero_shot,
    "vlm-guard": _vlm_guard,
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
    options.pop(FROM_PIPELINE, None)
    if spec.labels:
        options["labels"] = dict(spec.labels)
    if spec.prompts:
        options["prompts"] = {category: list(prompts) for category, prompts in spec.prompts.items()}
    return build_classifier(spec.kind, spec.model, options)


@dataclass(frozen=True)
class PackChecks:
    """The classifiers that run, one status per pack entry, and the entries that block generation.

    `failures` holds the entries that are neither optional nor loadable: `require()` raises for them.
    """

    classifiers: tuple[ImageClassifier, ...]
    checks: tuple[CheckStatus, ...]
    failures: tuple[str, ...] = ()

    def require(self) -> PackChecks:
        """Fail closed: a ModelLoadError naming every check that must run and cannot."""
        if self.failures:
            raise ModelLoadError("; ".join(self.failures))
        return self


def _pipeline_safety_checker(spec: ClassifierSpec, model: str, pipe: Any) -> ImageClassifier | None:
    """The pipeline's own safety checker as genguard's classifier, when the pipeline ships one."""
    if spec.kind != "sd-safety-checker" or spec.options.get(FROM_PIPELINE) is not True:
        return None
    from genguard.guard.classifiers.sd_safety import StableDiffusionSafetyClassifier

    options: dict[str, Any] = {k: v for k, v in spec.options.items() if k != FROM_PIPELINE}
    checker = getattr(pipe, "safety_checker", None) if pipe is not None else None
    processor = getattr(pipe, "feature_extractor", None) if pipe is not None else None
    try:
        if checker is not None and processor is not None:
            return StableDiffusionSafetyClassifier.from_modules(checker, processor, source=model, **options)
        if pipe is None and StableDiffusionSafetyClassifier.ships_checker(model):
            return StableDiffusionSafetyClassifier(model, subfolder="safety_checker", **options)
    except TypeError as exc:
        raise PolicyError(f"image_checks.classifiers[kind=sd-safety-checker].options: {exc}") from None
    return None


def build_pack_checks(pack: PolicyPack, *, model: str, real_model: bool, pipe: Any = None) -> PackChecks:
    """Every `image_checks.classifiers` entry of `pack` for generating with `model`.

    `real_model`: False for the embedded demonstration models (entries with `when: real-model` do
    not run). `pipe`: the loaded diffusion pipeline, whose own safety checker an sd-safety-checker
    entry with `options.from_pipeline: true` reuses; without it the model's `safety_checker` folder
    is read (local folder or hub cache). Call `.require()` on the result to fail closed.
    """
    classifiers: list[ImageClassifier] = []
    checks: list[CheckStatus] = []
    failures: list[str] = []
    for index, spec in enumerate(pack.spec.image_checks.classifiers):
        where = f"pack {pack.ref.name!r}: image_checks.classifiers[{index}] (kind {spec.kind})"
        if spec.when == "real-model" and not real_model:
            checks.append(CheckStatus(spec.kind, spec.model, False, NOT_REAL_MODEL))
            continue
        try:
            classifier = _pipeline_safety_checker(spec, model, pipe) if real_model else None
            if classifier is None:
                classifier = build_from_spec(spec)
        except PolicyError:
            raise
        except (ModelLoadError, OSError, RuntimeError, ImportError, ValueError) as exc:
            error = str(exc)
            if spec.optional:
                checks.append(CheckStatus(spec.kind, spec.model, False, f"not run (optional): {error}"))
            else:
                checks.append(CheckStatus(spec.kind, spec.model, False, f"cannot load: {error}"))
                failures.append(
                    f"{where}: could not load model {spec.model!r}, so generation fails closed "
                    f"(mark the entry `optional: true` to generate without it): {error}"
                )
            continue
        classifiers.append(classifier)
        checks.append(CheckStatus(spec.kind, str(getattr(classifier, "model_id", spec.model)), True))
    return PackChecks(tuple(classifiers), tuple(checks), tuple(failures))


def checks_of(classifiers: Sequence[ImageClassifier]) -> tuple[CheckStatus, ...]:
    """Statuses for classifiers passed in directly (all of them run)."""
    return tuple(CheckStatus(c.name, getattr(c, "model_id", None), True) for c in classifiers)


def build_gender_reader(
    model: str | None, labels: dict[str, list[str]] | None = None, **options: Any
) -> ClipAttributeReader | None:
    """The perceived gender presentation reader (kind clip-gender), or None: "not measured"."""
    if model is None:
        return None
    from genguard.guard.classifiers.clip_zero_shot import ClipAttributeReader

    try:
        return ClipAttributeReader(model, labels=labels or None, **options)
    except TypeError as exc:
        raise PolicyError(f"bias.gender_model options: {exc}") from None


def load_pack_checks(
    pack: PolicyPack,
    *,
    model: str,
    real_model: bool,
    pipe: Any = None,
    record: Callable[[str, dict[str, Any]], object] | None = None,
) -> PackChecks:
    """`build_pack_checks`, failing closed: an entry that must run and cannot raises ModelLoadError
    (exit 4) after `record("checks.unavailable", payload)` wrote what failed (the audit log's
    `append_event`), so that the refusal is on record even though no generation started."""
    built = build_pack_checks(pack, model=model, real_model=real_model, pipe=pipe)
    if built.failures and record is not None:
        record(
            CHECKS_UNAVAILABLE,
            {
                "policy": {"name": pack.ref.name, "version": pack.ref.version, "digest": pack.ref.digest},
                "model_id": model,
                "checks": [
                    {"classifier": c.classifier, "model": c.model_id, "ran": c.ran, "reason": c.reason}
                    for c in built.checks
                ],
            },
        )
    return built.require()


CHECKS_UNAVAILABLE = "checks.unavailable"
