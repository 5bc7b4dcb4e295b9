"""Prompt scanners: one small Protocol, and the two term-based layers behind it.

Both term layers match thousands of terms in one pass per view with an Aho-Corasick automaton
(pyahocorasick). Views and terms are written " tok tok " so a term only matches whole words:
" ass " is not inside " class ", " rapist " is not inside " therapist ".
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import ahocorasick

from genguard.guard.policy.context import lowering_reason, negated_spans, read_context
from genguard.guard.policy.normalize import NormalizedPrompt, squeeze, term_key
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


def term_forms(term: str, inflect: bool) -> set[str]:
    """Every key a term matches as: the folded term, inflections of its last word, joined words."""
    words = term_key(term).split()
    lasts = inflections(words[-1]) if inflect else {words[-1]}
    forms = {" " + " ".join([*words[:-1], last]) + " " for last in lasts}
    if len(words) > 1:
        forms |= {
            " " + "".join(f.split()) + " " for f in list(forms) if len("".join(f.split())) >= _MIN_JOINED
        }
    return forms


@dataclass(frozen=True)
class TermMatch(Generic[Payload]):
    payload: Payload
    span: tuple[int, int]  # range of the original prompt


class TermIndex(Generic[Payload]):
    """Terms -> payloads, matched over every view of a prompt in one automaton pass per view."""

    def __init__(self, entries: Iterable[tuple[str, bool, Payload]]) -> None:
        exact: dict[str, list[Payload]] = {}
        squeezed: dict[str, list[Payload]] = {}
        for term, inflect, payload in entries:
            for form in term_forms(term, inflect):
                exact.setdefault(form, []).append(payload)
                squeezed.setdefault(squeeze(form), []).append(payload)
        self._exact = _automaton(exact)
        self._squeezed = _automaton(squeezed)
        self.size = len(exact)

    def matches(self, prompt: NormalizedPrompt) -> Iterator[TermMatch[Payload]]:
        for view in prompt.views:
            automaton = self._squeezed if view.squeezed else self._exact
            if automaton is None:
                continue
            for end, (key, payloads) in automaton.iter(view.text):
                first = bisect_left(view.token_starts, end - len(key) + 2)
                last = first + key.count(" ") - 2
                span = (view.spans[first][0], view.spans[last][1])
                for payload in payloads:
                    yield TermMatch(payload, span)


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
            (term, rule.inflect, _RuleRef(category_id, rule.id, rule.score))
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
        entries: list[tuple[str, bool, _GroupRef]] = []
        for category_id, category in pack.spec.categories.items():
            if not category.enabled:
                continue
            for rule in category.cooccurrence:
                index = len(self._rules)
                self._rules.append((category_id, rule.id, rule.score, frozenset(rule.all_of)))
                for group, terms in rule.all_of.items():
                    entries.extend((term, rule.inflect, _GroupRef(index, group)) for term in terms)
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
