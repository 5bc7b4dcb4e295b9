"""Embedded tiny pipelines: `embedded:tiny-sd`, `embedded:tiny-sdxl`, `embedded:tiny-sd3`, `embedded:tiny-flux`,
`embedded:tiny-kandinsky` (Kandinsky 2.2: prior + decoder) and `embedded:tiny-if` (DeepFloyd IF: stage I + II).

They let the whole product run offline. Each is built from configs written here with random
weights (fixed seed, so a rebuild gives the same files), saved once with `save_pretrained` under
`cache_dir() / "embedded"`, and then loaded by the caller through the same
`DiffusionPipeline.from_pretrained(local_dir)` as any real model (IF: once per stage folder, see
`pipeline.loading`).

Their weights are untrained: the images they make are abstract, noise-like pictures, not
depictions of the prompt. They exist to exercise the governed flow (policy, sampling, checks,
provenance, audit), never to judge image quality.

diffusers' own safety checker and watermarker are switched off in every build, because genguard's
checks replace them for every family alike (DESIGN.md, "The generate flow").
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from genguard.guard.config import cache_dir
from genguard.guard.errors import BadInputError, ModelLoadError

EMBEDDED_PREFIX = "embedded:"
# The size the embedded models sample at when the caller gives none: their untrained images carry no
# detail that a larger size would show, and the pixel watermark reads at 256 px.
EMBEDDED_DEFAULT_SIZE = 256
# Bump when a config below changes, so that caches built by an older genguard are not reused.
BUILD_VERSION = 1
_SEED = 20261101

# A small corpus for the tiny tokenizers: prompt-like words, so that typical prompts tokenize
# into whole words rather than single bytes.
_CORPUS = (
    "a photo of a cat sitting on a red sofa in a sunny living room",
    "portrait of an old man with a grey beard, oil painting, dramatic lighting",
    "a mountain landscape at sunset with a lake and pine trees, highly detailed",
    "a futuristic city street at night, neon signs, rain, cinematic",
    "a bowl of fruit on a wooden table, still life, soft light",
    "an astronaut riding a horse on the moon, digital art",
    "a watercolor painting of a small boat on the sea under a blue sky",
    "close up of a flower with drops of water, macro photography",
    "a dog running on the beach with waves in the background",
    "an ancient castle on a hill surrounded by fog and green fields",
    "a woman reading a book in a cafe, warm colors, illustration",
    "a robot playing chess with a child in a park, sharp focus",
    "abstract shapes and colors, minimal design, white background",
    "the quick brown fox jumps over the lazy dog 0 1 2 3 4 5 6 7 8 9",
)


def _t5_vocabulary() -> list[tuple[str, float]]:
    """An inline unigram vocabulary in T5's layout: <pad>, </s>, <unk>, pieces (the caller adds extra ids)."""
    words = sorted({word.strip(",") for line in _CORPUS for word in line.split()})
    letters = sorted({char for word in words for char in word})
    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -5.0 - 0.01 * len(word)) for word in words]
    pieces += [(char, -9.0) for char in letters] + [(f"▁{char}", -8.0) for char in letters]
    pieces += [(",", -6.0), (".", -6.0)]
    seen: set[str] = set()
    unique = []
    for piece, score in pieces:
        if piece not in seen:
            seen.add(piece)
            unique.append((piece, score))
    return unique


