"""Per-family adapters: what differs between SD, SDXL, SD3, Flux, Kandinsky 2.2 and DeepFloyd IF
pipelines, in one place.

The governed pipeline asks these functions for the initial noise (which carries the latent
watermark), for the prompt-length limit, for the call's keyword arguments and for the output
conversion, so that its own code is the same for every family.

Initial noise, as each pipeline's `prepare_latents` expects it in diffusers 0.42.1:
- SD and SDXL: (B, unet.in_channels, H/8, W/8) standard normal; the pipeline itself multiplies
  `latents=` by `scheduler.init_noise_sigma`, so we pass unscaled noise.
- SD3: (B, transformer.in_channels, H/8, W/8) standard normal, used as given.
- Flux: packed latents (B, (H/16)*(W/16), C*4), the (B, C, H/8, W/8) noise cut into 2x2 patches
  by `FluxPipeline._pack_latents`; used as given.
- Kandinsky 2.2 (unCLIP: a prior maps the text to a CLIP image embedding, a decoder UNet turns it
  into MoVQ latents): the decoder's (B, 4, H/8, W/8) standard normal, multiplied by
  `init_noise_sigma` by the decoder like SD. The combined pipeline's own `latents=` feeds the
  prior, so `sample` runs the two stages itself and gives the decoder the noise.
- DeepFloyd IF (cascaded pixel-space diffusion: stage I samples H/4 x W/4 pixels, stage II
  upscales 4x): no latent noise to mark. `IFPipeline` takes no `latents=` (it draws stage I's
  noise from the generators), samples with DDPM (fresh noise at every step) and stage II draws
  its own noise and noise-augments the upscaled image, so a mark in stage I's noise could not be
  read back from the released image: IF carries the pixel mark alone, and its records say so
  (`latent_mark_unavailable`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
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
    KANDINSKY = "kandinsky"
    IF = "if"

    @property
    def uses_unet(self) -> bool:
        """The denoiser is `pipe.unet` (else `pipe.transformer`)."""
        return self in (Family.SD, Family.SDXL, Family.KANDINSKY, Family.IF)

    @property
    def ddim_invertible(self) -> bool:
        """Latent UNet families: sampled with DDIM-like schedulers and inverted by DDIM."""
        return self in (Family.SD, Family.SDXL, Family.KANDINSKY)

    @property
    def two_stage(self) -> bool:
        """A prior and a decoder (Kandinsky) or two cascaded stages (IF): `sample` runs both."""
        return self in (Family.KANDINSKY, Family.IF)

    @property
    def gpu_precision(self) -> str:
        """The half precision each family samples in on a GPU (`pipeline.accel` applies it).

        SD 1.x/2.x and SDXL were trained and are published in fp16; SDXL's VAE overflows in fp16,
        which diffusers handles itself (`vae.config.force_upcast`: the decode runs in float32 unless
        an fp16-safe VAE says otherwise). SD3 and Flux are published in bf16, whose range their
        transformers' activations need. Kandinsky 2.2 and DeepFloyd IF are published in fp16.
        """
        return "fp16" if self.uses_unet else "bf16"


# Why a family's images carry the pixel mark alone (the module docstring gives the reasoning).
LATENT_MARK_UNAVAILABLE: dict[Family, str] = {
    Family.IF: (
        "pixel-space cascade: IF stage I takes no initial noise, samples with DDPM and stage II "
        "re-noises, so no latent mark could be read back"
    ),
}


def latent_mark_unavailable(family: Family) -> str | None:
    """Why `family` cannot carry the latent mark (None: it can)."""
    return LATENT_MARK_UNAVAILABLE.get(family)


# The pipeline classes each family loads as, by the `_class_name` in a model's model_index.json,
# so that the dtype can be chosen before the weights are loaded.
FAMILY_BY_CLASS_NAME: dict[str, Family] = {
    "StableDiffusionPipeline": Family.SD,
    "StableDiffusionXLPipeline": Family.SDXL,
    "StableDiffusion3Pipeline": Family.SD3,
    "FluxPipeline": Family.FLUX,
    # Kandinsky 2.2 loads as the combined pipeline (the decoder's hub id names its prior).
    "KandinskyV22CombinedPipeline": Family.KANDINSKY,
    "KandinskyV22Pipeline": Family.KANDINSKY,
    "KandinskyV22PriorPipeline": Family.KANDINSKY,
    # IF's two stages: stage I names the cascade (`pipeline.loading` finds stage II).
    "IFPipeline": Family.IF,
    "IFCascadePipeline": Family.IF,
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
    Family.KANDINSKY: Bounds(2048, 2048 * 2048, _REAL_REQUEST_PIXELS, 500, 64),
    # IF stage II's native 256 x 256 (stage I at 64 x 64), up to four times its area.
    Family.IF: Bounds(1024, 1024 * 1024, _REAL_REQUEST_PIXELS, 500, 64),
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
    factor: SD 1.5 512, SDXL 1024, Flux 1024. 512 when the pipeline says neither. Kandinsky 2.2: 512
    (the pipeline's default); IF: stage II's output size (256 for IF-II)."""
    if isinstance(pipe, IFCascadePipeline):
        pipe = pipe.stage_2
        sample_size = pipe.unet.config.sample_size
        return int(sample_size if isinstance(sample_size, int) else sample_size[0])
    if detect_family(pipe) is Family.KANDINSKY:
        return 512
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
        KandinskyV22CombinedPipeline,
        StableDiffusion3Pipeline,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    return {
        StableDiffusionXLPipeline: Family.SDXL,
        StableDiffusionPipeline: Family.SD,
        StableDiffusion3Pipeline: Family.SD3,
        FluxPipeline: Family.FLUX,
        KandinskyV22CombinedPipeline: Family.KANDINSKY,
        IFCascadePipeline: Family.IF,
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
    IF's stages have their own safety checker and watermarker (`watermarker`): both off in each stage.
    """
    if isinstance(pipe, IFCascadePipeline):
        for stage in pipe.stages:
            disable_builtin_safety(stage)
        return
    if getattr(pipe, "watermarker", None) is not None:
        pipe.register_modules(watermarker=None)
    if getattr(pipe, "safety_checker", None) is not None:
        pipe.register_modules(safety_checker=None)
    if "requires_safety_checker" in pipe.config:
        pipe.register_to_config(requires_safety_checker=False)
    if getattr(pipe, "watermark", None) is not None:
        pipe.watermark = None


def vae_scale_factor(pipe: Any) -> int:
    """Image pixels per noise value along a side: the VAE's (MoVQ's for Kandinsky) downsampling, or
    for IF the cascade's upscaling (stage I samples the image at a quarter of its size)."""
    if isinstance(pipe, IFCascadePipeline):
        return IF_UPSCALE
    if hasattr(pipe, "decoder_pipe"):  # Kandinsky's combined pipeline
        return int(pipe.decoder_pipe.movq_scale_factor)
    return int(pipe.vae_scale_factor)


