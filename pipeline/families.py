"""Per-family adapters: what differs between SD, SDXL, SD3 and Flux pipelines, in one place.

The governed pipeline asks these functions for the initial noise (which carries the latent
watermark), for the prompt-length limit, for the call's keyword arguments and for the output
conversion, so that its own code is the same for every family.

Initial noise, as each pipeline's `prepare_latents` expects it in diffusers 0.42.1:
- SD and SDXL: (B, unet.in_channels, H/8, W/8) standard normal; the pipeline itself multiplies
  `latents=` by `scheduler.init_noise_sigma`, so we pass unscaled noise.
- SD3: (B, transformer.in_channels, H/8, W/8) standard normal, used as given.
- Flux: packed latents (B, (H/16)*(W/16), C*4), the (B, C, H/8, W/8) noise cut into 2x2 patches
  by `FluxPipeline._pack_latents`; used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch

from genguard.guard.errors import BadInputError, ModelLoadError
from genguard.guard.policy.schema import LimitsSpec


class Family(StrEnum):
    SD = "sd"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"

    @property
    def uses_unet(self) -> bool:
        """UNet families are sampled with DDIM-like schedulers and can be inverted by DDIM."""
        return self in (Family.SD, Family.SDXL)

    @property
    def gpu_precision(self) -> str:
        """The half precision each family samples in on a GPU (`pipeline.accel` applies it).

        SD 1.x/2.x and SDXL were trained and are published in fp16; SDXL's VAE overflows in fp16,
        which diffusers handles itself (`vae.config.force_upcast`: the decode runs in float32 unless
        an fp16-safe VAE says otherwise). SD3 and Flux are published in bf16, whose range their
        transformers' activations need.
        """
        return "fp16" if self.uses_unet else "bf16"


# The pipeline classes each family loads as, by the `_class_name` in a model's model_index.json,
# so that the dtype can be chosen before the weights are loaded.
FAMILY_BY_CLASS_NAME: dict[str, Family] = {
    "StableDiffusionPipeline": Family.SD,
    "StableDiffusionXLPipeline": Family.SDXL,
    "StableDiffusion3Pipeline": Family.SD3,
    "FluxPipeline": Family.FLUX,
}


@dataclass(frozen=True)
class Bounds:
    """Upper bounds on the work one request may ask for; larger requests are refused as invalid.

    `max_side`: width or height in pixels; `max_pixels`: width x height of one image;
    `max_request_pixels`: over all the request's images (what one pipeline call and its decode hold);
    `max_steps` and `max_images`: sampling steps and images per request.
    """

    max_side: int
    max_pixels: int
    max_request_pixels: int
    max_steps: int
    max_images: int


# Real models: four times each family's native area (SD 1.x 512², SDXL/SD3/Flux 1024²), sides up to
# 2048, the request's pixels as 16 images at 1024² (64 at 512²).
_REAL_REQUEST_PIXELS = 16 * 1024 * 1024
FAMILY_BOUNDS: dict[Family, Bounds] = {
    Family.SD: Bounds(2048, 1024 * 1024, _REAL_REQUEST_PIXELS, 500, 64),
    Family.SDXL: Bounds(2048, 2048 * 2048, _REAL_REQUEST_PIXELS, 500, 64),
    Family.SD3: Bounds(2048, 2048 * 2048, _REAL_REQUEST_PIXELS, 500, 64),
    Family.FLUX: Bounds(2048, 2048 * 2048, _REAL_REQUEST_PIXELS, 500, 64),
}
# Before a model is loaded its family may be unknown (a hub id): the loosest family's bounds apply
# then, and the loaded family's bounds once it is known.
UNKNOWN_FAMILY_BOUNDS = FAMILY_BOUNDS[Family.SDXL]
# The embedded demonstration models: untrained, so nothing is gained by large or long runs.
EMBEDDED_BOUNDS = Bounds(1024, 1024 * 1024, 16 * 512 * 512, 100, 64)


def bounds_for(family: Family | None, *, embedded: bool = False, limits: LimitsSpec | None = None) -> Bounds:
    """The bounds for a family (None: not known yet; the embedded models have their own), tightened by a
    pack's `limits:` section (`tightened`)."""
    if embedded:
        base = EMBEDDED_BOUNDS
    else:
        base = FAMILY_BOUNDS[family] if family is not None else UNKNOWN_FAMILY_BOUNDS
    return tightened(base, limits)


