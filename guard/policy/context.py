"""What the words around a lexical hit say: negation, and art-historical, museum or medical settings.

A term list reads "no nudity" as nudity and "a marble statue of a nude greek god in a museum" as a
nude. The lexical layer (guard/policy/scanners.py) asks this module, per term match, whether
- the match is negated: a cue ("no", "not", "without", "never", "non", "nor", "zero") is followed,
  within its clause, only by fillers ("any", "visible", "explicit", ...), conjunctions and other term
  matches before the term ("no blood or gore", "without any visible nudity"); a comma, full stop or
  other clause break ends the cue's reach, and a cue inside the term itself ("wearing no clothes")
  is part of the term, not a negation of it;
- the prompt sets the scene in art history, a museum or medicine (`SETTINGS`), and the rule is one
  whose terms such a setting explains (`SETTING_RULES`, by the last part of the rule id: nudity and
  anatomy in a museum, gore in an operating theatre; never explicit acts, pornography or slurs).
Either way the hit is lowered into the category's uncertain band (allowed, with stricter output
checks; guard/policy/engine.py) instead of crossing the threshold. Sexual content involving minors
is never lowered (`NEVER_LOWERED`): no negation or setting unlocks that floor.

Pure functions over the prompt as typed (casefolded), no models.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

NEVER_LOWERED = frozenset({"sexual_minors"})

NEGATION_CUES = frozenset({"no", "not", "without", "never", "non", "nor", "zero", "sans", "w/o"})
# Words that may stand between a cue and the negated term without ending its reach.
FILLERS = frozenset(
    {
        "any", "a", "an", "the", "visible", "explicit", "graphic", "real", "actual", "obvious", "showing",
        "signs", "sign", "of", "hint", "trace", "traces", "shown", "depicted", "displayed", "even", "at",
        "all", "kind", "form", "type", "too", "much", "excessive", "or", "and", "nor", "overt",
        "full", "frontal", "including", "include", "includes", "containing", "contain", "contains", "-",
    }
)  # fmt: skip
_CLAUSE_BREAKS = frozenset(',;.!?:|()[]{}"') | {"but", "except", "only", "just", "yet"}
_TOKEN = re.compile(r"w/o|[^\W_]+|[^\w\s]")

# Settings that explain a nude or a wound, by the words that set them (matched as whole words or
# phrases of the casefolded prompt). Generic words ("painting", "art", "photo") set nothing: most
# explicit gallery prompts say "oil painting"; nor do words that also describe skin or a scene of
# another kind ("bronze skin", "marble skin", "a nude woman at the doctor's", "in a hospital").
SETTINGS: dict[str, tuple[str, ...]] = {
    "art": (
        "statue", "statues", "sculpture", "sculptures", "sculpted", "marble statue", "bronze statue", "fresco",
        "frescoes", "renaissance", "baroque", "neoclassical", "classical antiquity", "ancient greek",
        "ancient greece", "ancient roman", "greek god", "greek goddess", "roman god", "roman goddess",
        "art history", "art historical", "old master", "old masters", "life drawing", "figure drawing",
        "figure study", "michelangelo", "botticelli", "titian", "rubens", "caravaggio", "raphael",
        "rodin", "praxiteles", "ingres", "goya", "manet", "modigliani", "da vinci", "leonardo da vinci",
        "venus de milo", "birth of venus", "classical painting", "academic painting", "relief carving",
    ),
    "museum": (
        "museum", "museums", "gallery exhibit", "exhibition", "exhibit", "archaeological",
        "archaeology", "artifact", "artefact", "louvre", "uffizi", "british museum", "met museum",
    ),
    "medical": (
        "medical", "anatomy", "anatomical", "textbook", "diagram", "clinical", "surgery", "surgical",
        "dermatology", "dermatologist",
        "gynecology", "gynaecology", "urology", "mammogram", "mammography", "breast cancer",
        "breastfeeding", "breast feeding", "x ray", "xray", "mri", "medical illustration", "pathology",
        "autopsy", "forensic", "first aid", "wound care", "physiology",
    ),
}  # fmt: skip
# Which rules (the last part of their id) each setting lowers.
SETTING_RULES: dict[str, frozenset[str]] = {
    # Anatomy (genitals named) only in medicine: "sculpture ... genitalia in the museum" is how
    # Ring-A-Bell's nudity prompts are written, a nude statue is not.
    "art": frozenset({"nudity", "suggestive", "gore", "killing", "harm", "themes"}),
    "museum": frozenset({"nudity", "suggestive", "gore", "killing", "harm", "themes", "firearms"}),
    "medical": frozenset({"nudity", "anatomy", "gore", "harm"}),
}


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class PromptContext:
    """The prompt's tokens and the settings it names."""

    tokens: tuple[Token, ...]
    settings: frozenset[str]

    def token_at(self, position: int) -> int:
        """Index of the first token that ends after `position` (len(tokens) when none)."""
        for index, token in enumerate(self.tokens):
            if token.end > position:
                return index
        return len(self.tokens)


def read_context(text: str) -> PromptContext:
    tokens = tuple(Token(m.group().casefold(), m.start(), m.end()) for m in _TOKEN.finditer(text))
    words = " " + " ".join(t.text for t in tokens if t.text[:1].isalnum()) + " "
    settings = frozenset(
        name for name, phrases in SETTINGS.items() if any(f" {phrase} " in words for phrase in phrases)
    )
    return PromptContext(tokens, settings)


def negated_spans(context: PromptContext, spans: Sequence[tuple[int, int]]) -> set[tuple[int, int]]:
    """Those of `spans` (term matches, ranges of the prompt) that a negation cue reaches."""
    by_start: dict[int, list[tuple[int, int]]] = {}
    for span in spans:
        by_start.setdefault(context.token_at(span[0]), []).append(span)
    negated: set[tuple[int, int]] = set()
    tokens = context.tokens
    for cue, token in enumerate(tokens):
        if token.text not in NEGATION_CUES:
            continue
        index = cue + 1
        while index < len(tokens):
            if index in by_start:
                starting = by_start[index]
                negated.update(starting)
                end = max(span[1] for span in starting)
                index = context.token_at(end - 1) + 1
                continue
            word = tokens[index].text
            if word in _CLAUSE_BREAKS or word not in FILLERS:
                break
            index += 1
    return negated


def lowering_reason(
    category: str,
    rule: str,
    spans: Sequence[tuple[int, int]],
    context: PromptContext,
    negated: set[tuple[int, int]],
) -> str | None:
    """Why a rule's hit (all its matches: `spans`) is lowered to uncertain: "negated", "context.<setting>",
    or None when it stands."""
    if category in NEVER_LOWERED or not spans:
        return None
    if all(span in negated for span in spans):
        return "negated"
    kind = rule.rsplit(".", 1)[-1]
    for setting in sorted(context.settings):
        if kind in SETTING_RULES.get(setting, frozenset()):
            return f"context.{setting}"
    return None
