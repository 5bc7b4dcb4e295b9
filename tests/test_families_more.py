"""The seed's other families (Kandinsky 2.2: prior + decoder; DeepFloyd IF: stage I + II) and the
few-step samplers (LCM, Turbo), through the governed path on the embedded tiny twins."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genguard.audit.store import AuditStore
from genguard.audit.verify import Verdict, verify_image
from genguard.guard.errors import BadInputError, ModelLoadError
from genguard.guard.policy import load_pack
from genguard.guard.types import GenerationParams, GenerationRequest
from genguard.guard.watermark import detect
from genguard.guard.watermark.latent import ALGORITHM as LATENT_ALGORITHM
from genguard.guard.watermark.latent import LatentDetection
from genguard.pipeline import families
from genguard.pipeline.embedded import resolve_model_source
from genguard.pipeline.governed import GovernedPipeline, load_diffusers_pipeline
from genguard.pipeline.inversion import InversionUnavailable, latent_roundtrip
from genguard.pipeline.loading import if_stage_sources
from genguard.pipeline.outcomes import InvalidRequestError

torch.set_num_threads(1)

KEY = bytes(range(32))
# 256 px: the pixel watermark reads back at this size; one image, two steps keep it fast.
RELEASE = GenerationParams(width=256, height=256, steps=2, num_images=1, seed=11, guidance_scale=4.0)
SMALL = GenerationParams(width=64, height=64, steps=2, num_images=2, seed=3, guidance_scale=4.0)


@pytest.fixture(scope="module")
def kandinsky(embedded_cache: Path) -> Any:
    return load_diffusers_pipeline("embedded:tiny-kandinsky")


@pytest.fixture(scope="module")
def tiny_if(embedded_cache: Path) -> Any:
    return load_diffusers_pipeline("embedded:tiny-if")


@pytest.fixture()
def tiny_sd(embedded_cache: Path) -> Any:
    return load_diffusers_pipeline("embedded:tiny-sd")  # per test: the few-step tests swap its scheduler


def governed(pipe: Any, model_id: str, db_url: str, **kwargs: Any) -> GovernedPipeline:
    return GovernedPipeline(
        pipe,
        model_id=model_id,
        policy=load_pack("default"),
        audit=AuditStore.open(db_url),
        watermark_key=KEY,
        **kwargs,
    )


def _released_and_verified(gp: GovernedPipeline, params: GenerationParams, out: Path) -> tuple[Any, Any, Any]:
    """One governed generation: its released image, its stored record and `verify_image`'s report."""
    result = gp(GenerationRequest("a lighthouse at dusk", params=params), out_dir=out)
    assert len(result.released) == params.num_images and not result.withheld
    image = result.released[0]
    assert image.path is not None and image.path.exists() and image.manifest is not None
    found = detect(np.asarray(image.to_pil()), KEY)
    assert found.marked and found.mark_id == image.mark_id
    detail = gp.audit.get_generation(result.generation_id)
    assert detail is not None and detail.status == "completed"
    report = verify_image(image.path.read_bytes(), store=gp.audit, key=KEY)
    assert report.verdict is Verdict.VERIFIED_ORIGINAL, report.summary
    assert report.record is not None and report.record.image.generation_id == result.generation_id
    assert report.record.mark_id == image.mark_id
    return image, detail, report


def test_the_two_stage_twins_load_through_diffusers_from_pretrained(kandinsky: Any, tiny_if: Any) -> None:
    from diffusers import DiffusionPipeline

    combined = DiffusionPipeline.from_pretrained(resolve_model_source("embedded:tiny-kandinsky"))
    assert type(combined).__name__ == "KandinskyV22CombinedPipeline"
    assert families.detect_family(kandinsky) is families.Family.KANDINSKY

    folder = Path(resolve_model_source("embedded:tiny-if"))
    assert json.loads((folder / "cascade.json").read_text())["stages"] == ["stage_1", "stage_2"]
    stage_1 = DiffusionPipeline.from_pretrained(folder / "stage_1")
    stage_2 = DiffusionPipeline.from_pretrained(folder / "stage_2")
    assert (type(stage_1).__name__, type(stage_2).__name__) == ("IFPipeline", "IFSuperResolutionPipeline")
    assert isinstance(tiny_if, families.IFCascadePipeline)
    assert families.detect_family(tiny_if) is families.Family.IF
    # IF's own safety checker and watermarker are not part of the twin (genguard's checks replace them)
    for name in ("stage_1", "stage_2"):
        index = json.loads((folder / name / "model_index.json").read_text())
        assert index["safety_checker"] == [None, None] and index["watermarker"] == [None, None]
    for stage in tiny_if.stages:
        assert stage.safety_checker is None and stage.watermarker is None


