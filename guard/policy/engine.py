"""The prompt policy engine: normalise, run the scanners cheapest first, decide, rewrite."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from functools import cache, partial
from typing import Protocol, runtime_checkable

from genguard.guard.errors import BadInputError, PolicyError
from genguard.guard.policy.language import Language, check_available, foreign_language
from genguard.guard.policy.model_layer import model_scanners
from genguard.guard.policy.normalize import NormalizedPrompt, normalize
from genguard.guard.policy.pack import PolicyPack
from genguard.guard.policy.scanners import LexicalScanner, PromptScanner, default_scanners
from genguard.guard.policy.semantic import LAYER as SEMANTIC_LAYER
from genguard.guard.policy.semantic import semantic_scanners
from genguard.guard.policy.token_soup import nonword_share
from genguard.guard.types import CategoryScore, PromptAction, PromptDecision, RuleHit

MAX_PROMPT_CHARS = 20_000

# Connectives left dangling once a term is cut out ("art by greg rutkowski, detailed").
_DANGLING = re.compile(
    r"(?:\b(?:in the style of|in the style|style of|inspired by|art by|painted by|drawn by|by|and|of|"
    r"featuring|ft|with)\b|&)\s*(?=[,;:.!?]|$)",
    re.IGNORECASE,
)
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,;:.!?])")
_REPEATED_PUNCT = re.compile(r"([,;:])(?:\s*[,;:])+")
_SPACES = re.compile(r"[ \t]{2,}")


TOKEN_SOUP_LAYER = "token_soup"
LANGUAGE_LAYER = "language"

# A prompt's language when it is clearly not one the semantic layer reads, identified on first call:
# only a semantic score at its threshold (or held token soup) needs it, so most prompts never pay.
ForeignLanguage = Callable[[], Language | None]


@runtime_checkable
class HasVocabulary(Protocol):
    """A scanner that can lend the engine its encoder's whole-word vocabulary (the semantic layer)."""

    vocabulary: frozenset[str]


