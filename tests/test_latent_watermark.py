"""Latent watermark (guard/watermark/latent.py) and its DDIM inversion (pipeline/inversion.py).

What these offline tests check: the keyed noise is exactly standard normal and carries no
repeated pattern across nonces; the right key and nonce recover the id from clean noise and
nothing else does; the p-value is calibrated under "no watermark"; after sampling with the tiny
SD and SDXL pipelines, DDIM inversion of the final latents recovers the id (bit accuracy >= 0.95)
and estimates the initial noise better than the latents themselves do; with the tiny SD3 and Flux
pipelines, the flow-matching Euler sampler run backwards does the same, and reads the id where the
final latents alone no longer do (a tiny transformer whose velocity is scaled up so that sampling
moves the latents far from the noise, as a trained model does).

What they cannot check:
- Pixel-level robustness. The tiny VAEs have random weights and are not autoencoders, so
  encoding a generated image does not give back its latents; detection from pixels (and after
  JPEG, resizing, cropping) needs real VAE weights and is for a GPU benchmark with a real model.
- How hard the inversion problem really is. A random UNet predicts small noise, so the final
  latents stay close to a scaled copy of the initial noise (correlation about 0.95) and the 64
  bits can be voted even without inversion; the tests therefore also require that inversion
  improves on that baseline, but real models (which change the latents far more) are the true test.
- Real prompts with real classifier-free guidance: inversion uses an empty prompt and no
  guidance; the mismatch with a trained model's guided sampling is only represented by a random
  model's guided velocity (tiny SD3 at guidance 7 still reads the id, with a lower agreement).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats

from genguard.guard.errors import BadInputError
from genguard.guard.watermark import latent
from genguard.guard.watermark.latent import LatentDetection, detect_latent, embed_latent, new_nonce
from genguard.pipeline.embedded import resolve_model_source
from genguard.pipeline.families import detect_family, latent_shape
from genguard.pipeline.inversion import (
    STOCHASTIC_SAMPLING,
    InversionUnavailable,
    RecoveredNoise,
    ddim_invert_latents,
    detect_in_image,
    flow_invert_latents,
    invert_images,
    latent_roundtrip,
    unpack_flux_latents,
    watermarked_noise,
)

torch.set_num_threads(1)

KEY = bytes(range(32))
SHAPE = (4, 32, 32)
MARK = 0x9E3779B97F4A7C15


@pytest.fixture(scope="module")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from diffusers import DiffusionPipeline

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("genguard")
        patch.setenv("GENGUARD_HOME", str(root / "home"))
        patch.setenv("GENGUARD_CACHE", str(root / "cache"))
        loaded = {}
        for name in ("tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-flux"):
            pipe = DiffusionPipeline.from_pretrained(resolve_model_source(f"embedded:{name}"))
            pipe.set_progress_bar_config(disable=True)
            loaded[name] = pipe
        yield loaded


def test_noise_is_standard_normal_across_many_nonces() -> None:
    samples = np.concatenate([embed_latent(MARK, SHAPE, KEY, new_nonce()).ravel() for _ in range(40)])
    assert samples.dtype == np.float32
    n = samples.size
    assert abs(float(samples.mean())) < 5 / np.sqrt(n)
    assert abs(float(samples.var()) - 1.0) < 5 * np.sqrt(2 / n)
    assert stats.kstest(samples, "norm").pvalue > 1e-3
    # Anderson-Darling (mean and variance estimated): 1.5 is about the 0.1% critical value
    assert stats.anderson(samples, dist="norm", method="interpolate").statistic < 1.5


def test_each_position_is_standard_normal_over_nonces() -> None:
    # The same id at the same position must not keep a sign or a magnitude from image to image.
    stack = np.stack([embed_latent(MARK, SHAPE, KEY, new_nonce()).ravel() for _ in range(300)])
    for position in (0, 1, 777, stack.shape[1] - 1):
        assert stats.kstest(stack[:, position], "norm").pvalue > 1e-4
    assert abs(float(np.mean(stack[:, :64] > 0)) - 0.5) < 0.05


def test_different_nonces_give_uncorrelated_noise_for_the_same_id() -> None:
    first = embed_latent(MARK, SHAPE, KEY, new_nonce()).ravel()
    second = embed_latent(MARK, SHAPE, KEY, new_nonce()).ravel()
    assert abs(float(np.corrcoef(first, second)[0, 1])) < 5 / np.sqrt(first.size)
    assert abs(float(np.mean((first > 0) == (second > 0))) - 0.5) < 0.05


def test_embedding_is_deterministic_for_key_nonce_and_id() -> None:
    nonce = new_nonce()
    assert np.array_equal(embed_latent(MARK, SHAPE, KEY, nonce), embed_latent(MARK, SHAPE, KEY, nonce))
    assert not np.array_equal(
        embed_latent(MARK, SHAPE, KEY, nonce), embed_latent(MARK ^ 1, SHAPE, KEY, nonce)
    )


def test_quantile_function_matches_the_standard_library() -> None:
    p = np.concatenate([np.geomspace(1e-15, 0.02, 300), np.linspace(0.02, 0.5, 300)])
    reference = np.array([statistics.NormalDist().inv_cdf(float(value)) for value in p])
    computed = latent._lower_half_normal_quantile(p)
    assert np.max(np.abs(computed - reference) / np.abs(reference).clip(min=1e-3)) < 1e-8


@pytest.mark.parametrize("mark_id", [0, 1, MARK, 2**64 - 1])
def test_right_key_recovers_the_id_from_clean_noise(mark_id: int) -> None:
    nonce = new_nonce()
    z = embed_latent(mark_id, SHAPE, KEY, nonce)
    blind = detect_latent(z, KEY, nonce)
    assert blind.mark_id == mark_id
    assert blind.sign_agreement == 1.0
    assert blind.detected and blind.p_value < 1e-100
    known = detect_latent(z, KEY, nonce, expected_mark_id=mark_id)
    assert known.bit_accuracy == 1.0 and known.matches_expected


def test_wrong_key_or_nonce_reads_nothing() -> None:
    nonce = new_nonce()
    z = embed_latent(MARK, SHAPE, KEY, nonce)
    for key, used_nonce in ((bytes(32), nonce), (KEY, new_nonce())):
        reading = detect_latent(z, key, used_nonce, expected_mark_id=MARK)
        assert not reading.detected
        assert reading.mark_id != MARK
        assert reading.bit_accuracy is not None and 0.2 < reading.bit_accuracy < 0.8
        assert 0.45 < reading.sign_agreement < 0.55


def test_p_value_is_calibrated_without_a_watermark() -> None:
    # Under "no watermark" the decrypted signs are fair coins, so p-values are about uniform.
    rng = np.random.default_rng(5)
    blind = [detect_latent(rng.standard_normal(SHAPE), KEY, new_nonce()).p_value for _ in range(300)]
    known = [detect_latent(rng.standard_normal(SHAPE), KEY, new_nonce(), MARK).p_value for _ in range(300)]
    for p_values in (blind, known):
        assert 0.03 < float(np.mean(np.array(p_values) < 0.1)) < 0.2
        assert 0.4 < float(np.mean(p_values)) < 0.6


def test_noisy_recovery_still_decodes_by_majority_vote() -> None:
    nonce = new_nonce()
    z = embed_latent(MARK, (16, 32, 32), KEY, nonce)
    noisy = z + np.random.default_rng(1).normal(scale=1.5, size=z.shape)
    reading = detect_latent(noisy, KEY, nonce)
    assert reading.mark_id == MARK
    assert 0.6 < reading.sign_agreement < 0.85


def test_bad_inputs_name_the_field() -> None:
    nonce = new_nonce()
    with pytest.raises(BadInputError, match="mark_id"):
        embed_latent(2**64, SHAPE, KEY, nonce)
    with pytest.raises(BadInputError, match="mark_id"):
        embed_latent(-1, SHAPE, KEY, nonce)
    with pytest.raises(BadInputError, match="shape: expected at least 64"):
        embed_latent(MARK, (2, 4, 4), KEY, nonce)
    with pytest.raises(BadInputError, match="nonce"):
        embed_latent(MARK, SHAPE, KEY, b"short")
    with pytest.raises(BadInputError, match="key"):
        embed_latent(MARK, SHAPE, b"k" * 8, nonce)
    with pytest.raises(BadInputError, match="z_recovered"):
        detect_latent(np.full(SHAPE, np.nan), KEY, nonce)


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl"])
def test_latent_level_recovery_after_ddim_inversion(name: str, pipes: dict[str, Any]) -> None:
    pipe = pipes[name]
    reading = latent_roundtrip(
        pipe,
        prompt="a photo of a cat",
        mark_id=MARK,
        nonce=new_nonce(),
        key=KEY,
        height=128,
        width=128,
        steps=10,
        guidance_scale=7.0,
    )
    assert isinstance(reading, LatentDetection)
    assert reading.bit_accuracy is not None and reading.bit_accuracy >= 0.95
    assert reading.detected


@pytest.mark.parametrize("name", ["tiny-sd", "tiny-sdxl"])
def test_inversion_estimates_the_noise_better_than_the_final_latents(
    name: str, pipes: dict[str, Any]
) -> None:
    pipe = pipes[name]
    nonce = new_nonce()
    noise = watermarked_noise(pipe, [MARK], [nonce], 128, 128, KEY)
    final = pipe(
        "a cat", height=128, width=128, num_inference_steps=10, latents=noise, output_type="latent"
    ).images
    recovered = ddim_invert_latents(pipe, final, 10)
    naive = final / final.std()
    inverted_error = float((recovered - noise).norm() / noise.norm())
    naive_error = float((naive - noise).norm() / noise.norm())
    assert inverted_error < 0.3
    assert inverted_error < 0.6 * naive_error
    inverted = detect_latent(recovered[0].numpy(), KEY, nonce, MARK)
    uninverted = detect_latent(final[0].numpy(), KEY, nonce, MARK)
    assert inverted.sign_agreement > uninverted.sign_agreement


def test_invert_images_goes_through_the_vae(pipes: dict[str, Any]) -> None:
    # Shape and plumbing only: a random VAE is no autoencoder, so no detection is asserted here.
    pipe = pipes["tiny-sd"]
    image = np.random.default_rng(0).integers(0, 256, size=(1, 64, 64, 3), dtype=np.uint8)
    recovered = invert_images(pipe, image, 2)
    assert isinstance(recovered, RecoveredNoise)
    assert tuple(recovered.noise.shape) == (1, 4, 8, 8)
    reading = detect_in_image(pipe, image, KEY, new_nonce(), 2)
    assert isinstance(reading, LatentDetection)


@pytest.mark.parametrize(("name", "packed_shape"), [("tiny-sd3", (1, 16, 8, 8)), ("tiny-flux", (1, 16, 64))])
def test_flow_matching_families_invert_images_through_the_vae(
    name: str, packed_shape: tuple[int, ...], pipes: dict[str, Any]
) -> None:
    # Shape and plumbing only (random VAE): the noise is placed packed, read back unpacked.
    pipe = pipes[name]
    nonce = new_nonce()
    noise = watermarked_noise(pipe, [MARK], [nonce], 64, 64, KEY)
    assert tuple(noise.shape) == packed_shape
    images = pipe("a cat", height=64, width=64, num_inference_steps=2, latents=noise, output_type="pt").images
    assert tuple(images.shape) == (1, 3, 64, 64)
    unpacked = noise if noise.ndim == 4 else unpack_flux_latents(noise, latent_shape(pipe, 64, 64))
    assert detect_latent(unpacked[0].numpy(), KEY, nonce).mark_id == MARK
    image = (images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    recovered = invert_images(pipe, image, 2)
    assert isinstance(recovered, RecoveredNoise)
    assert tuple(recovered.noise.shape) == (1, 16, 8, 8)
    assert recovered.family is detect_family(pipe)
    assert isinstance(detect_in_image(pipe, image, KEY, nonce, 2), LatentDetection)
    with pytest.raises(BadInputError, match="DDIM inversion needs a UNet family"):
        ddim_invert_latents(pipe, torch.zeros((1, *latent_shape(pipe, 64, 64))), 2)


def test_flow_inversion_refuses_unet_families(pipes: dict[str, Any]) -> None:
    with pytest.raises(BadInputError, match="flow-matching inversion needs SD3 or Flux, found sd"):
        flow_invert_latents(pipes["tiny-sd"], torch.zeros((1, 4, 8, 8)), 2)


def test_flux_unpacking_is_the_inverse_of_packing(pipes: dict[str, Any]) -> None:
    pipe = pipes["tiny-flux"]
    z = torch.randn(2, 16, 8, 12)
    packed = pipe._pack_latents(z, 2, 16, 8, 12)
    assert torch.equal(unpack_flux_latents(packed, (16, 8, 12)), z)
    with pytest.raises(BadInputError, match="packed: expected"):
        unpack_flux_latents(packed, (16, 8, 8))


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_latent_level_recovery_after_flow_matching_inversion(name: str, pipes: dict[str, Any]) -> None:
    # Guidance 7: SD3 samples with classifier-free guidance, which the unguided inversion does not
    # model; the id is still read, and inversion agrees with the noise better than the latents do.
    pipe = pipes[name]
    nonce = new_nonce()
    reading = latent_roundtrip(
        pipe,
        prompt="a photo of a cat",
        mark_id=MARK,
        nonce=nonce,
        key=KEY,
        height=128,
        width=128,
        steps=10,
        guidance_scale=7.0,
    )
    assert isinstance(reading, LatentDetection)
    assert reading.bit_accuracy == 1.0 and reading.detected and reading.matches_expected
    noise = watermarked_noise(pipe, [MARK], [nonce], 128, 128, KEY)
    final = pipe("a photo of a cat", height=128, width=128, num_inference_steps=10, latents=noise,
                 guidance_scale=7.0, output_type="latent").images  # fmt: skip
    if final.ndim == 3:
        final = unpack_flux_latents(final, latent_shape(pipe, 128, 128))
    uninverted = detect_latent(final[0].numpy(), KEY, nonce, MARK)
    assert reading.sign_agreement > uninverted.sign_agreement + 0.05


@pytest.fixture(scope="module")
def strong_flow_pipes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Tiny SD3 and Flux whose output projection is scaled by 4: the velocity moves the latents far
    from the noise (correlation about 0.4 instead of 0.85), so reading without inversion fails bits."""
    from diffusers import DiffusionPipeline

    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("genguard-strong")
        patch.setenv("GENGUARD_HOME", str(root / "home"))
        patch.setenv("GENGUARD_CACHE", str(root / "cache"))
        loaded = {}
        for name in ("tiny-sd3", "tiny-flux"):
            pipe = DiffusionPipeline.from_pretrained(resolve_model_source(f"embedded:{name}"))
            pipe.set_progress_bar_config(disable=True)
            with torch.no_grad():
                pipe.transformer.proj_out.weight.mul_(4.0)
                pipe.transformer.proj_out.bias.mul_(4.0)
            loaded[name] = pipe
        yield loaded


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_flow_inversion_reads_bits_the_final_latents_lose(
    name: str, strong_flow_pipes: dict[str, Any]
) -> None:
    pipe = strong_flow_pipes[name]
    shape = latent_shape(pipe, 64, 64)
    inverted_accuracy: list[float] = []
    uninverted_accuracy: list[float] = []
    inverted_error: list[float] = []
    naive_error: list[float] = []
    for _ in range(4):
        nonce = new_nonce()
        noise = watermarked_noise(pipe, [MARK], [nonce], 64, 64, KEY)
        final = pipe("a cat", height=64, width=64, num_inference_steps=10, latents=noise, guidance_scale=1.0,
                     output_type="latent").images  # fmt: skip
        if final.ndim == 3:
            noise, final = unpack_flux_latents(noise, shape), unpack_flux_latents(final, shape)
        recovered = flow_invert_latents(pipe, final, 10)
        for target, z in ((inverted_accuracy, recovered), (uninverted_accuracy, final)):
            bit_accuracy = detect_latent(z[0].numpy(), KEY, nonce, MARK).bit_accuracy
            assert bit_accuracy is not None
            target.append(bit_accuracy)
        inverted_error.append(float((recovered - noise).norm() / noise.norm()))
        naive_error.append(float((final / final.std() - noise).norm() / noise.norm()))
    assert min(inverted_accuracy) >= 0.97
    assert float(np.mean(uninverted_accuracy)) <= 0.93
    assert float(np.mean(inverted_accuracy)) >= float(np.mean(uninverted_accuracy)) + 0.07
    assert max(inverted_error) < 0.6 * min(naive_error)


def test_stochastic_flow_sampling_says_it_cannot_be_inverted(pipes: dict[str, Any]) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = pipes["tiny-sd3"]
    original = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(original.config, stochastic_sampling=True)
    try:
        image = np.zeros((1, 64, 64, 3), dtype=np.uint8)
        outcome = invert_images(pipe, image, 2)
        assert isinstance(outcome, InversionUnavailable)
        assert outcome.reason == STOCHASTIC_SAMPLING and outcome.family is detect_family(pipe)
        with pytest.raises(BadInputError, match="pipe.scheduler: stochastic"):
            flow_invert_latents(pipe, torch.zeros((1, 16, 8, 8)), 2)
    finally:
        pipe.scheduler = original


def test_batch_noise_needs_one_nonce_per_id(pipes: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="one nonce per mark id"):
        watermarked_noise(pipes["tiny-sd"], [1, 2], [new_nonce()], 64, 64, KEY)
