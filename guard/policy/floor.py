"""The built-in floor for `sexual_minors`: what no pack may relax.

A pack must keep this category enabled, with action `block` and output action `block`, thresholds
at or below `THRESHOLD_CEILING`, every term of `EXPLICIT_TERMS` in a lexical rule that crosses the
lexical threshold, and a co-occurrence rule with one group holding every `MINOR_TERMS` term and
another holding every `SEXUAL_TERMS` term. The loader refuses a pack that falls short, naming the
field. The floor lives in code, not in a pack, so that no pack can lower it.
"""

from __future__ import annotations

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
