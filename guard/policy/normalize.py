"""Normalisation of prompts against obfuscation, producing the views that matching runs over.

A prompt is first folded character by character (NFKC, accents stripped, casefold, homoglyphs to
Latin, zero-width characters dropped, Arabic letter variants and vowel marks unified), keeping for each folded character the index of the original
character it came from so that matches can be mapped back (the rewrite needs that). Then several
views of the folded text are built, each a sequence of tokens written as " tok tok tok " so that
a term written as " term " can only match on word boundaries:

- ``plain``: alphanumeric runs.
- ``compact``: tokens glued by in-word punctuation without spaces (``n.u.d.e``, ``n-u-d-e``) are
  joined, and runs of three or more single letters separated by spaces (``n u d e``) are joined;
  a one-letter word opening such a run ("a n u d e") stays apart, and ``compact_joined`` (only
  when it differs) joins it too.
- ``leet`` / ``leet_l``: inside words that mix letters with leetspeak characters (``n@k3d``), the
  characters are decoded; ``1`` is ambiguous (i or l), so a second view decodes it as ``l``.
  Numbers standing alone (``version 1.5``) are never decoded.
- ``squeezed``: only when a letter repeats three or more times (``nuuuude``): every run of a
  repeated letter squeezed to one. Such views must be matched against terms squeezed the same way.

Pure functions, no state: the same prompt always gives the same views.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

# Characters that render as nothing (or as a hyphenation point) and are used to split words.
_INVISIBLE = frozenset(
    "\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b\u200c\u200d\u200e\u200f"
    "\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\u206a\u206b"
    "\u206c\u206d\u206e\u206f\u3164\ufeff\uffa0"
)

# Homoglyphs that NFKC leaves alone, after casefolding, to the Latin letter they imitate.
_CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a",
    "в": "b",
    "е": "e",
    "ё": "e",
    "з": "3",
    "і": "i",
    "ї": "i",
    "ј": "j",
    "к": "k",
    "м": "m",
    "н": "h",
    "о": "o",
    "р": "p",
    "с": "c",
    "т": "t",
    "у": "y",
    "х": "x",
    "ѕ": "s",
    "һ": "h",
    "ԁ": "d",
    "ԛ": "q",
    "ԝ": "w",
    "ь": "b",
    "ӏ": "l",
    "ո": "n",
    "ս": "u",
    # Greek
    "α": "a",
    "β": "b",
    "γ": "y",
    "δ": "d",
    "ε": "e",
    "ζ": "z",
    "η": "n",
    "ι": "i",
    "κ": "k",
    "μ": "u",
    "ν": "v",
    "ο": "o",
    "ρ": "p",
    "σ": "o",
    "ς": "c",
    "τ": "t",
    "υ": "u",
    "χ": "x",
    "ω": "w",
    # Latin look-alikes outside ASCII that survive NFKC and accent stripping
    "ı": "i",
    "ȷ": "j",
    "ɑ": "a",
    "ɡ": "g",
    "ɩ": "i",
    "ɪ": "i",
    "ʀ": "r",
    "ʏ": "y",
    "ᴀ": "a",
    "ᴄ": "c",
    "ᴅ": "d",
    "ᴇ": "e",
    "ᴋ": "k",
    "ᴍ": "m",
    "ᴏ": "o",
    "ᴘ": "p",
    "ᴛ": "t",
    "ᴜ": "u",
    "ᴠ": "v",
    "ᴡ": "w",
    "ᴢ": "z",
    "ø": "o",
    "đ": "d",
    "ħ": "h",
    "ł": "l",
    "ŧ": "t",
    "ƒ": "f",
    "ß": "ss",
    "æ": "ae",
    "œ": "oe",
    "þ": "th",
}

# Arabic letters written in several ways (after NFKD has dropped the vowel marks and the hamza over
# or under alef): alef maksura as ya, ta marbuta as ha, wasla alef as alef, the tatweel (a stretch
# of the line, no letter) dropped; Arabic-Indic and Persian digits as ASCII digits.
_ARABIC_FOLDS: dict[str, str] = {
    "ى": "ي",
    "ة": "ه",
    "ٱ": "ا",
    "ـ": "",
    **{chr(0x0660 + d): str(d) for d in range(10)},
    **{chr(0x06F0 + d): str(d) for d in range(10)},
}

# Leetspeak characters decoded inside words that also contain letters.
_LEET = {
    "0": "o",
    "1": "i",
    "3": "e",
    "4": "a",
    "5": "s",
    "7": "t",
    "8": "b",
    "9": "g",
    "@": "a",
    "$": "s",
    "!": "i",
    "|": "l",
    "+": "t",
    "€": "e",
    "£": "l",
}
_LEET_ONE_AS_L = {**_LEET, "1": "l"}
_LEET_CHARS = frozenset(_LEET)
# Punctuation stripped from the ends of a whitespace-separated chunk before leet decoding, so that
# "nude!" keeps its exclamation mark as punctuation.
_CHUNK_EDGE = "!?.,;:)]}\"'(["

# Characters that glue two word pieces together when no space is around them: "n.u.d.e", "nu-de".
_JOINERS = frozenset(".-_*'`’·•~/|+")
_TOKEN = re.compile(r"[^\W_]+")
_CHUNK = re.compile(r"\S+")
_TRIPLE = re.compile(r"([^\W\d_])\1\1")
_REPEAT = re.compile(r"(.)\1+")
_MIN_SPELLED_LETTERS = 3
_ONE_LETTER_WORDS = frozenset("ai")


@dataclass(frozen=True)
class PromptView:
    """One way of reading the prompt. `text` is " tok tok " (a space before and after every token).

    `token_starts[i]` is where token i starts in `text`; `spans[i]` is the (start, end) range of the
    original prompt it came from. `squeezed` views must be matched against squeezed terms.
    """

    name: str
    text: str
    token_starts: tuple[int, ...]
    spans: tuple[tuple[int, int], ...]
    squeezed: bool = False

    @property
    def tokens(self) -> tuple[str, ...]:
        return tuple(self.text[1:-1].split(" ")) if self.token_starts else ()


@dataclass(frozen=True)
class NormalizedPrompt:
    """A prompt and its views. `folded` is the character-folded text (NFKC, casefold, homoglyphs)."""

    original: str
    folded: str
    views: tuple[PromptView, ...]

    @property
    def is_blank(self) -> bool:
        """Nothing but whitespace and invisible characters (an emoji alone is not blank)."""
        return not self.folded.strip()


@lru_cache(maxsize=4096)
def _fold_char(char: str) -> str:
    if char in _INVISIBLE:
        return ""
    decomposed = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", char))
    out = []
    for piece in decomposed:
        if unicodedata.combining(piece):
            continue
        for folded in piece.casefold():
            latin = _CONFUSABLES.get(folded, folded)
            out.append(_ARABIC_FOLDS.get(latin, latin))
    # NFKD may have split a compatibility character into several letters; recompose what is left.
    return unicodedata.normalize("NFC", "".join(out))


def fold(text: str) -> tuple[str, tuple[int, ...]]:
    """Fold `text` character by character; return the folded text and, per folded character,
    the index of the original character it came from."""
    if text.isascii():
        return text.lower(), tuple(range(len(text)))
    pieces: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        folded = _fold_char(char)
        pieces.append(folded)
        origin.extend([index] * len(folded))
    return "".join(pieces), tuple(origin)


def _decode_leet(folded: str, table: dict[str, str]) -> str | None:
    """Decode leetspeak inside chunks mixing letters and leet characters; None if nothing changed.

    Replacements are one character for one, so the folded-to-original index map stays valid.
    """
    chars = list(folded)
    changed = False
    for match in _CHUNK.finditer(folded):
        chunk = match.group()
        core = chunk.strip(_CHUNK_EDGE)
        if not core or not any(c.isalpha() for c in core) or _LEET_CHARS.isdisjoint(core):
            continue
        offset = match.start() + chunk.index(core)
        for i, char in enumerate(core):
            replacement = table.get(char)
            if replacement is not None:
                chars[offset + i] = replacement
                changed = True
    return "".join(chars) if changed else None


def _tokens(folded: str) -> list[tuple[str, int, int]]:
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(folded)]


def _is_glued(folded: str, left_end: int, right_start: int) -> bool:
    gap = folded[left_end:right_start]
    return bool(gap) and all(c in _JOINERS for c in gap)


def _is_spelled_gap(folded: str, left_end: int, right_start: int) -> bool:
    gap = folded[left_end:right_start]
    return all(c.isspace() or c in _JOINERS for c in gap)


def _compact(
    folded: str, tokens: list[tuple[str, int, int]], keep_article: bool
) -> list[tuple[str, int, int]]:
    """Join word pieces glued by in-word punctuation, then runs of single spelled-out letters.

    With `keep_article`, a one-letter word opening a run ("a n u d e") stays a word of its own.
    """
    glued: list[tuple[str, int, int]] = []
    for token in tokens:
        if glued and _is_glued(folded, glued[-1][2], token[1]):
            previous = glued.pop()
            token = (previous[0] + token[0], previous[1], token[2])
        glued.append(token)
    out: list[tuple[str, int, int]] = []
    run: list[tuple[str, int, int]] = []

    def flush() -> None:
        if keep_article and len(run) > _MIN_SPELLED_LETTERS and run[0][0] in _ONE_LETTER_WORDS:
            out.append(run.pop(0))
        if len(run) >= _MIN_SPELLED_LETTERS:
            out.append(("".join(t[0] for t in run), run[0][1], run[-1][2]))
        else:
            out.extend(run)
        run.clear()

    for token in glued:
        single = len(token[0]) == 1 and token[0].isalpha()
        if single and (not run or _is_spelled_gap(folded, run[-1][2], token[1])):
            run.append(token)
            continue
        flush()
        if single:
            run.append(token)
        else:
            out.append(token)
    flush()
    return out


def squeeze(word: str) -> str:
    """Every run of a repeated character squeezed to one: "nuuuude" -> "nude", "kill" -> "kil"."""
    return _REPEAT.sub(r"\1", word)


def _view(
    name: str, tokens: list[tuple[str, int, int]], origin: tuple[int, ...], squeezed: bool = False
) -> PromptView:
    starts: list[int] = []
    words: list[str] = []
    position = 1
    for word, _, _ in tokens:
        starts.append(position)
        words.append(word)
        position += len(word) + 1
    spans = tuple((origin[start], origin[end - 1] + 1) for _, start, end in tokens)
    return PromptView(name, " " + " ".join(words) + " ", tuple(starts), spans, squeezed)


def normalize(prompt: str) -> NormalizedPrompt:
    """Fold `prompt` and build its views (see the module docstring). Never raises on text."""
    folded, origin = fold(prompt)
    variants: list[tuple[str, str]] = [("", folded)]
    leet = _decode_leet(folded, _LEET)
    if leet is not None:
        variants.append(("leet", leet))
        leet_l = _decode_leet(folded, _LEET_ONE_AS_L)
        if leet_l is not None and leet_l != leet:
            variants.append(("leet_l", leet_l))
    views: list[PromptView] = []
    seen: set[str] = set()
    for prefix, text in variants:
        plain = _tokens(text)
        candidates = [
            ("plain", plain),
            ("compact", _compact(text, plain, keep_article=True)),
            ("compact_joined", _compact(text, plain, keep_article=False)),
        ]
        for suffix, tokens in candidates:
            view = _view(f"{prefix}_{suffix}" if prefix else suffix, tokens, origin)
            if view.text not in seen:
                seen.add(view.text)
                views.append(view)
    if _TRIPLE.search(folded):
        for view in list(views):
            squeezed_tokens = [squeeze(token) for token in view.tokens]
            text = " " + " ".join(squeezed_tokens) + " "
            starts: list[int] = []
            position = 1
            for word in squeezed_tokens:
                starts.append(position)
                position += len(word) + 1
            views.append(PromptView(f"{view.name}_squeezed", text, tuple(starts), view.spans, True))
    return NormalizedPrompt(prompt, folded, tuple(views))


@lru_cache(maxsize=1 << 16)
def term_key(term: str) -> str:
    """The form a pack term is matched in: folded plain tokens written as " tok tok ".

    Cached: loading a pack checks its terms, then each lexical scanner keys the same terms again."""
    folded, _ = fold(term)
    return " " + " ".join(t for t, _, _ in _tokens(folded)) + " "
