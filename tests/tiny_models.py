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

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor  # type: ignore[assignment]

    torch.manual_seed(0)
    config = _tiny_clip_config(vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    checker = StableDiffusionSafetyChecker(config).eval()
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-1.0)
    checker.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path


def _tiny_clip_config(**overrides: object) -> object:
    from transformers import CLIPConfig

    text_config: dict[str, object] = {
        "hidden_size": 32,
        "intermediate_size": 37,
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "vocab_size": 1000,
        "max_position_embeddings": 77,
    }
    text_config.update(overrides)
    return CLIPConfig(
        text_config=text_config,
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


def build_tiny_clip(path: Path, *, seed: int = 0) -> Path:
    """A CLIPModel from a small CLIPConfig, with a CLIP tokenizer (BPE trained in code) and processor."""
    import torch
    from transformers import CLIPModel

    from pipeline.embedded import _clip_tokenizer

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor  # type: ignore[assignment]

    tokenizer = _clip_tokenizer()
    torch.manual_seed(seed)
    config = _tiny_clip_config(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPModel(config).eval().save_pretrained(path)  # type: ignore[arg-type]
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        path
    )
    return path


TINY_VIT_LABELS = ("safe", "nsfw_explicit", "gore", "drawing")


def build_tiny_vit_classifier(path: Path, *, seed: int = 0) -> Path:
    """A ViTForImageClassification from a small config, with an id2label map and its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    try:
        from transformers import ViTImageProcessorPil as ViTImageProcessor
    except ImportError:
        from transformers import ViTImageProcessor  # type: ignore[assignment]

    torch.manual_seed(seed)
    config = ViTConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=32,
        patch_size=8,
        id2label=dict(enumerate(TINY_VIT_LABELS)),
        label2id={label: i for i, label in enumerate(TINY_VIT_LABELS)},
    )
    ViTForImageClassification(config).eval().save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path
