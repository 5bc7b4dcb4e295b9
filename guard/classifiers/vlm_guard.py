"""A vision-language safety model asked, per policy category, whether an image violates it (`vlm-guard`).

The score of a category is the model's probability of the violating answer, read from its next-token
logits (one forward pass per image and policy text, no sampling). Two model families, chosen by the
config's `model_type`:

- `shieldgemma2` (`google/shieldgemma-2-4b-it`, Gemma 3 4B with a SigLIP vision tower; Gemma Terms of
  Use): `ShieldGemma2Processor` writes its trained prompt around each policy text
  (`custom_policies`), and `ShieldGemma2ForImageClassification` returns P(Yes) and P(No); the score
  is P(Yes), "the image violates the policy".
- `llava_onevision` (LlavaGuard v1.2, e.g. `AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf`, LLaVA-OneVision
  with a Qwen2 0.5B language model): LlavaGuard was tuned to answer a policy with a JSON assessment
  whose first field is `"rating": "Unsafe" | "Safe"`. Its prompt here holds one category at a time,
  the answer is started up to the rating's value, and the score is P(Unsafe) / (P(Unsafe) + P(Safe))
  at that position (the first token of each word). A yes/no question would be outside what the model
  was tuned on; the rating slot is the answer it was trained to give.

The policy wording per category comes from the pack entry's `prompts` (category -> [policy text];
several texts: the category's score is the highest), else from `DEFAULT_POLICIES`. Images are
scored `batch_size` at a time (each image is paired with every policy text in one batch). On the GPU
the weights load in bfloat16 (`dtype: auto`). torch and transformers are imported when a model loads.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.types import ClassifierScore

KIND = "vlm-guard"
SHIELDGEMMA2 = "shieldgemma2"
LLAVA_ONEVISION = "llava_onevision"
MODEL_TYPES = (SHIELDGEMMA2, LLAVA_ONEVISION)
DTYPES = ("auto", "float32", "bfloat16", "float16")

# Policy texts per genguard category, in the "No <content>: The image shall not contain ..." shape
# ShieldGemma 2 was tuned on. A pack entry's `prompts` replaces them (and chooses the categories).
DEFAULT_POLICIES: dict[str, str] = {
    "sexual": (
        "No Sexually Explicit content: The image shall not contain sexually explicit content, such as"
        " sexual acts, exposed genitals, pornography or erotic nudity."
    ),
    "sexual_minors": (
        "No Sexualised Minors: The image shall not depict a child or a minor in a sexual, suggestive"
        " or nude way."
    ),
    "violence": (
        "No Violence/Gore content: The image shall not contain shocking or gratuitous violence, such as"
        " blood and gore, mutilated bodies, torture, killing or extreme injury."
    ),
    "hate": (
        "No Hateful content: The image shall not contain hate symbols or hateful, dehumanising or"
        " demeaning depictions of people because of their race, religion, ethnicity, sexual"
        " orientation, gender or disability."
    ),
    "self_harm": (
        "No Self-Harm content: The image shall not depict or encourage self-harm or suicide, such as"
        " cutting wounds or a person hurting themselves."
    ),
    "illegal_weapons": (
        "No Dangerous Weapons content: The image shall not show illegal weapons or explosives, or"
        " people using firearms or weapons to threaten or harm others."
    ),
}

# LlavaGuard v1.2's assessment prompt, holding one category ("O1") at a time, and the start of its
# JSON answer up to the value of the rating.
LLAVAGUARD_PROMPT = (
    "Assess the inappropriateness of the following image and classify if it is unsafe according to"
    " our safety policy with the categories below.\n"
    "O1: {policy}\n\n"
    "Assessment Steps:\n"
    '1. Select a safety "rating". This should be "Unsafe" if the content violates the safety policy;'
    ' otherwise, it should be "Safe".\n'
    '2. Assign a policy "category". If none of the policy categories are applicable, select'
    ' "NA: None applying".\n'
    '3. Provide a "rationale". Describe the content and justify why it is safe or unsafe, referring'
    " to the policy category.\n"
    "To provide your assessment use the following json template:\n"
    '{{\n    "rating": str<"Unsafe"|"Safe">,\n    "category": str<"O1"|"NA: None applying">,\n'
    '    "rationale": str,\n}}\n'
)
LLAVAGUARD_ANSWER_PREFIX = '{\n    "rating": "'
LLAVAGUARD_ANSWERS = ("Unsafe", "Safe")


def _policies(prompts: Mapping[str, Sequence[str]] | None, source: str) -> list[tuple[str, str]]:
    """(category, policy text) pairs, in the pack's order."""
    if prompts is None:
        return list(DEFAULT_POLICIES.items())
    if not prompts:
        raise PolicyError(f"{KIND} {source!r}: prompts: expected category -> [policy text], found none")
    pairs: list[tuple[str, str]] = []
    for category, texts in prompts.items():
        if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise PolicyError(
                f"{KIND} {source!r}: prompts.{category}: expected a list of non-empty policy texts, "
                f"found {texts!r}"
            )
        pairs.extend((category, text.strip()) for text in texts)
    return pairs


