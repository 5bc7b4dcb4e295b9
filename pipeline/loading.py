"""Loading a diffusers pipeline: `DiffusionPipeline.from_pretrained` on a hub id, a local path or an
embedded model's cache folder. `pipeline.accel` loads through this and then accelerates."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from genguard.guard.errors import ModelLoadError
from genguard.pipeline.embedded import resolve_model_source

if TYPE_CHECKING:
    import torch


def load_diffusers_pipeline(
    model: str, *, device: str = "cpu", torch_dtype: torch.dtype | None = None
) -> Any:
    """`DiffusionPipeline.from_pretrained` on a hub id, a local path or an embedded model's cache folder."""
    from diffusers import DiffusionPipeline

    source = resolve_model_source(model)
    kwargs: dict[str, Any] = {}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype  # diffusers 0.42's name (torch_dtype is deprecated)
    try:
        pipe = DiffusionPipeline.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model {model!r}: could not load a diffusers pipeline from {source!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


__all__ = ["load_diffusers_pipeline"]
