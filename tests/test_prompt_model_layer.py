"""The prompt model layer: a tiny BERT text classifier (built here, never downloaded) as a scanner.

The classifier head's weights are zeroed and its bias set to log-probabilities, so the model gives
chosen label probabilities whatever the prompt; the engine's thresholds and uncertain band are then
tested against known scores. A second model keeps random weights for the batching test.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.policy import PolicyEngine, PolicyPack, TextClassifierScanner, load_pack, normalize
from genguard.guard.policy.model_layer import model_scanners
from genguard.guard.types import PromptAction, RuleHit

torch.set_num_threads(1)

LABELS = ("safe", "nsfw", "gore")
LABEL_MAP = {"nsfw": "sexual", "gore": "violence"}
WORDS = ["a", "photo", "of", "cat", "dog", "red", "house", "at", "night", "the", "beach", "woman"]


def build_tiny_bert(
    path: Path, probabilities: Sequence[float] | None = None, *, multi_label: bool = False
) -> Path:
    """A BertForSequenceClassification with a WordPiece tokenizer over a few words.

    With `probabilities`, the head ignores its input: zero weights and bias = log(p), so the softmax
    (or, for multi-label, the sigmoid of logit(p)) gives exactly those probabilities.
    """
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    # The vocabulary as a map: transformers 5's BertTokenizer ignores a `vocab_file` argument.
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        initializer_range=0.5,  # larger than BERT's 0.02, so random scores differ visibly between prompts
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    model = BertForSequenceClassification(config).eval()
    if probabilities is not None:
        if multi_label:
            bias = [math.log(p / (1 - p)) for p in probabilities]
        else:
            bias = [math.log(p) for p in probabilities]
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def pack_with(
    tmp_path: Path, prompt_models: list[dict[str, Any]], *, thresholds: dict[str, float] | None = None
) -> PolicyPack:
    """The default pack (terms inlined) with the given `prompt_models`, loaded from YAML."""
    data = load_pack("default").canonical_dict()
    data["prompt_models"] = prompt_models
    for category, value in (thresholds or {}).items():
        data["categories"][category]["thresholds"]["model"] = value
    path = tmp_path / f"pack-{len(list(tmp_path.glob('pack-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_pack(path)


def model_entry(model: Path | None, labels: dict[str, str] = LABEL_MAP, **options: Any) -> dict[str, Any]:
    return {
        "kind": "text-classification",
        "model": None if model is None else str(model),
        "labels": labels,
        "options": {"device": "cpu", **options},
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny models by name: the probabilities of (safe, nsfw, gore) each one gives."""
    root = tmp_path_factory.mktemp("bert")
    return {
        "nsfw_85": build_tiny_bert(root / "nsfw_85", [0.10, 0.85, 0.05]),
        "nsfw_50": build_tiny_bert(root / "nsfw_50", [0.40, 0.50, 0.10]),
        "nsfw_30": build_tiny_bert(root / "nsfw_30", [0.65, 0.30, 0.05]),
        "multi": build_tiny_bert(root / "multi", [0.20, 0.90, 0.50], multi_label=True),
        "random": build_tiny_bert(root / "random"),
    }


# default pack: thresholds.model 0.7 for sexual and violence; uncertain.lower_factor 0.6 -> band [0.42, 0.7)
@pytest.mark.parametrize(
    ("model", "thresholds", "action", "heightened"),
    [
        ("nsfw_85", {}, PromptAction.BLOCK, ()),  # above the threshold: the category's action
        ("nsfw_50", {}, PromptAction.ALLOW, ("sexual",)),  # in the band: allowed, looked at harder
        ("nsfw_30", {}, PromptAction.ALLOW, ()),  # below the band: no evidence
        ("nsfw_50", {"sexual": 0.45}, PromptAction.BLOCK, ()),  # the pack's threshold decides
        ("nsfw_85", {"sexual": 0.9}, PromptAction.ALLOW, ("sexual",)),
    ],
)
def test_model_scores_decide_through_the_pack_thresholds(
    tmp_path: Path,
    models: dict[str, Path],
    model: str,
    thresholds: dict[str, float],
    action: PromptAction,
    heightened: tuple[str, ...],
) -> None:
    pack = pack_with(tmp_path, [model_entry(models[model])], thresholds=thresholds)
    decision = PolicyEngine(pack).check("a photo of a cat")
    assert decision.action == action
    assert decision.heightened_categories == heightened
    model_hits = [hit for hit in decision.rules if hit.layer == "model"]
    # gore (violence) is 0.05 or 0.10: below the band, never recorded
    assert [hit.rule for hit in model_hits] == ([] if model == "nsfw_30" else ["sexual.model.nsfw"])
    for hit in model_hits:
        assert hit.category == "sexual"
        assert hit.score == pytest.approx({"nsfw_85": 0.85, "nsfw_50": 0.50}[model], abs=1e-5)


