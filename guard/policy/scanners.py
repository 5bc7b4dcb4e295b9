"""Prompt scanners: one small Protocol, and the two term-based layers behind it.

Both term layers match thousands of terms in one pass per view with an Aho-Corasick automaton
(pyahocorasick). Views and terms are written " tok tok " so a term only matches whole words:
" ass " is not inside " class ", " rapist " is not inside " therapist ". Three kinds of key:
- whole words, " tok tok ": English and the other languages written with spaces;
- a prefix of the last word, " tok to" (a term ending in "*"): the inflections of German, Romance
  and Russian words ("nackt*" matches nackte, nackten, Nacktheit);
- anywhere, "toktok" (a rule with `language` zh or ja): Chinese and Japanese are written without
  spaces, so a prompt's run of characters is one token and a term is a piece of it.
Arabic terms also match with the clitics Arabic writes attached to the next word (`ARABIC_PREFIXES`).
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import ahocorasick

from genguard.guard.policy.context import lowering_reason, negated_spans, read_context
from genguard.guard.policy.normalize import NormalizedPrompt, PromptView, squeeze, term_key
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.types import RuleHit

Payload = TypeVar("Payload")
_VOWELS = frozenset("aeiou")
# A multi-word term also matches its words written together ("blow job" -> "blowjob") when the
# joined word is at least this long; shorter joins collide with ordinary words.
_MIN_JOINED = 6


class PromptScanner(Protocol):
    """One prompt-checking layer. Cheaper layers (lower `cost`) run first."""

    layer: str
    cost: int

    def scan(self, prompt: NormalizedPrompt) -> Sequence[RuleHit]: ...


def inflections(word: str) -> set[str]:
    """Regular plural and verb forms of an English word: -s/-es/-ies, -ed, -ing (doubling a final
    consonant after a single vowel, dropping a silent e)."""
    forms = {word}
    if len(word) < 3 or not word.isalpha():
        return forms
    if word.endswith(("s", "x", "z", "ch", "sh")):
        forms.add(word + "es")
    elif word.endswith("y") and word[-2] not in _VOWELS:
        forms.update({word[:-1] + "ies", word[:-1] + "ied"})
    else:
        forms.add(word + "s")
    if word.endswith("e"):
        forms.update({word + "d", word[:-1] + "ing"})
        return forms
    stem = word
    if word[-1] not in _VOWELS | {"w", "x", "y"} and word[-2] in _VOWELS and word[-3] not in _VOWELS:
        stem = word + word[-1]
    forms.update({stem + "ed", stem + "ing", word + "ed", word + "ing"})
    return forms


# Languages written without spaces between words: their terms match anywhere in the text.
SUBSTRING_LANGUAGES = frozenset({"zh", "ja"})
# Arabic writes the article, the conjunctions wa / fa and the prepositions bi / li / ka attached to the
# word that follows ("والعنف": and the violence); li + al is written "لل". Added to a term's first word.
ARABIC_PREFIXES: tuple[str, ...] = (
    "", "و", "ف", "ب", "ل", "ك", "وب", "ول", "فب", "فل", "وك",
    "ال", "وال", "فال", "بال", "كال", "لل", "وبال", "ولل", "فلل", "وكال",
)  # fmt: skip
_ARABIC_ARTICLE = "ال"
# The Arabic letters of Unicode's Arabic blocks (folded prompts keep no presentation forms).
_ARABIC_LETTER = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff]")
PREFIX_MARK = "*"
MIN_PREFIX_LETTERS = 3


def is_prefix_term(term: str) -> bool:
    """A term ending in "*": its last word matches every word starting with it."""
    return term.rstrip().endswith(PREFIX_MARK)


def term_forms(term: str, inflect: bool, language: str | None = None) -> set[str]:
    """Every key a term matches as (module docstring): the folded term; for English with `inflect`,
    inflections of its last word; joined words; for Arabic, its first word with the clitics."""
    words = term_key(term.rstrip().rstrip(PREFIX_MARK)).split()
    if language in SUBSTRING_LANGUAGES:
        return {" ".join(words)}
    prefix = is_prefix_term(term)
    english = language in (None, "en")
    lasts = inflections(words[-1]) if inflect and english and not prefix else {words[-1]}
    end = "" if prefix else " "
    phrases = [[*words[:-1], last] for last in lasts]
    if language == "ar":
        bare = [p[0].removeprefix(_ARABIC_ARTICLE) if len(p[0]) > 3 else p[0] for p in phrases]
        phrases = [[clitic + first, *p[1:]] for p, first in zip(phrases, bare) for clitic in ARABIC_PREFIXES]
    forms = {" " + " ".join(p) + end for p in phrases}
    if len(words) > 1:
        forms |= {" " + "".join(p) + end for p in phrases if len("".join(p)) >= _MIN_JOINED}
    return forms


@dataclass(frozen=True)
class TermMatch(Generic[Payload]):
    payload: Payload
    span: tuple[int, int]  # range of the original prompt


class _Automata(Generic[Payload]):
    """The exact and the squeezed automaton of a set of terms.

    The squeezed one is built at the first squeezed view (a prompt with a letter repeated three times
    or more, rare), so that building a scanner costs one automaton, not two."""

    def __init__(self, entries: Iterable[tuple[str, bool, str | None, Payload]]) -> None:
        exact: dict[str, list[Payload]] = {}
        self._forms: list[tuple[str, Payload]] = []  # in term order: the squeezed payloads keep it
        for term, inflect, language, payload in entries:
            for form in term_forms(term, inflect, language):
                exact.setdefault(form, []).append(payload)
                self._forms.append((form, payload))
        self.exact = _automaton(exact)
        self._squeezed: ahocorasick.Automaton | None = None
        self._squeezed_built = False
        self._lock = threading.Lock()
        self.size = len(exact)

    @property
    def squeezed(self) -> ahocorasick.Automaton | None:
        with self._lock:
            if not self._squeezed_built:
                table: dict[str, list[Payload]] = {}
                for form, payload in self._forms:
                    table.setdefault(squeeze(form), []).append(payload)
                self._squeezed = _automaton(table)
                self._squeezed_built = True
            return self._squeezed


class TermIndex(Generic[Payload]):
    """Terms -> payloads, matched over every view of a prompt in one automaton pass per view.

    Arabic terms, each with its clitic forms, are more than half of the default pack's keys; they
    have their own automata, built at the first prompt with Arabic letters, so that a process that
    checks one English prompt (`genguard policy check`) does not pay for them."""

    def __init__(self, entries: Iterable[tuple[str, bool, str | None, Payload]]) -> None:
        listed = list(entries)
        self._main = _Automata([entry for entry in listed if entry[2] != "ar"])
        self._arabic_entries = [entry for entry in listed if entry[2] == "ar"]
        self._arabic: _Automata[Payload] | None = None
        self._arabic_lock = threading.Lock()
        arabic_forms = {
            form
            for term, inflect, language, _ in self._arabic_entries
            for form in term_forms(term, inflect, language)
        }
        self.size = self._main.size + len(arabic_forms)

    def _arabic_automata(self) -> _Automata[Payload]:
        with self._arabic_lock:
            if self._arabic is None:
                self._arabic = _Automata(self._arabic_entries)
            return self._arabic

    def matches(self, prompt: NormalizedPrompt) -> Iterator[TermMatch[Payload]]:
        sets = [self._main]
        if self._arabic_entries and any(_ARABIC_LETTER.search(view.text) for view in prompt.views):
            sets.append(self._arabic_automata())
        for automata, view in ((a, v) for a in sets for v in prompt.views):
            automaton = automata.squeezed if view.squeezed else automata.exact
            if automaton is None:
                continue
            for end, (key, payloads) in automaton.iter(view.text):
                start = end - len(key) + 1
                if key.startswith(" "):  # whole words or a prefix: from a token start
                    first = bisect_left(view.token_starts, start + 1)
                    span = (view.spans[first][0], view.spans[first + key.strip().count(" ")][1])
                else:
                    span = _inside_tokens(view, start, end + 1)
                for payload in payloads:
                    yield TermMatch(payload, span)


def _inside_tokens(view: PromptView, start: int, end: int) -> tuple[int, int]:
    """The range of the original prompt that `view.text[start:end]` (a match inside tokens) came
    from: exact when it lies in one token whose characters map one to one onto the original (as
    Chinese and Japanese characters do), else the whole tokens it touches."""
    first = bisect_right(view.token_starts, start) - 1
    last = bisect_right(view.token_starts, end - 1) - 1
    token_start = view.token_starts[first]
    token_length = view.text.index(" ", token_start) - token_start
    original = view.spans[first]
    if first == last and original[1] - original[0] == token_length:
        offset = original[0] - token_start
        return (start + offset, end + offset)
    return (original[0], view.spans[last][1])


def _automaton(table: dict[str, list[Payload]]) -> ahocorasick.Automaton | None:
    if not table:
        return None
    automaton = ahocorasick.Automaton()
    for key, payloads in table.items():
        automaton.add_word(key, (key, tuple(payloads)))
    automaton.make_automaton()
    return automaton


@dataclass(frozen=True)
class _RuleRef:
    category: str
    rule: str
    score: float


class LexicalScanner:
    """Term rules of every enabled category, on word boundaries over all views."""

    layer = "lexical"
    cost = 10

    def __init__(self, pack: PolicyPack, categories: Iterable[str] | None = None) -> None:
        self._pack = pack
        wanted = set(pack.category_ids if categories is None else categories)
        self._index: TermIndex[_RuleRef] = TermIndex(
            (term, rule.inflect, rule.language, _RuleRef(category_id, rule.id, rule.score))
            for category_id, category in pack.spec.categories.items()
            if category.enabled and category_id in wanted
            for rule in category.rules
            for term in rule.terms
        )

    @property
    def size(self) -> int:
        """Number of distinct term forms in the automaton."""
        return self._index.size

    def scan(self, prompt: NormalizedPrompt) -> list[RuleHit]:
        """One hit per rule that matched. A rule whose every match is negated, or that the prompt's
        art-historical, museum or medical setting explains (guard/policy/context.py), is lowered
        into its category's uncertain band, its rule id suffixed with the reason."""
        seen: dict[_RuleRef, set[tuple[int, int]]] = {}
        for match in self._index.matches(prompt):
            seen.setdefault(match.payload, set()).add(match.span)
        if not seen:
            return []
        context = read_context(prompt.original)
        negated = negated_spans(context, [span for spans in seen.values() for span in spans])
        hits = []
        for ref, spans in seen.items():
            reason = lowering_reason(ref.category, ref.rule, sorted(spans), context, negated)
            if reason is None:
                hits.append(RuleHit(ref.category, self.layer, ref.rule, ref.score))
                continue
            threshold = self._pack.prompt_threshold(ref.category, self.layer)
            floor = self._pack.prompt_uncertain_floor(ref.category, self.layer)
            score = min(ref.score, (threshold + floor) / 2)
            hits.append(RuleHit(ref.category, self.layer, f"{ref.rule}.{reason}", score))
        return hits

    def spans(self, prompt: NormalizedPrompt) -> list[tuple[int, int]]:
        """Ranges of the original prompt where a term matched (for rewriting)."""
        return sorted({match.span for match in self._index.matches(prompt)})