def tightened(bounds: Bounds, limits: LimitsSpec | None) -> Bounds:
    """`bounds` with each limit the pack sets taken where it is lower; a limit above the family's bound
    is the family's (a pack can only tighten)."""
    if limits is None:
        return bounds

    def lower(bound: int, limit: int | None) -> int:
        return bound if limit is None else min(bound, limit)

    return Bounds(
        max_side=lower(bounds.max_side, limits.max_side),
        max_pixels=lower(bounds.max_pixels, limits.max_pixels_per_image),
        max_request_pixels=lower(bounds.max_request_pixels, limits.max_pixels_per_request),
        max_steps=lower(bounds.max_steps, limits.max_steps),
        max_images=lower(bounds.max_images, limits.max_images),
    )


def default_size(pipe: Any) -> int:
    """The square size the model was made for, as diffusers picks it when the caller gives none:
    `default_sample_size` (SDXL, SD3, Flux) or else the denoiser's `sample_size` (SD), times the VAE
    factor: SD 1.5 512, SDXL 1024, Flux 1024. 512 when the pipeline says neither."""
    sample_size = getattr(pipe, "default_sample_size", None)
    if sample_size is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        sample_size = getattr(getattr(denoiser, "config", None), "sample_size", None)
    if isinstance(sample_size, (list, tuple)):
        sample_size = sample_size[0]
    if isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size <= 0:
        return 512
    return sample_size * vae_scale_factor(pipe)


