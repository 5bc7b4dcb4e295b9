"""Normalisation against obfuscation: each trick maps back to the plain word; benign text stays benign."""

from __future__ import annotations

import pytest

from genguard.guard.policy.normalize import NormalizedPrompt, fold, normalize, squeeze


def words(prompt: NormalizedPrompt) -> set[str]:
    """Every token of every view; squeezed views only contribute squeezed tokens."""
    return {token for view in prompt.views for token in view.tokens}


@pytest.mark.parametrize(
    "obfuscated",
    [
        "n.u.d.e",
        "n u d e",
        "n-u-d-e",
        "n_u_d_e",
        "nu\u200bde",
        "nu\u00adde",
        "nu-de",
        "ＮＵＤＥ",
        "𝐧𝐮𝐝𝐞",
        "nudе",  # Cyrillic e
        "ηude",  # Greek eta
        "NÜDE",
        "n. u. d. e.",
    ],
)
def test_obfuscations_of_a_word_recover_it(obfuscated: str) -> None:
    assert "nude" in words(normalize(f"a {obfuscated} figure"))


@pytest.mark.parametrize(
    ("leet", "word"),
    [
        ("n@k3d", "naked"),
        ("s3x", "sex"),
        ("$ex", "sex"),
        ("p0rn", "porn"),
        ("k1ll", "kill"),
        ("b100d", "blood"),
        ("n4ked!", "naked"),
    ],
)
def test_leetspeak_inside_words_is_decoded(leet: str, word: str) -> None:
    assert word in words(normalize(f"a {leet} scene"))


def test_ambiguous_leet_one_gets_both_readings() -> None:
    tokens = words(normalize("1oli and si1ly"))
    assert {"ioli", "loli"} <= tokens
    assert {"siily", "silly"} <= tokens


def test_repeated_letters_give_a_squeezed_view() -> None:
    prompt = normalize("nuuuuude")
    squeezed = [view for view in prompt.views if view.squeezed]
    assert squeezed and "nude" in squeezed[0].tokens
    assert all(not view.squeezed for view in normalize("a good book").views)  # no triple letters


@pytest.mark.parametrize(
    ("benign", "expected_tokens"),
    [
        ("I.B.M. headquarters", {"i", "b", "m", "ibm", "headquarters"}),
        ("a 3D render", {"a", "3d", "ed", "render"}),
        ("R2-D2 in the desert", {"r2", "d2", "r2d2", "in", "the", "desert"}),
        ("version 1.5 of the app", {"version", "1", "5", "15", "of", "the", "app"}),
    ],
)
def test_benign_text_yields_only_its_own_words(benign: str, expected_tokens: set[str]) -> None:
    # Every token any view produces, so a term list can be checked against them: nothing new appears.
    assert words(normalize(benign)) == expected_tokens


def test_numbers_alone_are_not_leet() -> None:
    prompt = normalize("version 1.5, 300 dpi")
    assert all(not view.name.startswith("leet") for view in prompt.views)


def test_spans_point_back_into_the_original() -> None:
    original = "Ａ ｎ.ｕ.ｄ.ｅ  statue"
    prompt = normalize(original)
    compact = next(view for view in prompt.views if view.name == "compact")
    index = compact.tokens.index("nude")
    start, end = compact.spans[index]
    assert original[start:end] == "ｎ.ｕ.ｄ.ｅ"


def test_fold_maps_every_character_to_its_origin() -> None:
    folded, origin = fold("Straße ﬁne")
    assert folded == "strasse fine"
    assert len(origin) == len(folded)
    assert origin[folded.index("fine")] == "Straße ﬁne".index("ﬁ")


def test_squeeze() -> None:
    assert squeeze("kiiilll") == "kil"
    assert squeeze("abc") == "abc"


def test_views_are_word_bounded_text() -> None:
    for view in normalize("Hello,   world!").views:
        assert view.text.startswith(" ") and view.text.endswith(" ")
        assert "  " not in view.text
