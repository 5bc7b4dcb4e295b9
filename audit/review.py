"""The review queue: quarantined images waiting for a person to approve or reject them.

Decisions are chained audit events, not new tables: "review.approved" / "review.rejected" with
the image index, the reviewer, the reason and (for approvals) the released file's digest, perceptual
hash and path, which `verify` reads as the approved image's record (`decisions`). The
queue is every image recorded as quarantined with no review event after it.

Approving releases the image through the one release path (`genguard.audit.release`, as generation
does): its encrypted copy is decrypted, marked by the watermarker its generation recorded
(`recorded_watermarker`: the registered watermarker of that algorithm id) with the mark id recorded for
it, encoded in the request's recorded format and signed; the event is committed, and only then is the
file written.
Rejecting needs a reason; the encrypted copy is deleted after the event is committed.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genguard.audit import chain
from genguard.audit.reader import StoredEvent
from genguard.audit.release import ReleaseFile, release_image, write_released
from genguard.audit.store import AuditStore
from genguard.guard.errors import BadInputError, InfrastructureError, NotFoundError
from genguard.guard.quarantine import QuarantineVault
from genguard.guard.types import ClassifierScore, PromptStorage

if TYPE_CHECKING:  # c2pa's native library loads only when an image is released
    from genguard.guard.input_image import InputStore
    from genguard.guard.provenance import ContentCredentials, EditFacts
    from genguard.guard.watermark import Watermarker

APPROVED = "review.approved"
REJECTED = "review.rejected"
EXPORTED = "review.image_exported"
DECISIONS = (APPROVED, REJECTED)
_REVIEW_ID = re.compile(r"^(?P<generation>[0-9A-Za-z_-]{1,64}):(?P<index>\d{1,4})$")


@dataclass(frozen=True)
class ReviewDecision:
    """Who decided about an image, when, how and why (one chained event, `seq`)."""

    decision: str  # "approved" or "rejected"
    reviewer: str
    reason: str
    decided_at: datetime
    seq: int
    released_sha256: str | None = None
    path: str | None = None
    released_phash: int | None = None  # of the released pixels (approvals recorded before it: None)


@dataclass(frozen=True)
class ReviewItem:
    """A quarantined image. `review_id` is "<generation id>:<image index>"; `prompt` is None when the
    pack stored it hashed or redacted. `decision` is None while it waits in the queue."""

    review_id: str
    generation_id: str
    index: int
    created_at: datetime
    actor: str
    prompt: str | None
    policy: str  # "name version"
    scores: tuple[ClassifierScore, ...]
    flagged: tuple[tuple[str, float], ...]
    kept: bool  # an encrypted copy exists that an approval can release
    decision: ReviewDecision | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "review_id": self.review_id,
            "generation_id": self.generation_id,
            "index": self.index,
            "created_at": chain.format_time(self.created_at),
            "actor": self.actor,
            "prompt": self.prompt,
            "policy": self.policy,
            "scores": [
                {"classifier": s.classifier, "model_id": s.model_id, "category": s.category, "score": s.score}
                for s in self.scores
            ],
            "flagged": [[category, threshold] for category, threshold in self.flagged],
            "kept": self.kept,
            "decision": None
            if self.decision is None
            else {
                "decision": self.decision.decision,
                "reviewer": self.decision.reviewer,
                "reason": self.decision.reason,
                "decided_at": chain.format_time(self.decision.decided_at),
                "seq": self.decision.seq,
                "released_sha256": self.decision.released_sha256,
                "released_phash": None
                if self.decision.released_phash is None
                else f"{self.decision.released_phash:016x}",
                "path": self.decision.path,
            },
        }


@dataclass(frozen=True)
class ReviewOutcome:
    item: ReviewItem
    decision: ReviewDecision


def parse_review_id(review_id: str) -> tuple[str, int]:
    match = _REVIEW_ID.fullmatch(review_id.strip()) if isinstance(review_id, str) else None
    if match is None:
        raise BadInputError(
            f"review id: expected GENERATION_ID:INDEX (as `review list` shows), found {review_id!r}"
        )
    return match["generation"], int(match["index"])


def decisions(
    store: AuditStore, generation_ids: Iterable[str] = (), *, released_sha256: str | None = None
) -> dict[tuple[str, int], ReviewDecision]:
    """The review decisions about the images of `generation_ids`, and the approvals whose released file
    has the digest `released_sha256` (what verify reads): (generation id, image index) -> decision.
    Read from chained entries only (`AuditReader.events`)."""
    wanted = sorted(set(generation_ids))
    found: dict[tuple[str, int], ReviewDecision] = {}
    with store.reader().snapshot() as reader:
        if wanted:
            found.update(_decisions(reader.iter_events(DECISIONS, generation_ids=wanted)))
        if released_sha256 is not None and re.fullmatch(r"[0-9a-f]{64}", released_sha256):
            # approvals are few; the digest narrows them to the one released file
            approvals = _decisions(reader.iter_events((APPROVED,), payload_contains=released_sha256))
            found.update((key, d) for key, d in approvals.items() if d.released_sha256 == released_sha256)
    return found


def _decisions(events: Iterable[StoredEvent]) -> dict[tuple[str, int], ReviewDecision]:
    """Review decisions from "review.approved" / "review.rejected" entries in seq order."""
    decided: dict[tuple[str, int], ReviewDecision] = {}
    for event in events:
        payload = event.payload
        key = (str(event.generation_id), int(payload["image_index"]))
        decided.setdefault(  # the first decision counts; a later one could only be a race
            key,
            ReviewDecision(
                decision="approved" if event.event_type == APPROVED else "rejected",
                reviewer=str(payload.get("reviewer", "")),
                reason=str(payload.get("reason", "")),
                decided_at=event.recorded_at,
                seq=int(event.seq),
                released_sha256=payload.get("released_sha256"),
                path=payload.get("path"),
                released_phash=_hex64(payload.get("released_phash")),
            ),
        )
    return decided


def _hex64(value: object) -> int | None:
    return int(value, 16) if isinstance(value, str) and re.fullmatch(r"[0-9a-f]{16}", value) else None


def _items(
    store: AuditStore,
    vault: QuarantineVault,
    generation_id: str | None = None,
    index: int | None = None,
    tenant: str | None = None,
) -> list[ReviewItem]:
    with store.reader().snapshot() as reader:
        images = reader.quarantined_images(generation_id, index, tenant=tenant)
        ids = None if generation_id is None else [generation_id]
        decided = _decisions(reader.iter_events(DECISIONS, generation_ids=ids))
    return [
        ReviewItem(
            review_id=f"{image.generation_id}:{image.index}",
            generation_id=image.generation_id,
            index=image.index,
            created_at=image.created_at,
            actor=image.actor,
            prompt=image.prompt.text if image.prompt.storage is PromptStorage.FULL else None,
            policy=f"{image.policy.name} {image.policy.version}",
            scores=image.verdict.scores,
            flagged=image.verdict.flagged,
            kept=vault.path(image.generation_id, image.index).exists(),
            decision=decided.get((image.generation_id, image.index)),
        )
        for image in images
    ]


def review_queue(
    store: AuditStore, vault: QuarantineVault | None = None, *, tenant: str | None = None
) -> list[ReviewItem]:
    """Quarantined images with no review decision yet, oldest first; with `tenant`, only that tenant's
    (actors "<tenant>" and "<tenant>/...")."""
    return [
        item for item in _items(store, vault or QuarantineVault(), tenant=tenant) if item.decision is None
    ]


def show(store: AuditStore, review_id: str, vault: QuarantineVault | None = None) -> ReviewItem:
    """One quarantined image, decided or not."""
    generation_id, index = parse_review_id(review_id)
    found = _items(store, vault or QuarantineVault(), generation_id, index)
    if not found:
        raise NotFoundError(f"review id {review_id!r}: expected a quarantined image, found none recorded")
    return found[0]


def export_image(
    store: AuditStore, review_id: str, destination: Path, reviewer: str, vault: QuarantineVault | None = None
) -> Path:
    """Decrypt a kept quarantined image to `destination` (a PNG, mode 0600) for a reviewer to look at.

    The pixels are the unmarked ones the checks saw: the copy leaves the vault without watermark or
    Content Credentials, so a chained "review.image_exported" event (who, where, the PNG's sha256) is
    committed before the file is written. Nothing is decided: the image stays in the queue.
    """
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise BadInputError("reviewer: expected a name (--reviewer or $USER), found none")
    vault = vault or QuarantineVault()
    item = show(store, review_id, vault)
    png = vault.load_png(item.generation_id, item.index)
    destination = Path(destination)
    if destination.is_dir():
        destination = destination / f"{item.generation_id}-{item.index}.quarantined.png"
    payload = {
        "image_index": item.index,
        "reviewer": reviewer,
        "path": str(destination),
        "sha256": hashlib.sha256(png).hexdigest(),
    }
    store.append_event(EXPORTED, payload, item.generation_id)
    tmp = destination.with_name(f".{destination.name}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(png)
    os.replace(tmp, destination)
    return destination


def view_image(
    store: AuditStore, review_id: str, reviewer: str, *, to: str, vault: QuarantineVault | None = None
) -> bytes:
    """The decrypted PNG of a kept quarantined image, for a reviewer to look at, as `export_image` gives
    it but returned rather than written: the same "review.image_exported" event (who, `to` as where it
    went, the PNG's sha256) is committed before the bytes are returned. NotFoundError when no copy is
    kept."""
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise BadInputError("reviewer: expected a name, found none")
    vault = vault or QuarantineVault()
    item = show(store, review_id, vault)
    if not item.kept:
        raise NotFoundError(f"review id {review_id!r}: expected a kept encrypted copy, found none")
    png = vault.load_png(item.generation_id, item.index)
    payload = {
        "image_index": item.index,
        "reviewer": reviewer,
        "path": to,
        "sha256": hashlib.sha256(png).hexdigest(),
    }
    store.append_event(EXPORTED, payload, item.generation_id)
    return png


def _pending(store: AuditStore, review_id: str, vault: QuarantineVault, reviewer: str) -> ReviewItem:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise BadInputError("reviewer: expected a name (--reviewer or $USER), found none")
    item = show(store, review_id, vault)
    if item.decision is not None:
        d = item.decision
        raise BadInputError(
            f"review id {review_id!r}: expected an image waiting for review, found it already {d.decision} "
            f"by {d.reviewer} at {chain.format_time(d.decided_at)}"
        )
    return item


def approve(
    store: AuditStore,
    review_id: str,
    *,
    reviewer: str,
    out_dir: Path,
    reason: str = "",
    vault: QuarantineVault | None = None,
    watermark_key: bytes | None = None,
    content_credentials: ContentCredentials | None = None,
    watermarker: Watermarker | None = None,
    input_store: InputStore | None = None,
) -> ReviewOutcome:
    """Release a quarantined image into `out_dir` as "<generation id>-<index>.<suffix>" through the one
    release path (`genguard.audit.release`), like any released image: marked with the mark id recorded
    for it, encoded in the format its request recorded (PNG, JPEG or WebP), signed
    (`content_credentials`: the configured signer when None; the manifest embedded, or in a `.c2pa`
    sidecar when the generation recorded sidecars), hashed.

    `watermarker`: the registered watermarker of the algorithm recorded for the generation when None;
    a given one must have that algorithm (BadInputError otherwise: an image marked with another
    algorithm would not verify).
    An edit's image (its record holds `extra.edit`) is signed as an edit, as at generation: its input
    as the ingredient, loaded from `input_store` (None: the default folder) when the pack kept it, else
    named by its recorded hash.
    The event is committed before the file is written (nothing leaves before its record).
    """
    from genguard.guard.provenance import ContentCredentials as Credentials
    from genguard.guard.provenance import ManifestFacts
    from genguard.guard.watermark import recorded_watermarker

    vault = vault or QuarantineVault()
    item = _pending(store, review_id, vault, reviewer)
    detail = store.get_generation(item.generation_id)
    stored = next(image for image in detail.images if image.index == item.index) if detail else None
    if detail is None or stored is None or stored.mark_id is None:
        raise NotFoundError(f"review id {review_id!r}: expected a recorded mark id for the image, found none")
    recorded = recorded_watermarker(detail.extra.get("watermarks"))  # fails closed on an unknown id
    if watermarker is None:
        watermarker = recorded
    elif watermarker.algorithm != recorded.algorithm:
        raise BadInputError(
            f"watermarker: expected the algorithm recorded for generation {item.generation_id} "
            f"({recorded.algorithm!r}), found {watermarker.algorithm!r}"
        )
    credentials_extra = detail.extra.get("content_credentials") or {}
    output_format = str(credentials_extra.get("format", "png"))
    sidecar = credentials_extra.get("manifest") == "sidecar"
    pixels = vault.load(item.generation_id, item.index)
    facts = ManifestFacts(
        generation_id=item.generation_id,
        image_index=item.index,
        policy=detail.policy,
        verdict=stored.verdict,
        model_id=detail.model_id,
        pipeline_class=detail.pipeline_class,
        mark_id=stored.mark_id,
        watermark_algorithm=watermarker.algorithm,
        edit=_recorded_edit(detail.extra.get("edit"), item.generation_id, input_store),
    )
    released = release_image(
        pixels,
        facts,
        watermarker=watermarker,
        key=watermark_key,
        output_format=output_format,
        credentials=content_credentials or Credentials.from_config(),
        embed_manifest=not sidecar,
    )
    target = Path(out_dir) / f"{item.generation_id}-{item.index}{released.suffix}"
    payload = {
        "image_index": item.index,
        "reviewer": reviewer.strip(),
        "reason": reason.strip(),
        "released_sha256": released.sha256,
        "released_phash": f"{released.phash:016x}",  # so that verify reads the released file
        "path": str(target),
    }
    seq = store.append_event(APPROVED, payload, generation_id=item.generation_id)  # the commit
    decision = _decision_after(store, item, seq)  # a concurrent first decision wins: nothing is written
    failures = write_released(
        [ReleaseFile(item.index, target, released.data, released.manifest)], sidecar=sidecar
    )
    if failures:
        error = failures[item.index]
        raise InfrastructureError(
            f"output: approval of {item.review_id} is recorded (seq {seq}) but {target} could not be "
            f"written: {error.strerror or error}; the encrypted copy is kept"
        ) from error
    vault.discard(item.generation_id, item.index)
    return ReviewOutcome(item, decision)


def reject(
    store: AuditStore,
    review_id: str,
    *,
    reviewer: str,
    reason: str,
    vault: QuarantineVault | None = None,
) -> ReviewOutcome:
    """Reject a quarantined image (a reason is required); its encrypted copy is then deleted."""
    if not isinstance(reason, str) or not reason.strip():
        raise BadInputError("reason: expected why the image is rejected (--reason), found none")
    vault = vault or QuarantineVault()
    item = _pending(store, review_id, vault, reviewer)
    payload = {"image_index": item.index, "reviewer": reviewer.strip(), "reason": reason.strip()}
    seq = store.append_event(REJECTED, payload, generation_id=item.generation_id)
    vault.discard(item.generation_id, item.index)
    return ReviewOutcome(item, _decision_after(store, item, seq))


def _decision_after(store: AuditStore, item: ReviewItem, seq: int) -> ReviewDecision:
    events = store.reader().iter_events(DECISIONS, generation_ids=[item.generation_id])
    decision = _decisions(events)[(item.generation_id, item.index)]
    if decision.seq != seq:  # another reviewer's decision was committed first
        raise BadInputError(
            f"review id {item.review_id!r}: decided concurrently; the first decision (seq {decision.seq}, "
            f"{decision.decision} by {decision.reviewer}) stands"
        )
    return decision


def _recorded_edit(edit: object, generation_id: str, input_store: InputStore | None) -> EditFacts | None:
    """The manifest facts of an edit from its record (`extra.edit`), None for a text-to-image one."""
    from genguard.guard.input_image import InputStore
    from genguard.guard.provenance import EditFacts

    def number(value: object, default: float) -> float:
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default

    if not isinstance(edit, dict):
        return None

    def section(name: str) -> dict[str, Any]:
        value = edit.get(name)
        return value if isinstance(value, dict) else {}

    source, credentials, origin = section("input"), section("credentials"), section("source")
    sha256, stored = source.get("sha256"), source.get("stored")
    if not isinstance(sha256, str):
        raise NotFoundError(
            f"generation {generation_id}: expected the edit input's recorded hash, found none"
        )
    data = (
        (input_store or InputStore()).load(generation_id, stored, sha256) if isinstance(stored, str) else None
    )
    source_generation = origin.get("generation_id")
    return EditFacts(
        data=data,
        mime_type=str(source.get("mime_type") or "image/png"),
        sha256=sha256,
        manifest_state=str(credentials.get("state") or "absent"),
        mode=str(edit.get("mode") or "img2img"),
        mask_share=number(edit.get("mask_area_share"), 1.0),
        strength=number(edit.get("strength"), 1.0),
        source_generation_id=source_generation if isinstance(source_generation, str) else None,
    )
