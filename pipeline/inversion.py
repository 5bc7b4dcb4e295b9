"""The torch side of the latent watermark: watermarked initial noise, and DDIM inversion to read it.

Detection of the latent watermark needs the model: the image is encoded by the VAE (distribution
mean) and the deterministic DDIM sampler is run backwards, with an empty prompt and no guidance,
for the same number of steps, giving an estimate of the initial noise that
`guard.watermark.latent.detect_latent` reads.

Only UNet families (SD 1.x/2.x, SDXL) are inverted here. SD3 and Flux sample with flow matching;
their noise is watermarked the same way, but detection returns `InversionUnavailable` ("needs a
flow-matching inversion") until such an inversion is written.

With the embedded tiny models the VAE is untrained (not an autoencoder), so recovery is only
meaningful at the latent level: `latent_roundtrip` samples to final latents and inverts them
without the VAE. Pixel-level robustness needs real VAE weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from genguard.guard.errors import BadInputError, ImageInputError
from genguard.guard.watermark.latent import LatentDetection, detect_latent, embed_latent
from genguard.pipeline.families import Family, call_kwargs, detect_family, latent_shape, noise_from_gaussian

NEEDS_FLOW_MATCHING = "needs a flow-matching inversion"


@dataclass(frozen=True)
class RecoveredNoise:
    """The estimated initial noise, (B, C, H/8, W/8) float32 on the CPU, unpacked for every family."""

    noise: torch.Tensor
    family: Family
    num_inference_steps: int


@dataclass(frozen=True)
class InversionUnavailable:
    """This family's sampler cannot be inverted yet; `reason` says what is missing."""

    family: Family
    reason: str = NEEDS_FLOW_MATCHING


def watermarked_noise(
    pipe: Any,
    mark_ids: Sequence[int],
    nonces: Sequence[bytes],
    height: int,
    width: int,
    key: bytes,
) -> torch.Tensor:
    """Initial noise for a batch, image i carrying mark_ids[i] under nonces[i], ready for `latents=`."""
    if len(mark_ids) != len(nonces) or not mark_ids:
        raise BadInputError(
            f"mark_ids, nonces: expected one nonce per mark id (at least one), found {len(mark_ids)} and {len(nonces)}"
        )
    shape = latent_shape(pipe, height, width)
    z = np.stack(
        [embed_latent(mark_id, shape, key, nonce) for mark_id, nonce in zip(mark_ids, nonces, strict=True)]
    )
    return noise_from_gaussian(pipe, torch.from_numpy(z))


def ddim_invert_latents(
    pipe: Any,
    latents: torch.Tensor,
    num_inference_steps: int,
    prompt: str = "",
    refine_iterations: int = 0,
) -> torch.Tensor:
    """Run DDIM backwards from final latents (B, C, h, w) to the initial noise (float32, CPU).

    Uses the pipeline's noise schedule with DDIM's timesteps for `num_inference_steps`, the model's
    prediction at each sampling timestep, and no guidance. `refine_iterations` > 0 re-evaluates the
    model at the estimated noisier latents (a fixed-point iteration), which makes each step closer
    to the exact inverse of the sampler's step at one more model call each.
    """
    family = detect_family(pipe)
    if not family.uses_unet:
        raise BadInputError(f"pipe: DDIM inversion needs a UNet family (sd, sdxl), found {family.value}")
    if num_inference_steps <= 0:
        raise BadInputError(f"num_inference_steps: expected a positive number, found {num_inference_steps}")
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    prediction_type = scheduler.config.prediction_type
    if prediction_type not in ("epsilon", "v_prediction"):
        raise BadInputError(
            f"scheduler.prediction_type: expected epsilon or v_prediction, found {prediction_type}"
        )
    alphas = scheduler.alphas_cumprod.to(torch.float64)
    final_alpha = float(scheduler.final_alpha_cumprod)
    step = scheduler.config.num_train_timesteps // num_inference_steps

    batch, _, latent_height, latent_width = latents.shape
    condition = _empty_condition(pipe, family, prompt, batch, latent_height, latent_width)
    x = latents.to(device=pipe.device, dtype=torch.float64)
    with torch.no_grad():
        for t in reversed(scheduler.timesteps.tolist()):
            alpha_t = float(alphas[t])
            alpha_prev = float(alphas[t - step]) if t - step >= 0 else final_alpha
            eps = _predict_noise(pipe, x, t, alpha_t, prediction_type, condition)
            x_next = _ddim_step_up(x, eps, alpha_prev, alpha_t)
            for _ in range(refine_iterations):
                eps = _predict_noise(pipe, x_next, t, alpha_t, prediction_type, condition)
                x_next = _ddim_step_up(x, eps, alpha_prev, alpha_t)
            x = x_next
    noise = x / float(scheduler.init_noise_sigma)
    return noise.to(device="cpu", dtype=torch.float32)


def _ddim_step_up(x: torch.Tensor, eps: torch.Tensor, alpha_from: float, alpha_to: float) -> torch.Tensor:
    """The DDIM update solved for the noisier latents: same predicted x0 and eps, higher noise level."""
    x0 = (x - (1.0 - alpha_from) ** 0.5 * eps) / alpha_from**0.5
    x_up: torch.Tensor = alpha_to**0.5 * x0 + (1.0 - alpha_to) ** 0.5 * eps
    return x_up