def test_if_hub_ids_and_cascade_files_name_both_stages(tmp_path: Path) -> None:
    assert if_stage_sources("DeepFloyd/IF-I-XL-v1.0") == ("DeepFloyd/IF-I-XL-v1.0", "DeepFloyd/IF-II-L-v1.0")
    assert if_stage_sources(str(tmp_path)) is None  # no cascade.json: not IF
    (tmp_path / "cascade.json").write_text(json.dumps({"stages": ["only-one"]}))
    with pytest.raises(ModelLoadError, match="stages: expected two folder names or hub ids"):
        if_stage_sources(str(tmp_path))
    (tmp_path / "stage_1").mkdir()
    (tmp_path / "cascade.json").write_text(json.dumps({"stages": ["stage_1", "DeepFloyd/IF-II-L-v1.0"]}))
    assert if_stage_sources(str(tmp_path)) == (str(tmp_path / "stage_1"), "DeepFloyd/IF-II-L-v1.0")


def test_kandinsky_releases_with_both_marks_and_the_latent_mark_reads_back(
    kandinsky: Any, sqlite_url: str, tmp_path: Path
) -> None:
    gp = governed(kandinsky, "embedded:tiny-kandinsky", sqlite_url)
    image, detail, report = _released_and_verified(gp, RELEASE, tmp_path)
    assert detail.extra["watermarks"] == [gp.governor.watermarker.algorithm, LATENT_ALGORITHM]
    assert detail.extra["latent_mark"] == {"embedded": True, "readable_by_inversion": True}
    sampler = detail.extra["sampler"]
    assert sampler["family"] == "kandinsky" and sampler["scheduler"] == "DDIMScheduler"
    assert sampler["prior_scheduler"] == "UnCLIPScheduler" and sampler["prior_steps"] == 2
    assert report.record.marks == (gp.governor.watermarker.algorithm, LATENT_ALGORITHM)
    assert report.record.latent_mark_note is None
    recorded = detail.images[0]
    assert recorded.latent_nonce is not None and recorded.latent_nonce == image.latent_nonce
    # The mark id and nonce of the record, through the decoder and DDIM inversion (latent level: the
    # twin's MoVQ is untrained, not an autoencoder).
    reading = latent_roundtrip(
        kandinsky,
        prompt="a lighthouse at dusk",
        mark_id=recorded.mark_id,
        nonce=recorded.latent_nonce,
        key=KEY,
        height=128,
        width=128,
        steps=2,
        # Without classifier-free guidance the DDIM inversion is exact enough on the untrained twin
        # (sign agreement about 0.93); at guidance 4 it falls to about 0.76 and a random mark id loses a
        # bit now and then.
        guidance_scale=1.0,
    )
    assert isinstance(reading, LatentDetection)
    assert reading.detected and reading.matches_expected and reading.bit_accuracy == 1.0
    # under another nonce the same noise carries no mark: the reading is keyed by the record
    assert detect_with_wrong_nonce(kandinsky, recorded.mark_id) is False


def detect_with_wrong_nonce(pipe: Any, mark_id: int) -> bool:
    """Noise made under one nonce read back under another: no mark (the reading is keyed)."""
    from genguard.guard.watermark.latent import detect_latent
    from genguard.pipeline.inversion import watermarked_noise

    noise = watermarked_noise(pipe, [mark_id], [bytes(16)], 128, 128, KEY)
    return bool(detect_latent(noise[0].numpy(), KEY, b"\x01" * 16).detected)


