"""`verify`: is this image ours, which generation made it, and was it changed since?

Four layers, each covering what the others lose (DESIGN.md, "The verify flow"):
- manifest: the C2PA manifest (embedded, or a sidecar): Trusted (intact, signed under a configured trust
  anchor), Valid (intact, unknown signer), Invalid (altered: a hash mismatch; or credentials that fail, e.g.
  an expired certificate, a corrupt manifest), Absent. Its governance assertion claims a generation and image
  index, its soft binding a mark id.
- watermark: the mark id of our watermark (survives re-encoding, resizing, crops; needs the watermark key),
  read by the registered watermarker of the algorithm the manifest names, else by each registered one in
  turn (the pixel watermark first) until one reads a mark (`genguard.guard.watermark.base`).
- sha256: records holding exactly these bytes.  phash: records whose perceptual hash is within Hamming
  distance `RADIUS` (finds near-copies whose watermark was destroyed).
- record: the audit record that any of them leads to (generation, index, status, time, policy).

The manifest, watermark and sha256 layers "point" at records: a manifest at the one it claims (whatever its
state: the claim is evidence even when the signature is not proof), the watermark at the record holding its
mark id, sha256 at the records with these bytes. When two of them point at different records (or the
manifest's soft binding or policy digest differs from the pixels' mark id or the record, or the pixels carry
a mark id that no record holds while another layer found a record), the layers DISAGREE and the verdict is
`conflict`, naming each side; nothing is guessed. Otherwise the record is the one they agree on, or, when
none of them points anywhere, the nearest record by perceptual hash. The perceptual hash is weak evidence
(different generations can look alike): a record beyond `RADIUS` while other records are near is a note,
not a conflict.

Decision table (first matching row; "record" = a record found as above, with no disagreement):

| layers                                                                         | verdict                |
|--------------------------------------------------------------------------------|------------------------|
| layers point at different records / mark ids                                   | conflict               |
| record claimed by a Trusted manifest (intact, our trust anchors)               | verified-original      |
| record; manifest Invalid with a hash mismatch (pixels or manifest edited)      | ours-altered           |
| record; bytes equal the recorded sha256 (manifest absent, untrusted, or        | ours-original          |
|   invalid without a mismatch, e.g. expired certificate): proven by this        |                        |
|   database only, not by Content Credentials                                    |                        |
| record found by watermark or manifest claim; manifest absent; same size as     | ours-metadata-stripped |
|   recorded and phash distance <= `NEAR_IDENTICAL` (re-saved, re-encoded)       |                        |
| record found by watermark or manifest claim; anything else (resized, edited,   | ours-altered           |
|   re-signed by a foreign signer, manifest damaged)                             |                        |
| record found by phash alone (no watermark, no manifest claim, other bytes)     | ours-near-copy         |
| no record; manifest Trusted, or our watermark reads a mark id: ours by the     | ours-no-record         |
|   credentials or the key, but this database holds no record (another database, |                        |
|   a missing record, or no database consulted)                                  |                        |
| no record; manifest Valid (intact, signer not among our trust anchors)         | foreign-signed         |
| nothing                                                                        | unknown                |

A Valid manifest from an unknown signer is never proof of origin, even when it claims one of our generations
(its claim still counts as a pointer, so a forged claim that contradicts the pixels shows as a conflict).
The perceptual hash does not see small local edits: "metadata stripped" means no manifest and pixels that
are perceptually the same, not a proof that no pixel changed. Withheld (quarantined or blocked) records found
by any layer are named in the notes: such an image should never have left. So are released images whose
file was never written (a `release.failed` event after the commit): the record's status reads
"release-failed", and the summary says so whatever the verdict.

Bounded work: an accepted image (up to `guard.imageio.DEFAULT_MAX_PIXELS`, refused before decoding
above) is read at a working resolution of at most `WORKING_PIXELS` (1024 x 1024): JPEG decoded at a
reduced DCT scale, then reduced by area (`guard.imageio.load_image`). The watermark detector and the
perceptual hash see that view; the sha256 is of the file's bytes; sizes compared with the record are the
file's. Why 1024 x 1024: the detector's cost grows with the pixels it reads (its geometric search warps
the whole image some 170 times), and it undoes scalings of 0.5 to 2, so a copy viewed at about 1024 px
reads marks made at 512 to 2048 px (every family's size range), however far it was enlarged. Images up to
that size (every image generated at up to 1024 x 1024) are read exactly as before.

Recording: every verification appends one "verify.performed" event (sha256, phash, verdict, each layer's
short result; never the image or its name) in its own transaction. Fail closed: if the event cannot be
written, `VerificationNotRecorded` (an AuditUnavailableError, exit 4) is raised carrying the report, so a
caller can show what was found but can never mistake an unrecorded verification for a recorded one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from genguard.audit.records import RELEASE_FAILED_EVENT
from genguard.audit.review import ReviewDecision, decisions
from genguard.audit.store import AuditStore, GenerationDetail, StoredImage
from genguard.guard.config import watermark_key
from genguard.guard.errors import AuditUnavailableError, BadInputError, GenguardError, ImageInputError
from genguard.guard.imageio import LoadedImage, load_image
from genguard.guard.markid import format_optional_mark_id
from genguard.guard.phash import hamming, perceptual_hash
from genguard.guard.provenance import ManifestReading, ManifestState, read_manifest, trust_anchors_from_config
from genguard.guard.types import PolicyRef
from genguard.guard.watermark import (
    UnknownWatermarkError,
    WatermarkDetection,
    Watermarker,
    recorded_watermarker,
    registered_watermarkers,
    watermarker_for,
)

RADIUS = 8  # Hamming radius of the perceptual-hash lookup
NEAR_IDENTICAL = 2  # phash distance of a plain re-encode (0 to 2 on the test photographs at JPEG 75..95)
MAX_SIMILAR = 20
EVENT_TYPE = "verify.performed"
IMAGE_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"))
SIDECAR_SUFFIX = ".c2pa"
# What a generation id looks like (review ids use the same); a manifest's claim that does not is ignored
_GENERATION_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")
_MAX_IMAGE_INDEX = 9999
# The most pixels the watermark detector and the perceptual hash read of one image (module docstring)
WORKING_PIXELS = 1024 * 1024

_MIME_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "TIFF": "image/tiff",
    "BMP": "image/bmp",
}


class Verdict(StrEnum):
    VERIFIED_ORIGINAL = "verified-original"
    OURS_ORIGINAL = "ours-original"
    OURS_METADATA_STRIPPED = "ours-metadata-stripped"
    OURS_ALTERED = "ours-altered"
    OURS_NEAR_COPY = "ours-near-copy"
    OURS_NO_RECORD = "ours-no-record"
    FOREIGN_SIGNED = "foreign-signed"
    CONFLICT = "conflict"
    UNKNOWN = "unknown"


class Layer(StrEnum):
    MANIFEST = "manifest"
    WATERMARK = "watermark"
    SHA256 = "sha256"
    PHASH = "phash"


@dataclass(frozen=True, order=True)
class ImageRef:
    """One recorded image: its generation and index within it."""

    generation_id: str
    index: int

    def __str__(self) -> str:
        return f"{self.generation_id}/{self.index}"


@dataclass(frozen=True)
class HashMatch:
    image: ImageRef
    distance: int


@dataclass(frozen=True)
class HashEvidence:
    """sha256 of the bytes and their records; phash of the pixels and the records within `RADIUS`."""

    sha256: str
    phash: int
    exact: tuple[ImageRef, ...]
    similar: tuple[HashMatch, ...]  # nearest first, at most MAX_SIMILAR


@dataclass(frozen=True)
class AuditRecord:
    """The record the layers led to. `phash_distance`: this image's phash to the recorded one."""

    image: ImageRef
    generation_status: str
    # released, quarantined, blocked; "approved": quarantined, then released by a review; "release-failed":
    # recorded as released, but its file was never written (a `release.failed` event withdrew it)
    image_status: str
    created_at: datetime
    policy: PolicyRef
    model_id: str
    sha256: str
    phash: int
    mark_id: int | None
    width: int
    height: int
    phash_distance: int
    found_by: tuple[Layer, ...]
    approval_seq: int | None = None  # the review.approved event that released it
    # The marks the record says were embedded (watermark algorithm ids: the pixel mark, and the latent
    # mark when the family's noise carried it), and why the latent mark is absent or unreadable.
    marks: tuple[str, ...] = ()
    latent_mark_note: str | None = None

    @property
    def released(self) -> bool:
        return self.image_status in ("released", "approved")


