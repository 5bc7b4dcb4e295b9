"""Tiny models built from configs for tests (random weights, a few hundred kB)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


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
    config: Any = _tiny_clip_config(vocab_size=100, bos_token_id=0, eos_token_id=1, pad_token_id=1)
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

    from genguard.pipeline.embedded import _clip_tokenizer

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


# -- vision-language safety models (kind vlm-guard) ---------------------------------------------------

# The word whose presence in a policy text makes the tiny VLM guards answer "yes" / "Unsafe": it is in
# the default violence policy only, so the tiny twins flag violence and no other default category.
VLM_MARKER = "gore"

_SHIELDGEMMA2_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>user\n"
    "{% for c in message['content'] %}{% if c['type'] == 'image' %}<start_of_image>{% endif %}{% endfor %}"
    "You are a policy expert trying to help determine whether a generated or real image is in violation"
    " of the safety policy below.\n\n<BEGIN_SAFETY_POLICY>\n"
    "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "\n</END_SAFETY_POLICY>\n\nDoes the image violate the above policy? Your Answer must start with"
    " 'Yes' or 'No'.<end_of_turn>\n<start_of_turn>model\n{% endfor %}"
)
_QWEN2_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _word_tokenizer(texts: list[str], special: list[str], named: dict[str, str]) -> object:
    """A word-level tokenizer (the `tokenizers` library) over the words of `texts`, with special tokens.

    `named`: the model-specific special tokens a processor looks up by name (image_token, boi_token...).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Whitespace()])
    words = sorted({piece for text in texts for piece, _ in pre.pre_tokenize_str(text)} - set(special))
    vocab = {token: index for index, token in enumerate([*special, *words])}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre
    tokenizer.add_special_tokens(special)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", extra_special_tokens=named)


def _vlm_words() -> list[str]:
    from genguard.guard.classifiers.vlm_guard import (
        DEFAULT_POLICIES,
        LLAVAGUARD_ANSWER_PREFIX,
        LLAVAGUARD_ANSWERS,
        LLAVAGUARD_PROMPT,
    )

    return [
        *DEFAULT_POLICIES.values(),
        LLAVAGUARD_PROMPT,
        LLAVAGUARD_ANSWER_PREFIX,
        *LLAVAGUARD_ANSWERS,
        _SHIELDGEMMA2_TEMPLATE,
        "Yes No user assistant model",
    ]


def _route_marker_to_yes(
    decoder: object, lm_head: object, marker_ids: list[int], yes_id: int, no_id: int
) -> None:
    """Sets the language model's weights so that the answer is "yes" exactly when a marker token is in
    the prompt (anywhere before the answer position), and clearly "no" otherwise.

    Channel 0 of the hidden state carries the marker (only marker embeddings have it), channel 1 is a
    constant (every embedding has it). Attention is made uniform (zero queries and keys), its values
    read channel 0 only, the MLPs are switched off: at the answer position channel 0 is positive when
    a marker is in the prompt and exactly 0 otherwise. The yes row of the LM head is the no row plus
    a large weight on channel 0 and a small negative one on channel 1 ("no" by default).
    """
    import torch

    model: Any = decoder
    head: Any = lm_head
    with torch.no_grad():
        embed = model.embed_tokens.weight
        embed[:, 0] = 0.0
        embed[:, 1] = 1.0
        embed[marker_ids, 0] = 1.0
        for layer in model.layers:
            attention = layer.self_attn
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj):
                projection.weight.zero_()
                if projection.bias is not None:
                    projection.bias.zero_()
            attention.v_proj.weight[0, 0] = 1.0
            attention.o_proj.weight[0, 0] = 1.0
            layer.mlp.down_proj.weight.zero_()
        head.weight[yes_id] = head.weight[no_id]
        head.weight[yes_id, 0] += 200.0
        head.weight[yes_id, 1] -= 1.0


_TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": False,
}
_TINY_SIGLIP = {
    "model_type": "siglip_vision_model",
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
}


