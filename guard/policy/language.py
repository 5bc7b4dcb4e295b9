"""Which language a prompt is written in, when that is clearly not one the semantic layer reads.

The semantic layer's encoder (all-MiniLM-L6-v2) and its adapter learned English only: on other
languages its scores are noise, and some are high ("eine schwarze Katze schläft auf einem Holzstuhl am
Fenster" read 0.97 violence). The engine therefore counts the layer's evidence on such a prompt as
uncertain only (`semantic.languages` in the pack; guard/policy/engine.py): held for review, never
blocked on a score the layer cannot stand behind.

A prompt is called foreign only on clear signs, since calling an English prompt foreign turns its
blocks into reviews:
- mostly letters of another script (Cyrillic, Greek, Arabic, CJK, ...), at least `MIN_SCRIPT_LETTERS`
  of them: foreign, whatever else;
- in Latin script: at least `MIN_WORDS` words, the language identifier (py3langid, a naive Bayes model
  over byte n-grams, BSD) names another language with probability at least `MIN_PROBABILITY` and
  gives each of the listed languages less than `MAX_LISTED_PROBABILITY`, and fewer than
  `MAX_VOCABULARY_SHARE` of the words are in the encoder's vocabulary. The last two keep most English
  prompts full of names ("by zdzislaw beksinski and kentaro miura") English.

Measured (`python bench/prompt_language.py`): none of 3,000 COCO captions, the 1,632 PartiPrompts or
the 497 adversarial prompts called foreign; 5 of I2P's 4,702 (0.1%: names, keyboard mashing, one really
Italian); 28 of 30 everyday prompts in 17 other languages (bench/foreign_prompts.tsv; missed: a Spanish
and an Italian one whose words the encoder's vocabulary mostly holds). About 0.2-1 ms per call; the
engine calls only when the layer's score reaches a threshold (or token soup would hold the prompt).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Container
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from genguard.guard.errors import PolicyError

MIN_LETTERS = 10  # fewer letters than this is too little text to tell a language by
# ... in Latin script; in another script the script itself tells, and a Chinese or Japanese prompt
# says in 5 characters ("奶奶包饺子") what English says in 20 letters.
MIN_SCRIPT_LETTERS = 4
MIN_WORDS = 3
MIN_PROBABILITY = 0.5
# ... and every language of `languages` less likely than this: an English prompt whose words are
# mostly a Polish name ("a painting of a lighthouse by zdzislaw beksinski") reads Polish 0.53, English 0.19
MAX_LISTED_PROBABILITY = 0.05
MAX_VOCABULARY_SHARE = 0.6
# labels of the identifier that are not languages: no linguistic content, undetermined
_NOT_LANGUAGES = frozenset({"zxx", "und"})
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W\d_]{3,}")


@dataclass(frozen=True)
class Language:
    """A language a prompt was identified as: ISO 639 code and the identifier's probability (1.0 when
    the script alone decided)."""

    code: str
    probability: float


def foreign_language(
    text: str, languages: Collection[str], vocabulary: Container[str] | None
) -> Language | None:
    """The language of `text` when it is clearly none of `languages` (ISO 639 codes), else None.

    `vocabulary`: the encoder's whole words (lower case, accents stripped, as WordPiece's uncased
    vocabulary holds them); None skips the vocabulary condition.
    """
    letters = _LETTER.findall(text)
    other_script = sum(_is_latin(letter) for letter in letters) * 2 < len(letters)
    if len(letters) < (MIN_SCRIPT_LETTERS if other_script else MIN_LETTERS):
        return None
    probabilities = _identify(text)
    code = max(probabilities, key=probabilities.__getitem__)
    probability = probabilities[code]
    if other_script:
        # Another script: the identifier may hesitate between its languages (Russian or
        # Bulgarian), not about whether it is one of the Latin-script `languages`.
        return None if code in languages else Language(code, 1.0)
    if code in languages or code in _NOT_LANGUAGES or probability < MIN_PROBABILITY:
        return None
    if any(probabilities.get(listed, 0.0) >= MAX_LISTED_PROBABILITY for listed in languages):
        return None
    words = _WORD.findall(text)
    if len(words) < MIN_WORDS:
        return None
    if vocabulary is not None:
        known = sum(_fold(word) in vocabulary for word in words)
        if known >= MAX_VOCABULARY_SHARE * len(words):
            return None
    return Language(code, probability)


def _is_latin(letter: str) -> bool:
    return unicodedata.name(letter, "").startswith("LATIN")


def _fold(word: str) -> str:
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _identify(text: str) -> dict[str, float]:
    """Each language's probability for `text`."""
    return {str(code): float(p) for code, p in _identifier().rank(text)}


@lru_cache(maxsize=1)
def _identifier() -> Any:
    try:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier
    except ImportError as error:
        raise PolicyError(
            "semantic.languages: expected the language identifier py3langid to be installed "
            "(pip install 'genguard[semantic]'), found it missing"
        ) from error
    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def check_available() -> None:
    """Fail now, at engine construction, when the identifier is not installed (not on the first
    prompt that needs it). Only imports it: its model (about a second to load) is read on the
    first prompt that needs a language, which most prompts never do."""
    try:
        from py3langid.langid import LanguageIdentifier  # noqa: F401
    except ImportError as error:
        raise PolicyError(
            "semantic.languages: expected the language identifier py3langid to be installed "
            "(pip install 'genguard[semantic]'), found it missing"
        ) from error
