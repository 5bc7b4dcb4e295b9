"""How much of a prompt is not words: the mark of prompts made by a machine search.

Adversarial prompts found by discrete optimisation against a text encoder (the obfuscated sets of
nsfw_erasure_bench; P4D, UnlearnDiff and Ring-A-Bell make them alike) are token soup: glued word
pieces ("frifrankenmudcorden"), emoji, runs of punctuation, scraps of other scripts, with a few real
words that steer the image. People do not write like that. The semantic layer reads such a prompt
with less certainty than its plain twin (its unsafe words are diluted by the soup), so a score in the
uncertain band means more there: the engine holds it for review when the pack sets
`uncertain.review_nonword_share` (guard/policy/engine.py).

Pure functions; the vocabulary is the encoder's (WordPiece's whole-word entries), so this needs
nothing the semantic layer has not loaded already.
"""

from __future__ import annotations

import re
from collections.abc import Container

# Fewer counted tokens than this is too little text to call soup.
MIN_WORDS = 6
# A plain ASCII token of at most this many letters outside the vocabulary may be a name ("rembrandt",
# "rutkowski", "xqc") or a rare word: it counts neither way. Counting names made short gallery
# prompts soup ("elon musk as a renaissance painting by rembrandt": 3 of 8); glued word pieces are
# longer ("thursdaytextures") or carry digits, symbols, emoji or other scripts.
NAME_LETTERS = 8
_EDGE_PUNCTUATION = "\"'()[]{}<>.,;:!?-_*~`"
_PARTS = re.compile(r"[^a-z0-9]+")
_PLAIN = re.compile(r"[a-z0-9'\-,./&+]+")
_MAX_PARTS = 3  # "sci-fi", "d&d", "f/1.8": joined words are words


def is_word(token: str, vocabulary: Container[str]) -> bool | None:
    """Whether a whitespace token of a folded prompt is a word; None when it counts neither way:
    light punctuation (",", "-", "::") or a short plain token that may be a name."""
    core = token.strip(_EDGE_PUNCTUATION)
    if not core:
        # runs of punctuation ("!!!!!!!!", "........", ">>>>") are soup; a lone separator is not
        return False if len(token) >= 3 else None
    if core in vocabulary or core.isdigit():
        return True
    if core.isascii() and core.isalpha() and len(core) <= NAME_LETTERS:
        return None
    if not _PLAIN.fullmatch(core):
        return False  # emoji, symbols, other scripts glued on
    parts = [part for part in _PARTS.split(core) if part]
    return 0 < len(parts) <= _MAX_PARTS and all(p in vocabulary or p.isdigit() for p in parts)


def nonword_share(folded: str, vocabulary: Container[str]) -> float:
    """The share of a folded prompt's tokens that are not words (0.0 below `MIN_WORDS` tokens).

    Measured with the all-MiniLM-L6-v2 vocabulary (0.3 and over): 0.0% of 5,000 COCO captions, 0.1% of
    PartiPrompts, 0.1% of the hand-written edgy prompts, 0.2% of the ESD artist prompts, 0.9% of I2P's
    gallery prompts; 75% / 79% / 95% of the obfuscated Nudity / Violent / Horror sets.
    """
    verdicts = [is_word(token, vocabulary) for token in folded.split()]
    counted = [verdict for verdict in verdicts if verdict is not None]
    if len(counted) < MIN_WORDS:
        return 0.0
    return sum(not verdict for verdict in counted) / len(counted)