def build_tiny_shieldgemma2(path: Path, *, seed: int = 0) -> Path:
    """A ShieldGemma2ForImageClassification (Gemma 3 text, SigLIP vision) from a small config, with a
    ShieldGemma2Processor (word-level tokenizer, a chat template like the hub's), answering "Yes" for
    policy texts holding VLM_MARKER."""
    import torch
    from transformers import ShieldGemma2Config, ShieldGemma2ForImageClassification, ShieldGemma2Processor

    try:
        from transformers import Gemma3ImageProcessorPil as Gemma3ImageProcessor
    except ImportError:
        from transformers import Gemma3ImageProcessor  # type: ignore[assignment]

    special = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    special += ["<start_of_image>", "<end_of_image>", "<image_soft_token>"]
    named = {
        "boi_token": "<start_of_image>",
        "eoi_token": "<end_of_image>",
        "image_token": "<image_soft_token>",
    }
    tokenizer: Any = _word_tokenizer(_vlm_words(), special, named)
    tokenizer.pad_token, tokenizer.eos_token, tokenizer.bos_token = "<pad>", "<eos>", "<bos>"
    ids = tokenizer.get_vocab()
    config = ShieldGemma2Config(
        text_config={
            "model_type": "gemma3_text",
            **_TINY_TEXT,
            "vocab_size": len(ids),
            "head_dim": 16,
            "layer_types": ["full_attention"],
            "pad_token_id": ids["<pad>"],
            "eos_token_id": ids["<eos>"],
            "bos_token_id": ids["<bos>"],
        },
        vision_config=_TINY_SIGLIP,
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        tie_word_embeddings=False,
    )
    config.yes_token_index = ids["Yes"]  # the hub model's are 10784 / 3771 (the class defaults)
    config.no_token_index = ids["No"]
    torch.manual_seed(seed)
    network = ShieldGemma2ForImageClassification(config).eval()
    _route_marker_to_yes(
        network.model.get_decoder(), network.model.lm_head, [ids[VLM_MARKER]], ids["Yes"], ids["No"]
    )
    with torch.no_grad():  # image features carry nothing on the marker channel
        network.model.model.multi_modal_projector.mm_input_projection_weight[:, 0] = 0.0
    network.save_pretrained(path)
    ShieldGemma2Processor(
        image_processor=Gemma3ImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        chat_template=_SHIELDGEMMA2_TEMPLATE,
        image_seq_length=4,
    ).save_pretrained(path)
    return path


def build_tiny_llavaguard(path: Path, *, seed: int = 0) -> Path:
    """A LlavaOnevisionForConditionalGeneration (Qwen2 text, SigLIP vision) from a small config, with its
    processor (word-level tokenizer, a Qwen2-style chat template), answering "Unsafe" at the rating
    for policy texts holding VLM_MARKER."""
    import torch
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from genguard.guard.classifiers.vlm_guard import image_only_onevision_processor

    try:
        from transformers import LlavaOnevisionImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import LlavaOnevisionImageProcessor as ImageProcessor  # type: ignore[assignment]

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>", "<unk>", "\n"]
    tokenizer: Any = _word_tokenizer(
        _vlm_words(), special, {"image_token": "<image>", "video_token": "<video>"}
    )
    tokenizer.pad_token, tokenizer.eos_token = "<|endoftext|>", "<|im_end|>"
    ids = tokenizer.get_vocab()
    config = LlavaOnevisionConfig(
        text_config={"model_type": "qwen2", **_TINY_TEXT, "vocab_size": len(ids)},
        vision_config=_TINY_SIGLIP,
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=[[32, 32]],
        vision_aspect_ratio="anyres_max_1",
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    network = LlavaOnevisionForConditionalGeneration(config).eval()
    _route_marker_to_yes(
        network.model.language_model, network.lm_head, [ids[VLM_MARKER]], ids["Unsafe"], ids["Safe"]
    )
    with torch.no_grad():  # image features carry nothing on the marker channel
        network.model.multi_modal_projector.linear_2.weight[0] = 0.0
        network.model.multi_modal_projector.linear_2.bias[0] = 0.0
        network.model.image_newline[0] = 0.0
    network.save_pretrained(path)
    image_only_onevision_processor()(
        image_processor=ImageProcessor(size={"height": 32, "width": 32}, image_grid_pinpoints=[[32, 32]]),
        tokenizer=tokenizer,
        chat_template=_QWEN2_TEMPLATE,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
    ).save_pretrained(path)
    # Recorded under the class name the hub repositories use.
    config_file = path / "processor_config.json"
    saved = json.loads(config_file.read_text())
    saved["processor_class"] = "LlavaOnevisionProcessor"
    config_file.write_text(json.dumps(saved, indent=2))
    return path