def size_multiple(pipe: Any) -> int:
    """What height and width must be multiples of for this pipeline to sample exactly that size.

    Flux packs 2x2 latent patches; Kandinsky's decoder rounds sizes up to multiples of the MoVQ
    factor squared; IF's UNets halve their image once per level but the last (stage I's image is a
    quarter of the size).
    """
    family = detect_family(pipe)
    factor = vae_scale_factor(pipe)
    if family is Family.FLUX:
        return 2 * factor
    if family is Family.KANDINSKY:
        return factor * factor
    if family is Family.IF:
        stage_1 = factor * 2 ** (len(pipe.stage_1.unet.config.block_out_channels) - 1)
        stage_2 = 2 ** (len(pipe.stage_2.unet.config.block_out_channels) - 1)
        return math.lcm(stage_1, stage_2)
    return factor


def latent_shape(pipe: Any, height: int, width: int) -> tuple[int, int, int]:
    """The unpacked per-image noise shape (C, H/8, W/8) for every family, Flux included.

    The latent watermark is embedded in this shape; `noise_from_gaussian` packs it for Flux.
    """
    family = detect_family(pipe)
    factor = vae_scale_factor(pipe)
    multiple = size_multiple(pipe)
    for field, value in (("height", height), ("width", width)):
        if value <= 0 or value % multiple:
            raise BadInputError(
                f"{field}: expected a positive multiple of {multiple} for a {family.value} pipeline, found {value}"
            )
    if family is Family.IF:
        channels = int(pipe.stage_1.unet.config.in_channels)
    elif family.uses_unet:
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


# IF's `encode_prompt` cuts the T5 tokens at 77 whatever the tokenizer's own limit.
IF_MAX_PROMPT_TOKENS = 77


def _prompt_tokenizer(pipe: Any) -> Any:
    """The tokenizer whose limit truncates the prompt: CLIP's (the prior's for Kandinsky), T5's for IF."""
    if isinstance(pipe, IFCascadePipeline):
        return pipe.stage_1.tokenizer
    prior_tokenizer = getattr(pipe, "prior_tokenizer", None)
    return prior_tokenizer if prior_tokenizer is not None else pipe.tokenizer


def max_prompt_tokens(pipe: Any) -> int:
    """The prompt tokenizer's limit (start and end tokens included); longer prompts are truncated by diffusers."""
    if isinstance(pipe, IFCascadePipeline):
        return IF_MAX_PROMPT_TOKENS
    return int(_prompt_tokenizer(pipe).model_max_length)


