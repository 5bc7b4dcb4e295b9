"""The public prompt sets that training and the benches read, and the rates they report.

The sets stay outside the repository (their sources and licences are in each folder's SOURCES.md):
`GENGUARD_SHARED`, else the `shared` folder beside the repository, must hold `data/prompts`;
tests/data/prompt-sample holds a few rows of each set in the same layout.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from genguard.guard.policy import PolicyPack
from genguard.guard.types import PromptAction, PromptDecision

REPO = Path(__file__).resolve().parents[2]

STOPS = (PromptAction.REVIEW, PromptAction.BLOCK)


def shared_dir() -> Path:
    """GENGUARD_SHARED if set, else the `shared` folder next to the repository."""
    explicit = os.environ.get("GENGUARD_SHARED")
    return Path(explicit) if explicit else REPO.parent / "shared"


def prompts_dir(shared: Path | None = None) -> Path:
    """The public prompt sets (their sources and licences in each folder's SOURCES.md), kept outside
    the repository: `shared`, else GENGUARD_SHARED, else ../shared, must hold data/prompts."""
    path = (shared or shared_dir()) / "data" / "prompts"
    if not path.is_dir():
        raise FileNotFoundError(
            f"prompt sets: expected a folder at {path}, found none (pass --shared PATH or set GENGUARD_SHARED "
            "to a folder holding data/prompts; tests/data/prompt-sample holds a few rows of each set)"
        )
    return path


def rows(path: Path, delimiter: str = ",") -> list[dict[str, str]]:
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def texts(rows: Iterable[dict[str, str]], column: str = "prompt") -> list[str]:
    return [text for row in rows if (text := (row.get(column) or "").strip())]


def coco_prompts(shared: Path | None = None) -> list[str]:
    return texts(rows(prompts_dir(shared) / "coco30k_captions" / "coco_30k.csv"))


def parti_prompts(shared: Path | None = None) -> list[str]:
    return texts(rows(prompts_dir(shared) / "partiprompts" / "PartiPrompts.tsv", "\t"), "Prompt")


def i2p_rows(shared: Path | None = None) -> list[dict[str, str]]:
    return [
        r for r in rows(prompts_dir(shared) / "i2p" / "i2p_unsafe-prompts4703.csv") if r["prompt"].strip()
    ]


def relabel_rows(shared: Path | None = None) -> list[dict[str, str]]:
    path = prompts_dir(shared) / "nsfw_erasure_bench" / "NSFWErasureBench_I2P_rows_only.csv"
    return [r for r in rows(path) if r["prompt"].strip()]


def adversarial_prompts(kind: str, shared: Path | None = None) -> list[str]:
    """Unique prompts of nsfw_erasure_bench's adversarial set `kind` (Nudity, Violent, Horror)."""
    path = prompts_dir(shared) / "nsfw_erasure_bench" / "adv_prompts" / f"{kind}_adv_prompts.csv"
    return sorted(set(texts(rows(path))))


def stop_rate(decisions: Sequence[PromptDecision]) -> float:
    return sum(d.action in STOPS for d in decisions) / max(len(decisions), 1)


def english_terms_only(pack: PolicyPack) -> PolicyPack:
    """`pack` as it was before the multilingual term files: without the rules that carry a language,
    and with every unreadable semantic score held for review (no `semantic.lexical_languages`)."""
    semantic = pack.spec.semantic
    if semantic is not None:
        semantic = semantic.model_copy(update={"lexical_languages": None})
    categories = {
        cid: category.model_copy(
            update={
                "rules": [r for r in category.rules if r.language is None],
                "cooccurrence": [r for r in category.cooccurrence if r.language is None],
            }
        )
        for cid, category in pack.spec.categories.items()
    }
    return PolicyPack.from_spec(pack.spec.model_copy(update={"categories": categories, "semantic": semantic}))