@dataclass(frozen=True)
class VerificationReport:
    """What `verify_image` found. `watermark` is None when no registered watermarker can read the image
    (too small to carry a mark); its `algorithm` names the watermarker that read it.

    `agreeing`: the layers that lead to `record`. `disagreements`: one sentence per contradiction (then the
    verdict is `conflict`). `event_seq`: the audit log entry of this verification (None: not recorded).
    """

    name: str
    sha256: str
    width: int
    height: int
    verdict: Verdict
    summary: str
    manifest: ManifestReading
    watermark: WatermarkDetection | None
    hashes: HashEvidence
    record: AuditRecord | None
    agreeing: tuple[Layer, ...]
    disagreements: tuple[str, ...]
    notes: tuple[str, ...]
    event_seq: int | None = None

    def to_json(self) -> dict[str, Any]:
        manifest = self.manifest
        watermark = self.watermark
        record = self.record
        return {
            "name": self.name,
            "sha256": self.sha256,
            "size": [self.width, self.height],
            "verdict": self.verdict.value,
            "summary": self.summary,
            "manifest": {
                "state": manifest.state.value,
                "codes": list(manifest.codes),
                "signer": manifest.signer,
                "issuer": manifest.issuer,
                "signed_at": manifest.signed_at,
                "generation_id": manifest.generation_id,
                "image_index": manifest.image_index,
                "mark_id": _hex(manifest.mark_id),
                "watermark_algorithm": manifest.watermark_algorithm,
                "policy_digest": manifest.policy_digest,
                "error": manifest.error,
            },
            "watermark": None
            if watermark is None
            else {
                "marked": watermark.marked,
                "algorithm": watermark.algorithm,
                "mark_id": _hex(watermark.mark_id),
                "confidence": round(watermark.confidence, 2),
            },
            "hashes": {
                "sha256_matches": [str(ref) for ref in self.hashes.exact],
                "phash": _hex(self.hashes.phash),
                "similar": [{"image": str(m.image), "distance": m.distance} for m in self.hashes.similar],
            },
            "record": None
            if record is None
            else {
                "generation_id": record.image.generation_id,
                "image_index": record.image.index,
                "generation_status": record.generation_status,
                "image_status": record.image_status,
                "released": record.released,
                "created_at": record.created_at.isoformat(),
                "policy": {
                    "name": record.policy.name,
                    "version": record.policy.version,
                    "digest": record.policy.digest,
                },
                "model_id": record.model_id,
                "sha256": record.sha256,
                "mark_id": _hex(record.mark_id),
                "size": [record.width, record.height],
                "phash_distance": record.phash_distance,
                "found_by": [layer.value for layer in record.found_by],
                "approval_seq": record.approval_seq,
                "marks": list(record.marks),
                "latent_mark_note": record.latent_mark_note,
            },
            "agreeing": [layer.value for layer in self.agreeing],
            "disagreements": list(self.disagreements),
            "notes": list(self.notes),
            "event_seq": self.event_seq,
        }