def test_if_releases_with_the_pixel_mark_alone_and_says_so(
    tiny_if: Any, sqlite_url: str, tmp_path: Path
) -> None:
    gp = governed(tiny_if, "embedded:tiny-if", sqlite_url)
    assert gp.governor.latent_watermark is False  # asked for (the default), not possible for IF
    image, detail, report = _released_and_verified(gp, RELEASE, tmp_path)
    assert detail.extra["watermarks"] == [gp.governor.watermarker.algorithm]
    state = detail.extra["latent_mark"]
    assert state["embedded"] is False and "pixel-space cascade" in state["reason"]
    assert detail.images[0].latent_nonce is None and image.latent_nonce is None
    assert detail.extra["sampler"]["stage_2_scheduler"] == "DDPMScheduler"
    assert detail.pipeline_class == "IFCascadePipeline"
    assert report.record.marks == (gp.governor.watermarker.algorithm,)
    assert report.record.latent_mark_note is not None and "pixel-space" in report.record.latent_mark_note
    unavailable = latent_roundtrip(
        tiny_if,
        prompt="a boat",
        mark_id=1,
        nonce=bytes(16),
        key=KEY,
        height=64,
        width=64,
        steps=2,
        guidance_scale=4.0,
    )
    assert isinstance(unavailable, InversionUnavailable) and unavailable.family is families.Family.IF


@pytest.mark.parametrize("model", ["embedded:tiny-kandinsky", "embedded:tiny-if"])
def test_two_stage_sampling_is_reproducible_per_image(
    model: str, sqlite_url: str, embedded_cache: Path
) -> None:
    pipe = load_diffusers_pipeline(model)

    class Unmarked:
        algorithm = "test.pass-through"

        def embed(self, image: np.ndarray, mark_id: int, key: bytes | None = None) -> np.ndarray:
            return image

        def detect(self, image: np.ndarray, key: bytes | None = None) -> object:
            raise NotImplementedError

    gp = governed(pipe, model, sqlite_url, watermarker=Unmarked(), latent_watermark=False, sign=False)
    first = gp(GenerationRequest("a red boat", params=SMALL))
    again = gp(GenerationRequest("a red boat", params=SMALL))
    other = gp(GenerationRequest("a red boat", params=GenerationParams(**{**vars(SMALL), "seed": 4})))
    assert [i.sha256 for i in first.released] == [i.sha256 for i in again.released]
    assert first.released[0].sha256 != first.released[1].sha256
    assert other.released[0].sha256 != first.released[0].sha256
    assert first.released[0].pixels.shape == (64, 64, 3)


def test_two_stage_bounds_sizes_and_prompt_limits(kandinsky: Any, tiny_if: Any, sqlite_url: str) -> None:
    # Kandinsky's decoder rounds sizes up to multiples of the MoVQ factor squared (64)
    with pytest.raises(BadInputError, match="height: expected a positive multiple of 64 for a kandinsky"):
        families.latent_shape(kandinsky, 72, 64)
    assert families.latent_shape(kandinsky, 128, 64) == (4, 16, 8)
    assert families.latent_shape(tiny_if, 64, 128) == (3, 16, 32)  # stage I at a quarter of the size
    with pytest.raises(BadInputError, match="width: expected a positive multiple of 8 for a if"):
        families.latent_shape(tiny_if, 64, 60)
    # IF's prompt is cut at 77 T5 tokens by diffusers: a longer one is refused and recorded as invalid
    gp = governed(tiny_if, "embedded:tiny-if", sqlite_url)
    long_prompt = " ".join(["lighthouse"] * 80)
    with pytest.raises(InvalidRequestError, match="prompt: expected at most 77 tokens") as refused:
        gp(GenerationRequest(long_prompt, params=SMALL))
    detail = gp.audit.get_generation(refused.value.generation_id)
    assert detail is not None and detail.status == "invalid"
    # Kandinsky's prompt goes to the prior's CLIP tokenizer, with CLIP's limit
    assert families.max_prompt_tokens(kandinsky) == kandinsky.prior_tokenizer.model_max_length == 77
    assert families.prompt_token_count(kandinsky, long_prompt) > 77


