"""The torch side of the latent watermark: watermarked initial noise, and sampler inversion to read it.

Detection of the latent watermark needs the model: the image is encoded by the VAE (distribution
mean) and the deterministic sampler is run backwards, with an empty prompt and no guidance, for
the same number of steps, giving an estimate of the initial noise that
`guard.watermark.latent.detect_latent` reads.

- Latent UNet families (SD 1.x/2.x, SDXL, Kandinsky 2.2's decoder): DDIM run backwards
  (`ddim_invert_latents`); Kandinsky's decoder is conditioned on the prior's zero image embedding
  (its "empty prompt") and encodes images with its MoVQ.
- Flow-matching families (SD3, Flux): the Euler ODE x_{i+1} = x_i + (s_{i+1} - s_i) v(x_i, s_i)
  run backwards with the model's velocity (`flow_invert_latents`), over the same sigma schedule
  the pipeline samples with (SD3's static shift, Flux's resolution-dependent shift). Flux works on
  packed 2x2 patches; the recovered noise is unpacked, like every family's.
A sampler that cannot be inverted deterministically (flow matching with `stochastic_sampling`)
gives `InversionUnavailable` with the reason, as does DeepFloyd IF (pixel-space cascade: no latent
mark, `families.LATENT_MARK_UNAVAILABLE`).

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
from genguard.pipeline.families import (
    Family,
    call_kwargs,
    detect_family,
    latent_mark_unavailable,
    latent_shape,
    noise_from_gaussian,
    sample,
)

STOCHASTIC_SAMPLING = "stochastic flow-matching sampling cannot be inverted"


@dataclass(frozen=True)
class RecoveredNoise:
    """The estimated initial noise, (B, C, H/8, W/8) float32 on the CPU, unpacked for every family."""

    noise: torch.Tensor
    family: Family
    num_inference_steps: int


@dataclass(frozen=True)
class InversionUnavailable:
    """This pipeline's sampler cannot be inverted; `reason` says why."""

    family: Family
    reason: str


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
    if not family.ddim_invertible:
        raise BadInputError(
            f"pipe: DDIM inversion needs a UNet family in latent space (sd, sdxl, kandinsky), found {family.value}"
        )
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
    # A UNet with a learned variance (Kandinsky's decoder) predicts it in extra channels after the noise.
    output = output[:, : x.shape[1]].to(torch.float64)
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
    if family is Family.KANDINSKY:
        # The decoder sees no text: its unconditional input is the prior's embedding of a black image.
        zero_embeds = pipe.prior_pipe.get_zero_embed(batch_size=batch, device=device)
        return {"encoder_hidden_states": None, "added_cond_kwargs": {"image_embeds": zero_embeds}}
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


def flow_invert_latents(
    pipe: Any,
    latents: torch.Tensor,
    num_inference_steps: int,
    prompt: str = "",
    refine_iterations: int = 0,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Run the flow-matching Euler sampler backwards from final latents (B, C, h, w) to the noise.

    SD3 and Flux sample x_{i+1} = x_i + (s_{i+1} - s_i) v(x_i, s_i) from s_0 = 1 (pure noise) to
    s_n = 0. Backwards, x_i = x_{i+1} - (s_{i+1} - s_i) v(x_i, s_i) is implicit in x_i; it starts
    from v(x_{i+1}, s_i) and `refine_iterations` > 0 re-evaluates the velocity at the estimated
    x_i (a fixed-point iteration towards the exact inverse step, one model call each). The
    schedule is the pipeline's own for this size (Flux's shift depends on the number of patches).
    `latents` and the result are unpacked (B, C, H/8, W/8) for both families; empty prompt; the
    velocity is unguided (`guidance` only feeds a guidance-distilled Flux's guidance embedding).
    """
    family = detect_family(pipe)
    if family.uses_unet:
        raise BadInputError(f"pipe: flow-matching inversion needs SD3 or Flux, found {family.value}")
    if num_inference_steps <= 0:
        raise BadInputError(f"num_inference_steps: expected a positive number, found {num_inference_steps}")
    if latents.ndim != 4:
        raise BadInputError(f"latents: expected (B, C, H/8, W/8), found shape {tuple(latents.shape)}")
    scheduler = _flow_scheduler(pipe)
    if scheduler.config.get("stochastic_sampling", False):
        raise BadInputError(f"pipe.scheduler: {STOCHASTIC_SAMPLING}")
    batch, channels, latent_height, latent_width = latents.shape
    velocity = _velocity_model(pipe, family, prompt, batch, channels, latent_height, latent_width, guidance)
    _set_flow_timesteps(pipe, family, scheduler, num_inference_steps, velocity.sequence_length)
    sigmas = [float(sigma) for sigma in scheduler.sigmas]
    timesteps = [float(t) for t in scheduler.timesteps]
    x = velocity.pack(latents.to(device=pipe.device, dtype=torch.float64))
    with torch.no_grad():
        for i in reversed(range(len(timesteps))):
            step = sigmas[i + 1] - sigmas[i]
            x_prev = x - step * velocity(x, timesteps[i])
            for _ in range(refine_iterations):
                x_prev = x - step * velocity(x_prev, timesteps[i])
            x = x_prev
    noise = velocity.unpack(x)
    return noise.to(device="cpu", dtype=torch.float32)


def invert_latents(
    pipe: Any, latents: torch.Tensor, num_inference_steps: int, refine_iterations: int = 0
) -> torch.Tensor:
    """The family's inversion: DDIM for SD, SDXL and Kandinsky, the flow-matching Euler ODE for SD3 and Flux."""
    family = detect_family(pipe)
    reason = latent_mark_unavailable(family)
    if reason is not None:
        raise BadInputError(f"pipe: {family.value} cannot be inverted: {reason}")
    if family.ddim_invertible:
        return ddim_invert_latents(pipe, latents, num_inference_steps, refine_iterations=refine_iterations)
    return flow_invert_latents(pipe, latents, num_inference_steps, refine_iterations=refine_iterations)


def _flow_scheduler(pipe: Any) -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)