@dataclass(frozen=True)
class UnreadableImage:
    """An input `verify_images` could not verify (unreadable, corrupt, too large); `error` says why."""

    name: str
    error: str


class VerificationNotRecorded(AuditUnavailableError):
    """The verification ran but its audit event could not be written; `report` holds what was found."""

    def __init__(self, message: str, report: VerificationReport) -> None:
        super().__init__(message)
        self.report = report


# ------------------------------------------------------------------------------------------ API


def verify_image(
    data: bytes,
    *,
    store: AuditStore | None,
    name: str = "",
    sidecar: bytes | None = None,
    trust_anchors_pem: bytes | None = None,
    key: bytes | None = None,
    record: bool = True,
    watermarker: Watermarker | None = None,
) -> VerificationReport:
    """Verify one image file's bytes. `store` None: no audit layers (verdicts then cannot name a record).

    `watermarker`: read the watermark with this one only (None: the registered watermarker of the
    algorithm the manifest names, then each registered one, see `_read_watermark`); it is handed the
    image at the working resolution, at most `WORKING_PIXELS` pixels.

    `trust_anchors_pem` None: the configured anchors; `key` None: the configured watermark key. `record`:
    append the "verify.performed" event (ignored without a store). Raises ImageInputError (naming `name`)
    for an unreadable image, AuditUnavailableError when the database cannot be read, and
    VerificationNotRecorded when the event cannot be written.
    """
    evidence = _Evidence.read(data, name, sidecar, trust_anchors_pem)
    watermark, unread = _read_watermark(
        evidence.loaded, key, evidence.manifest.watermark_algorithm, watermarker
    )
    found = _Lookup.run(store, evidence.manifest, watermark, evidence.sha256, evidence.phash)
    report = evidence.decide(watermark, found, unread)
    return _recorded(store if record else None, report, evidence.label)


@dataclass(frozen=True)
class VerifySpace:
    """An audit store to look an image up in, and the watermark key that store's images were marked with."""

    store: AuditStore
    key: bytes


def verify_image_in_spaces(
    data: bytes,
    spaces: Sequence[VerifySpace],
    *,
    name: str = "",
    sidecar: bytes | None = None,
    trust_anchors_pem: bytes | None = None,
    record: bool = True,
    watermarker: Watermarker | None = None,
) -> VerificationReport:
    """`verify_image` over several audit stores (a service's tenant spaces), doing the expensive work once:
    the image is decoded, hashed and its manifest read once, and the watermark read once per distinct key.
    Each store is then looked up with the reading of its key.

    The report is the one of the store that holds the image: first one where the watermark's mark id,
    the exact bytes or the manifest's claim finds a record (the first such in `spaces` order), else the
    one with the nearest perceptual hash; it is recorded there. When no store holds anything, the report
    is the first store's (with the first key's reading that found a mark, if any: ours by the key, no
    record) and the verification is recorded in the first store. Nothing of the other stores shows."""
    if not spaces:
        raise BadInputError("spaces: expected at least one audit store to verify against, found none")
    evidence = _Evidence.read(data, name, sidecar, trust_anchors_pem)
    readings: dict[bytes, tuple[WatermarkDetection | None, tuple[str, ...]]] = {}
    for space in spaces:
        if space.key not in readings:
            readings[space.key] = _read_watermark(
                evidence.loaded, space.key, evidence.manifest.watermark_algorithm, watermarker
            )
    lookups = [
        _Lookup.run(space.store, evidence.manifest, readings[space.key][0], evidence.sha256, evidence.phash)
        for space in spaces
    ]
    ranks = [(*found.strength(evidence.manifest), -index) for index, found in enumerate(lookups)]
    best = max(range(len(spaces)), key=lambda index: ranks[index])
    chosen, found = spaces[best], lookups[best]
    watermark, unread = readings[chosen.key]
    if ranks[best][0] == 0:  # no store holds it: a mark read with any key still says "ours"
        chosen, found = spaces[0], lookups[0]
        marked = [reading for reading in readings.values() if reading[0] is not None and reading[0].marked]
        watermark, unread = marked[0] if marked else readings[spaces[0].key]
    report = evidence.decide(watermark, found, unread)
    return _recorded(chosen.store if record else None, report, evidence.label)