def _family_classes() -> dict[type[Any], Family]:
    from diffusers import (
        FluxPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    return {
        StableDiffusionXLPipeline: Family.SDXL,
        StableDiffusionPipeline: Family.SD,
        StableDiffusion3Pipeline: Family.SD3,
        FluxPipeline: Family.FLUX,
    }


def detect_family(pipe: Any) -> Family:
    """The family of a loaded text-to-image pipeline; ModelLoadError for any other pipeline class."""
    classes = _family_classes()
    for cls, family in classes.items():
        if isinstance(pipe, cls):
            return family
    supported = ", ".join(cls.__name__ for cls in classes)
    raise ModelLoadError(f"pipeline class: expected one of {supported}, found {type(pipe).__name__}")


def disable_builtin_safety(pipe: Any) -> None:
    """Switch off diffusers' own safety checker and invisible watermarker; genguard's checks replace them.

    Needed after every load, embedded models included: SDXL's `add_watermarker` is not saved with
    the model, so `from_pretrained` turns the watermarker on whenever invisible-watermark is installed.
    """
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.register_modules(safety_checker=None)
    if "requires_safety_checker" in pipe.config:
        pipe.register_to_config(requires_safety_checker=False)
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None


def vae_scale_factor(pipe: Any) -> int:
    return int(pipe.vae_scale_factor)


def latent_shape(pipe: Any, height: int, width: int) -> tuple[int, int, int]:
    """The unpacked per-image noise shape (C, H/8, W/8) for every family, Flux included.

    The latent watermark is embedded in this shape; `noise_from_gaussian` packs it for Flux.
    """
    family = detect_family(pipe)
    factor = vae_scale_factor(pipe)
    # Flux packs 2x2 latent patches, so its sizes must divide by twice the VAE factor.
    multiple = 2 * factor if family is Family.FLUX else factor
    for field, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            raise BadInputError(
                f"{field}: expected a positive multiple of {multiple} for a {family.value} pipeline, found {value}"
            )
    if family.uses_unet:
        channels = int(pipe.unet.config.in_channels)
    elif family is Family.SD3:
        channels = int(pipe.transformer.config.in_channels)
    else:
        channels = int(pipe.transformer.config.in_channels) // 4
    return channels, height // factor, width // factor


def noise_from_gaussian(pipe: Any, z: torch.Tensor) -> torch.Tensor:
    """Place standard-normal noise z of shape (B, C, H/8, W/8) where the pipeline's `latents=` wants it.

    Returns it on the pipeline's device and dtype, packed for Flux. The noise is made on the CPU
    (reproducible) and moved here.
    """
    family = detect_family(pipe)
    if z.ndim != 4:
        raise BadInputError(f"z: expected a 4-d tensor (B, C, H/8, W/8), found shape {tuple(z.shape)}")
    batch, channels, latent_height, latent_width = z.shape
    if family is Family.FLUX:
        if latent_height % 2 or latent_width % 2:
            raise BadInputError(f"z: Flux latents need even height and width, found {tuple(z.shape)}")
        z = pipe._pack_latents(z, batch, channels, latent_height, latent_width)
    return z.to(device=pipe.device, dtype=pipe.dtype)


def initial_noise(pipe: Any, batch: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Standard-normal initial noise exactly as the pipeline would draw it from `generator`.

    Drawn on the CPU in the unpacked shape, like diffusers' `randn_tensor` with a CPU generator, so
    that `pipe(latents=initial_noise(...))` equals `pipe(generator=...)` for the same generator state.
    """
    if batch <= 0:
        raise BadInputError(f"batch: expected a positive number of images, found {batch}")
    shape = (batch, *latent_shape(pipe, height, width))
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=pipe.dtype)
    return noise_from_gaussian(pipe, z)


def max_prompt_tokens(pipe: Any) -> int:
    """The CLIP tokenizer's limit (start and end tokens included); longer prompts are truncated by diffusers."""
    return int(pipe.tokenizer.model_max_length)


def prompt_token_count(pipe: Any, prompt: str) -> int:
    """How many CLIP tokens the prompt takes, start and end tokens included (compare with max_prompt_tokens)."""
    return len(pipe.tokenizer(prompt, truncation=False)["input_ids"])


def call_kwargs(
    family: Family,
    *,
    prompt: str | list[str],
    negative_prompt: str | list[str],
    height: int,
    width: int,
    steps: int,
    guidance_scale: float,
    latents: torch.Tensor,
    num_images: int,
    output_type: str = "pt",
) -> dict[str, Any]:
    """Keyword arguments for `pipe(**kwargs)`.

    One prompt (str) is passed once; `num_images` noise samples come in `latents`, so the batch size
    is `num_images` and `num_images_per_prompt` repeats the prompt to match. A list gives one prompt
    (and one negative prompt) per image: several requests sampled in one call.
    """
    if latents.shape[0] != num_images:
        raise BadInputError(f"latents: expected a batch of {num_images}, found {latents.shape[0]}")
    per_image = isinstance(prompt, list)
    for field, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if isinstance(value, list) != per_image or (per_image and len(value) != num_images):
            found = f"a list of {len(value)}" if isinstance(value, list) else "one text"
            expected = f"a list of {num_images} (one per image)" if per_image else "one text"
            raise BadInputError(f"{field}: expected {expected}, found {found}")
    has_negative = any(negative_prompt) if isinstance(negative_prompt, list) else bool(negative_prompt)
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "height": height,
        "width": width,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "latents": latents,
        "num_images_per_prompt": 1 if per_image else num_images,
        "output_type": output_type,
    }
    if family is Family.FLUX:
        # Flux's guidance_scale is a distilled-guidance embedding (ignored without guidance_embeds);
        # a negative prompt only counts with true classifier-free guidance.
        if has_negative:
            kwargs["negative_prompt"] = negative_prompt
            kwargs["true_cfg_scale"] = guidance_scale
    elif has_negative:
        kwargs["negative_prompt"] = negative_prompt
    return kwargs


def output_as_uint8(images: torch.Tensor) -> np.ndarray:
    """Convert an `output_type="pt"` result (float NCHW in [0, 1]) to uint8 NHWC, rounding."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BadInputError(
            f"images: expected a float tensor (N, C, H, W) with C 1 or 3, found {tuple(images.shape)}"
        )
    # Rounded on the pipeline's device in float32 (as numpy would), so that a GPU sends a quarter of
    # the bytes of a float copy and the CPU has nothing left to do.
    scaled = images.detach().to(torch.float32).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    result: np.ndarray = scaled.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    return result