def _clip_tokenizer() -> Any:
    """A CLIPTokenizer whose byte-level BPE is trained here on `_CORPUS` (model_max_length 77)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    # Train with CLIP's own normaliser and pre-tokenizer (taken from an empty CLIPTokenizer), so
    # that the merges learned are the merges CLIP's tokenizer will apply.
    clip_backend = CLIPTokenizer().backend_tokenizer
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.normalizer = clip_backend.normalizer
    bpe.pre_tokenizer = clip_backend.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|startoftext|>", "<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    # The trainer breaks ties between equally frequent pairs in hash-map order, which changes
    # between processes. Reorder canonically so that a rebuild writes identical files: a merge's
    # parts are always shorter than its result, so ordering by result length keeps BPE valid.
    pairs = [tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge) for merge in model["merges"]]
    merges = sorted(pairs, key=lambda pair: (len(pair[0] + pair[1]), pair))
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # Word-final single bytes ("x</w>") too, so that any word ending tokenizes without <unk>.
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(f"{char}</w>" for char in alphabet)]
    tokens += [left + right for left, right in merges]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    # CLIPTokenizer's hints say list[str], but its BPE backend takes (left, right) pairs.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)  # type: ignore[arg-type]


def _t5_tokenizer() -> Any:
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=_t5_vocabulary(), extra_ids=0, model_max_length=512)


def _clip_text_encoder(vocab_size: int, hidden_size: int, with_projection: bool) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        projection_dim=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="gelu",
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _t5_text_encoder(vocab_size: int, d_model: int) -> Any:
    from transformers import T5Config, T5EncoderModel

    config = T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=16,
        d_ff=2 * d_model,
        num_layers=1,
        num_heads=4,
        relative_attention_num_buckets=8,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5EncoderModel(config)


def _vae(latent_channels: int, flow: bool) -> Any:
    """Four levels, so that latents are H/8 like real models (two levels make sampling ~100x slower)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 32, 32),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=latent_channels,
        sample_size=256,
        # SD3 and Flux VAEs have no quant convs and use a shift factor.
        use_quant_conv=not flow,
        use_post_quant_conv=not flow,
        shift_factor=0.0609 if flow else None,
        scaling_factor=1.5305 if flow else 0.18215,
    )


def _ddim_scheduler() -> Any:
    # Deterministic DDIM with Stable Diffusion's schedule, so that the latent watermark can be
    # detected by DDIM inversion (pipeline/inversion.py).
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def _seeded(offset: int, make: Callable[[], Any]) -> Any:
    """Each component from its own fixed seed, so that changing one leaves the others' weights alone."""
    import torch

    torch.manual_seed(_SEED + offset)
    return make()


def _unet(**config: Any) -> Any:
    """The small two-level UNet shared by the SD and SDXL builds; `config` adds the family's part."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=32,
        **config,
    )


def _build_tiny_sd() -> Any:
    from diffusers import StableDiffusionPipeline

    tokenizer = _clip_tokenizer()
    return StableDiffusionPipeline(
        unet=_seeded(0, lambda: _unet(cross_attention_dim=32, attention_head_dim=8)),
        vae=_seeded(1, lambda: _vae(latent_channels=4, flow=False)),
        text_encoder=_seeded(2, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=False)),
        tokenizer=tokenizer,
        scheduler=_ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_tiny_sdxl() -> Any:
    from diffusers import StableDiffusionXLPipeline

    tokenizer = _clip_tokenizer()
    sdxl_unet = {
        "attention_head_dim": (2, 4),
        "use_linear_projection": True,
        "addition_embed_type": "text_time",
        "addition_time_embed_dim": 8,
        "transformer_layers_per_block": (1, 1),
        # six time ids of 8 each, plus the pooled projection of the second text encoder (32)
        "projection_class_embeddings_input_dim": 6 * 8 + 32,
        "cross_attention_dim": 64,  # both text encoders' hidden states, concatenated (32 + 32)
    }
    return StableDiffusionXLPipeline(
        unet=_seeded(0, lambda: _unet(**sdxl_unet)),
        vae=_seeded(1, lambda: _vae(latent_channels=4, flow=False)),
        text_encoder=_seeded(2, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=False)),
        text_encoder_2=_seeded(3, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=True)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        scheduler=_ddim_scheduler(),
        add_watermarker=False,
    )


def _build_tiny_sd3() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tokenizer = _clip_tokenizer()
    tokenizer_3 = _t5_tokenizer()
    transformer = _seeded(
        0,
        lambda: SD3Transformer2DModel(
            sample_size=32,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            num_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=64,  # T5 width; the two CLIP widths (32 + 32) are padded up to it
            caption_projection_dim=32,
            pooled_projection_dim=64,  # both CLIP projections, concatenated
            pos_embed_max_size=96,
        ),
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_seeded(1, lambda: _vae(latent_channels=16, flow=True)),
        text_encoder=_seeded(2, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=True)),
        text_encoder_2=_seeded(3, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=True)),
        text_encoder_3=_seeded(4, lambda: _t5_text_encoder(len(tokenizer_3), 64)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        tokenizer_3=tokenizer_3,
    )


def _build_tiny_flux() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    tokenizer = _clip_tokenizer()
    tokenizer_2 = _t5_tokenizer()
    transformer = _seeded(
        0,
        lambda: FluxTransformer2DModel(
            patch_size=1,
            in_channels=16 * 4,  # packed latents: 16 channels times a 2x2 patch
            num_layers=1,
            num_single_layers=1,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=64,  # T5 width
            pooled_projection_dim=32,  # CLIP's pooled output
            guidance_embeds=False,
            axes_dims_rope=(4, 4, 8),
        ),
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_seeded(1, lambda: _vae(latent_channels=16, flow=True)),
        text_encoder=_seeded(2, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=False)),
        text_encoder_2=_seeded(3, lambda: _t5_text_encoder(len(tokenizer_2), 64)),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
    )


def _kandinsky_unet() -> Any:
    """Kandinsky 2.2's decoder UNet shape: conditioned on the prior's image embedding only (no text),
    with a learned variance (out_channels twice in_channels)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=8,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        addition_embed_type="image",
        encoder_hid_dim=32,  # the prior's image embedding
        encoder_hid_dim_type="image_proj",
        cross_attention_dim=32,
        attention_head_dim=4,
        resnet_time_scale_shift="scale_shift",
        class_embed_type=None,
        norm_num_groups=32,
    )


