"""Tiny models built from configs for tests (random weights, a few hundred kB)."""

from __future__ import annotations

from pathlib import Path


def build_tiny_safety_checker(path: Path, *, flag_everything: bool) -> Path:
    """A StableDiffusionSafetyChecker from a small CLIPConfig, saved with its image processor.

    With random weights the checker never flags (cosine similarities stay below the unit
    thresholds); filling `concept_embeds_weights` with -1 makes every image cross them.
    """
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor  # type: ignore[assignment]

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "vocab_size": 100,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 2,
            "image_size": 32,
            "patch_size": 4,
        },
        projection_dim=16,
    )
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-1.0)
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path
