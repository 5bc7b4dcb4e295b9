"""The prompt model layer: any transformers text classifier as a `PromptScanner`.

The pack maps the model's labels to categories (`prompt_models: [{kind: text-classification,
model: ..., labels: {toxic: hate}}]`); each mapped label's probability is one hit, scored against
the category's `thresholds.model` by the engine. Probabilities are a softmax over the labels, or a
sigmoid per label when the model's config says `problem_type: multi_label_classification`.

torch and transformers are imported when a scanner is built, never at module load: a pack that
configures no prompt model never needs them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genguard.guard import models as _models
from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.policy.normalize import NormalizedPrompt
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.schema import PromptModelSpec
from genguard.guard.types import RuleHit

KIND = "text-classification"
LAYER = "model"
# What the model reads: the character-folded prompt (homoglyphs and look-alike tricks undone,
# casefolded) or the prompt as typed (for cased models).
_TEXT_CHOICES = ("folded", "original")
_OPTION_TYPES: dict[str, type] = {"device": str, "batch_size": int, "max_length": int, "text": str}


class TextClassifierScanner:
    """Loads `AutoModelForSequenceClassification` and its tokenizer from a path or hub id.

    `labels`: the model's label -> a category of `pack`. Prompts are scored `batch_size` at a time
    (`scan_many`), truncated to `max_length` tokens. Hit rule ids are "<category>.model.<label>".
    """

    layer = LAYER
    cost = 100  # a forward pass: after the term layers, which may already make a block certain

    def __init__(
        self,
        pack: PolicyPack,
        model: str | Path,
        *,
        labels: Mapping[str, str],
        device: str = "auto",
        batch_size: int = 16,
        max_length: int = 256,
        text: str = "folded",
    ) -> None:
        source = str(model)
        who = f"prompt model {KIND} {source!r}"
        if not labels:
            raise PolicyError(
                f"{who}: labels: expected a map from the model's labels to categories, found none"
            )
        for label, category in labels.items():
            pack.require_category(category, f"{who}: labels.{label}")
        if batch_size < 1:
            raise PolicyError(f"{who}: options.batch_size: expected at least 1, found {batch_size}")
        if max_length < 1:
            raise PolicyError(f"{who}: options.max_length: expected at least 1, found {max_length}")
        if text not in _TEXT_CHOICES:
            raise PolicyError(
                f"{who}: options.text: expected one of {', '.join(_TEXT_CHOICES)}, found {text!r}"
            )
        _models.check_source(source, who)

        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        config = _models.load_task_config(
            source, who, task="a text-classification", suffix="ForSequenceClassification"
        )
        try:
            network: Any = AutoModelForSequenceClassification.from_pretrained(source)
            self._tokenizer: Any = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{who}: could not load: {exc}") from exc
        id2label = _models.check_labels(labels, network.config.id2label, who)
        self._torch = torch
        self.device = _models.resolve_device(device)
        self._network = network.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        self.text = text
        self.multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
        self.version = _models.model_version(source, config)
        self.model_id = _models.versioned_id(source, self.version)
        # (output column, category, rule id) for every mapped label, in the model's label order
        self._columns: tuple[tuple[int, str, str], ...] = tuple(
            (index, labels[label], f"{labels[label]}.{LAYER}.{label}")
            for index, label in sorted(id2label.items())
            if label in labels
        )

    def probabilities(self, texts: Sequence[str]) -> list[list[float]]:
        """Per text, the probability of every label, in the model's label order."""
        torch = self._torch
        rows: list[list[float]] = []
        for chunk in _models.batched(texts, self.batch_size):
            inputs = self._tokenizer(
                list(chunk), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            with torch.no_grad():
                logits = self._network(**inputs.to(self.device)).logits.float()
            probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
            rows.extend(probs.cpu().tolist())
        return rows

    def scan_many(self, prompts: Sequence[NormalizedPrompt]) -> list[list[RuleHit]]:
        """Hits per prompt, in input order: one per mapped label, whatever its probability (the
        engine decides what counts)."""
        texts = [prompt.folded if self.text == "folded" else prompt.original for prompt in prompts]
        return [
            [RuleHit(category, LAYER, rule, row[column]) for column, category, rule in self._columns]
            for row in self.probabilities(texts)
        ]

    def scan(self, prompt: NormalizedPrompt) -> list[RuleHit]:
        return self.scan_many([prompt])[0]


def scanner_from_spec(pack: PolicyPack, spec: PromptModelSpec, index: int = 0) -> TextClassifierScanner:
    """The scanner for one configured `prompt_models` entry; options are checked by name and type."""
    field = f"prompt_models.{index}"
    if spec.model is None:
        raise PolicyError(f"pack {pack.name!r}: field {field}.model: expected a path or hub id, found null")
    options = _models.checked_options(
        spec.options, _OPTION_TYPES, f"pack {pack.name!r}: field {field}.options"
    )
    return TextClassifierScanner(pack, spec.model, labels=spec.labels, **options)


def model_scanners(pack: PolicyPack) -> list[TextClassifierScanner]:
    """Scanners for the pack's configured prompt models; entries with `model: null` are skipped."""
    return [
        scanner_from_spec(pack, spec, index)
        for index, spec in enumerate(pack.spec.prompt_models)
        if spec.model is not None
    ]