def _recorded(store: AuditStore | None, report: VerificationReport, label: str) -> VerificationReport:
    """Append the report's "verify.performed" event to `store` (None: not recorded)."""
    if store is None:
        return report
    try:
        seq = store.append_event(
            EVENT_TYPE, _event_payload(report), report.record.image.generation_id if report.record else None
        )
    except AuditUnavailableError as exc:
        raise VerificationNotRecorded(
            f"{label}: verified ({report.verdict.value}) but the verification could not be recorded: {exc}",
            report,
        ) from exc
    return replace(report, event_seq=seq)


@dataclass(frozen=True)
class _Evidence:
    """What one image shows by itself, before any watermark key or database: read once."""

    label: str
    loaded: LoadedImage
    manifest: ManifestReading
    claim_notes: tuple[str, ...]
    working_notes: tuple[str, ...]  # the working resolution, when the image was read reduced
    sha256: str
    phash: int

    @classmethod
    def read(
        cls, data: bytes, name: str, sidecar: bytes | None, trust_anchors_pem: bytes | None
    ) -> _Evidence:
        label = name or "<bytes>"
        try:
            loaded = load_image(data, working_pixels=WORKING_PIXELS)
        except ImageInputError as exc:
            raise ImageInputError(f"{label}: {str(exc).removeprefix('<bytes>: ')}") from None
        width, height = loaded.file_size
        view_width, view_height = loaded.size
        mime_type = _MIME_TYPES.get(loaded.format or "", "application/octet-stream")
        manifest, notes = _sane_claim(
            read_manifest(data, mime_type, trust_anchors_pem=trust_anchors_pem, sidecar=sidecar)
        )
        working: tuple[str, ...] = ()
        if loaded.reduced:
            view = f"read at a working resolution of {view_width}x{view_height} (watermark, perceptual hash)"
            working = (f"{view}; the file is {width}x{height}",)
        return cls(
            label,
            loaded,
            manifest,
            notes,
            working,
            hashlib.sha256(data).hexdigest(),
            perceptual_hash(loaded.rgb),
        )

    def decide(
        self, watermark: WatermarkDetection | None, found: _Lookup, unread: tuple[str, ...]
    ) -> VerificationReport:
        return _decide(
            self.label,
            self.sha256,
            self.phash,
            self.loaded.file_size,
            self.manifest,
            watermark,
            found,
            self.claim_notes + unread + self.working_notes,
        )


def verify_images(
    paths: Iterable[Path],
    *,
    store: AuditStore | None,
    trust_anchors_pem: bytes | None = None,
    key: bytes | None = None,
    record: bool = True,
) -> Iterator[VerificationReport | UnreadableImage]:
    """Verify image files one by one (a sidecar `IMAGE.c2pa` or `STEM.c2pa` next to one is read too).

    An unreadable image (or one that cannot be verified for any other reason but the database) gives an
    UnreadableImage and the others go on; a database failure stops the walk
    (AuditUnavailableError / VerificationNotRecorded propagate). Keys and trust anchors are read once.
    """
    key = key if key is not None else watermark_key()
    anchors = trust_anchors_pem if trust_anchors_pem is not None else trust_anchors_from_config() or b""
    for path in paths:
        try:
            data = _read_file(path)
            report = verify_image(
                data,
                store=store,
                name=str(path),
                sidecar=_sidecar(path),
                trust_anchors_pem=anchors,
                key=key,
                record=record,
            )
        except AuditUnavailableError:
            raise  # the database: every later file would fail the same way (fail closed)
        except GenguardError as exc:  # an unreadable image, a malformed value
            yield UnreadableImage(str(path), str(exc))
            continue
        except Exception as exc:  # noqa: BLE001  (a file that trips a bug must not hide the others: say so)
            yield UnreadableImage(str(path), f"{path}: could not be verified ({type(exc).__name__})")
            continue
        yield report


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The files to verify: files as given; folders walked (sorted) for image suffixes, hidden names skipped."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix.lower() in IMAGE_SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            files.append(path)
    return files


# ------------------------------------------------------------------------------------- internals


def _hex(value: int | None) -> str | None:
    return format_optional_mark_id(value)


def _read_watermark(
    image: LoadedImage, key: bytes | None, named: str | None, only: Watermarker | None = None
) -> tuple[WatermarkDetection | None, tuple[str, ...]]:
    """Read our watermark: with `only` when given; else first with the watermarker of the algorithm the
    manifest names (`named`, when registered), then with each other registered one, until one reads a
    mark. None (and a note saying why) when none can read the image at all; else the first mark read,
    or the first reading."""
    candidates: list[Watermarker] = [] if only is None else [only]
    if only is None and named:
        try:
            candidates.append(watermarker_for(named))
        except UnknownWatermarkError:
            pass  # a claim, maybe forged: every registered watermarker is tried below
    if only is None:
        candidates += [w for w in registered_watermarkers() if all(w is not c for c in candidates)]
    first: WatermarkDetection | None = None
    unreadable: list[str] = []
    for watermarker in candidates:
        try:
            found = watermarker.detect(image.rgb, key)
        except ImageInputError as exc:  # e.g. too small for this watermark
            unreadable.append(f"{watermarker.algorithm}: {exc}")
            continue
        if found.marked and found.mark_id is not None:
            return found, ()
        if first is None:
            first = found
    if first is None:
        reason = "; ".join(unreadable) or "no watermarker is registered"
        return None, (f"no watermark can be read ({reason})",)
    return first, ()