def prompt_token_count(pipe: Any, prompt: str) -> int:
    """How many tokens the prompt takes, start and end tokens included (compare with max_prompt_tokens)."""
    return len(_prompt_tokenizer(pipe)(prompt, truncation=False)["input_ids"])


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


IF_UPSCALE = 4  # stage II's output side over stage I's


class IFCascadePipeline:
    """DeepFloyd IF as one model: stage I (`IFPipeline`, text to H/4 x W/4 pixels) and stage II
    (`IFSuperResolutionPipeline`, 4x upscaling), each a diffusers pipeline of its own.

    The prompt is encoded once, by stage I's T5 encoder, and both stages take those embeddings (as
    DeepFloyd's own examples do), so stage II may be saved or loaded without a text encoder.
    `latents` is accepted for a uniform call and ignored: `IFPipeline` draws stage I's noise from
    `generator` itself. `pipeline.loading` builds one from a folder with `stage_1/` and `stage_2/`
    (`cascade.json` names them) or from stage I's hub id.
    """

    def __init__(self, stage_1: Any, stage_2: Any) -> None:
        self.stage_1 = stage_1
        self.stage_2 = stage_2

    @property
    def stages(self) -> tuple[Any, Any]:
        return self.stage_1, self.stage_2

    @property
    def device(self) -> torch.device:
        return self.stage_1.device  # type: ignore[no-any-return]

    @property
    def dtype(self) -> torch.dtype:
        return self.stage_1.dtype  # type: ignore[no-any-return]

    @property
    def unet(self) -> Any:
        """Stage I's UNet: the denoiser that `pipeline.accel` and the record describe."""
        return self.stage_1.unet

    @property
    def scheduler(self) -> Any:
        return self.stage_1.scheduler

    @property
    def tokenizer(self) -> Any:
        return self.stage_1.tokenizer

    def to(self, *args: Any, **kwargs: Any) -> IFCascadePipeline:
        for stage in self.stages:
            stage.to(*args, **kwargs)
        return self

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        for stage in self.stages:
            stage.set_progress_bar_config(**kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str], **kwargs: Any) -> None:
        root = Path(folder)
        for name, stage in zip(IF_STAGE_FOLDERS, self.stages, strict=True):
            stage.save_pretrained(root / name, **kwargs)
        (root / IF_CASCADE_FILE).write_text(
            json.dumps({"_class_name": type(self).__name__, "stages": list(IF_STAGE_FOLDERS)}, indent=2)
            + "\n",
            encoding="utf-8",
        )

    def __call__(
        self,
        *,
        prompt: str | list[str],
        height: int,
        width: int,
        num_inference_steps: int,
        guidance_scale: float,
        num_images_per_prompt: int = 1,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pt",
        callback_on_step_end: Callable[..., Any] | None = None,
    ) -> Any:
        """Both stages; `images` float (N, 3, H, W) in [0, 1] (`output_type` "pt" only)."""
        from diffusers.pipelines.pipeline_utils import ImagePipelineOutput

        if output_type != "pt":
            raise BadInputError(f"output_type: expected 'pt' for the IF cascade, found {output_type!r}")
        guided = guidance_scale > 1.0
        prompt_embeds, negative_embeds = self.stage_1.encode_prompt(
            prompt,
            do_classifier_free_guidance=guided,
            num_images_per_prompt=num_images_per_prompt,
            device=self.device,
            negative_prompt=negative_prompt or None,
            clean_caption=False,
        )
        embeds = {"prompt_embeds": prompt_embeds, "negative_prompt_embeds": negative_embeds}
        callback = None
        if callback_on_step_end is not None:
            on_step_end = callback_on_step_end  # progress over stage I's steps

            def callback(step: int, timestep: Any, _images: Any) -> None:
                on_step_end(self, step, timestep, {})

        small = self.stage_1(
            **embeds,
            height=height // IF_UPSCALE,
            width=width // IF_UPSCALE,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="pt",
            callback=callback,
        ).images
        large = self.stage_2(
            **embeds,
            image=small,
            height=height,
            width=width,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="pt",
        ).images
        # Both stages' "pt" output is in the model's [-1, 1] range.
        return ImagePipelineOutput(images=(large * 0.5 + 0.5).clamp(0.0, 1.0))


IF_STAGE_FOLDERS = ("stage_1", "stage_2")
IF_CASCADE_FILE = "cascade.json"