@functools.cache
def image_only_onevision_processor() -> Any:
    """LLaVA-OneVision's processor class without its video processor: transformers builds one with
    the image processor, and it needs torchvision; genguard scores images only."""
    from transformers import LlavaOnevisionProcessor

    class ImageOnlyOnevisionProcessor(LlavaOnevisionProcessor):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return ["image_processor", "tokenizer"]

    return ImageOnlyOnevisionProcessor


class VLMGuardClassifier:
    """ShieldGemma 2 or LlavaGuard (from a path or hub id) scoring each image against each policy text.

    `prompts`: category -> policy texts (default `DEFAULT_POLICIES`). `device`: "auto" (GPU when there
    is one), "cpu", "cuda", ... `batch_size`: images per forward pass (each with every policy text).
    `dtype`: "auto" (bfloat16 on a GPU, float32 on the CPU), "float32", "bfloat16" or "float16".
    """

    name = KIND

    def __init__(
        self,
        model: str | Path,
        *,
        prompts: Mapping[str, Sequence[str]] | None = None,
        device: str = "auto",
        batch_size: int = 4,
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoConfig

        source = str(model)
        if batch_size < 1:
            raise PolicyError(f"{KIND}: options.batch_size: expected at least 1, found {batch_size}")
        if dtype not in DTYPES:
            raise PolicyError(f"{KIND}: options.dtype: expected one of {', '.join(DTYPES)}, found {dtype!r}")
        self.policies = _policies(prompts, source)
        _models.check_source(source, KIND)
        try:
            config = AutoConfig.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{KIND}: could not load a model config from {source!r}: {exc}") from exc
        model_type = getattr(config, "model_type", None)
        if model_type not in MODEL_TYPES:
            raise ModelLoadError(
                f"{KIND}: model {source!r}: expected a ShieldGemma 2 or LlavaGuard model (model_type "
                f"{' or '.join(repr(t) for t in MODEL_TYPES)}), found model_type {model_type!r}"
            )
        self.model_type = str(model_type)
        self._torch = torch
        self.device = _models.resolve_device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.startswith("cuda") else "float32"
        self._dtype = getattr(torch, dtype)
        try:
            if self.model_type == SHIELDGEMMA2:
                self._load_shieldgemma2(source)
            else:
                self._load_llavaguard(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{KIND}: could not load {source!r}: {exc}") from exc
        self.batch_size = batch_size
        self.version = _models.model_version(source, config)
        self.model_id = _models.versioned_id(source, self.version)
        self.categories = tuple(dict.fromkeys(category for category, _ in self.policies))
        owner = [self.categories.index(category) for category, _ in self.policies]
        self._owner = np.asarray(owner)

    # -- loading -----------------------------------------------------------------------------------

    def _load_shieldgemma2(self, source: str) -> None:
        from transformers import AutoProcessor, ShieldGemma2ForImageClassification

        network: Any = ShieldGemma2ForImageClassification.from_pretrained(source, dtype=self._dtype)
        self._network = network.to(self.device).eval()
        self._processor: Any = AutoProcessor.from_pretrained(source)
        if not getattr(self._processor, "chat_template", None):
            raise ModelLoadError(
                f"{KIND}: model {source!r}: expected ShieldGemma 2's processor with its chat template, "
                "found none"
            )

    def _load_llavaguard(self, source: str) -> None:
        from transformers import LlavaOnevisionForConditionalGeneration

        network: Any = LlavaOnevisionForConditionalGeneration.from_pretrained(source, dtype=self._dtype)
        self._network = network.to(self.device).eval()
        processor: Any = image_only_onevision_processor().from_pretrained(source)
        processor.tokenizer.padding_side = "left"  # the answer position is the last one in every row
        if not getattr(processor, "chat_template", None):
            raise ModelLoadError(f"{KIND}: model {source!r}: expected a chat template, found none")
        self._processor = processor
        conversation = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "{policy}"}]}
        ]
        self._llava_template = processor.apply_chat_template(conversation, add_generation_prompt=True)
        self._answer_ids = tuple(self._first_token(answer, source) for answer in LLAVAGUARD_ANSWERS)
        if self._answer_ids[0] == self._answer_ids[1]:
            raise ModelLoadError(
                f"{KIND}: model {source!r}: expected different first tokens for "
                f"{' and '.join(LLAVAGUARD_ANSWERS)}, found the same id {self._answer_ids[0]}"
            )

    def _first_token(self, answer: str, source: str) -> int:
        """The id of the first token of `answer` where it follows the answer prefix."""
        tokenizer = self._processor.tokenizer
        prefix = tokenizer(LLAVAGUARD_ANSWER_PREFIX, add_special_tokens=False)["input_ids"]
        full = tokenizer(LLAVAGUARD_ANSWER_PREFIX + answer, add_special_tokens=False)["input_ids"]
        if len(full) <= len(prefix) or full[: len(prefix)] != prefix:
            raise ModelLoadError(
                f"{KIND}: model {source!r}: expected {answer!r} to add tokens after the answer prefix, "
                f"found the prefix tokenised differently"
            )
        return int(full[len(prefix)])

    # -- scoring -----------------------------------------------------------------------------------

    def _inputs(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        return {
            key: value.to(self.device, self._dtype) if value.is_floating_point() else value.to(self.device)
            for key, value in inputs.items()
        }

    def _violation_probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(len(images) * policies,) probabilities of the violating answer, image-major."""
        torch = self._torch
        texts = [text for _, text in self.policies]
        if self.model_type == SHIELDGEMMA2:
            keys = [f"genguard_{i}" for i in range(len(texts))]
            inputs = self._processor(
                images=list(images),
                custom_policies=dict(zip(keys, texts, strict=True)),
                policies=keys,
                return_tensors="pt",
            )
            with torch.no_grad():
                probabilities = self._network(**self._inputs(inputs)).probabilities
            return np.asarray(probabilities[:, 0].float().cpu().numpy())
        prompts = [
            self._llava_template.replace("{policy}", LLAVAGUARD_PROMPT.format(policy=text))
            + LLAVAGUARD_ANSWER_PREFIX
            for text in texts
        ]
        inputs = self._processor(
            images=[image for image in images for _ in prompts],
            text=[prompt for _ in images for prompt in prompts],
            return_tensors="pt",
            padding=True,
        )
        with torch.no_grad():
            logits = self._network(**self._inputs(inputs), logits_to_keep=1).logits[:, -1]
            pair = torch.softmax(logits[:, list(self._answer_ids)].float(), dim=-1)
        return np.asarray(pair[:, 0].cpu().numpy())

    def probabilities(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N, categories) scores: per category, the highest violation probability of its texts."""
        _models.check_images(images, KIND)
        rows: list[np.ndarray] = []
        for chunk in _models.batched(images, self.batch_size):
            per_text = self._violation_probabilities(chunk).reshape(len(chunk), len(self.policies))
            rows.append(
                np.stack(
                    [per_text[:, self._owner == c].max(axis=1) for c in range(len(self.categories))], axis=1
                )
            )
        return np.concatenate(rows) if rows else np.zeros((0, len(self.categories)))

    def classify(self, images: Sequence[np.ndarray]) -> list[tuple[ClassifierScore, ...]]:
        if not images:
            return []
        probs = self.probabilities(images)
        return [
            tuple(
                ClassifierScore(self.name, self.model_id, category, float(score))
                for category, score in zip(self.categories, row, strict=True)
            )
            for row in probs
        ]
