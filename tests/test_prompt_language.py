"""The semantic layer's language gate: prompts clearly in a language the encoder does not read are held
for review on its score, never blocked on it (only heightened, in a language the pack's term rules
read); English prompts, names and all, are untouched."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from genguard.guard.errors import PolicyError
from genguard.guard.policy import PolicyEngine, PolicyPack, load_pack
from genguard.guard.policy import language as language_module
from genguard.guard.policy.engine import LANGUAGE_LAYER
from genguard.guard.policy.language import foreign_language
from genguard.guard.types import PromptAction

GERMAN_CAT = "eine schwarze Katze schläft auf einem Holzstuhl am Fenster, Sonnenlicht, Fotografie"
RUSSIAN_CAT = "черная кошка спит на деревянном стуле у окна"


def pack_with_semantic(tmp_path: Path, default_pack: PolicyPack, **change: Any) -> PolicyPack:
    data = default_pack.canonical_dict()
    semantic = {**data["semantic"], **change}
    data["semantic"] = {k: v for k, v in semantic.items() if v is not None}
    path = tmp_path / f"pack-{len(list(tmp_path.glob('pack-*')))}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return load_pack(path)


@pytest.mark.parametrize(
    ("prompt", "code"),
    [
        (GERMAN_CAT, "de"),
        ("un chat noir dort sur une chaise en bois près de la fenêtre", "fr"),
        ("un perro pequeño corriendo en la playa al atardecer", "es"),
        ("czarny kot śpi na drewnianym krześle przy oknie", "pl"),
    ],
)
def test_latin_script_languages_are_identified(prompt: str, code: str) -> None:
    found = foreign_language(prompt, ("en",), vocabulary=None)
    assert found is not None and found.code == code and found.probability >= language_module.MIN_PROBABILITY


@pytest.mark.parametrize(
    "prompt",
    [
        RUSSIAN_CAT,
        "一只黑猫睡在窗边的木椅上",
        "قطة سوداء نائمة على كرسي خشبي بجانب النافذة",
        "μια μαύρη γάτα κοιμάται",
    ],
)
def test_other_scripts_are_foreign_by_script(prompt: str) -> None:
    found = foreign_language(prompt, ("en",), vocabulary=None)
    assert found is not None and found.code != "en" and found.probability == 1.0


def test_english_short_and_listed_languages_are_not_foreign(default_engine: PolicyEngine) -> None:
    vocabulary = default_engine._vocabulary
    assert vocabulary is not None
    for prompt in (
        "a black cat asleep on a wooden chair by the window, sunlight, photograph",
        "portrait, highly detailed, artstation, 8k, octane render",
        "a painting of a lighthouse by zdzisław beksiński",  # names: the vocabulary keeps it English
        "Katze",  # too little text to tell
    ):
        assert foreign_language(prompt, ("en",), vocabulary) is None, prompt
    assert foreign_language(GERMAN_CAT, ("en", "de"), vocabulary) is None
    assert foreign_language(RUSSIAN_CAT, ("en", "ru"), vocabulary) is None


def test_the_gate_turns_the_semantic_layers_blocks_into_reviews(
    tmp_path: Path, default_pack: PolicyPack
) -> None:
    # Without the gate the English-only layer blocks a cat on a chair, in German and in Russian.
    ungated = PolicyEngine(pack_with_semantic(tmp_path, default_pack, languages=None))
    # A pack whose term rules read no other language holds such a prompt for review.
    gated = PolicyEngine(pack_with_semantic(tmp_path, default_pack, lexical_languages=None))
    for prompt, code in ((GERMAN_CAT, "de"), (RUSSIAN_CAT, "ru")):
        assert ungated.check(prompt).action == PromptAction.BLOCK
        decision = gated.check(prompt)
        assert decision.action == PromptAction.REVIEW, decision
        gate_rules = [r for r in decision.rules if r.layer == LANGUAGE_LAYER]
        assert gate_rules and all(r.rule.endswith(f".{LANGUAGE_LAYER}.{code}.review") for r in gate_rules)
        held = {r.category for r in gate_rules}
        assert held <= set(decision.heightened_categories)  # the output checks still look harder
        assert not [r for r in decision.rules if r.layer == "token_soup"]  # soup measures English only


def test_in_a_language_the_term_rules_read_the_layers_score_is_uncertain(
    tmp_path: Path, default_pack: PolicyPack, default_engine: PolicyEngine
) -> None:
    """The default pack's term rules read German and Russian (`semantic.lexical_languages`): they judged
    the cat harmless, so the layer's score on it only heightens the output checks."""
    assert default_pack.spec.semantic is not None and default_pack.spec.semantic.lexical_languages
    for prompt, code in ((GERMAN_CAT, "de"), (RUSSIAN_CAT, "ru"), ("奶奶在厨房里包饺子", "zh")):
        decision = default_engine.check(prompt)
        assert decision.action == PromptAction.ALLOW, decision
        gate_rules = [r for r in decision.rules if r.layer == LANGUAGE_LAYER]
        assert gate_rules and all(r.rule.endswith(f".{LANGUAGE_LAYER}.{code}.uncertain") for r in gate_rules)
        assert {r.category for r in gate_rules} <= set(decision.heightened_categories)
    # Polish has no term rules in the pack: held for review as before.
    decision = default_engine.check("czarny kot śpi na drewnianym krześle przy oknie, fotografia")
    assert decision.action in (PromptAction.REVIEW, PromptAction.ALLOW)
    assert not [r for r in decision.rules if r.rule.endswith(".uncertain")]
    # A language the pack's rules do not read is refused in the setting, naming the field.
    with pytest.raises(
        PolicyError, match=r"semantic\.lexical_languages\.0: expected a language the pack's term"
    ):
        pack_with_semantic(tmp_path, default_pack, lexical_languages=["pl"])


def test_the_gate_leaves_other_layers_and_english_alone(default_engine: PolicyEngine) -> None:
    # a term rule reads any language: still blocked
    decision = default_engine.check("eine nackte Frau am Strand, nude, Fotografie")
    assert decision.action == PromptAction.BLOCK
    assert any(r.layer == "lexical" and r.category == "sexual" for r in decision.rules)
    # English: the semantic layer still blocks on its own
    decision = default_engine.check("a man holding his freshly severed wrist, blood gushing everywhere")
    assert decision.action == PromptAction.BLOCK
    assert not [r for r in decision.rules if r.layer == LANGUAGE_LAYER]


def test_languages_setting_is_validated_and_digested(tmp_path: Path, default_pack: PolicyPack) -> None:
    for bad in (["English"], []):
        with pytest.raises(PolicyError, match="languages"):
            pack_with_semantic(tmp_path, default_pack, languages=bad)
    without = pack_with_semantic(tmp_path, default_pack, languages=None)
    data = without.canonical_dict()
    assert "languages" not in data["semantic"]  # absent: left out, so older packs keep their digest
    assert without.digest != default_pack.digest
    assert pack_with_semantic(tmp_path, default_pack, languages=["en"]).digest == default_pack.digest


def test_missing_identifier_is_named(monkeypatch: pytest.MonkeyPatch, default_pack: PolicyPack) -> None:
    language_module._identifier.cache_clear()
    monkeypatch.setitem(sys.modules, "py3langid.langid", None)
    try:
        with pytest.raises(PolicyError, match=r"py3langid.*genguard\[semantic\]"):
            PolicyEngine(default_pack)
    finally:
        language_module._identifier.cache_clear()