def _recorded_watermark_note(detail: GenerationDetail, ref: ImageRef) -> str | None:
    """A note when the record's watermark algorithm has no registered watermarker (so none read it)."""
    try:
        recorded_watermarker(detail.extra.get("watermarks"))
    except GenguardError as exc:
        return f"the record of {ref} names watermark {exc}: its watermark cannot be read here"
    return None


def _recorded_marks(detail: GenerationDetail) -> tuple[str, ...]:
    recorded = detail.extra.get("watermarks")
    if isinstance(recorded, list):
        return tuple(str(algorithm) for algorithm in recorded)
    return ()


def _latent_mark_note(detail: GenerationDetail) -> str | None:
    """The record's reason for a latent mark that is absent (e.g. a pixel-space family) or not
    readable by inversion (a sampler that re-noises), or None."""
    state = detail.extra.get("latent_mark")
    if not isinstance(state, dict):
        return None
    reason = state.get("reason")
    return _printable(str(reason), 200) if reason else None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImageInputError(f"{path}: cannot read ({exc.strerror})") from None


def _sidecar(path: Path) -> bytes | None:
    for candidate in (path.with_name(path.name + SIDECAR_SUFFIX), path.with_suffix(SIDECAR_SUFFIX)):
        if candidate != path and candidate.is_file():
            return _read_file(candidate)
    return None


@dataclass(frozen=True)
class _Lookup:
    """What the database holds for each layer's evidence, and the generations involved."""

    consulted: bool
    exact: tuple[StoredImage, ...] = ()
    similar: tuple[tuple[StoredImage, int], ...] = ()
    by_mark: StoredImage | None = None
    generations: dict[str, GenerationDetail] = field(default_factory=dict)
    # review decisions about the images found (an approval released a quarantined image)
    reviews: dict[ImageRef, ReviewDecision] = field(default_factory=dict)
    # released images of those generations whose file was never written (release.failed events)
    release_failed: frozenset[ImageRef] = frozenset()

    @classmethod
    def run(
        cls,
        store: AuditStore | None,
        manifest: ManifestReading,
        watermark: WatermarkDetection | None,
        sha256: str,
        phash: int,
    ) -> _Lookup:
        if store is None:
            return cls(consulted=False)
        exact = tuple(store.find_images_by_sha256(sha256))
        similar = tuple(
            (match.image, match.distance)
            for match in store.find_similar_images(phash, max_distance=RADIUS, limit=MAX_SIMILAR)
        )
        by_mark = None
        if watermark is not None and watermark.marked and watermark.mark_id is not None:
            by_mark = store.find_image_by_mark_id(watermark.mark_id)
        approved = decisions(store, released_sha256=sha256)  # a file released by a review
        wanted = {image.generation_id for image in exact} | {generation_id for generation_id, _ in approved}
        if by_mark is not None:
            wanted.add(by_mark.generation_id)
        if manifest.state is not ManifestState.ABSENT and manifest.generation_id:
            wanted.add(manifest.generation_id)
        if not wanted and similar:
            wanted.add(similar[0][0].generation_id)
        generations = {}
        for generation_id in sorted(wanted):
            detail = store.get_generation(generation_id, with_events=False)
            if detail is not None:
                generations[generation_id] = detail
        reviewed = [
            generation_id
            for generation_id, detail in generations.items()
            if any(image.status == "quarantined" for image in detail.images)
        ]
        reviews = {ImageRef(*key): decision for key, decision in decisions(store, reviewed).items()}
        reviews.update((ImageRef(*key), decision) for key, decision in approved.items())
        exact += tuple(
            image
            for detail in generations.values()
            for image in detail.images
            if (decision := reviews.get(_ref(image))) is not None
            and decision.decision == "approved"
            and decision.released_sha256 == sha256
            and image not in exact
        )
        return cls(True, exact, similar, by_mark, generations, reviews, _release_failures(store, generations))

    def strength(self, manifest: ManifestReading) -> tuple[int, int]:
        """How firmly this store holds the image: (2, 0) when the mark id, the exact bytes or the
        manifest's claim finds a record; (1, -distance) for the nearest perceptual hash; (0, 0) nothing."""
        claimed = manifest.state is not ManifestState.ABSENT and manifest.generation_id in self.generations
        if self.by_mark is not None or self.exact or claimed:
            return (2, 0)
        if self.similar:
            return (1, -min(distance for _, distance in self.similar))
        return (0, 0)

    def approval(self, ref: ImageRef) -> ReviewDecision | None:
        decision = self.reviews.get(ref)
        return decision if decision is not None and decision.decision == "approved" else None

    def images(self) -> dict[ImageRef, StoredImage]:
        found = {_ref(image): image for image in (*self.exact, *(image for image, _ in self.similar))}
        if self.by_mark is not None:
            found[_ref(self.by_mark)] = self.by_mark
        for detail in self.generations.values():
            found.update((_ref(image), image) for image in detail.images)
        return found


