"""Images made by the embedded tiny pipelines, for the watermark benches beside the photographs.

    pipeline_images(512, ("tiny-sd", "tiny-sdxl"), per_model=2)

Raw diffusers calls (no governance: the benches mark them themselves), seeded, 10 steps. The models'
weights are random, so the images are what an untrained VAE decodes: dense colour noise over the
whole frame, unlike photographs; a real pipeline's images need its weights (the GPU bench).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

_PROMPTS = ("a lighthouse at dusk", "a bowl of fruit on a table", "a city street in the rain")


def pipeline_images(
    side: int, models: tuple[str, ...] = ("tiny-sd", "tiny-sdxl"), per_model: int = 2
) -> dict[str, npt.NDArray[np.uint8]]:
    """`per_model` images of `side` x `side` pixels from each embedded model, named "<model>-<n>"."""
    import torch
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    from genguard.pipeline.loading import resolve_model_source

    torch.set_num_threads(1)
    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()
    images: dict[str, npt.NDArray[np.uint8]] = {}
    for model in models:
        pipe: Any = DiffusionPipeline.from_pretrained(resolve_model_source(f"embedded:{model}"))
        pipe.set_progress_bar_config(disable=True)
        for index in range(per_model):
            out = pipe(
                _PROMPTS[index % len(_PROMPTS)],
                height=side,
                width=side,
                num_inference_steps=10,
                generator=torch.Generator().manual_seed(index),
            ).images[0]
            images[f"{model}-{index}"] = np.ascontiguousarray(np.asarray(out.convert("RGB")))
    return images