class PolicyEngine:
    """Checks prompts against one pack. Scanners default to the lexical and co-occurrence layers, the
    semantic layer when the pack sets `semantic.model`, and the pack's configured prompt models
    (`prompt_models` entries whose `model` is set)."""

    def __init__(self, pack: PolicyPack, scanners: Sequence[PromptScanner] | None = None) -> None:
        self.pack = pack
        chosen = (
            [*default_scanners(pack), *semantic_scanners(pack), *model_scanners(pack)]
            if scanners is None
            else list(scanners)
        )
        self.scanners: tuple[PromptScanner, ...] = tuple(sorted(chosen, key=lambda s: s.cost))
        rewrite_categories = [
            cid for cid in pack.category_ids if pack.category(cid).action == PromptAction.REWRITE
        ]
        self._rewriter = LexicalScanner(pack, rewrite_categories)
        # `uncertain.review_nonword_share` reads the vocabulary of the semantic layer's encoder; an
        # engine built without that layer (custom scanners) cannot apply it.
        self._vocabulary = next((s.vocabulary for s in self.scanners if isinstance(s, HasVocabulary)), None)
        semantic = pack.spec.semantic
        self._languages = tuple(semantic.languages) if semantic is not None and semantic.languages else None
        self._lexical_languages = (
            frozenset(semantic.lexical_languages or ()) if semantic is not None else frozenset()
        )
        if self._languages is not None:
            check_available()

    def check(self, prompt: str) -> PromptDecision:
        return self.check_many([prompt])[0]

    def check_many(self, prompts: Iterable[str]) -> list[PromptDecision]:
        """Decisions in input order. Scanners with `scan_many` (the encoder layers) see all the
        prompts still open at once, so a batch costs a few encoder passes instead of one per prompt."""
        normalized = [self._normalize(prompt) for prompt in prompts]
        foreign: list[ForeignLanguage] = [cache(partial(self._foreign_language, p)) for p in normalized]
        hits: list[list[RuleHit]] = [[] for _ in normalized]
        open_ = list(range(len(normalized)))
        for position, scanner in enumerate(self.scanners):
            following = self.scanners[position + 1] if position + 1 < len(self.scanners) else None
            scan_many = getattr(scanner, "scan_many", None)
            chosen = [normalized[i] for i in open_]
            found = scan_many(chosen) if scan_many and chosen else [scanner.scan(p) for p in chosen]
            for index, prompt_hits in zip(open_, found, strict=True):
                for hit in prompt_hits:
                    self._check_hit(hit, scanner)
                    hits[index].append(hit)
            if following is not None and following.cost > scanner.cost:
                # Costlier layers cannot make a block stricter; layers of equal cost always run
                # together so that the cheap evidence recorded is complete.
                open_ = [i for i in open_ if not self._block_is_certain(hits[i], foreign[i])]
        return [self._decide(*checked) for checked in zip(normalized, hits, foreign, strict=True)]

    def _normalize(self, prompt: object) -> NormalizedPrompt:
        if not isinstance(prompt, str):
            raise BadInputError(f"prompt: expected text (str), found {type(prompt).__name__}")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise BadInputError(
                f"prompt: expected at most {MAX_PROMPT_CHARS} characters, found {len(prompt)}"
            )
        normalized = normalize(prompt)
        if normalized.is_blank:
            raise BadInputError(f"prompt: expected non-blank text, found {prompt!r}")
        return normalized

    def _check_hit(self, hit: RuleHit, scanner: PromptScanner) -> None:
        if hit.category not in self.pack.spec.categories:
            raise PolicyError(
                f"scanner {type(scanner).__name__} (layer {scanner.layer!r}): expected hits for categories "
                f"of pack {self.pack.name!r}; found category {hit.category!r}"
            )

    def _foreign_language(self, normalized: NormalizedPrompt) -> Language | None:
        """The prompt's language when it is clearly not one the semantic layer reads
        (`semantic.languages`; guard/policy/language.py)."""
        if self._languages is None:
            return None
        return foreign_language(normalized.original, self._languages, self._vocabulary)

    def _reaches_threshold(self, hit: RuleHit) -> bool:
        return hit.score >= self.pack.prompt_threshold(hit.category, hit.layer)

    def _crosses(self, hit: RuleHit, foreign: ForeignLanguage) -> bool:
        """At or above the threshold, from a layer that can read the prompt: on a prompt in a language
        it was not trained on, the semantic layer's score is at most uncertain evidence."""
        if not self._reaches_threshold(hit):
            return False
        return hit.layer != SEMANTIC_LAYER or foreign() is None

    def _counts(self, hit: RuleHit) -> bool:
        """At least in the uncertain band: below it a hit is no evidence (a model's small
        probability for every label is not a near-miss)."""
        return hit.score >= self.pack.prompt_uncertain_floor(hit.category, hit.layer)

    def _block_is_certain(self, hits: list[RuleHit], foreign: ForeignLanguage) -> bool:
        return any(
            self._crosses(hit, foreign) and self.pack.category(hit.category).action == PromptAction.BLOCK
            for hit in hits
            if self.pack.category(hit.category).enabled
        )

    def _decide(
        self, normalized: NormalizedPrompt, hits: list[RuleHit], foreign: ForeignLanguage
    ) -> PromptDecision:
        best: dict[str, float] = {}
        crossed: set[str] = set()
        unreadable: set[str] = set()  # the semantic layer crossed on a prompt it cannot read
        kept: dict[RuleHit, None] = {}
        for hit in hits:
            if not self.pack.category(hit.category).enabled or not self._counts(hit):
                continue
            kept.setdefault(hit)
            best[hit.category] = max(best.get(hit.category, 0.0), hit.score)
            if self._crosses(hit, foreign):
                crossed.add(hit.category)
            elif self._reaches_threshold(hit):
                unreadable.add(hit.category)
        # Token soup is a measure of English (words outside the encoder's vocabulary): on a prompt in
        # another language every word is outside it, so the measure says nothing there.
        held = self._held_as_token_soup(normalized, best, crossed)
        if held and foreign() is not None:
            held = {}
        for cid in held:
            kept.setdefault(RuleHit(cid, TOKEN_SOUP_LAYER, f"{cid}.{TOKEN_SOUP_LAYER}.review", held[cid]))
        language = foreign() if unreadable else None  # only a foreign prompt leaves a category unreadable
        if language is not None and language.code in self._lexical_languages:
            # The pack's term rules read this language and judged the prompt: the layer's score only
            # makes its category uncertain (stricter output checks).
            for cid in self._stopping(unreadable - crossed):
                rule = f"{cid}.{LANGUAGE_LAYER}.{language.code}.uncertain"
                kept.setdefault(RuleHit(cid, LANGUAGE_LAYER, rule, language.probability))
        elif language is not None:
            # Held for a person who reads the language, never blocked on the layer's score alone.
            for cid in self._stopping(unreadable - crossed):
                held[cid] = language.probability
                rule = f"{cid}.{LANGUAGE_LAYER}.{language.code}.review"
                kept.setdefault(RuleHit(cid, LANGUAGE_LAYER, rule, language.probability))

        def action_of(cid: str) -> PromptAction:
            if cid in crossed:
                return self.pack.category(cid).action
            return PromptAction.REVIEW if cid in held else PromptAction.ALLOW

        scores = tuple(
            CategoryScore(cid, best[cid], action_of(cid)) for cid in self.pack.category_ids if cid in best
        )
        action = max((s.action for s in scores), key=lambda a: a.rank, default=PromptAction.ALLOW)
        prompt = normalized.original
        additions: tuple[str, ...] = ()
        rewrite = any(s.action == PromptAction.REWRITE for s in scores)
        if rewrite and action != PromptAction.BLOCK:
            prompt = rewrite_prompt(normalized.original, self._rewriter.spans(normalized))
            additions = tuple(self.pack.spec.rewrite.negative_prompt)
            if not normalize(prompt).views[0].token_starts:
                # Nothing is left to sample once the protected names are removed.
                action, prompt, additions = PromptAction.BLOCK, normalized.original, ()
        return PromptDecision(
            action=action,
            prompt=prompt,
            original_prompt=normalized.original,
            categories=scores,
            rules=tuple(kept),
            policy=self.pack.ref,
            negative_prompt_additions=additions,
            # Evidence in the uncertain band only: the output checks look harder at these categories.
            heightened_categories=tuple(cid for cid in best if cid not in crossed),
        )

    def _held_as_token_soup(
        self, normalized: NormalizedPrompt, best: dict[str, float], crossed: set[str]
    ) -> dict[str, float]:
        """Categories with uncertain evidence to hold for review because the prompt reads as token
        soup (`uncertain.review_nonword_share`), each with the prompt's non-word share. Only
        categories whose own action stops a prompt (review or block): a rewrite stays a rewrite."""
        limit = self.pack.spec.uncertain.review_nonword_share
        stopping = self._stopping(set(best) - crossed)
        if limit is None or self._vocabulary is None or not stopping:
            return {}
        share = nonword_share(normalized.folded, self._vocabulary)
        return dict.fromkeys(stopping, share) if share >= limit else {}

    def _stopping(self, categories: set[str]) -> list[str]:
        """Those of `categories` whose own action stops a prompt (review or block), in pack order."""
        return [
            cid
            for cid in self.pack.category_ids
            if cid in categories and self.pack.category(cid).action.rank >= PromptAction.REVIEW.rank
        ]


def rewrite_prompt(prompt: str, spans: Sequence[tuple[int, int]]) -> str:
    """`prompt` without the given ranges, with dangling connectives, punctuation and spaces tidied."""
    pieces = []
    position = 0
    for start, end in sorted(spans):
        if start >= position:
            pieces.append(prompt[position:start])
        position = max(position, end)
    pieces.append(prompt[position:])
    text = "".join(pieces)
    previous = None
    while previous != text:
        previous = text
        text = _SPACES.sub(" ", text)
        text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
        text = _REPEATED_PUNCT.sub(r"\1", text)
        text = _DANGLING.sub("", text).rstrip()
        text = text.strip(" \t,;:&")
    return text
