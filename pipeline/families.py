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

from enum import StrEnum
from typing import Any

import numpy as np
import torch

from guard.errors import BadInputError, ModelLoadError


class Family(StrEnum):
    SD = "sd"
    SDXL = "sdxl"
    SD3 = "sd3"
    FLUX = "flux"

    @property
    def uses_unet(self) -> bool:
        """UNet families are sampled with DDIM-like schedulers and can be inverted by DDIM."""
        return self in (Family.SD, Family.SDXL)


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
    prompt: str,
    negative_prompt: str,
    height: int,
    width: int,
    steps: int,
    guidance_scale: float,
    latents: torch.Tensor,
    num_images: int,
    output_type: str = "pt",
) -> dict[str, Any]:
    """Keyword arguments for `pipe(**kwargs)`.

    The prompt is passed once; `num_images` noise samples come in `latents`, so the batch size is
    `num_images` and `num_images_per_prompt` repeats the prompt to match.
    """
    if latents.shape[0] != num_images:
        raise BadInputError(f"latents: expected a batch of {num_images}, found {latents.shape[0]}")
    kwargs: dict[str, Any] = {
        "prompt": prompt,
        "height": height,
        "width": width,
        "num_inference_steps": steps,
        "guidance_scale": guidance_scale,
        "latents": latents,
        "num_images_per_prompt": num_images,
        "output_type": output_type,
    }
    if family is Family.FLUX:
        # Flux's guidance_scale is a distilled-guidance embedding (ignored without guidance_embeds);
        # a negative prompt only counts with true classifier-free guidance.
        if negative_prompt:
            kwargs["negative_prompt"] = negative_prompt
            kwargs["true_cfg_scale"] = guidance_scale
    elif negative_prompt:
        kwargs["negative_prompt"] = negative_prompt
    return kwargs


def output_as_uint8(images: torch.Tensor) -> np.ndarray:
    """Convert an `output_type="pt"` result (float NCHW in [0, 1]) to uint8 NHWC, rounding."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise BadInputError(
            f"images: expected a float tensor (N, C, H, W) with C 1 or 3, found {tuple(images.shape)}"
        )
    array = images.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0).permute(0, 2, 3, 1).numpy()
    result: np.ndarray = np.round(array * 255.0).astype(np.uint8)
    return result
