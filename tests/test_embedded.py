"""Embedded tiny pipelines (pipeline/embedded.py) and the per-family adapters (pipeline/families.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from genguard.guard.errors import BadInputError, ModelLoadError
from genguard.pipeline import embedded
from genguard.pipeline.embedded import EMBEDDED_MODELS, embedded_dir, resolve_model_source
from genguard.pipeline.families import (
    Family,
    call_kwargs,
    detect_family,
    disable_builtin_safety,
    initial_noise,
    latent_shape,
    max_prompt_tokens,
    noise_from_gaussian,
    output_as_uint8,
    prompt_token_count,
)

torch.set_num_threads(1)

EXPECTED = {
    "embedded:tiny-sd": ("StableDiffusionPipeline", Family.SD),
    "embedded:tiny-sdxl": ("StableDiffusionXLPipeline", Family.SDXL),
    "embedded:tiny-sd3": ("StableDiffusion3Pipeline", Family.SD3),
    "embedded:tiny-flux": ("FluxPipeline", Family.FLUX),
}
SIZE = 64
STEPS = 2
GUIDANCE = 5.0


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("genguard")
        patch.setenv("GENGUARD_HOME", str(root / "home"))
        patch.setenv("GENGUARD_CACHE", str(root / "cache"))
        yield root / "cache"


@pytest.fixture(scope="module")
def pipes(cache: Path) -> dict[str, Any]:
    from diffusers import DiffusionPipeline

    loaded = {}
    for model in EXPECTED:  # the one-stage families (the two-stage ones: tests/test_families_more.py)
        pipe = DiffusionPipeline.from_pretrained(resolve_model_source(model))
        pipe.set_progress_bar_config(disable=True)
        disable_builtin_safety(pipe)
        loaded[model] = pipe
    return loaded


def _sample(pipe: Any, **kwargs: Any) -> torch.Tensor:
    images: torch.Tensor = pipe(
        "a photo of a cat",
        height=SIZE,
        width=SIZE,
        num_inference_steps=STEPS,
        guidance_scale=GUIDANCE,
        output_type="pt",
        **kwargs,
    ).images
    return images


def _tree_digest(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_the_embedded_names_are_known() -> None:
    assert set(EMBEDDED_MODELS) == set(EXPECTED) | {"embedded:tiny-kandinsky", "embedded:tiny-if"}


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_builds_and_reloads_as_its_own_pipeline_class(model: str, pipes: dict[str, Any], cache: Path) -> None:
    pipe = pipes[model]
    class_name, family = EXPECTED[model]
    assert type(pipe).__name__ == class_name
    assert detect_family(pipe) is family
    directory = Path(resolve_model_source(model))
    assert directory == embedded_dir(model)
    assert directory.parent == cache / "embedded"
    size = sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())
    assert 100_000 < size < 10_000_000, f"{model}: expected a few MB, found {size} bytes"
    # four VAE levels: latents are H/8 like real models
    assert len(pipe.vae.config.block_out_channels) == 4
    assert pipe.vae_scale_factor == 8


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_same_seed_same_image_and_other_seed_other_image(model: str, pipes: dict[str, Any]) -> None:
    pipe = pipes[model]
    first = _sample(pipe, generator=torch.Generator().manual_seed(7))
    again = _sample(pipe, generator=torch.Generator().manual_seed(7))
    other = _sample(pipe, generator=torch.Generator().manual_seed(8))
    assert first.shape == (1, 3, SIZE, SIZE)
    assert first.dtype == torch.float32
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0
    assert torch.equal(first, again)
    assert float((first - other).abs().mean()) > 0.01


@pytest.mark.parametrize("model", sorted(EXPECTED))
def test_initial_noise_is_what_the_pipeline_would_draw(model: str, pipes: dict[str, Any]) -> None:
    pipe = pipes[model]
    family = detect_family(pipe)
    from_generator = _sample(pipe, generator=torch.Generator().manual_seed(11))
    latents = initial_noise(pipe, 1, SIZE, SIZE, torch.Generator().manual_seed(11))
    kwargs = call_kwargs(
        family,
        prompt="a photo of a cat",
        negative_prompt="",
        height=SIZE,
        width=SIZE,
        steps=STEPS,
        guidance_scale=GUIDANCE,
        latents=latents,
        num_images=1,
    )
    from_latents = pipe(**kwargs).images
    assert torch.equal(from_generator, from_latents)
    # latents= overrides the generator: another seed changes nothing
    overridden = _sample(pipe, latents=latents, generator=torch.Generator().manual_seed(12))
    assert torch.equal(from_latents, overridden)


@pytest.mark.parametrize(
    ("model", "expected_shape"),
    [
        ("embedded:tiny-sd", (2, 4, 16, 8)),
        ("embedded:tiny-sdxl", (2, 4, 16, 8)),
        ("embedded:tiny-sd3", (2, 16, 16, 8)),
        # Flux: 2x2 patches of 16 channels packed, (128/16) * (64/16) positions
        ("embedded:tiny-flux", (2, 8 * 4, 64)),
    ],
)
def test_noise_shape_per_family(model: str, expected_shape: tuple[int, ...], pipes: dict[str, Any]) -> None:
    noise = initial_noise(pipes[model], 2, 128, 64, torch.Generator().manual_seed(0))
    assert tuple(noise.shape) == expected_shape


def test_flux_packing_is_diffusers_own_and_lossless(pipes: dict[str, Any]) -> None:
    pipe = pipes["embedded:tiny-flux"]
    z = torch.randn((1, *latent_shape(pipe, 128, 64)), generator=torch.Generator().manual_seed(1))
    packed = noise_from_gaussian(pipe, z)
    unpacked = pipe._unpack_latents(packed, 128, 64, pipe.vae_scale_factor)
    assert torch.equal(unpacked, z)


def test_unet_pipelines_scale_noise_themselves(pipes: dict[str, Any]) -> None:
    # The adapter passes unit-variance noise because prepare_latents multiplies by init_noise_sigma.
    pipe = pipes["embedded:tiny-sd"]
    z = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(2))
    prepared = pipe.prepare_latents(
        1, 4, SIZE, SIZE, torch.float32, pipe.device, None, noise_from_gaussian(pipe, z)
    )
    assert torch.equal(prepared, z * pipe.scheduler.init_noise_sigma)


def test_sizes_that_the_family_cannot_sample_are_refused(pipes: dict[str, Any]) -> None:
    with pytest.raises(BadInputError, match="height: expected a positive multiple of 16"):
        latent_shape(pipes["embedded:tiny-flux"], 72, 64)
    with pytest.raises(BadInputError, match="width: expected a positive multiple of 8"):
        latent_shape(pipes["embedded:tiny-sd"], 64, 60)


def test_builtin_safety_checker_and_watermarker_are_off(pipes: dict[str, Any]) -> None:
    sd = pipes["embedded:tiny-sd"]
    assert sd.safety_checker is None
    assert sd.config.requires_safety_checker is False
    index = json.loads((Path(resolve_model_source("embedded:tiny-sd")) / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None]
    assert pipes["embedded:tiny-sdxl"].watermark is None


def test_disable_builtin_safety_removes_a_present_checker_and_watermarker(pipes: dict[str, Any]) -> None:
    # SDXL turns its watermarker on at load whenever invisible-watermark is installed; a stand-in
    # object makes this test independent of that package.
    sdxl = pipes["embedded:tiny-sdxl"]
    sdxl.watermark = object()
    disable_builtin_safety(sdxl)
    assert sdxl.watermark is None
    sd = pipes["embedded:tiny-sd"]
    sd.register_modules(safety_checker=torch.nn.Identity())
    sd.register_to_config(requires_safety_checker=True)
    disable_builtin_safety(sd)
    assert sd.safety_checker is None
    assert sd.config.requires_safety_checker is False


def test_unknown_embedded_name_lists_the_known_ones(cache: Path) -> None:
    with pytest.raises(BadInputError) as raised:
        resolve_model_source("embedded:tiny-imagen")
    message = str(raised.value)
    assert "embedded:tiny-imagen" in message
    assert all(name in message for name in EXPECTED)
    assert raised.value.exit_code == 2  # a usage error, not an infrastructure failure


def test_hub_ids_and_paths_pass_through_unchanged(cache: Path, tmp_path: Path) -> None:
    assert resolve_model_source("stabilityai/sdxl-turbo") == "stabilityai/sdxl-turbo"
    assert resolve_model_source(str(tmp_path)) == str(tmp_path)
    # A local path that is not there is the caller's mistake (exit 2), not a loading failure.
    with pytest.raises(BadInputError, match="/models/my-sd") as raised:
        resolve_model_source("/models/my-sd")
    assert raised.value.exit_code == 2


def test_second_resolve_reuses_the_cache(pipes: dict[str, Any]) -> None:
    directory = Path(resolve_model_source("embedded:tiny-sd"))
    before = {path: path.stat().st_mtime_ns for path in directory.rglob("*")}
    assert Path(resolve_model_source("embedded:tiny-sd")) == directory
    assert {path: path.stat().st_mtime_ns for path in directory.rglob("*")} == before
    leftovers = [path.name for path in directory.parent.iterdir() if ".building-" in path.name]
    assert leftovers == []


def test_rebuild_is_identical_and_a_losing_builder_keeps_the_winner(
    pipes: dict[str, Any], tmp_path: Path
) -> None:
    winner = Path(resolve_model_source("embedded:tiny-sd"))
    # A second builder finishing after the first: its rename fails, the winner's copy stays, and
    # its own staging folder is removed.
    embedded._build("tiny-sd", winner)
    assert sorted(path.name for path in winner.parent.iterdir() if ".building-" in path.name) == []
    rebuilt = tmp_path / "tiny-sd-rebuilt"
    embedded._build("tiny-sd", rebuilt)
    assert _tree_digest(rebuilt) == _tree_digest(winner)


def test_prompt_tokens_counted_with_the_clip_tokenizer(pipes: dict[str, Any]) -> None:
    for model in EXPECTED:
        pipe = pipes[model]
        assert max_prompt_tokens(pipe) == 77
        assert prompt_token_count(pipe, "") == 2  # start and end tokens
        short = prompt_token_count(pipe, "a photo of a cat")
        assert 2 < short < 20
        long_prompt = " ".join(["a photo of a cat on a red sofa"] * 12)
        assert prompt_token_count(pipe, long_prompt) > max_prompt_tokens(pipe)


def test_output_as_uint8_converts_nchw_floats() -> None:
    images = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1, 0.25]).reshape(1, 3, 1, 2)
    array = output_as_uint8(images)
    assert array.dtype == np.uint8
    assert array.shape == (1, 1, 2, 3)
    # pixel (0, 0) takes channel values 0.0, 1.0, -0.1; pixel (0, 1) takes 0.5, 1.2, 0.25
    assert array[0, 0, 0].tolist() == [0, 255, 0]
    assert array[0, 0, 1].tolist() == [128, 255, 64]
    with pytest.raises(BadInputError, match="images: expected"):
        output_as_uint8(torch.zeros(3, 8, 8))


def test_unsupported_pipeline_class_is_a_model_load_error() -> None:
    with pytest.raises(ModelLoadError, match="found object"):
        detect_family(object())