def _predict_noise(
    pipe: Any, x: torch.Tensor, t: int, alpha_t: float, prediction_type: str, condition: dict[str, Any]
) -> torch.Tensor:
    timestep = torch.tensor(t, device=pipe.device)
    output: torch.Tensor = pipe.unet(x.to(pipe.unet.dtype), timestep, return_dict=False, **condition)[0]
    output = output.to(torch.float64)
    if prediction_type == "v_prediction":
        # v = sqrt(a) eps - sqrt(1 - a) x0 and x = sqrt(a) x0 + sqrt(1 - a) eps give eps = sqrt(a) v + sqrt(1 - a) x
        eps: torch.Tensor = alpha_t**0.5 * output + (1.0 - alpha_t) ** 0.5 * x
        return eps
    return output


def _empty_condition(
    pipe: Any, family: Family, prompt: str, batch: int, latent_height: int, latent_width: int
) -> dict[str, Any]:
    """The UNet's conditioning for `prompt` (empty by default: the generation prompt is not needed)."""
    device = pipe.device
    if family is Family.SD:
        prompt_embeds, _ = pipe.encode_prompt(prompt, device, 1, False)
        return {"encoder_hidden_states": prompt_embeds.repeat(batch, 1, 1)}
    prompt_embeds, _, pooled, _ = pipe.encode_prompt(
        prompt=prompt, device=device, num_images_per_prompt=1, do_classifier_free_guidance=False
    )
    size = (latent_height * pipe.vae_scale_factor, latent_width * pipe.vae_scale_factor)
    time_ids = pipe._get_add_time_ids(
        size, (0, 0), size, dtype=prompt_embeds.dtype, text_encoder_projection_dim=int(pooled.shape[-1])
    ).to(device)
    return {
        "encoder_hidden_states": prompt_embeds.repeat(batch, 1, 1),
        "added_cond_kwargs": {"text_embeds": pooled.repeat(batch, 1), "time_ids": time_ids.repeat(batch, 1)},
    }


def encode_images(pipe: Any, images: npt.NDArray[np.uint8] | torch.Tensor) -> torch.Tensor:
    """VAE latents (distribution mean, scaled) of uint8 NHWC images or float NCHW images in [0, 1]."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise ImageInputError(
                f"images: expected uint8 (N, H, W, 3), found {images.dtype} {tuple(images.shape)}"
            )
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2).to(torch.float32) / 255.0
    else:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ImageInputError(
                f"images: expected a float tensor (N, 3, H, W), found {tuple(images.shape)}"
            )
        pixels = images.to(torch.float32)
    factor = int(pipe.vae_scale_factor)
    if pixels.shape[-2] % factor or pixels.shape[-1] % factor:
        raise ImageInputError(
            f"images: expected height and width multiples of {factor}, found {tuple(pixels.shape)}"
        )
    vae = pipe.vae
    with torch.no_grad():
        moments = vae.encode((pixels * 2.0 - 1.0).to(device=pipe.device, dtype=vae.dtype)).latent_dist
    latents = moments.mean
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    result: torch.Tensor = (latents - shift) * vae.config.scaling_factor
    return result


def invert_images(
    pipe: Any,
    images: npt.NDArray[np.uint8] | torch.Tensor,
    num_inference_steps: int,
    refine_iterations: int = 0,
) -> RecoveredNoise | InversionUnavailable:
    """Estimate the initial noise of generated images: VAE encode, then DDIM inversion."""
    family = detect_family(pipe)
    if not family.uses_unet:
        return InversionUnavailable(family)
    latents = encode_images(pipe, images)
    noise = ddim_invert_latents(pipe, latents, num_inference_steps, refine_iterations=refine_iterations)
    return RecoveredNoise(noise=noise, family=family, num_inference_steps=num_inference_steps)


def detect_in_image(
    pipe: Any,
    image: npt.NDArray[np.uint8] | torch.Tensor,
    key: bytes,
    nonce: bytes,
    num_inference_steps: int,
    expected_mark_id: int | None = None,
) -> LatentDetection | InversionUnavailable:
    """Invert one image (a batch of one) with its model and read the latent watermark."""
    recovered = invert_images(pipe, image, num_inference_steps)
    if isinstance(recovered, InversionUnavailable):
        return recovered
    if recovered.noise.shape[0] != 1:
        raise ImageInputError(f"image: expected one image, found a batch of {recovered.noise.shape[0]}")
    return detect_latent(recovered.noise[0].numpy(), key, nonce, expected_mark_id=expected_mark_id)


def latent_roundtrip(
    pipe: Any,
    *,
    prompt: str,
    mark_id: int,
    nonce: bytes,
    key: bytes,
    height: int,
    width: int,
    steps: int,
    guidance_scale: float,
    refine_iterations: int = 0,
) -> LatentDetection | InversionUnavailable:
    """Sample with watermarked noise to final latents, invert them (no VAE) and detect.

    The latent-level check of the offline tests. The pipeline must sample with DDIM (the embedded
    SD and SDXL do); a flow-matching family returns InversionUnavailable.
    """
    family = detect_family(pipe)
    if not family.uses_unet:
        return InversionUnavailable(family)
    from diffusers import DDIMScheduler

    if not isinstance(pipe.scheduler, DDIMScheduler):
        raise BadInputError(f"pipe.scheduler: expected DDIMScheduler, found {type(pipe.scheduler).__name__}")
    noise = watermarked_noise(pipe, [mark_id], [nonce], height, width, key)
    kwargs = call_kwargs(
        family,
        prompt=prompt,
        negative_prompt="",
        height=height,
        width=width,
        steps=steps,
        guidance_scale=guidance_scale,
        latents=noise,
        num_images=1,
        output_type="latent",
    )
    final_latents = pipe(**kwargs).images
    recovered = ddim_invert_latents(pipe, final_latents, steps, refine_iterations=refine_iterations)
    return detect_latent(recovered[0].numpy(), key, nonce, expected_mark_id=mark_id)