def _release_failures(store: AuditStore, generation_ids: Iterable[str]) -> frozenset[ImageRef]:
    """The images of these generations that a `release.failed` event says were never written."""
    wanted = sorted(generation_ids)
    if not wanted:
        return frozenset()
    events = store.reader().iter_events((RELEASE_FAILED_EVENT,), generation_ids=wanted)
    return frozenset(ImageRef(str(e.generation_id), int(e.payload["image_index"])) for e in events)


def _sane_claim(manifest: ManifestReading) -> tuple[ManifestReading, tuple[str, ...]]:
    """The manifest with its claimed generation id and image index kept only when they look like ours
    (a crafted manifest may say anything: NUL characters, megabytes, negative indexes)."""
    notes: list[str] = []
    claim = manifest.generation_id
    if claim is not None and not _GENERATION_ID.fullmatch(claim):
        notes.append(
            f"the manifest's generation id is malformed ({len(claim)} characters, not 1-64 of A-Z a-z 0-9 _ -): ignored"
        )
        manifest = replace(manifest, generation_id=None, image_index=None)
    index = manifest.image_index
    if index is not None and not 0 <= index <= _MAX_IMAGE_INDEX:
        notes.append(f"the manifest's image index is out of range (expected 0..{_MAX_IMAGE_INDEX}): ignored")
        manifest = replace(manifest, image_index=None)
    return manifest, tuple(notes)


def _signed_by_us(manifest: ManifestReading) -> bool:
    """Whether the manifest's signature chains to our trust anchors: Trusted, or Invalid only because
    the content changed or the certificate expired (c2pa names an untrusted signer when it is one)."""
    if manifest.state is ManifestState.TRUSTED:
        return True
    return (
        manifest.state is ManifestState.INVALID
        and manifest.error is None
        and bool(manifest.codes)
        and not any(code.startswith("signingCredential.untrusted") for code in manifest.codes)
    )


def _printable(text: str | None, limit: int = 120) -> str:
    """A manifest's text as it may be shown: control characters escaped, at most `limit` characters."""
    shown = "".join(
        c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
        for c in str(text)
    )
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def _ref(image: StoredImage) -> ImageRef:
    return ImageRef(image.generation_id, image.index)


def _refs(refs: Iterable[ImageRef]) -> str:
    return ", ".join(str(ref) for ref in sorted(refs))


def _altered_codes(manifest: ManifestReading) -> tuple[str, ...]:
    """Codes saying the signed content changed (data/boxes/bmff hash, hashed URI or signature mismatch)."""
    return tuple(code for code in manifest.codes if code.lower().endswith("mismatch"))


def _manifest_text(manifest: ManifestReading) -> str:
    """A short phrase: the manifest's state and why."""
    if manifest.state is ManifestState.ABSENT:
        return "no manifest"
    why = manifest.error or ", ".join(manifest.codes[:3]) or "no reason given"
    signer = _printable(manifest.signer)
    if manifest.state is ManifestState.TRUSTED:
        return f"Content Credentials trusted and intact (signer {signer})"
    if manifest.state is ManifestState.VALID:
        return f"Content Credentials intact but signed by {signer}, not a configured trust anchor"
    return f"Content Credentials invalid ({_printable(why, 300)})"


