"""Issue 16: the output checks a pack names run on every image, or generation fails closed; what ran is
recorded with every image, and quarantined images say what held them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import yaml
from click.testing import CliRunner

from genguard.audit.reports import safety_report
from genguard.audit.store import AuditStore
from genguard.guard.classifiers.registry import CHECKS_UNAVAILABLE, NOT_REAL_MODEL, build_pack_checks
from genguard.guard.errors import ModelLoadError
from genguard.guard.policy import PolicyPack, load_pack
from genguard.guard.types import ClassifierScore, GenerationParams, GenerationRequest, ImageAction
from genguard.pipeline.cli import cli, main
from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline
from tests._photos import photographs
from tests.tiny_models import build_tiny_clip, build_tiny_safety_checker

torch.set_num_threads(1)

SMALL = GenerationParams(width=64, height=64, steps=2, num_images=2, seed=7)


def pack_with(classifiers: list[dict[str, object]], tmp_path: Path) -> Path:
    default = load_pack("default").canonical_dict()
    default["image_checks"]["classifiers"] = classifiers
    path = tmp_path / "pack.yaml"
    path.write_text(yaml.safe_dump(default))
    return path


class FixedScore:
    """An output check scoring every image the same for one category (a plug-in of the Protocol)."""

    name = "fixed"
    model_id = "fixed@1"

    def __init__(self, category: str, score: float) -> None:
        self.category, self.score = category, score

    def classify(self, images: Any) -> list[tuple[ClassifierScore, ...]]:
        return [(ClassifierScore(self.name, self.model_id, self.category, self.score),) for _ in images]


@pytest.fixture(scope="module")
def tiny_sd(embedded_cache: Path) -> object:
    return load_diffusers_pipeline("embedded:tiny-sd")


def test_required_check_that_cannot_load_fails_closed_and_is_recorded(
    tmp_path: Path, sqlite_url: str, embedded_cache: Path
) -> None:
    path = pack_with([{"kind": "clip-zero-shot", "model": str(tmp_path / "no-such-clip")}], tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        GovernedPipeline.from_pretrained("embedded:tiny-sd", policy=path, audit=sqlite_url, sign=False)
    message = str(caught.value)
    assert "kind clip-zero-shot" in message and "no-such-clip" in message and "fails closed" in message
    store = AuditStore.open(sqlite_url)
    event = store.entry(1)
    assert event is not None and event.event_type == CHECKS_UNAVAILABLE
    payload = json.loads(event.payload_json) if hasattr(event, "payload_json") else event.payload
    assert payload["checks"][0]["ran"] is False and "no-such-clip" in payload["checks"][0]["reason"]
    # The CLI: exit 4, the check named.
    with pytest.raises(SystemExit) as exited:
        main(["generate", "a lighthouse", "--policy", str(path), "--db", sqlite_url, "--size", "64",
              "--steps", "1", "--out", str(tmp_path / "out")])  # fmt: skip
    assert exited.value.code == 4


def test_optional_check_is_recorded_as_not_run_with_why(
    tmp_path: Path, sqlite_url: str, embedded_cache: Path
) -> None:
    path = pack_with(
        [
            {"kind": "nudenet", "model": "bundled"},
            {"kind": "clip-zero-shot", "model": str(tmp_path / "no-such-clip"), "optional": True},
        ],
        tmp_path,
    )
    gp = GovernedPipeline.from_pretrained("embedded:tiny-sd", policy=path, audit=sqlite_url, sign=False)
    result = gp(GenerationRequest("a lighthouse at dusk", params=SMALL))
    assert len(result.released) == 2
    for image in result.released:
        nudenet, clip = image.verdict.checks
        assert nudenet.ran and nudenet.model_id is not None and nudenet.model_id.startswith("nudenet:")
        assert not clip.ran and clip.reason.startswith("not run (optional)") and "no-such-clip" in clip.reason
        assert [s.classifier for s in image.verdict.scores] == ["nudenet"]
    detail = AuditStore.open(sqlite_url).get_generation(result.generation_id)
    assert detail is not None and detail.images[0].verdict.checks == result.released[0].verdict.checks
    shown = CliRunner().invoke(cli, ["audit", "show", result.generation_id, "--db", sqlite_url])
    assert shown.exit_code == 0 and "not run (optional)" in shown.output


def test_default_pack_on_the_embedded_model_runs_nudenet_and_says_what_did_not_run(
    tmp_path: Path, sqlite_url: str, embedded_cache: Path
) -> None:
    gp = GovernedPipeline.from_pretrained("embedded:tiny-sd", audit=sqlite_url, sign=False)
    assert [(c.classifier, c.ran) for c in gp.checks] == [
        ("nudenet", True), ("sd-safety-checker", False), ("clip-zero-shot", False)
    ]  # fmt: skip
    assert (
        gp.checks[1].reason == NOT_REAL_MODEL
        and gp.checks[1].model_id == "CompVis/stable-diffusion-safety-checker"
    )
    result = gp(GenerationRequest("a lighthouse at dusk", params=SMALL))
    assert all(s.classifier == "nudenet" for image in result.released for s in image.verdict.scores)
    assert all(image.verdict.scores for image in result.released)  # never `scores: []`
    doctor = CliRunner().invoke(cli, ["doctor"])
    assert doctor.exit_code == 0 and "nudenet" in doctor.output and "runs" in doctor.output


def _pipeline_folder(root: Path) -> Path:
    """A diffusers-style folder with a tiny `safety_checker` and its `feature_extractor`."""
    checker = build_tiny_safety_checker(root / "safety_checker", flag_everything=True)
    (root / "feature_extractor").mkdir()
    shutil.copy(checker / "preprocessor_config.json", root / "feature_extractor")
    return root


def test_real_model_runs_the_pipelines_own_safety_checker_and_clip(tmp_path: Path) -> None:
    folder = _pipeline_folder(tmp_path / "sd15")
    clip = build_tiny_clip(tmp_path / "clip")
    pack = load_pack(
        pack_with(
            [
                {"kind": "sd-safety-checker", "model": str(tmp_path / "no-such-checker"),
                 "when": "real-model", "options": {"from_pipeline": True}},
                {"kind": "clip-zero-shot", "model": str(clip), "when": "real-model"},
            ],
            tmp_path,
        )
    )  # fmt: skip
    # From the model's folder (what `genguard doctor` does): the pipeline's weights, not the pack's model.
    built = build_pack_checks(pack, model=str(folder), real_model=True).require()
    assert [c.ran for c in built.checks] == [True, True]
    assert built.checks[0].model_id is not None and built.checks[0].model_id.startswith(str(folder))
    image = photographs(64, ("coffee",))["coffee"]
    [scores] = built.classifiers[0].classify([image])
    assert scores[0].score >= 0.5  # this tiny checker flags everything
    # From a loaded pipeline's modules (what from_pretrained does): the same weights, reused.
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import AutoImageProcessor

    pipe = SimpleNamespace(
        safety_checker=StableDiffusionSafetyChecker.from_pretrained(folder / "safety_checker"),
        feature_extractor=AutoImageProcessor.from_pretrained(folder / "feature_extractor"),
    )
    reused = build_pack_checks(pack, model="owner/sd", real_model=True, pipe=pipe).require()
    assert reused.classifiers[0].model_id.startswith("owner/sd/safety_checker@")  # type: ignore[attr-defined]
    [again] = reused.classifiers[0].classify([image])
    assert again[0].score == pytest.approx(scores[0].score, abs=1e-5)
    # Without pipeline weights the pack's model must load: here it does not, so generation fails closed.
    with pytest.raises(ModelLoadError, match="no-such-checker"):
        build_pack_checks(pack, model=str(tmp_path / "sdxl"), real_model=True).require()
    # The embedded demo: neither runs, each recorded with why.
    demo = build_pack_checks(pack, model="embedded:tiny-sd", real_model=False).require()
    assert demo.classifiers == () and {c.reason for c in demo.checks} == {NOT_REAL_MODEL}


def test_uncertain_prompt_lowers_the_image_threshold_end_to_end(
    tiny_sd: object, sqlite_url: str, default_pack: PolicyPack
) -> None:
    sexual = default_pack.category("sexual").thresholds.image
    heightened = default_pack.image_threshold("sexual", heightened=True)
    score = (sexual + heightened) / 2  # between the two thresholds
    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=default_pack, audit=AuditStore.open(sqlite_url),
        classifiers=[FixedScore("sexual", score)], sign=False,
    )  # fmt: skip
    plain = gp(GenerationRequest("a dancer on stage", params=SMALL))
    assert len(plain.released) == 2 and plain.decision.heightened_categories == ()
    uncertain = gp(GenerationRequest("a sexy dancer on stage", params=SMALL))
    assert uncertain.decision.heightened_categories == ("sexual",) and not uncertain.released
    assert [w.verdict.action for w in uncertain.withheld] == [ImageAction.BLOCK] * 2
    [(category, threshold)] = uncertain.withheld[0].verdict.flagged
    assert category == "sexual" and threshold == pytest.approx(heightened)


def test_prompt_held_images_name_the_category_in_review_and_report(
    tiny_sd: object, sqlite_url: str, default_pack: PolicyPack
) -> None:
    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=default_pack, audit=AuditStore.open(sqlite_url),
        classifiers=[FixedScore("violence", 0.1)], sign=False,
    )  # fmt: skip
    result = gp(GenerationRequest("a sad teenager cutting her wrists", params=SMALL))
    held = result.withheld[0]
    assert held.status == "quarantined" and held.reason.startswith("prompt held for review (self_harm ")
    assert held.verdict.scores  # the checks' scores are kept with the hold
    shown = CliRunner().invoke(cli, ["review", "show", f"{result.generation_id}:0", "--db", sqlite_url])
    assert shown.exit_code == 0, shown.output
    assert "held by:    prompt review, self_harm (score 0.9" in shown.output
    assert "violence" in shown.output and "fixed (fixed@1)" in shown.output
    report = safety_report(AuditStore.open(sqlite_url))
    assert dict(report.by_category)["self_harm"] == (("quarantined (waiting)", 2),)
    assert "prompt review" not in dict(report.by_category)


def test_a_check_that_drops_images_fails_the_generation(tiny_sd: object, sqlite_url: str) -> None:
    class Short(FixedScore):
        def classify(self, images: Any) -> list[tuple[ClassifierScore, ...]]:
            return super().classify(images)[:1]

    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=load_pack("default"), audit=AuditStore.open(sqlite_url),
        classifiers=[Short("violence", 0.1)], sign=False,
    )  # fmt: skip
    with pytest.raises(ModelLoadError, match="expected 2 score rows, found 1"):
        gp(GenerationRequest("a lighthouse", params=SMALL))
    [row] = AuditStore.open(sqlite_url).list_generations()
    assert row.status == "failed"


def test_checks_reach_the_manifest(tiny_sd: object, sqlite_url: str) -> None:
    import io

    import c2pa

    gp = GovernedPipeline(
        tiny_sd, model_id="embedded:tiny-sd", policy=load_pack("default"), audit=AuditStore.open(sqlite_url),
        classifiers=[FixedScore("violence", 0.1)],
    )  # fmt: skip
    result = gp(GenerationRequest("a lighthouse", params=SMALL))
    with c2pa.Reader("image/png", io.BytesIO(result.released[0].data)) as reader:
        manifest = reader.get_active_manifest()
    assertions = {a["label"]: a["data"] for a in manifest["assertions"]}
    checks = assertions["org.genguard.governance"]["verdict"]["checks"]
    assert checks == [{"classifier": "fixed", "model_id": "fixed@1", "ran": True, "reason": ""}]