def sample(family: Family, pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    """One pipeline call with `call_kwargs` (+ generator, callback): float (N, 3, H, W) in [0, 1].

    Kandinsky's combined pipeline sends its `latents=` to the prior, so its two stages are run here:
    the prior (text -> image embedding, its own noise from the generators), then the decoder with
    the governed initial noise.
    """
    if family is Family.KANDINSKY:
        return _sample_kandinsky(pipe, kwargs)
    images: torch.Tensor = pipe(**kwargs).images
    return images


def _sample_kandinsky(pipe: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    steps, guidance = kwargs["num_inference_steps"], kwargs["guidance_scale"]
    generator = kwargs.get("generator")
    image_embeds, negative_image_embeds = pipe.prior_pipe(
        prompt=kwargs["prompt"],
        negative_prompt=kwargs.get("negative_prompt"),
        num_images_per_prompt=kwargs["num_images_per_prompt"],
        num_inference_steps=steps,
        generator=generator,
        guidance_scale=guidance,
        output_type="pt",
        return_dict=False,
    )
    decoder_kwargs: dict[str, Any] = {
        "image_embeds": image_embeds,
        "negative_image_embeds": negative_image_embeds,
        "height": kwargs["height"],
        "width": kwargs["width"],
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "generator": generator,
        "latents": kwargs["latents"],
        "output_type": "latent" if kwargs.get("output_type") == "latent" else "pt",
    }
    if "callback_on_step_end" in kwargs:
        decoder_kwargs["callback_on_step_end"] = kwargs["callback_on_step_end"]
    images: torch.Tensor = pipe.decoder_pipe(**decoder_kwargs).images
    if decoder_kwargs["output_type"] == "latent":
        return images
    return (images * 0.5 + 0.5).clamp(0.0, 1.0)  # the MoVQ decodes to [-1, 1]


# Few-step samplers, by the name the API and `--scheduler` take. "default": the model's own.
SCHEDULERS = ("default", "lcm", "turbo")
# Schedulers that draw fresh noise at every step: the image does not follow from the initial noise
# alone, so inversion cannot read the latent mark back (it is still embedded).
_STOCHASTIC_SCHEDULERS = frozenset(
    {"LCMScheduler", "EulerAncestralDiscreteScheduler", "DDPMScheduler", "UnCLIPScheduler"}
)


def use_scheduler(pipe: Any, name: str | None) -> None:
    """Swap the pipeline's scheduler for a few-step one, keeping the model's noise schedule.

    "lcm": `LCMScheduler` (Latent Consistency Models: 1-8 steps with LCM-distilled weights or an LCM
    LoRA). "turbo": `EulerAncestralDiscreteScheduler` with trailing timestep spacing, as SD-Turbo and
    SDXL-Turbo sample (1-4 steps, guidance 0). Both are for the UNet latent families (SD, SDXL).
    """
    if name is None or name == "default":
        return
    if name not in SCHEDULERS:
        raise BadInputError(f"scheduler: expected one of {', '.join(SCHEDULERS)}, found {name!r}")
    family = detect_family(pipe)
    if family not in (Family.SD, Family.SDXL):
        raise BadInputError(f"scheduler: expected an sd or sdxl model for {name!r}, found {family.value}")
    from diffusers import EulerAncestralDiscreteScheduler, LCMScheduler

    config = pipe.scheduler.config
    if name == "lcm":
        pipe.scheduler = LCMScheduler.from_config(config)
    else:
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(config, timestep_spacing="trailing")


def sampler_facts(pipe: Any, steps: int, guidance_scale: float) -> dict[str, Any]:
    """What the record says about how the images were sampled: each stage's scheduler, the steps and
    the guidance (both stages of Kandinsky and IF take the request's steps and guidance)."""
    family = detect_family(pipe)
    facts: dict[str, Any] = {
        "family": family.value,
        "scheduler": type(pipe.scheduler).__name__,
        "steps": steps,
        "guidance_scale": guidance_scale,
    }
    if family is Family.KANDINSKY:
        facts["prior_scheduler"] = type(pipe.prior_scheduler).__name__
        facts["prior_steps"] = steps
    elif family is Family.IF:
        facts["stage_2_scheduler"] = type(pipe.stage_2.scheduler).__name__
        facts["stage_2_steps"] = steps
    return facts


def latent_mark_facts(pipe: Any, embedded: bool) -> dict[str, Any]:
    """The latent mark's state for the record: embedded or not (and why not), and whether inversion can
    read it back with this scheduler."""
    family = detect_family(pipe)
    unavailable = latent_mark_unavailable(family)
    if not embedded:
        return {"embedded": False, "reason": unavailable or "latent watermark switched off"}
    scheduler = type(pipe.scheduler).__name__
    readable = scheduler not in _STOCHASTIC_SCHEDULERS
    facts: dict[str, Any] = {"embedded": True, "readable_by_inversion": readable}
    if not readable:
        facts["reason"] = f"{scheduler} draws fresh noise at every step"
    return facts


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
