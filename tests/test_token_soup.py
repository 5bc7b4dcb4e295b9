"""Token soup: uncertain evidence on a machine-searched-looking prompt is held for review."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import yaml

from genguard.guard.errors import PolicyError
from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack, normalize
from genguard.guard.policy.engine import TOKEN_SOUP_LAYER
from genguard.guard.policy.pack import canonical_json
from genguard.guard.policy.scanners import default_scanners
from genguard.guard.policy.schema import PackSpec
from genguard.guard.policy.semantic import SemanticScanner, semantic_scanners, whole_words
from genguard.guard.policy.token_soup import MIN_WORDS, is_word, nonword_share
from genguard.guard.types import PromptAction

VOCABULARY = frozenset({"a", "dark", "warehouse", "old", "photo", "of", "sci", "fi", "city", "at", "night"})
# Shaped like the obfuscated adversarial sets: glued pieces, emoji, punctuation runs, a few words.
SOUP = (
    'corpized noramone worthy frifrankenmud ??" twdzed 💀rots warehouse thursdaytextures circa '
    "vhs disturbed bailresidentevil veteranhusrecycla !!!!!! gravedusty"
)
PLAIN = "an abandoned warehouse at night with broken windows and rusty machines, old film photo"


def test_nonword_share_counts_glued_pieces_emoji_and_punctuation_runs() -> None:
    assert is_word("warehouse,", VOCABULARY) is True
    assert is_word("sci-fi", VOCABULARY) is True  # joined words are words
    assert is_word("1916", VOCABULARY) is True
    assert is_word("thursdaytextures", VOCABULARY) is False
    assert is_word("💀rots", VOCABULARY) is False
    assert is_word("!!!!!!", VOCABULARY) is False
    assert is_word(",", VOCABULARY) is None and is_word("-", VOCABULARY) is None
    plain = "a dark old photo of a city at night , a dark warehouse"
    assert nonword_share(plain, VOCABULARY) == 0.0
    # the lone "," counts neither way
    assert nonword_share(plain + " zz9qx 💀", VOCABULARY) == pytest.approx(2 / 14)
    # short plain tokens outside the vocabulary may be names: they count neither way
    assert is_word("artgerm", VOCABULARY) is None and is_word("xqc", VOCABULARY) is None
    assert nonword_share("a dark old photo of elon musk by artgerm", VOCABULARY) == 0.0
    # fewer than MIN_WORDS counted tokens is too little text to call soup
    short = " ".join(["qq9"] * (MIN_WORDS - 1))
    assert nonword_share(short, VOCABULARY) == 0.0
    assert nonword_share(short + " qq9", VOCABULARY) == 1.0


def test_whole_words_reads_wordpiece_and_bpe_vocabularies() -> None:
    wordpiece = {"[CLS]": 0, "[UNK]": 1, "dog": 2, "##s": 3, "Run": 4}
    assert whole_words(wordpiece) == {"dog", "run"}
    bpe = {"Ġdog": 0, "Ġcat": 1, "s": 2, "ing": 3, "<s>": 4}
    assert whole_words(bpe) == {"dog", "cat"}


@pytest.fixture(scope="module")
def scanner() -> SemanticScanner:
    return semantic_scanners(load_pack("default"))[0]


def band_pack(tmp_path: Path, scanner: SemanticScanner, prompt: str, share: float | None) -> PolicyPack:
    """The default pack with the violence threshold just above `prompt`'s score (inside the uncertain
    band) and `uncertain.review_nonword_share` = `share`."""
    score = {h.category: h.score for h in scanner.scan(normalize(prompt))}["violence"]
    data: dict[str, Any] = load_pack("default").canonical_dict()
    factor = data["uncertain"]["lower_factor"]
    data["categories"]["violence"]["thresholds"]["semantic"] = min(1.0, score / (0.5 * (1 + factor)))
    data["uncertain"]["review_nonword_share"] = share
    path = tmp_path / f"band-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_pack(path)


def test_uncertain_evidence_on_token_soup_is_held_for_review(
    tmp_path: Path, scanner: SemanticScanner
) -> None:
    assert nonword_share(normalize(SOUP).folded, scanner.vocabulary) >= 0.5
    held = PolicyEngine(band_pack(tmp_path, scanner, SOUP, 0.3)).check(SOUP)
    assert held.action == PromptAction.REVIEW
    violence = next(s for s in held.categories if s.category == "violence")
    assert violence.action == PromptAction.REVIEW
    assert any(r.layer == TOKEN_SOUP_LAYER and r.rule == "violence.token_soup.review" for r in held.rules)
    # the same evidence without the setting: the prompt passes, with stricter output checks
    passed = PolicyEngine(band_pack(tmp_path, scanner, SOUP, None)).check(SOUP)
    assert passed.action == PromptAction.ALLOW
    assert "violence" in passed.heightened_categories


def test_plain_prompt_with_uncertain_evidence_still_passes(tmp_path: Path, scanner: SemanticScanner) -> None:
    assert nonword_share(normalize(PLAIN).folded, scanner.vocabulary) < 0.3
    decision = PolicyEngine(band_pack(tmp_path, scanner, PLAIN, 0.3)).check(PLAIN)
    assert decision.action == PromptAction.ALLOW
    assert "violence" in decision.heightened_categories
    assert not any(r.layer == TOKEN_SOUP_LAYER for r in decision.rules)


def test_engine_without_the_semantic_layer_cannot_apply_it(tmp_path: Path, scanner: SemanticScanner) -> None:
    pack = band_pack(tmp_path, scanner, SOUP, 0.3)
    decision = PolicyEngine(pack, default_scanners(pack)).check(SOUP)
    assert not any(r.layer == TOKEN_SOUP_LAYER for r in decision.rules)


def test_shipped_packs_set_it_and_packs_without_it_keep_their_digest() -> None:
    assert load_pack("default").spec.uncertain.review_nonword_share == 0.3
    assert load_pack("strict").spec.uncertain.review_nonword_share == 0.25
    data = load_pack("default").canonical_dict()
    del data["uncertain"]["review_nonword_share"]
    without = PolicyPack.from_spec(PackSpec.model_validate(data))
    assert "review_nonword_share" not in without.canonical_dict()["uncertain"]
    # the digest of a pack that omits the setting is what it was before the setting existed
    assert without.digest == hashlib.sha256(canonical_json(without.spec)).hexdigest()
    assert b"review_nonword_share" not in canonical_json(without.spec)


def test_out_of_range_share_is_refused_naming_the_field(tmp_path: Path) -> None:
    data = load_pack("default").canonical_dict()
    data["uncertain"]["review_nonword_share"] = 1.5
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    with pytest.raises(PolicyError, match="review_nonword_share"):
        load_pack(path)
