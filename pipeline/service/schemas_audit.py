"""Bodies of the review, audit, report and proof endpoints (pydantic); the OpenAPI schema is built from them.

They carry what the CLI's `review`, `audit`, `report` and `audit prove` commands print as JSON, with one
difference: a review decision names the released file, not its path on the server.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from genguard.audit.review import ReviewDecision, ReviewItem


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifierScoreView(BaseModel):
    classifier: str
    model_id: str
    category: str
    score: float


class ReviewDecisionView(BaseModel):
    decision: str = Field(description="approved or rejected")
    reviewer: str = Field(description="apikey:<key id> for decisions made over HTTP")
    reason: str
    decided_at: datetime
    seq: int = Field(description="The decision's entry in the audit log.")
    released_sha256: str | None
    released_phash: str | None
    file: str | None = Field(description="The released file's name (approvals).")

    @classmethod
    def of(cls, decision: ReviewDecision) -> ReviewDecisionView:
        return cls(
            decision=decision.decision,
            reviewer=decision.reviewer,
            reason=decision.reason,
            decided_at=decision.decided_at,
            seq=decision.seq,
            released_sha256=decision.released_sha256,
            released_phash=None if decision.released_phash is None else f"{decision.released_phash:016x}",
            file=None if decision.path is None else PurePath(decision.path).name,
        )


class ReviewItemView(BaseModel):
    """A quarantined image: `review_id` is "<generation id>:<index>"; `prompt` is null when the pack
    stored it hashed or redacted; `decision` is null while it waits."""

    review_id: str
    generation_id: str
    index: int
    created_at: datetime
    actor: str
    prompt: str | None
    policy: str
    scores: list[ClassifierScoreView]
    flagged: list[tuple[str, float]] = Field(description="[category, threshold] pairs the image crossed.")
    kept: bool = Field(description="An encrypted copy exists that an approval can release.")
    decision: ReviewDecisionView | None

    @classmethod
    def of(cls, item: ReviewItem) -> ReviewItemView:
        return cls(
            review_id=item.review_id,
            generation_id=item.generation_id,
            index=item.index,
            created_at=item.created_at,
            actor=item.actor,
            prompt=item.prompt,
            policy=item.policy,
            scores=[
                ClassifierScoreView(
                    classifier=s.classifier, model_id=s.model_id, category=s.category, score=s.score
                )
                for s in item.scores
            ],
            flagged=list(item.flagged),
            kept=item.kept,
            decision=None if item.decision is None else ReviewDecisionView.of(item.decision),
        )


class ReviewPage(BaseModel):
    items: list[ReviewItemView]
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")


class PromptRuleView(BaseModel):
    category: str
    layer: str
    rule: str
    score: float


class HeldByView(BaseModel):
    category: str
    score: float


class ReviewGeneration(BaseModel):
    """A generation's quarantined images with the prompt rules that fired and the prompt categories
    whose review action held them (as `genguard review show` gives them)."""

    generation_id: str
    prompt_rules: list[PromptRuleView]
    held_by: list[HeldByView]
    images: list[ReviewItemView]


class ApproveRequest(_Strict):
    reason: str = Field(default="", max_length=2000, description="Why (recorded).")


class RejectRequest(_Strict):
    reason: str = Field(min_length=1, max_length=2000, description="Why (required, recorded).")


class ReviewOutcomeView(BaseModel):
    review_id: str
    decision: ReviewDecisionView


class GenerationPage(BaseModel):
    """Generations newest first, as `genguard audit list --json` prints each."""

    items: list[dict[str, Any]]
    offset: int
    limit: int
    next_offset: int | None = Field(description="The offset of the next page; null on the last one.")


class InclusionProofView(BaseModel):
    """`genguard audit prove`'s document (format genguard/inclusion-proof/v1): hashes in base64; anyone
    checks it offline with `genguard audit check-proof`."""

    format: str
    origin: str
    tree_size: int
    root_hash: str
    path: list[str]
    entry: dict[str, Any]
    checkpoint: str | None = Field(description="The signed checkpoint of this very tree, when there is one.")


class ConsistencyProofView(BaseModel):
    """RFC 9162 consistency proof from the log's first `first` entries to its first `second`; base64."""

    origin: str
    first: int
    second: int
    first_root: str
    second_root: str
    path: list[str]