def _set_flow_timesteps(
    pipe: Any, family: Family, scheduler: Any, num_inference_steps: int, sequence_length: int
) -> None:
    """The schedule exactly as diffusers 0.42.1's SD3 and Flux pipelines set it for this image size."""
    config = scheduler.config
    mu = None
    if config.get("use_dynamic_shifting", False):
        # diffusers' calculate_shift: linear in the number of patches between the two anchors
        base_len = config.get("base_image_seq_len", 256)
        max_len = config.get("max_image_seq_len", 4096)
        base_shift = config.get("base_shift", 0.5)
        max_shift = config.get("max_shift", 1.15 if family is Family.FLUX else 1.16)
        slope = (max_shift - base_shift) / (max_len - base_len)
        mu = sequence_length * slope + base_shift - slope * base_len
    if family is Family.FLUX and not config.get("use_flow_sigmas", False):
        sigmas = np.linspace(1.0, 1.0 / num_inference_steps, num_inference_steps)
        scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    elif mu is not None:
        scheduler.set_timesteps(num_inference_steps, mu=mu)
    else:
        scheduler.set_timesteps(num_inference_steps)


class _Velocity:
    """The transformer's unguided velocity v(x, t) for one family, with its packing of the latents."""

    def __init__(
        self, pipe: Any, family: Family, condition: dict[str, Any], shape: tuple[int, int, int, int]
    ) -> None:
        self.pipe = pipe
        self.family = family
        self.condition = condition
        self.shape = shape
        _, _, latent_height, latent_width = shape
        patch = 2 if family is Family.FLUX else int(pipe.transformer.config.patch_size)
        self.sequence_length = (latent_height // patch) * (latent_width // patch)

    def pack(self, x: torch.Tensor) -> torch.Tensor:
        if self.family is not Family.FLUX:
            return x
        batch, channels, height, width = self.shape
        packed: torch.Tensor = self.pipe._pack_latents(x, batch, channels, height, width)
        return packed

    def unpack(self, x: torch.Tensor) -> torch.Tensor:
        if self.family is not Family.FLUX:
            return x
        return unpack_flux_latents(x, self.shape[1:])

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        transformer = self.pipe.transformer
        timestep = torch.full((x.shape[0],), t, device=self.pipe.device, dtype=transformer.dtype)
        if self.family is Family.FLUX:
            timestep = timestep / 1000.0  # the Flux pipeline feeds t / 1000, i.e. sigma
        output: torch.Tensor = transformer(
            hidden_states=x.to(transformer.dtype), timestep=timestep, return_dict=False, **self.condition
        )[0]
        return output.to(torch.float64)


def _velocity_model(
    pipe: Any,
    family: Family,
    prompt: str,
    batch: int,
    channels: int,
    latent_height: int,
    latent_width: int,
    guidance: float,
) -> _Velocity:
    device = pipe.device
    shape = (batch, channels, latent_height, latent_width)
    if family is Family.SD3:
        prompt_embeds, _, pooled, _ = pipe.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            prompt_3=None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=False,
        )
        condition = {
            "encoder_hidden_states": prompt_embeds.repeat(batch, 1, 1),
            "pooled_projections": pooled.repeat(batch, 1),
        }
        return _Velocity(pipe, family, condition, shape)
    if latent_height % 2 or latent_width % 2:
        raise BadInputError(f"latents: Flux latents need even height and width, found {shape}")
    prompt_embeds, pooled, text_ids = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, device=device, num_images_per_prompt=1
    )
    image_ids = torch.zeros(latent_height // 2, latent_width // 2, 3)
    image_ids[..., 1] = torch.arange(latent_height // 2)[:, None]
    image_ids[..., 2] = torch.arange(latent_width // 2)[None, :]
    embedded_guidance = None
    if pipe.transformer.config.guidance_embeds:
        embedded_guidance = torch.full((batch,), guidance, device=device, dtype=torch.float32)
    condition = {
        "encoder_hidden_states": prompt_embeds.repeat(batch, 1, 1),
        "pooled_projections": pooled.repeat(batch, 1),
        "txt_ids": text_ids,
        "img_ids": image_ids.reshape(-1, 3).to(device=device, dtype=prompt_embeds.dtype),
        "guidance": embedded_guidance,
    }
    return _Velocity(pipe, family, condition, shape)


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
    movq = getattr(pipe, "movq", None)
    if movq is not None:  # Kandinsky: the decoder's latents are the MoVQ's, unscaled
        with torch.no_grad():
            encoded: torch.Tensor = movq.encode(
                (pixels * 2.0 - 1.0).to(device=pipe.device, dtype=movq.dtype)
            ).latents
        return encoded
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
    """Estimate the initial noise of generated images: VAE encode, then the family's inversion."""
    family = detect_family(pipe)
    unavailable = _why_not_invertible(pipe, family)
    if unavailable is not None:
        return unavailable
    latents = encode_images(pipe, images)
    noise = invert_latents(pipe, latents, num_inference_steps, refine_iterations=refine_iterations)
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

    The latent-level check of the offline tests. A UNet pipeline must sample with DDIM (the
    embedded SD and SDXL do); SD3 and Flux with the deterministic flow-matching Euler sampler.
    """
    family = detect_family(pipe)
    unavailable = _why_not_invertible(pipe, family)
    if unavailable is not None:
        return unavailable
    if family.ddim_invertible:
        from diffusers import DDIMScheduler

        expected_scheduler: type[Any] = DDIMScheduler
    else:
        from diffusers import FlowMatchEulerDiscreteScheduler

        expected_scheduler = FlowMatchEulerDiscreteScheduler
    if not isinstance(pipe.scheduler, expected_scheduler):
        raise BadInputError(
            f"pipe.scheduler: expected {expected_scheduler.__name__}, found {type(pipe.scheduler).__name__}"
        )
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
    final_latents = sample(family, pipe, kwargs)
    if family is Family.FLUX:
        final_latents = unpack_flux_latents(final_latents, latent_shape(pipe, height, width))
    recovered = invert_latents(pipe, final_latents, steps, refine_iterations=refine_iterations)
    return detect_latent(recovered[0].numpy(), key, nonce, expected_mark_id=mark_id)


def unpack_flux_latents(packed: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Flux's packed latents (B, (h/2)(w/2), 4C) back to (B, C, h, w); `shape` is one image's (C, h, w)."""
    channels, height, width = shape
    if packed.ndim != 3 or packed.shape[1:] != (height // 2 * (width // 2), channels * 4):
        raise BadInputError(
            f"packed: expected (B, {height // 2 * (width // 2)}, {channels * 4}), found {tuple(packed.shape)}"
        )
    batch = packed.shape[0]
    x = packed.reshape(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, channels, height, width)


def _why_not_invertible(pipe: Any, family: Family) -> InversionUnavailable | None:
    reason = latent_mark_unavailable(family)
    if reason is not None:
        return InversionUnavailable(family, reason)
    if family.ddim_invertible:
        return None
    if _flow_scheduler(pipe).config.get("stochastic_sampling", False):
        return InversionUnavailable(family, STOCHASTIC_SAMPLING)
    return None