def _movq() -> Any:
    """Kandinsky's MoVQ autoencoder, four levels so that latents are H/8 like the real one."""
    from diffusers import VQModel

    movq: Any = VQModel(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
        up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
        # The spatial norm of the decoder groups by 32 whatever `norm_num_groups` says.
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        norm_num_groups=32,
        norm_type="spatial",
        latent_channels=4,
        num_vq_embeddings=12,
        vq_embed_dim=4,
    )
    _soften(movq.decoder.conv_out)
    return movq


def _soften(conv_out: Any) -> None:
    """Scale an untrained output layer so that the twin's images have about the contrast of the SD
    twin's (std ~0.15) rather than full-range noise, in which the pixel watermark has no room to be
    read back (as it has in real images)."""
    import torch

    with torch.no_grad():
        conv_out.weight.mul_(0.4)
        conv_out.bias.mul_(0.4)


def _prior() -> Any:
    import torch
    from diffusers import PriorTransformer

    prior: Any = PriorTransformer(
        num_attention_heads=2, attention_head_dim=16, embedding_dim=32, num_layers=1
    )
    # The prior un-normalises its output with the CLIP image statistics it was trained with; they
    # start at zero, which would make every image embedding zero.
    with torch.no_grad():
        prior.clip_std.fill_(1.0)
    return prior


def _clip_image_encoder() -> Any:
    """Only used for the prior's zero embedding (an all-black image), so small images suffice."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            projection_dim=32,
            num_attention_heads=4,
            num_hidden_layers=1,
            image_size=28,
            patch_size=14,
        )
    )


def _build_tiny_kandinsky() -> Any:
    """Kandinsky 2.2 (unCLIP) in the layout of diffusers' combined pipeline: the prior's parts as
    `prior_*`, the decoder's as `unet`, `scheduler`, `movq`; one folder for both stages."""
    from diffusers import DDIMScheduler, KandinskyV22CombinedPipeline, UnCLIPScheduler
    from transformers import CLIPImageProcessor

    tokenizer = _clip_tokenizer()
    # The real decoder samples with DDPM; DDIM on the same schedule is deterministic, so that the
    # latent mark in the decoder's initial noise can be read back by inversion.
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    return KandinskyV22CombinedPipeline(
        unet=_seeded(0, _kandinsky_unet),
        scheduler=scheduler,
        movq=_seeded(1, _movq),
        prior_prior=_seeded(2, _prior),
        prior_image_encoder=_seeded(3, _clip_image_encoder),
        prior_text_encoder=_seeded(4, lambda: _clip_text_encoder(len(tokenizer), 32, with_projection=True)),
        prior_tokenizer=tokenizer,
        prior_scheduler=UnCLIPScheduler(
            variance_type="fixed_small_log",
            prediction_type="sample",
            num_train_timesteps=1000,
            clip_sample=True,
            clip_sample_range=10.0,
        ),
        prior_image_processor=CLIPImageProcessor(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
        ),
    )


