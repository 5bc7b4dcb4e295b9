"""What the pipeline hands to the audit store: typed values, no ORM objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from genguard.guard.types import GenerationRequest, ImageVerdict, PromptDecision, PromptStorage

# Appended (chained) after a generation's commit for each released image whose file could not be
# written; payload: image_index, path, error (the generation is the event's own). The image's record
# keeps status "released"; this event withdraws it: verify and reports read it as not released.
RELEASE_FAILED_EVENT = "release.failed"
GENERATION_STATUSES = ("completed", "blocked", "failed", "invalid")
IMAGE_STATUSES = ("released", "quarantined", "blocked")


@dataclass(frozen=True)
class ImageRecord:
    """One output image as recorded. `path` is where it will be written (None if withheld)."""

    index: int
    sha256: str
    phash: int  # 64-bit perceptual hash (genguard.guard.phash, imagehash's pHash), stored as a signed 64-bit integer
    width: int
    height: int
    verdict: ImageVerdict
    status: str  # "released", "quarantined", "blocked"
    path: str | None = None
    mark_id: int | None = None  # pixel watermark id (64-bit), unique in the database
    manifest: bytes | None = None  # C2PA manifest store, when signed
    # Per-image nonce of the latent (Gaussian-Shading) watermark; with the key and mark_id it
    # regenerates the initial noise exactly, and detection needs it.
    latent_nonce: bytes | None = None


@dataclass(frozen=True)
class GenerationRecord:
    """Everything about one request, written in ONE transaction with its chained events."""

    generation_id: str
    request: GenerationRequest
    decision: PromptDecision
    prompt_storage: PromptStorage
    status: str  # "completed", "blocked", "failed"
    model_id: str = ""
    pipeline_class: str = ""
    seed: int | None = None
    images: tuple[ImageRecord, ...] = ()
    error: str | None = None  # for failed requests: what failed (never a secret)
    extra: dict[str, Any] = field(default_factory=dict)