def _decide(
    name: str,
    sha256: str,
    phash: int,
    size: tuple[int, int],
    manifest: ManifestReading,
    watermark: WatermarkDetection | None,
    found: _Lookup,
    claim_notes: Sequence[str] = (),
) -> VerificationReport:
    images = found.images()
    notes: list[str] = list(claim_notes)
    disagreements: list[str] = []
    marked = watermark is not None and watermark.marked and watermark.mark_id is not None
    if manifest.error and manifest.state is ManifestState.ABSENT:
        notes.append(f"no manifest can be read from this format ({manifest.error})")
    elif manifest.error:
        notes.append(f"manifest could not be read: {manifest.error}")
    if not found.consulted:
        notes.append("no audit database consulted")

    # Which records each layer points at (an empty set: the watermark's mark id that no record holds).
    pointers: dict[Layer, frozenset[ImageRef]] = {}
    sides: dict[Layer, str] = {}
    if found.consulted and manifest.state is not ManifestState.ABSENT and manifest.generation_id:
        detail = found.generations.get(manifest.generation_id)
        if manifest.image_index is not None:
            pointers[Layer.MANIFEST] = frozenset({ImageRef(manifest.generation_id, manifest.image_index)})
        elif detail is not None:
            pointers[Layer.MANIFEST] = frozenset(_ref(image) for image in detail.images)
        else:
            pointers[Layer.MANIFEST] = frozenset({ImageRef(manifest.generation_id, -1)})
        recorded = "" if not pointers[Layer.MANIFEST].isdisjoint(images) else " (not recorded)"
        sides[Layer.MANIFEST] = f"the manifest claims {_refs(pointers[Layer.MANIFEST])}{recorded}"
    if found.consulted and marked:
        assert watermark is not None
        holder = found.by_mark
        pointers[Layer.WATERMARK] = frozenset() if holder is None else frozenset({_ref(holder)})
        sides[Layer.WATERMARK] = f"the watermark reads mark {_hex(watermark.mark_id)}" + (
            ", which no record holds" if holder is None else f" of {_ref(holder)}"
        )
    if found.exact:
        pointers[Layer.SHA256] = frozenset(_ref(image) for image in found.exact)
        sides[Layer.SHA256] = f"the bytes are recorded as {_refs(pointers[Layer.SHA256])}"

    if set(pointers) == {Layer.MANIFEST} and not _signed_by_us(manifest):
        # Only a manifest from a signer we do not trust names the record: anyone can write that. It stays
        # a claim (said in the notes), not a link; the perceptual hash may still find a near copy.
        notes.append(
            f"{sides.pop(Layer.MANIFEST)}, but it is not signed by a configured trust anchor and nothing we "
            "control (our watermark, a recorded hash) links this image to it: a claim, not a link"
        )
        del pointers[Layer.MANIFEST]
    candidates: frozenset[ImageRef] | None = None
    for refs in pointers.values():
        candidates = refs if candidates is None else candidates & refs
    if len(pointers) > 1 and not candidates:
        disagreements.append("layers disagree: " + "; ".join(sides.values()))
    if (
        manifest.mark_id is not None
        and marked
        and watermark is not None
        and watermark.mark_id != manifest.mark_id
    ):
        disagreements.append(
            f"layers disagree: the manifest's soft binding names mark {_hex(manifest.mark_id)}, "
            f"the pixels carry mark {_hex(watermark.mark_id)}"
        )

    stored: StoredImage | None = None
    if candidates:
        recorded_refs = sorted(ref for ref in candidates if ref in images)
        stored = images[recorded_refs[0]] if recorded_refs else None
        if len(recorded_refs) > 1:
            notes.append(f"{len(recorded_refs)} records match: {_refs(recorded_refs)}; showing the first")
        if stored is None and Layer.MANIFEST in pointers:
            claimed = _refs(pointers[Layer.MANIFEST])
            notes.append(f"the manifest claims {claimed}, which this database does not hold")
    elif not pointers and found.similar:
        stored = found.similar[0][0]

    record: AuditRecord | None = None
    agreeing: tuple[Layer, ...] = ()
    if stored is not None:
        ref = _ref(stored)
        approval = found.approval(ref) if stored.status == "quarantined" else None
        if approval is not None:  # released by a review: the released file is what the record holds
            stored = replace(
                stored,
                status="approved",
                sha256=approval.released_sha256 or stored.sha256,
                phash=stored.phash if approval.released_phash is None else approval.released_phash,
                path=approval.path,
            )
        if stored.status == "released" and ref in found.release_failed:
            stored = replace(stored, status="release-failed")
        distance = hamming(phash, stored.phash)
        agreeing = tuple(layer for layer, refs in pointers.items() if ref in refs)
        if distance <= RADIUS:
            agreeing += (Layer.PHASH,)
        elif found.similar:
            nearest, nearest_distance = found.similar[0]
            notes.append(
                f"the perceptual hash is {distance} bits from the record; nearest recorded image "
                f"{_ref(nearest)} at {nearest_distance}"
            )
        else:
            notes.append(f"the pixels differ strongly from the record (phash distance {distance})")
        if manifest.mark_id is not None and stored.mark_id is not None and manifest.mark_id != stored.mark_id:
            disagreements.append(
                f"layers disagree: the manifest's soft binding names mark {_hex(manifest.mark_id)}, "
                f"the record of {ref} holds mark {_hex(stored.mark_id)}"
            )
        detail = found.generations.get(stored.generation_id)
        if detail is not None:
            if manifest.policy_digest and manifest.policy_digest != detail.policy.digest:
                disagreements.append(
                    f"layers disagree: the manifest names policy digest {manifest.policy_digest}, "
                    f"the record of {ref} {detail.policy.digest}"
                )
            unreadable_mark = _recorded_watermark_note(detail, ref)
            if unreadable_mark is not None:
                notes.append(unreadable_mark)
            record = AuditRecord(
                image=ref,
                generation_status=detail.status,
                image_status=stored.status,
                created_at=detail.created_at,
                policy=detail.policy,
                model_id=detail.model_id,
                sha256=stored.sha256,
                phash=stored.phash,
                mark_id=stored.mark_id,
                width=stored.width,
                height=stored.height,
                phash_distance=distance,
                found_by=agreeing,
                approval_seq=None if approval is None else approval.seq,
                marks=_recorded_marks(detail),
                latent_mark_note=_latent_mark_note(detail),
            )
            if approval is not None:
                notes.append(
                    f"image {ref} was quarantined, then released by review: approved by "
                    f"{_printable(approval.reviewer, 64)} (event {approval.seq})"
                )
            elif stored.status == "release-failed":
                notes.append(
                    f"image {ref} was recorded as released but never written (release.failed): "
                    "no copy of it should exist"
                )
            elif not record.released:
                notes.append(
                    f"the record says image {ref} was {stored.status}: it was withheld, it should not have left"
                )
            recorded_name = Path(stored.path).name if stored.path else None
            given_name = Path(name).name if name and name != "<bytes>" else None
            if recorded_name and given_name and recorded_name != given_name:
                notes.append(
                    f"the file is named {given_name!r}, the record of {ref} names {recorded_name!r}: "
                    "renamed, or another of our images put in its place"
                )
            if stored.mark_id is not None and record.released and watermark is not None and not marked:
                notes.append("no watermark read: destroyed, or too little of the image left")

    if disagreements:
        verdict, summary, record, agreeing = Verdict.CONFLICT, disagreements[0], None, ()
    else:
        verdict, summary = _verdict(sha256, size, manifest, watermark, record)
        if record is not None and record.image_status == "release-failed":
            summary += "; but it was recorded as released and never written (release.failed)"
    return VerificationReport(
        name=name,
        sha256=sha256,
        width=size[0],
        height=size[1],
        verdict=verdict,
        summary=summary,
        manifest=manifest,
        watermark=watermark,
        hashes=HashEvidence(
            sha256=sha256,
            phash=phash,
            exact=tuple(sorted(_ref(image) for image in found.exact)),
            similar=tuple(HashMatch(_ref(image), distance) for image, distance in found.similar),
        ),
        record=record,
        agreeing=agreeing,
        disagreements=tuple(disagreements),
        notes=tuple(notes),
    )


