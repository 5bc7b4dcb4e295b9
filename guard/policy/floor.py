"""The built-in floor for `sexual_minors`: what no pack may relax.

A pack must keep this category enabled, with action `block` and output action `block`, thresholds
at or below `THRESHOLD_CEILING`, every term of `EXPLICIT_TERMS` in a lexical rule that crosses the
lexical threshold, and a co-occurrence rule with one group holding every `MINOR_TERMS` term and
another holding every `SEXUAL_TERMS` term. Per-classifier overrides (`image_checks.classifiers[].
thresholds` / `.action`) for the category obey the same ceiling and must block. `check_floor` runs on
the fully resolved pack (term files inlined) every time a `PolicyPack` is made, from a file or in
memory, and refuses a pack that falls short, naming the field. The floor lives in code, not in a
pack, so that no pack can lower it.

The other fields cannot weaken it: label maps and prompts only add evidence for the category, the
uncertain band only lowers thresholds, rewrites apply to categories whose action is `rewrite`.
"""

from __future__ import annotations

from genguard.guard.errors import PolicyError
from genguard.guard.policy.normalize import term_key
from genguard.guard.policy.schema import PackSpec
from genguard.guard.types import ImageAction, PromptAction

CATEGORY = "sexual_minors"
THRESHOLD_CEILING = 0.5

EXPLICIT_TERMS: tuple[str, ...] = (
    "child porn",
    "child pornography",
    "csam",
    "loli",
    "lolicon",
    "shotacon",
    "jailbait",
    "pedophile",
    "paedophile",
)
MINOR_TERMS: tuple[str, ...] = (
    "child",
    "children",
    "kid",
    "kids",
    "toddler",
    "underage",
    "preteen",
    "little girl",
    "little boy",
    "schoolgirl",
    "schoolboy",
)
SEXUAL_TERMS: tuple[str, ...] = (
    "nude",
    "naked",
    "sex",
    "sexual",
    "sexy",
    "erotic",
    "porn",
    "nsfw",
    "topless",
    "lingerie",
)


def check_floor(spec: PackSpec, source: str) -> None:
    """Raise PolicyError, naming the field, unless `spec` keeps the floor in every field."""

    def refuse(field: str, expected: str, found: object) -> PolicyError:
        return PolicyError(
            f"{source}: field {field}: expected {expected} (built-in floor for sexual "
            f"content involving minors; no pack can relax it); found {found!r}"
        )

    prefix = f"categories.{CATEGORY}"
    category = spec.categories.get(CATEGORY)
    if category is None:
        raise refuse("categories", f"a category {CATEGORY!r}", "none")
    if not category.enabled:
        raise refuse(f"{prefix}.enabled", "true", category.enabled)
    if category.action != PromptAction.BLOCK:
        raise refuse(f"{prefix}.action", "block", str(category.action))
    if ImageAction(category.output_action) != ImageAction.BLOCK:
        raise refuse(f"{prefix}.output_action", "block", str(category.output_action))
    for layer in ("lexical", "semantic", "model", "image"):
        value = getattr(category.thresholds, layer)
        if value > THRESHOLD_CEILING:
            raise refuse(f"{prefix}.thresholds.{layer}", f"at most {THRESHOLD_CEILING}", value)
    for index, classifier in enumerate(spec.image_checks.classifiers):
        field = f"image_checks.classifiers.{index}"
        threshold = classifier.thresholds.get(CATEGORY)
        if threshold is not None and threshold > THRESHOLD_CEILING:
            raise refuse(f"{field}.thresholds.{CATEGORY}", f"at most {THRESHOLD_CEILING}", threshold)
        action = classifier.action.get(CATEGORY)
        if action is not None and ImageAction(action) != ImageAction.BLOCK:
            raise refuse(f"{field}.action.{CATEGORY}", "block", action)
    lexical = category.thresholds.lexical
    listed = {term_key(t) for rule in category.rules if rule.score >= lexical for t in rule.terms}
    absent = [t for t in EXPLICIT_TERMS if term_key(t) not in listed]
    if absent:
        raise refuse(
            f"{prefix}.rules",
            f"terms scored at least {lexical} including {', '.join(absent)}",
            "them missing",
        )
    minors = {term_key(t) for t in MINOR_TERMS}
    sexual = {term_key(t) for t in SEXUAL_TERMS}
    for rule in category.cooccurrence:
        groups = [{term_key(t) for t in terms} for terms in rule.all_of.values()]
        if rule.score >= lexical and any(minors <= g for g in groups) and any(sexual <= g for g in groups):
            return
    raise refuse(
        f"{prefix}.cooccurrence",
        f"a rule scored at least {lexical} with a group holding all of ({', '.join(MINOR_TERMS)}) "
        f"and a group holding all of ({', '.join(SEXUAL_TERMS)})",
        [rule.id for rule in category.cooccurrence],
    )