@pytest.mark.parametrize(
    ("name", "scheduler", "steps"),
    [("lcm", "LCMScheduler", 2), ("turbo", "EulerAncestralDiscreteScheduler", 1)],
)
def test_few_step_samplers_are_governed_and_recorded(
    name: str, scheduler: str, steps: int, tiny_sd: Any, sqlite_url: str, tmp_path: Path
) -> None:
    families.use_scheduler(tiny_sd, name)
    assert type(tiny_sd.scheduler).__name__ == scheduler
    if name == "turbo":
        assert tiny_sd.scheduler.config.timestep_spacing == "trailing"
    # the model's noise schedule is kept
    assert tiny_sd.scheduler.config.beta_schedule == "scaled_linear"
    gp = governed(tiny_sd, "embedded:tiny-sd", sqlite_url)
    params = GenerationParams(width=256, height=256, steps=steps, num_images=1, seed=5, guidance_scale=0.0)
    _, detail, report = _released_and_verified(gp, params, tmp_path)
    assert detail.extra["sampler"] == {
        "family": "sd",
        "scheduler": scheduler,
        "steps": steps,
        "guidance_scale": 0.0,
    }
    # the latent mark is in the initial noise, but a sampler that re-noises at every step cannot be
    # inverted: the record says so rather than claiming a readable mark
    state = detail.extra["latent_mark"]
    assert state["embedded"] is True and state["readable_by_inversion"] is False
    assert scheduler in state["reason"]
    assert report.record.latent_mark_note == state["reason"]


def test_scheduler_names_and_families_are_checked(kandinsky: Any, tiny_sd: Any) -> None:
    with pytest.raises(BadInputError, match="scheduler: expected one of default, lcm, turbo, found 'dpm'"):
        families.use_scheduler(tiny_sd, "dpm")
    with pytest.raises(
        BadInputError, match="scheduler: expected an sd or sdxl model for 'lcm', found kandinsky"
    ):
        families.use_scheduler(kandinsky, "lcm")
    before = tiny_sd.scheduler
    families.use_scheduler(tiny_sd, "default")
    assert tiny_sd.scheduler is before


def _cli(args: list[str], tmp_path: Path, embedded_cache: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        GENGUARD_HOME=str(tmp_path / "home"),
        GENGUARD_CACHE=str(embedded_cache),
        GENGUARD_DB=f"sqlite:///{tmp_path / 'audit.sqlite3'}",
        OMP_NUM_THREADS="1",
        HF_HUB_OFFLINE="1",
    )
    return subprocess.run(
        [sys.executable, "-m", "genguard.pipeline.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("extra_args", "family", "scheduler"),
    [
        (["--model", "embedded:tiny-kandinsky"], "kandinsky", "DDIMScheduler"),
        (["--model", "embedded:tiny-if"], "if", "DDPMScheduler"),
        (["--scheduler", "lcm", "--guidance", "0"], "sd", "LCMScheduler"),
    ],
)
def test_cli_generates_and_records_the_family_and_scheduler(
    extra_args: list[str], family: str, scheduler: str, tmp_path: Path, embedded_cache: Path
) -> None:
    out = tmp_path / "out"
    args = ["generate", "a lighthouse at dusk", "--steps", "2", "--size", "64", "--out", str(out), "--json"]
    proc = _cli([*args, *extra_args], tmp_path, embedded_cache)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(result["released"][0]["path"]).exists()
    detail = AuditStore.open(f"sqlite:///{tmp_path / 'audit.sqlite3'}").get_generation(
        result["generation_id"]
    )
    assert detail is not None and detail.status == "completed"
    sampler = detail.extra["sampler"]
    assert sampler["family"] == family and sampler["scheduler"] == scheduler and sampler["steps"] == 2


def test_cli_refuses_a_few_step_scheduler_for_another_family(tmp_path: Path, embedded_cache: Path) -> None:
    args = [
        "generate",
        "a boat",
        "--model",
        "embedded:tiny-kandinsky",
        "--scheduler",
        "turbo",
        "--size",
        "64",
    ]
    proc = _cli([*args, "--out", str(tmp_path / "out")], tmp_path, embedded_cache)
    assert proc.returncode == 2, proc.stderr
    assert "scheduler: expected an sd or sdxl model for 'turbo', found kandinsky" in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
