"""Regeneration-style attacks (issue 20, item 4): which layer still links a copy, reported, not tuned to.

    python bench/regeneration.py [--side 512] [--photos astronaut,camera,...]

For each attack: how often the pixel mark reads the exact id, and the perceptual hash's distance to the
original's (`genguard verify` links a copy through a hash within 8 bits). The attacks stand in for a
regeneration: heavy compression and upsampling, denoising, noise then denoising (what a diffusion
pass does at low strength, without a model). An img2img pass with the embedded tiny pipelines is not
measured here: their VAE and denoiser have random weights, so the output is unrelated to the input
and says nothing about a trained model; the latent mark is read after inversion, which needs the
model's real VAE (see pipeline/inversion.py and the GPU bench).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import sys
from pathlib import Path

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
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=512)
    parser.add_argument("--photos", default="astronaut,camera,coffee,chelsea,china,rocket")
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