@dataclass(frozen=True)
class _GroupRef:
    rule: int
    group: str


class CooccurrenceScanner:
    """Fires a rule when every one of its term groups occurs somewhere in the same prompt."""

    layer = "cooccurrence"
    cost = 10

    def __init__(self, pack: PolicyPack) -> None:
        self._rules: list[tuple[str, str, float, frozenset[str]]] = []
        entries: list[tuple[str, bool, str | None, _GroupRef]] = []
        for category_id, category in pack.spec.categories.items():
            if not category.enabled:
                continue
            for rule in category.cooccurrence:
                index = len(self._rules)
                self._rules.append((category_id, rule.id, rule.score, frozenset(rule.all_of)))
                for group, terms in rule.all_of.items():
                    entries.extend(
                        (term, rule.inflect, rule.language, _GroupRef(index, group)) for term in terms
                    )
        self._index: TermIndex[_GroupRef] = TermIndex(entries)

    def scan(self, prompt: NormalizedPrompt) -> list[RuleHit]:
        found: dict[int, set[str]] = {}
        for match in self._index.matches(prompt):
            found.setdefault(match.payload.rule, set()).add(match.payload.group)
        hits = []
        for index, groups in sorted(found.items()):
            category, rule, score, needed = self._rules[index]
            if needed <= groups:
                hits.append(RuleHit(category, self.layer, rule, score))
        return hits


def default_scanners(pack: PolicyPack) -> list[PromptScanner]:
    """The layers this package provides: lexical rules and co-occurrence rules."""
    return [LexicalScanner(pack), CooccurrenceScanner(pack)]
