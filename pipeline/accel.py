"""The GPU path: precision per family, PyTorch's scaled-dot-product attention, optional `torch.compile`.

`load_accelerated` picks the precision from the model's pipeline class (read from its
model_index.json before any weight is loaded, so that half-precision weights never pass through
float32), loads, and `accelerate` then:
- checks that every attention layer runs through `torch.nn.functional.scaled_dot_product_attention`.
  With torch 2, diffusers 0.42 already defaults to it (`AttnProcessor2_0` for UNets and VAEs,
  `JointAttnProcessor2_0` for SD3, `FluxAttnProcessor` through diffusers' attention dispatcher, whose
  "native" backend is SDPA). Layers found on the classic `AttnProcessor` (set by a caller or an
  old checkpoint) are switched to `AttnProcessor2_0`; any other processor is left as it is (a
  deliberate choice such as IP-Adapter's) and named in `Acceleration.attention`.
- on CUDA puts UNets in channels-last memory format (their convolutions run faster on tensor cores);
- with `compile=True` compiles the denoiser in place (`nn.Module.compile`, static shapes: each new
  batch size compiles once, so warm up with the batch sizes you serve).

On the CPU everything stays float32 unless a precision is asked for explicitly.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genguard.guard.errors import BadInputError
from genguard.pipeline.families import FAMILY_BY_CLASS_NAME, Family, detect_family

if TYPE_CHECKING:
    import torch


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}[
            self
        ]


# Processors that call torch's scaled_dot_product_attention (directly, or through diffusers'
# dispatcher on its default "native" backend).
_SDPA_PROCESSORS = frozenset(
    {"AttnProcessor2_0", "JointAttnProcessor2_0", "FluxAttnProcessor", "FluxAttnProcessor2_0"}
)


@dataclass(frozen=True)
class Acceleration:
    """What `accelerate` did: where the pipeline runs, in which precision, and with which attention."""

    device: str
    precision: Precision
    attention: tuple[str, ...]  # processor class names in use, sorted
    attention_backend: str  # diffusers' dispatcher backend ("native" = torch SDPA)
    channels_last: bool
    compiled: bool
    vae_sliced: bool = False  # the VAE decodes a batch one image at a time


def choose_precision(family: Family, device: str, requested: str | None = None) -> Precision:
    """`requested` if given (fp32, fp16 or bf16), else the family's half precision on CUDA, fp32 elsewhere."""
    if requested is not None:
        try:
            return Precision(requested)
        except ValueError:
            raise BadInputError(
                f"dtype: expected one of {', '.join(p.value for p in Precision)}, found {requested!r}"
            ) from None
    return Precision(family.gpu_precision) if device.startswith("cuda") else Precision.FP32


def family_from_source(source: str) -> Family | None:
    """The family named by a model's model_index.json (a local folder or a hub id's small config file).

    None when it cannot be read; the caller then loads in float32 and `accelerate` converts. An IF
    cascade folder (`cascade.json`) is IF.
    """
    from genguard.pipeline.families import IF_CASCADE_FILE

    if (Path(source) / IF_CASCADE_FILE).is_file():
        return Family.IF
    path = Path(source) / "model_index.json"
    try:
        if path.is_file():
            import json

            class_name = json.loads(path.read_text(encoding="utf-8")).get("_class_name")
        else:
            from diffusers import DiffusionPipeline

            class_name = DiffusionPipeline.load_config(source).get("_class_name")
    except (OSError, ValueError):
        return None
    return FAMILY_BY_CLASS_NAME.get(str(class_name))


def resolve_device(device: str) -> str:
    """ "auto": CUDA when there is a GPU, else the CPU (as the classifiers choose); "cuda" needs a GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"device: expected a device this machine has, found {device!r} and no CUDA GPU")
    return device


def load_accelerated(
    model: str, *, device: str = "cpu", dtype: str | None = None, compile: bool = False
) -> tuple[Any, Acceleration]:
    """Load `model` (hub id, path or embedded:*) on `device` in the family's precision, then `accelerate`."""
    from genguard.pipeline.embedded import resolve_model_source
    from genguard.pipeline.loading import load_diffusers_pipeline

    device = resolve_device(device)
    family = family_from_source(resolve_model_source(model))
    torch_dtype = choose_precision(family, device, dtype).torch_dtype if family is not None else None
    pipe = load_diffusers_pipeline(model, device=device, torch_dtype=torch_dtype)
    return pipe, accelerate(pipe, device=device, dtype=dtype, compile=compile)


def accelerate(
    pipe: Any,
    *,
    device: str = "cpu",
    dtype: str | None = None,
    compile: bool = False,
    compile_backend: str = "inductor",
    vae_slicing: bool | None = None,
) -> Acceleration:
    """Put a loaded pipeline on `device` in its precision, with SDPA attention; optionally compile it.

    `compile_backend` is torch.compile's backend; "eager" traces without generating code (tests).
    `vae_slicing` (default: on CUDA) decodes a batch one image at a time, so that the decode's peak
    memory does not grow with the batch: SDXL's VAE decodes in float32 (`force_upcast`), whose
    activations at 1024 x 1024 take several GiB per image.
    """
    import torch

    family = detect_family(pipe)
    device = resolve_device(device)
    precision = choose_precision(family, device, dtype)
    if pipe.device != torch.device(device) or pipe.dtype != precision.torch_dtype:
        pipe.to(device, precision.torch_dtype)
    attention: Counter[str] = Counter()
    for name in ("unet", "transformer", "vae"):
        module = getattr(pipe, name, None)
        if module is None or not hasattr(module, "attn_processors"):
            continue
        kinds = {type(p).__name__ for p in module.attn_processors.values()}
        if kinds == {"AttnProcessor"}:
            from diffusers.models.attention_processor import AttnProcessor2_0

            module.set_attn_processor(AttnProcessor2_0())
        attention.update(type(p).__name__ for p in module.attn_processors.values())
    denoiser = pipe.unet if family.uses_unet else pipe.transformer
    channels_last = family.uses_unet and device.startswith("cuda")
    if channels_last:
        denoiser.to(memory_format=torch.channels_last)
    if compile:
        denoiser.compile(backend=compile_backend, dynamic=False)
    vae = getattr(pipe, "vae", None)
    vae_sliced = vae is not None and (device.startswith("cuda") if vae_slicing is None else vae_slicing)
    if vae is not None and vae_sliced:
        vae.enable_slicing()
    from diffusers.models.attention_dispatch import _AttentionBackendRegistry

    return Acceleration(
        device=device,
        precision=precision,
        attention=tuple(sorted(attention)),
        attention_backend=str(_AttentionBackendRegistry.get_active_backend()[0].value),
        channels_last=channels_last,
        compiled=compile,
        vae_sliced=vae_sliced,
    )


def uses_sdpa(acceleration: Acceleration) -> bool:
    """True when every attention processor in use calls torch's scaled-dot-product attention."""
    return bool(acceleration.attention) and set(acceleration.attention) <= _SDPA_PROCESSORS


__all__ = ["Acceleration", "Precision", "accelerate", "choose_precision", "load_accelerated", "uses_sdpa"]