def _verdict(
    sha256: str,
    size: tuple[int, int],
    manifest: ManifestReading,
    watermark: WatermarkDetection | None,
    record: AuditRecord | None,
) -> tuple[Verdict, str]:
    """The decision table of the module docstring, once the layers agree (or say nothing)."""
    state = manifest.state
    if record is None:
        if state is ManifestState.TRUSTED or (watermark is not None and watermark.marked):
            evidence = (
                _manifest_text(manifest)
                if state is ManifestState.TRUSTED
                else f"our watermark reads mark {_hex(watermark.mark_id if watermark else None)}"
            )
            return Verdict.OURS_NO_RECORD, f"{evidence}, but no audit record of it was found"
        if state is ManifestState.VALID:
            claim = (
                f"; it claims {manifest.generation_id}/{'?' if manifest.image_index is None else manifest.image_index}"
                ", which nothing we control confirms"
                if manifest.generation_id
                else ""
            )
            return Verdict.FOREIGN_SIGNED, f"{_manifest_text(manifest)}{claim}; nothing of ours found"
        tail = "" if state is ManifestState.ABSENT else f" ({_manifest_text(manifest)})"
        return Verdict.UNKNOWN, f"no trusted manifest, watermark or recorded near-copy{tail}"
    ref, found_by = record.image, ", ".join(layer.value for layer in record.found_by)
    where = f"generation {ref.generation_id} image {ref.index} (found by {found_by})"
    if state is ManifestState.TRUSTED and Layer.MANIFEST in record.found_by:
        return Verdict.VERIFIED_ORIGINAL, f"{_manifest_text(manifest)}; {where}"
    altered = _altered_codes(manifest)
    if altered:
        return Verdict.OURS_ALTERED, f"the signed content changed ({', '.join(altered)}); {where}"
    if sha256 == record.sha256:
        return Verdict.OURS_ORIGINAL, (
            f"exactly the recorded bytes of {where}, but {_manifest_text(manifest)}: "
            "proven by this audit database only"
        )
    if Layer.WATERMARK in record.found_by or Layer.MANIFEST in record.found_by:
        same_size = size == (record.width, record.height)
        if state is ManifestState.ABSENT and same_size and record.phash_distance <= NEAR_IDENTICAL:
            return Verdict.OURS_METADATA_STRIPPED, (
                f"{where}: manifest removed, pixels perceptually identical (phash distance {record.phash_distance})"
            )
        changes = [] if state is ManifestState.ABSENT else [_manifest_text(manifest)]
        if not same_size:
            changes.append(f"size {size[0]}x{size[1]}, recorded {record.width}x{record.height}")
        if record.phash_distance > NEAR_IDENTICAL:
            changes.append(f"phash distance {record.phash_distance}")
        return Verdict.OURS_ALTERED, f"{where}, changed since: {'; '.join(changes)}"
    return Verdict.OURS_NEAR_COPY, (
        f"no watermark or manifest claim; perceptually close to {where} (phash distance {record.phash_distance})"
    )


def _event_payload(report: VerificationReport) -> dict[str, Any]:
    """What the audit log keeps of a verification: hashes and each layer's short result, never the image."""
    watermark = report.watermark
    return {
        "sha256": report.sha256,
        "phash": _hex(report.hashes.phash),
        "verdict": report.verdict.value,
        "manifest": report.manifest.state.value,
        "manifest_codes": list(report.manifest.codes[:16]),
        "manifest_claim": report.manifest.generation_id,
        "watermark": None if watermark is None or not watermark.marked else _hex(watermark.mark_id),
        "sha256_matches": len(report.hashes.exact),
        "nearest_distance": report.hashes.similar[0].distance if report.hashes.similar else None,
        "record": None if report.record is None else str(report.record.image),
        "agreeing": [layer.value for layer in report.agreeing],
        "disagreements": list(report.disagreements),
    }
