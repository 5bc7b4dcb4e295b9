"""Loading a diffusers pipeline: `DiffusionPipeline.from_pretrained` on a hub id, a local path or an
embedded model's cache folder. `pipeline.accel` loads through this and then accelerates.

The two-stage families name both stages with one model:
- Kandinsky 2.2: a folder in the layout of `KandinskyV22CombinedPipeline` (the prior's parts as
  `prior_*`, as `save_pretrained` writes it and the embedded twin is), or the decoder's (or the
  prior's) hub id, whose other half `KANDINSKY_PAIRS` names.
- DeepFloyd IF: a folder with `cascade.json` naming its stage folders (`stage_1/`, `stage_2/`, or hub
  ids), or stage I's hub id, whose stage II `IF_STAGE_2` names. Each stage is its own
  `DiffusionPipeline.from_pretrained`; stage II loads without its T5 encoder (the cascade encodes
  the prompt once, with stage I's).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genguard.guard.errors import ModelLoadError
from genguard.pipeline.embedded import resolve_model_source
from genguard.pipeline.families import IF_CASCADE_FILE, IFCascadePipeline

if TYPE_CHECKING:
    import torch

# Kandinsky 2.2 on the hub: decoder id -> prior id (either id names the pair).
KANDINSKY_PAIRS: dict[str, str] = {
    "kandinsky-community/kandinsky-2-2-decoder": "kandinsky-community/kandinsky-2-2-prior",
}
# DeepFloyd IF on the hub: stage I id -> the stage II it is published with.
IF_STAGE_2: dict[str, str] = {
    "DeepFloyd/IF-I-XL-v1.0": "DeepFloyd/IF-II-L-v1.0",
    "DeepFloyd/IF-I-L-v1.0": "DeepFloyd/IF-II-L-v1.0",
    "DeepFloyd/IF-I-M-v1.0": "DeepFloyd/IF-II-M-v1.0",
}


def load_diffusers_pipeline(
    model: str, *, device: str = "cpu", torch_dtype: torch.dtype | None = None
) -> Any:
    """`DiffusionPipeline.from_pretrained` on a hub id, a local path or an embedded model's cache folder
    (for IF, once per stage: an `IFCascadePipeline`; for Kandinsky's hub ids, prior and decoder joined)."""
    source = resolve_model_source(model)
    kwargs: dict[str, Any] = {}
    if torch_dtype is not None:
        kwargs["dtype"] = torch_dtype  # diffusers 0.42's name (torch_dtype is deprecated)
    try:
        stages = if_stage_sources(source)
        if stages is not None:
            pipe: Any = IFCascadePipeline(
                _from_pretrained(stages[0], kwargs),
                _from_pretrained(stages[1], {**kwargs, "text_encoder": None}),
            )
        elif source in KANDINSKY_PAIRS or source in KANDINSKY_PAIRS.values():
            pipe = _kandinsky_from_hub(source, kwargs)
        else:
            pipe = _from_pretrained(source, kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"model {model!r}: could not load a diffusers pipeline from {source!r}: {exc}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def if_stage_sources(source: str) -> tuple[str, str] | None:
    """IF's two stages (folders or hub ids) when `source` names an IF cascade, else None."""
    if source in IF_STAGE_2:
        return source, IF_STAGE_2[source]
    manifest = Path(source) / IF_CASCADE_FILE
    if not manifest.is_file():
        return None
    try:
        stages = json.loads(manifest.read_text(encoding="utf-8")).get("stages")
    except (OSError, ValueError, AttributeError) as exc:
        raise ModelLoadError(
            f"{manifest}: expected a JSON object with 'stages', could not read it: {exc}"
        ) from exc
    if not (isinstance(stages, list) and len(stages) == 2 and all(isinstance(s, str) and s for s in stages)):
        raise ModelLoadError(f"{manifest}: stages: expected two folder names or hub ids, found {stages!r}")
    local = [Path(source) / stage for stage in stages]
    first, second = (str(path) if path.is_dir() else stage for path, stage in zip(local, stages, strict=True))
    return first, second


def _from_pretrained(source: str, kwargs: dict[str, Any]) -> Any:
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(source, **kwargs)


def _kandinsky_from_hub(source: str, kwargs: dict[str, Any]) -> Any:
    """Kandinsky 2.2's prior and decoder repositories joined into the combined pipeline."""
    from diffusers import KandinskyV22CombinedPipeline

    priors = dict(KANDINSKY_PAIRS)
    decoder_id = source if source in priors else next(d for d, p in priors.items() if p == source)
    decoder = _from_pretrained(decoder_id, kwargs)
    prior = _from_pretrained(priors[decoder_id], kwargs)
    return KandinskyV22CombinedPipeline(
        **decoder.components, **{f"prior_{name}": part for name, part in prior.components.items()}
    )


__all__ = ["IF_STAGE_2", "KANDINSKY_PAIRS", "if_stage_sources", "load_diffusers_pipeline"]
