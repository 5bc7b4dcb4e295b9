"""Latent watermark (guard/watermark/latent.py) and its DDIM inversion (pipeline/inversion.py).

What these offline tests check: the keyed noise is exactly standard normal and carries no
repeated pattern across nonces; the right key and nonce recover the id from clean noise and
nothing else does; the p-value is calibrated under "no watermark"; after sampling with the tiny
SD and SDXL pipelines, DDIM inversion of the final latents recovers the id (bit accuracy >= 0.95)
and estimates the initial noise better than the latents themselves do; SD3 and Flux accept the
noise and say that detection needs a flow-matching inversion.

What they cannot check:
- Pixel-level robustness. The tiny VAEs have random weights and are not autoencoders, so
  encoding a generated image does not give back its latents; detection from pixels (and after
  JPEG, resizing, cropping) needs real VAE weights and is for a GPU benchmark with a real model.
- How hard the inversion problem really is. A random UNet predicts small noise, so the final
  latents stay close to a scaled copy of the initial noise (correlation about 0.95) and the 64
  bits can be voted even without inversion; the tests therefore also require that inversion
  improves on that baseline, but real models (which change the latents far more) are the true test.
- Real prompts with real classifier-free guidance: inversion uses an empty prompt and no
  guidance; the mismatch with a trained model's guided sampling is not represented here.
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
    NEEDS_FLOW_MATCHING,
    InversionUnavailable,
    RecoveredNoise,
    ddim_invert_latents,
    detect_in_image,
    invert_images,
    latent_roundtrip,
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
def test_flow_matching_families_embed_but_need_their_own_inversion(
    name: str, packed_shape: tuple[int, ...], pipes: dict[str, Any]
) -> None:
    pipe = pipes[name]
    nonce = new_nonce()
    noise = watermarked_noise(pipe, [MARK], [nonce], 64, 64, KEY)
    assert tuple(noise.shape) == packed_shape
    images = pipe("a cat", height=64, width=64, num_inference_steps=2, latents=noise, output_type="pt").images
    assert tuple(images.shape) == (1, 3, 64, 64)
    # the placed noise still carries the mark (Flux packing is lossless)
    unpacked = noise if noise.ndim == 4 else pipe._unpack_latents(noise, 64, 64, pipe.vae_scale_factor)
    assert detect_latent(unpacked[0].numpy(), KEY, nonce).mark_id == MARK
    image = (images.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    for outcome in (
        invert_images(pipe, image, 2),
        detect_in_image(pipe, image, KEY, nonce, 2),
        latent_roundtrip(
            pipe,
            prompt="a cat",
            mark_id=MARK,
            nonce=nonce,
            key=KEY,
            height=64,
            width=64,
            steps=2,
            guidance_scale=1.0,
        ),
    ):
        assert isinstance(outcome, InversionUnavailable)
        assert outcome.reason == NEEDS_FLOW_MATCHING == "needs a flow-matching inversion"
        assert outcome.family is detect_family(pipe)
    with pytest.raises(BadInputError, match="DDIM inversion needs a UNet family"):
        ddim_invert_latents(pipe, torch.zeros((1, *latent_shape(pipe, 64, 64))), 2)


def test_batch_noise_needs_one_nonce_per_id(pipes: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="one nonce per mark id"):
        watermarked_noise(pipes["tiny-sd"], [1, 2], [new_nonce()], 64, 64, KEY)
