"""The vlm-guard classifier on real photographs, with tiny ShieldGemma 2 and LlavaGuard twins.

The twins have the real architectures (Gemma 3 + SigLIP; LLaVA-OneVision with Qwen2 + SigLIP), are
built from configs and loaded through `from_pretrained(path)`, and answer "yes" / "Unsafe" exactly
when the policy text holds the word VLM_MARKER ("gore", in the default violence policy only). So a
score ordering shows that each category's wording from the pack reaches the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from genguard.guard.classifiers.registry import build_from_spec, build_pack_checks
from genguard.guard.classifiers.vlm_guard import DEFAULT_POLICIES, VLMGuardClassifier
from genguard.guard.errors import ImageInputError, ModelLoadError, PolicyError
from genguard.guard.output import decide_image
from genguard.guard.policy import load_pack
from genguard.guard.policy.schema import ClassifierSpec
from genguard.guard.types import ImageAction
from tests._photos import photographs
from tests.tiny_models import (
    VLM_MARKER,
    build_tiny_llavaguard,
    build_tiny_shieldgemma2,
    build_tiny_vit_classifier,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vlm-models")
    return {
        "shieldgemma2": build_tiny_shieldgemma2(root / "shieldgemma2"),
        "llavaguard": build_tiny_llavaguard(root / "llavaguard"),
    }


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return list(photographs(512, ("astronaut", "coffee", "rocket")).values())


FAMILIES = ("shieldgemma2", "llavaguard")


@pytest.mark.parametrize("family", FAMILIES)
def test_default_policies_flag_only_the_forced_category(
    family: str, models: dict[str, Path], photos: list[np.ndarray]
) -> None:
    assert VLM_MARKER in DEFAULT_POLICIES["violence"]
    assert not any(VLM_MARKER in text for c, text in DEFAULT_POLICIES.items() if c != "violence")
    classifier = VLMGuardClassifier(models[family], device="cpu", batch_size=2)
    results = classifier.classify(photos)
    assert len(results) == len(photos)
    for scores in results:
        assert [s.category for s in scores] == list(DEFAULT_POLICIES)
        by_category = {s.category: s.score for s in scores}
        assert by_category["violence"] > 0.99
        assert all(score < 0.05 for c, score in by_category.items() if c != "violence")
        assert all(
            s.classifier == "vlm-guard" and s.model_id.startswith(f"{models[family]}@sha256:") for s in scores
        )
    # The shipped packs define every default category, and the forced one is acted on.
    verdict = decide_image(results[0], load_pack("default"))
    assert verdict.action is ImageAction.QUARANTINE  # violence: output_action quarantine
    assert [category for category, _ in verdict.flagged] == ["violence"]


@pytest.mark.parametrize("family", FAMILIES)
def test_pack_wording_decides_what_is_asked(
    family: str, models: dict[str, Path], photos: list[np.ndarray]
) -> None:
    # The pack's own policy texts replace the defaults and choose the categories: hate worded with the
    # marker is flagged, violence worded without it is not; several texts: the highest score counts.
    prompts = {
        "violence": ["No violent content: the image shall not show a fight."],
        "hate": ["No hate: no swastika.", f"No hateful {VLM_MARKER} imagery."],
    }
    spec = ClassifierSpec(
        kind="vlm-guard", model=str(models[family]), prompts=prompts, options={"device": "cpu"}
    )
    classifier = build_from_spec(spec)
    [scores] = classifier.classify(photos[:1])
    by_category = {s.category: s.score for s in scores}
    assert list(by_category) == ["violence", "hate"]
    assert by_category["hate"] > 0.99
    assert by_category["violence"] < 0.05


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_equals_one_by_one(family: str, models: dict[str, Path], photos: list[np.ndarray]) -> None:
    classifier = VLMGuardClassifier(models[family], device="cpu", batch_size=3)
    together = classifier.probabilities(photos)
    alone = np.concatenate([classifier.probabilities([image]) for image in photos])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_registry_runs_it_as_a_pack_check(models: dict[str, Path], tmp_path: Path) -> None:
    default = load_pack("default").canonical_dict()
    default["image_checks"]["classifiers"] = [
        {"kind": "vlm-guard", "model": str(models["shieldgemma2"]), "options": {"device": "cpu"}},
        {"kind": "vlm-guard", "model": "google/shieldgemma-2-4b-it", "when": "real-model"},
    ]
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(default))
    built = build_pack_checks(load_pack(path), model="embedded", real_model=False)
    assert [c.ran for c in built.checks] == [True, False]
    assert built.checks[0].model_id is not None and built.checks[0].model_id.startswith(
        str(models["shieldgemma2"])
    )
    assert [c.name for c in built.classifiers] == ["vlm-guard"]


def test_errors_name_the_field(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="found nothing at"):
        VLMGuardClassifier("/nonexistent/shieldgemma")
    vit = build_tiny_vit_classifier(tmp_path / "vit")
    with pytest.raises(
        ModelLoadError, match="expected a ShieldGemma 2 or LlavaGuard model.*found model_type 'vit'"
    ):
        VLMGuardClassifier(vit)
    with pytest.raises(PolicyError, match="options.batch_size: expected at least 1, found 0"):
        VLMGuardClassifier(models["shieldgemma2"], batch_size=0)
    with pytest.raises(PolicyError, match="options.dtype: expected one of .*found 'int8'"):
        VLMGuardClassifier(models["shieldgemma2"], dtype="int8")
    with pytest.raises(PolicyError, match=r"prompts\.hate: expected a list of non-empty policy texts"):
        VLMGuardClassifier(models["shieldgemma2"], prompts={"hate": []})
    with pytest.raises(PolicyError, match="options.*unexpected keyword.*colour"):
        build_from_spec(
            ClassifierSpec(kind="vlm-guard", model=str(models["llavaguard"]), options={"colour": "red"})
        )
    classifier = VLMGuardClassifier(models["llavaguard"], device="cpu")
    with pytest.raises(ImageInputError, match=r"images\[0\]: expected an RGB uint8 array"):
        classifier.classify([np.zeros((64, 64), np.float32)])
    assert classifier.classify([]) == []