def test_scanner_maps_labels_to_categories_and_ignores_unmapped_ones(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    pack = pack_with(tmp_path, [])
    scanner = TextClassifierScanner(pack, models["nsfw_85"], labels=LABEL_MAP, device="cpu")
    hits = scanner.scan(normalize("a red house"))
    assert [(h.category, h.layer, h.rule) for h in hits] == [
        ("sexual", "model", "sexual.model.nsfw"),
        ("violence", "model", "violence.model.gore"),
    ]
    assert [h.score for h in hits] == pytest.approx([0.85, 0.05], abs=1e-5)
    assert scanner.model_id.startswith(f"{models['nsfw_85']}@sha256:")


def test_multi_label_model_uses_a_sigmoid_per_label(tmp_path: Path, models: dict[str, Path]) -> None:
    pack = pack_with(tmp_path, [model_entry(models["multi"])])
    decision = PolicyEngine(pack).check("a dog at night")
    scores = {score.category: score for score in decision.categories}
    assert scores["sexual"].score == pytest.approx(0.90, abs=1e-5)  # softmax could not give 0.9 and 0.5
    assert scores["sexual"].action == PromptAction.BLOCK
    assert scores["violence"].score == pytest.approx(0.50, abs=1e-5)
    assert decision.heightened_categories == ("violence",)


def test_batches_give_the_scores_of_single_prompts(tmp_path: Path, models: dict[str, Path]) -> None:
    pack = pack_with(tmp_path, [])
    scanner = TextClassifierScanner(pack, models["random"], labels=LABEL_MAP, device="cpu", batch_size=2)
    prompts = [normalize(text) for text in ("a cat", "a photo of the red house at night", "dog", "a woman")]
    batched = scanner.scan_many(prompts)
    singles = [scanner.scan(prompt) for prompt in prompts]
    assert len(batched) == len(prompts)
    for many, one in zip(batched, singles, strict=True):
        assert [h.rule for h in many] == [h.rule for h in one]
        assert [h.score for h in many] == pytest.approx([h.score for h in one], abs=1e-5)
    # random weights: different prompts get different scores (padding is masked, not read)
    assert len({round(hits[0].score, 4) for hits in batched}) > 1


def test_a_certain_lexical_block_skips_the_model_layer(tmp_path: Path, models: dict[str, Path]) -> None:
    pack = pack_with(tmp_path, [model_entry(models["nsfw_50"])])
    decision = PolicyEngine(pack).check("a nude woman on the beach")
    assert decision.action == PromptAction.BLOCK
    assert decision.rules and all(hit.layer != "model" for hit in decision.rules)


class _FixedScanner:
    """A scanner giving fixed hits: the uncertain band holds for any layer, not just the model one."""

    cost = 50

    def __init__(self, layer: str, hits: list[RuleHit]) -> None:
        self.layer = layer
        self._hits = hits

    def scan(self, prompt: object) -> list[RuleHit]:
        return self._hits


@pytest.mark.parametrize(
    ("score", "heightened", "recorded"),
    [(0.29, (), False), (0.31, ("hate",), True), (0.49, ("hate",), True), (0.5, (), True)],
)
def test_uncertain_band_applies_to_every_layer(
    score: float, heightened: tuple[str, ...], recorded: bool
) -> None:
    # lexical threshold 0.5 for hate in the default pack: band [0.3, 0.5)
    pack = load_pack("default")
    hit = RuleHit("hate", "lexical", "hate.custom", score)
    decision = PolicyEngine(pack, [_FixedScanner("lexical", [hit])]).check("a photo of a cat")
    assert decision.heightened_categories == heightened
    assert (hit in decision.rules) is recorded
    assert decision.action == (PromptAction.BLOCK if score >= 0.5 else PromptAction.ALLOW)


def test_lower_factor_is_read_from_the_pack(tmp_path: Path) -> None:
    data = load_pack("default").canonical_dict()
    data["uncertain"]["lower_factor"] = 0.9
    path = tmp_path / "narrow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    pack = load_pack(path)
    assert pack.prompt_uncertain_floor("sexual", "model") == pytest.approx(0.63)
    hit = RuleHit("sexual", "model", "sexual.model.x", 0.6)
    assert PolicyEngine(pack, [_FixedScanner("model", [hit])]).check("a cat").heightened_categories == ()


def test_packs_without_configured_models_are_unchanged(tmp_path: Path) -> None:
    default = load_pack("default")
    assert default.spec.prompt_models == []
    assert model_scanners(default) == []
    unconfigured = pack_with(tmp_path, [model_entry(None)])
    assert model_scanners(unconfigured) == []
    # an explicit empty list is the same pack as none at all
    assert pack_with(tmp_path, []).digest == default.digest
    prompts = ["a photo of a cat", "a nude woman on the beach", "art by greg rutkowski, a castle"]
    for engine in (PolicyEngine(default), PolicyEngine(unconfigured)):
        # the shipped packs run the trained semantic layer; no model layer
        assert [s.layer for s in engine.scanners] == ["lexical", "cooccurrence", "semantic"]
    before = [PolicyEngine(default).check(p) for p in prompts]
    after = [PolicyEngine(unconfigured).check(p) for p in prompts]
    for one, other in zip(before, after, strict=True):
        assert (one.action, one.prompt, one.categories, one.rules, one.heightened_categories) == (
            other.action,
            other.prompt,
            other.categories,
            other.rules,
            other.heightened_categories,
        )


def test_missing_model_path_is_a_model_load_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(ModelLoadError, match="no-such-model"):
        PolicyEngine(pack_with(tmp_path, [model_entry(missing)]))


def test_a_model_that_is_not_a_sequence_classifier_is_refused(
    tmp_path: Path, models: dict[str, Path]
) -> None:
    from transformers import BertForMaskedLM

    path = tmp_path / "masked"
    BertForMaskedLM.from_pretrained(models["random"]).save_pretrained(path)
    with pytest.raises(ModelLoadError, match="ForSequenceClassification.*BertForMaskedLM"):
        PolicyEngine(pack_with(tmp_path, [model_entry(path)]))


def test_label_the_model_lacks_is_named(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(
        PolicyError, match=r"labels: expected labels the model has \(gore, nsfw, safe\); found toxic"
    ):
        PolicyEngine(pack_with(tmp_path, [model_entry(models["random"], {"toxic": "hate"})]))


def test_category_the_pack_lacks_is_named(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(PolicyError, match=r"prompt_models\.0\.labels: expected a category .*found 'porn'"):
        pack_with(tmp_path, [model_entry(models["random"], {"nsfw": "porn"})])
    with pytest.raises(PolicyError, match=r"labels\.nsfw: expected a category .*found 'porn'"):
        TextClassifierScanner(load_pack("default"), models["random"], labels={"nsfw": "porn"})


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"labels": {}}, "labels: expected a map from the model's labels to categories, found none"),
        ({"options": {"beam_size": 2}}, "options: expected options among .*found 'beam_size'"),
        ({"options": {"batch_size": "8"}}, "options.batch_size: expected int, found str '8'"),
        ({"options": {"batch_size": 0}}, "options.batch_size: expected at least 1, found 0"),
        ({"options": {"text": "raw"}}, "options.text: expected one of folded, original, found 'raw'"),
    ],
)
def test_bad_entries_are_named(
    tmp_path: Path, models: dict[str, Path], entry: dict[str, Any], message: str
) -> None:
    spec = model_entry(models["random"])
    spec.update(entry)
    with pytest.raises(PolicyError, match=message):
        PolicyEngine(pack_with(tmp_path, [spec]))


def test_schema_refuses_unknown_keys_and_kinds(tmp_path: Path, models: dict[str, Path]) -> None:
    with pytest.raises(PolicyError, match="prompt_models"):
        pack_with(tmp_path, [{**model_entry(models["random"]), "threshold": 0.5}])
    with pytest.raises(PolicyError, match="prompt_models"):
        pack_with(tmp_path, [{**model_entry(models["random"]), "kind": "zero-shot"}])


def test_policy_import_loads_no_torch() -> None:
    code = (
        "import sys, genguard.guard.policy, genguard.guard.policy.model_layer; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; assert not bad, bad"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
