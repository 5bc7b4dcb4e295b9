"""Regeneration-style attacks (issue 20, item 4): which layer still links a copy, reported, not tuned to.

    python bench/regeneration.py [--side 512] [--photos astronaut,camera,...]
    python bench/regeneration.py --img2img [--seeds 8] [--strengths 0.1,0.2,0.3,0.4,0.5]

For each attack: how often the pixel mark reads the exact id, and the perceptual hash's distance to the
original's (`genguard verify` links a copy through a hash within 8 bits). The attacks stand in for a
regeneration: heavy compression and upsampling, denoising, noise then denoising (what a diffusion
pass does at low strength, without a model).

--img2img: an img2img pass with the embedded tiny pipelines (diffusers' image-to-image pipeline of each
family, another prompt, the same model) at each strength, in two places:
- on the latents: a generation with the latent mark is sampled to its final latents, the img2img pass
  re-noises them to the strength's timestep and samples them back; the result is inverted
  (pipeline/inversion.py) and read: exact id share and bit accuracy, beside the same reading of the
  attacked latents without inversion (the baseline the inversion must beat);
- on the pixels (tiny-sd): photographs with the pixel mark go through the img2img pass, VAE included;
  the pixel mark's exact id and the perceptual hash's distance are read off the output.
The tiny models' weights are random: the latent rows show what inverting the sampler recovers when the
attacker's model is ours; the pixel rows pass through an untrained VAE, whose output is unrelated to
its input, so they show nothing about a trained model (a real VAE and denoiser: the GPU bench).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from attacks import Array, Attack, chain, jpeg, rescale

from genguard.guard.phash import hamming, perceptual_hash
from genguard.guard.watermark import pixel
from tests._photos import photographs

cv2.setNumThreads(1)


def denoise(strength: float) -> Attack:
    def attack(image: Array) -> Array:
        return cv2.fastNlMeansDenoisingColored(image, None, strength, strength, 7, 21)  # type: ignore[return-value]

    return attack


def noise_then_denoise(sigma: float, seed: int = 0) -> Attack:
    """Gaussian noise of `sigma` levels, then non-local means at that strength: a model-free stand-in
    for a low-strength diffusion pass (noise the image, then predict it back)."""

    def attack(image: Array) -> Array:
        rng = np.random.default_rng(seed)
        noisy = np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)
        return denoise(sigma)(noisy)

    return attack


def bilateral(image: Array) -> Array:
    return cv2.bilateralFilter(image, 9, 50, 9)  # type: ignore[return-value]


ATTACKS: dict[str, Attack] = {
    "jpeg10": jpeg(10),
    "jpeg5": jpeg(5),
    "quarter+jpeg30+up": chain(rescale(0.25), jpeg(30), rescale(4.0)),
    "half+jpeg10+up": chain(rescale(0.5), jpeg(10), rescale(2.0)),
    "nlm10": denoise(10.0),
    "nlm20": denoise(20.0),
    "bilateral": bilateral,
    "noise15+nlm": noise_then_denoise(15.0),
    "noise30+nlm": noise_then_denoise(30.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--photos", default="astronaut,camera,coffee,chelsea,china,rocket")
    parser.add_argument("--img2img", action="store_true", help="the img2img pass with the tiny pipelines")
    parser.add_argument("--seeds", type=int, default=8, help="--img2img: generations per model and strength")
    parser.add_argument("--strengths", default="0.1,0.2,0.3,0.4,0.5")
    args = parser.parse_args()
    if args.img2img:
        strengths = tuple(float(s) for s in args.strengths.split(","))
        img2img_latents(args.seeds, strengths)
        img2img_pixels(tuple(args.photos.split(",")), strengths)
        return
    photos = photographs(args.side, tuple(args.photos.split(",")))
    rng = np.random.default_rng(4)
    print(f"[regeneration @ {args.side}px] {len(photos)} photos, one key each")
    results: dict[str, tuple[int, list[int]]] = {name: (0, []) for name in ATTACKS}
    for image in photos.values():
        key, mark = rng.bytes(32), int(rng.integers(0, 2**63))
        out = pixel.embed(image, mark, key)
        reference = perceptual_hash(out)
        for name, attack in ATTACKS.items():
            copy = attack(out)
            read, distances = results[name]
            distances.append(hamming(reference, perceptual_hash(copy)))
            results[name] = (read + (pixel.detect(copy, key).mark_id == mark), distances)
    for name, (read, distances) in results.items():
        linked = sum(d <= 8 for d in distances)
        print(
            f"  {name:20s} pixel mark exact id {read}/{len(photos)}; phash distance median "
            f"{np.median(distances):.0f}, max {max(distances)}, within 8 bits {linked}/{len(photos)}"
        )


_LATENT_SIDE = 128
_STEPS = 10
_MODELS = ("tiny-sd", "tiny-sdxl", "tiny-sd3", "tiny-flux")


def _pipelines(name: str) -> tuple[Any, Any]:
    """The embedded model `name` and its image-to-image pipeline (same components)."""
    from diffusers import AutoPipelineForImage2Image, DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from genguard.pipeline.loading import resolve_model_source

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    pipe = DiffusionPipeline.from_pretrained(resolve_model_source(f"embedded:{name}"))
    pipe.set_progress_bar_config(disable=True)
    edit = AutoPipelineForImage2Image.from_pipe(pipe)
    edit.set_progress_bar_config(disable=True)
    return pipe, edit


def img2img_latents(seeds: int, strengths: tuple[float, ...]) -> None:
    import torch

    from genguard.guard.watermark.latent import detect_latent, new_nonce
    from genguard.pipeline.families import Family, detect_family, latent_shape
    from genguard.pipeline.inversion import invert_latents, unpack_flux_latents, watermarked_noise

    torch.set_num_threads(1)
    side = _LATENT_SIDE
    print(f"[img2img on the latents] {side}px, {_STEPS} steps, {seeds} generations per model and strength")
    for name in _MODELS:
        pipe, edit = _pipelines(name)
        family = detect_family(pipe)
        shape = latent_shape(pipe, side, side)

        def unpacked(latents: Any, family: Family = family, shape: Any = shape) -> Any:
            return unpack_flux_latents(latents, shape) if family is Family.FLUX else latents

        for strength in (0.0, *strengths):
            exact = plain = 0
            accuracies: list[float] = []
            plain_accuracies: list[float] = []
            for seed in range(seeds):
                rng = np.random.default_rng(seed)
                key, mark, nonce = rng.bytes(32), int(rng.integers(0, 2**63)), new_nonce()
                noise = watermarked_noise(pipe, [mark], [nonce], side, side, key)
                latents = unpacked(
                    pipe(
                        "a photo of a lighthouse",
                        height=side,
                        width=side,
                        num_inference_steps=_STEPS,
                        latents=noise,
                        guidance_scale=5.0,
                        output_type="latent",
                    ).images
                )
                if strength > 0:
                    latents = unpacked(
                        edit(
                            "a watercolour of a harbour",
                            image=latents,
                            height=side,
                            width=side,
                            strength=strength,
                            num_inference_steps=_STEPS,
                            guidance_scale=5.0,
                            output_type="latent",
                            generator=torch.Generator().manual_seed(seed),
                        ).images
                    )
                recovered = invert_latents(pipe, latents, _STEPS)
                read = detect_latent(recovered[0].numpy(), key, nonce, expected_mark_id=mark)
                raw = detect_latent(latents[0].float().numpy(), key, nonce, expected_mark_id=mark)
                exact += bool(read.matches_expected)
                plain += bool(raw.matches_expected)
                accuracies.append(read.bit_accuracy or 0.0)
                plain_accuracies.append(raw.bit_accuracy or 0.0)
            print(
                f"  {name:10s} strength {strength:.1f}: inverted exact id {exact}/{seeds}, bit accuracy "
                f"{np.mean(accuracies):.3f} (min {min(accuracies):.3f}); not inverted exact id "
                f"{plain}/{seeds}, bit accuracy {np.mean(plain_accuracies):.3f}"
            )


def img2img_pixels(names: tuple[str, ...], strengths: tuple[float, ...]) -> None:
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    side = 256
    photos = photographs(side, names)
    _, edit = _pipelines("tiny-sd")
    rng = np.random.default_rng(5)
    print(f"[img2img on the pixels] tiny-sd, {side}px, {_STEPS} steps, {len(photos)} photos, one key each")
    marked = []
    for image in photos.values():
        key, mark = rng.bytes(32), int(rng.integers(0, 2**63))
        marked.append((key, mark, pixel.embed(image, mark, key)))
    for strength in strengths:
        read, distances = 0, []
        for index, (key, mark, image) in enumerate(marked):
            out = edit(
                "a watercolour of a harbour",
                image=Image.fromarray(image),
                strength=strength,
                num_inference_steps=_STEPS,
                guidance_scale=5.0,
                generator=torch.Generator().manual_seed(index),
            ).images[0]
            copy = np.asarray(out.convert("RGB"))
            read += pixel.detect(copy, key).mark_id == mark
            distances.append(hamming(perceptual_hash(image), perceptual_hash(copy)))
        print(
            f"  strength {strength:.1f}: pixel mark exact id {read}/{len(marked)}; phash distance median "
            f"{np.median(distances):.0f}, min {min(distances)}"
        )


if __name__ == "__main__":
    main()