def _if_unet(stage: int) -> Any:
    """DeepFloyd IF's pixel-space UNets: text through `encoder_hid_dim` (T5 width), a learned variance
    (out_channels 6); stage II also takes the upscaled stage I image (in_channels 6) and its noise level."""
    from diffusers import UNet2DConditionModel

    config: dict[str, Any] = {
        "layers_per_block": 1,
        "block_out_channels": (32, 64),
        "down_block_types": ("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        "mid_block_type": "UNetMidBlock2DSimpleCrossAttn",
        "up_block_types": ("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        "out_channels": 6,
        "cross_attention_dim": 32,
        "encoder_hid_dim": 32,
        "attention_head_dim": 8,
        "addition_embed_type": "text",
        "addition_embed_type_num_heads": 2,
        "cross_attention_norm": "group_norm",
        "resnet_time_scale_shift": "scale_shift",
        "act_fn": "gelu",
    }
    if stage == 1:
        return UNet2DConditionModel(sample_size=64, in_channels=3, **config)
    # Stage II works at the full size: attention only at its lowest level (1/8), as the real one keeps
    # attention off its high resolutions (attention over 256 x 256 pixels takes minutes on a CPU).
    config.update(
        block_out_channels=(16, 16, 32, 32),
        down_block_types=("ResnetDownsampleBlock2D",) * 3 + ("SimpleCrossAttnDownBlock2D",),
        up_block_types=("SimpleCrossAttnUpBlock2D",) + ("ResnetUpsampleBlock2D",) * 3,
        norm_num_groups=8,
    )
    unet: Any = UNet2DConditionModel(
        sample_size=256,  # stage II's output size: the cascade's default
        in_channels=6,
        class_embed_type="timestep",
        mid_block_scale_factor=1.414,
        time_embedding_act_fn="gelu",
        time_embedding_dim=32,
        **config,
    )
    _soften(unet.conv_out)
    return unet


def _if_scheduler(stage: int) -> Any:
    """IF's DDPM with a learned variance range. Stage II of the twin predicts the image itself rather
    than the noise (the real one predicts noise): with untrained weights a noise prediction, clipped
    by IF's thresholding, makes every pixel black or white, which no pixel watermark survives."""
    from diffusers import DDPMScheduler

    if stage == 1:
        return DDPMScheduler(
            num_train_timesteps=1000,
            beta_schedule="squaredcos_cap_v2",
            thresholding=True,
            dynamic_thresholding_ratio=0.95,
            sample_max_value=1.0,
            prediction_type="epsilon",
            variance_type="learned_range",
        )
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="sample",
        variance_type="learned_range",
    )


def _build_tiny_if() -> Any:
    """DeepFloyd IF's stage I and stage II, saved as `stage_1/` and `stage_2/` (`families.IFCascadePipeline`).

    IF's own safety checker, feature extractor and watermarker are None in both stages (genguard's
    checks and pixel mark replace them); stage II has no text encoder (the cascade encodes the prompt
    once, with stage I's).
    """
    from diffusers import DDPMScheduler, IFPipeline, IFSuperResolutionPipeline

    from genguard.pipeline.families import IFCascadePipeline

    tokenizer = _t5_tokenizer()
    stage_1 = IFPipeline(
        tokenizer=tokenizer,
        text_encoder=_seeded(0, lambda: _t5_text_encoder(len(tokenizer), 32)),
        unet=_seeded(1, lambda: _if_unet(1)),
        scheduler=_if_scheduler(1),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    stage_2 = IFSuperResolutionPipeline(
        tokenizer=None,
        text_encoder=None,
        unet=_seeded(2, lambda: _if_unet(2)),
        scheduler=_if_scheduler(2),
        image_noising_scheduler=DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
        safety_checker=None,
        feature_extractor=None,
        watermarker=None,
        requires_safety_checker=False,
    )
    return IFCascadePipeline(stage_1, stage_2)


_BUILDERS: dict[str, Callable[[], Any]] = {
    "tiny-sd": _build_tiny_sd,
    "tiny-sdxl": _build_tiny_sdxl,
    "tiny-sd3": _build_tiny_sd3,
    "tiny-flux": _build_tiny_flux,
    "tiny-kandinsky": _build_tiny_kandinsky,
    "tiny-if": _build_tiny_if,
}

EMBEDDED_MODELS: tuple[str, ...] = tuple(EMBEDDED_PREFIX + name for name in _BUILDERS)


def is_embedded(model: str) -> bool:
    return model.startswith(EMBEDDED_PREFIX)


def embedded_dir(model: str) -> Path:
    """Where the embedded model `model` (e.g. "embedded:tiny-sd") lives once built."""
    name = _embedded_name(model)
    return cache_dir() / "embedded" / f"{name}-v{BUILD_VERSION}"


def _embedded_name(model: str) -> str:
    name = model.removeprefix(EMBEDDED_PREFIX)
    if not is_embedded(model) or name not in _BUILDERS:
        raise BadInputError(
            f"model: expected one of {', '.join(EMBEDDED_MODELS)} for an embedded model, found {model!r}"
        )
    return name


def check_model_name(model: str) -> None:
    """Refuse, without loading anything, a model that cannot exist: an unknown `embedded:` name
    (BadInputError listing the known ones) or a local path that is not there. A name that is not
    path-like (`org/name`) is a hub id: only loading can tell whether it exists."""
    if not isinstance(model, str) or not model.strip():
        raise BadInputError(f"model: expected a hub id, a local path or an embedded name, found {model!r}")
    if is_embedded(model):
        _embedded_name(model)
        return
    if looks_like_path(model) and not Path(model).expanduser().exists():
        raise BadInputError(f"model: expected an existing local folder, found no file or folder at {model!r}")


def looks_like_path(model: str) -> bool:
    """A local path rather than a hub id (`org/name`): absolute, relative with ./ or ../, ~, a
    backslash, more than one slash, or something that exists here."""
    return model.startswith(("/", ".", "~")) or "\\" in model or model.count("/") > 1 or Path(model).exists()


def resolve_model_source(model: str) -> str:
    """A local directory for an `embedded:*` name (built on first use), else `model` unchanged.

    An unknown embedded name or a missing local path is BadInputError; a hub id or existing path is
    returned as given: `DiffusionPipeline.from_pretrained` reports its own errors for those, and the
    caller maps them to ModelLoadError.
    """
    check_model_name(model)
    if not is_embedded(model):
        return model
    target = embedded_dir(model)
    if not target.is_dir():
        _build(_embedded_name(model), target)
    return str(target)


def _build(name: str, target: Path) -> None:
    """Build into a temporary sibling, then rename: a finished directory appears atomically.

    Concurrent builders each write their own temporary folder; the first rename wins and the
    others discard their copy (the content is identical: fixed seeds).
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        import torch

        # Building must not depend on (or change) the caller's global RNG state.
        with torch.random.fork_rng(devices=[]):
            pipe = _BUILDERS[name]()
            pipe.save_pretrained(staging, safe_serialization=True)
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the models are not secret
        try:
            os.rename(staging, target)
        except OSError:
            if not target.is_dir():
                raise
            # Another process finished first; its copy is as good as ours.
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, ModelLoadError):
            raise
        raise ModelLoadError(f"embedded model {name!r}: build into {target} failed: {error}") from error
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
