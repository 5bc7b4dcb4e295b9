"""The audit store's read API: a read-only view (`AuditStore.reader()`) with typed results.

Every reading of the audit database outside the store goes through `AuditReader`: review, reports,
compliance, repair, verify, the CLI and the HTTP service. It never writes; a view opened on a
read-only store (an evidence copy) reads the same.

What is trusted:
- Log entries (`events`, `iter_events`, `last_event_seqs`, a generation's `events`) are read only inside
  the chain: seq 1 .. the chain head's seq, read in the same transaction. An entry stored beyond the head
  was not appended by genguard and is never returned (`entry(seq)` alone gives any stored entry, for the
  checkpoint tools, which prove it against a signed tree). Entries are returned as stored: their hashes
  and links are checked by `AuditStore.verify_chain` and by checkpoints, not on every read.
- Generation and image rows (`generation`, `generations`, `count_generations`, `quarantined_images`,
  `report_*`) are read only for generations that a chained "generation.*" entry (seq 1 .. head)
  records: a row inserted behind the log is never returned (and `verify_chain` names it). They are the
  domain rows each chained entry covers; `verify_chain` rebuilds every entry's payload from them, so an
  edit to a row is found by it, not by the read.

Pagination: lists take `limit` / `offset` (ordered as each method says) or, for the log, an `after_seq`
cursor; the `iter_*` and `report_*` methods stream in keyset chunks, so memory stays bounded whatever the
database holds. Each call runs in its own read transaction; `with reader.snapshot() as view:` runs
several calls in ONE consistent transaction (a report's parts, a page and its total).
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self, TypeVar

from sqlalchemy import ColumnElement, Select, exists, func, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from genguard.audit import chain, db
from genguard.audit.models import ChainHead, Generation, Image, LogEntry
from genguard.audit.records import GENERATION_STATUSES, IMAGE_STATUSES
from genguard.audit.similar import find_similar
from genguard.guard.errors import BadInputError
from genguard.guard.phash import to_signed64, to_unsigned64
from genguard.guard.types import (
    CategoryScore,
    CheckStatus,
    ClassifierScore,
    GenerationParams,
    ImageAction,
    ImageVerdict,
    PolicyRef,
    PromptAction,
    PromptStorage,
    RuleHit,
)

_RowMap = Mapping[Any, Any]
_T = TypeVar("_T")
_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")
CHUNK = 1000  # rows per keyset chunk when streaming
_IN_LIST = 500  # ids per IN (...) list
_INT64_MIN, _UINT64_END = -(1 << 63), 1 << 64


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class StoredPrompt:
    """A prompt as the audit log keeps it: `text` only when stored in full, `digest` only when hashed."""

    storage: PromptStorage
    length: int
    text: str | None
    digest: str | None


@dataclass(frozen=True)
class StoredDecision:
    """The prompt decision as recorded (its prompts are in the generation's StoredPrompt fields)."""

    action: PromptAction
    policy: PolicyRef
    categories: tuple[CategoryScore, ...]
    rules: tuple[RuleHit, ...]
    negative_prompt_additions: tuple[str, ...]
    heightened_categories: tuple[str, ...]


@dataclass(frozen=True)
class StoredImage:
    """One recorded image. `phash` and `mark_id` are given as unsigned 64-bit values."""

    generation_id: str
    index: int
    sha256: str
    phash: int
    width: int
    height: int
    status: str
    path: str | None
    mark_id: int | None
    verdict: ImageVerdict
    manifest: bytes | None
    latent_nonce: bytes | None  # the latent watermark's nonce (detection needs it), None if not marked


@dataclass(frozen=True)
class SimilarImage:
    """A recorded image and its Hamming distance (bits) from the queried hash."""

    image: StoredImage
    distance: int


@dataclass(frozen=True)
class StoredEvent:
    """One log entry as stored (see the module doc for what is trusted)."""

    seq: int
    event_type: str
    recorded_at: datetime
    generation_id: str | None
    payload: dict[str, Any]
    prev_hash: str
    entry_hash: str


@dataclass(frozen=True)
class GenerationSummary:
    generation_id: str
    created_at: datetime
    status: str
    actor: str
    model_id: str
    decision_action: PromptAction
    policy: PolicyRef
    prompt: StoredPrompt
    image_count: int


@dataclass(frozen=True)
class GenerationDetail(GenerationSummary):
    pipeline_class: str
    seed: int | None
    negative_prompt: StoredPrompt
    rewritten_prompt: StoredPrompt | None  # None: the policy did not rewrite the prompt
    params: GenerationParams
    decision: StoredDecision
    error: str | None
    extra: dict[str, Any]
    images: tuple[StoredImage, ...]
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True)
class ChainHeadState:
    """The chain head: the last appended entry (`seq` 0 and the genesis hash for an empty log)."""

    seq: int
    entry_hash: str


@dataclass(frozen=True)
class QuarantinedImage:
    """A quarantined image as the review queue lists it (decided or not: decisions are events)."""

    generation_id: str
    index: int
    created_at: datetime
    actor: str
    prompt: StoredPrompt
    policy: PolicyRef
    verdict: ImageVerdict


@dataclass(frozen=True)
class ReportGeneration:
    """What reports read of a generation. `extra` holds only the keys asked for (`extra_keys`) that the
    record has; `categories` are the prompt decision's category scores."""

    generation_id: str
    created_at: datetime
    status: str
    actor: str
    policy: PolicyRef
    prompt: StoredPrompt
    categories: tuple[CategoryScore, ...]
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class ReportImage:
    """What reports read of an image, with its generation. The three marks say whether the row holds
    a pixel mark id, a latent nonce and a signed manifest (the bytes themselves are not read)."""

    generation: ReportGeneration
    index: int
    status: str
    verdict: ImageVerdict
    pixel_marked: bool
    latent_marked: bool
    signed: bool


# ---------------------------------------------------------------------------------------- reader


class AuditReader:
    """A read-only view of the audit database; get one with `AuditStore.reader()`. Thread-safe as the
    store is, except a `snapshot()` view, which belongs to the thread that opened it."""

    def __init__(self, engine: Engine, connection: Connection | None = None) -> None:
        self._engine = engine
        self._connection = connection

    @contextmanager
    def snapshot(self) -> Iterator[Self]:
        """A view whose calls all run in ONE read transaction (one consistent snapshot)."""
        if self._connection is not None:
            yield self
            return
        with _translated(self._engine, snapshot=True) as conn:
            yield type(self)(self._engine, conn)

    def _reading(self) -> AbstractContextManager[Connection]:
        if self._connection is not None:
            return nullcontext(self._connection)
        return _translated(self._engine, snapshot=False)

    # ------------------------------------------------------------------------------- the chain

    def head(self) -> ChainHeadState:
        """The chain head as stored."""
        with self._reading() as conn:
            row = conn.execute(select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)).one()
        return ChainHeadState(int(row.seq), row.entry_hash)

    def entry(self, seq: int) -> StoredEvent | None:
        """The stored log entry `seq`, or None; not checked against the chain head (checkpoint tools
        prove it against a signed tree)."""
        with self._reading() as conn:
            row = conn.execute(select(LogEntry.__table__).where(LogEntry.seq == seq)).first()
        return None if row is None else _stored_event(row._mapping)

    def events(
        self,
        event_types: Iterable[str] = (),
        *,
        generation_ids: Iterable[str] | None = None,
        payload_contains: str | None = None,
        after_seq: int = 0,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """Chained entries (seq 1 .. head) in seq order, after `after_seq` (a cursor: the last seq of the
        previous page), at most `limit`. Filters: `event_types` (any of them; empty: all),
        `generation_ids` (None: any; empty: none), `payload_contains` (text the canonical payload holds:
        a pre-filter, callers check the parsed payload)."""
        if limit is not None:
            _check_count(limit, "limit", minimum=1)
        return list(self._events(event_types, generation_ids, payload_contains, after_seq, limit))

    def iter_events(
        self,
        event_types: Iterable[str] = (),
        *,
        generation_ids: Iterable[str] | None = None,
        payload_contains: str | None = None,
        after_seq: int = 0,
    ) -> Iterator[StoredEvent]:
        """As `events`, streamed in chunks of CHUNK entries (bounded memory, one transaction)."""
        return self._events(event_types, generation_ids, payload_contains, after_seq, None)

    def _events(
        self,
        event_types: Iterable[str],
        generation_ids: Iterable[str] | None,
        payload_contains: str | None,
        after_seq: int,
        limit: int | None,
    ) -> Iterator[StoredEvent]:
        _check_count(after_seq, "after_seq", minimum=0)
        types = _strings(event_types, "event_types")
        ids = None if generation_ids is None else sorted(set(_strings(generation_ids, "generation_ids")))
        if ids is not None and not ids:
            return
        with self._reading() as conn:
            head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            base = select(LogEntry.__table__).where(LogEntry.seq >= 1, LogEntry.seq <= head)
            if types:
                base = base.where(LogEntry.event_type.in_(types))
            if payload_contains is not None:
                base = base.where(LogEntry.payload_json.contains(payload_contains))
            queries = (
                [base] if ids is None else [base.where(LogEntry.generation_id.in_(c)) for c in _chunks(ids)]
            )
            remaining = limit
            # Keyset over seq in each query; id chunks select disjoint entries, merged here by seq.
            streams = [_keyset(conn, q, LogEntry.seq, after_seq, lambda r: int(r.seq)) for q in queries]
            for row in _merge_by_seq(streams):
                yield _stored_event(row._mapping)
                if remaining is not None:
                    remaining -= 1
                    if remaining == 0:
                        return

    def last_event_seqs(self, generation_ids: Iterable[str]) -> dict[str, int]:
        """For each generation, the seq of the last chained entry about it (generations without one
        are left out)."""
        ids = sorted(set(_strings(generation_ids, "generation_ids")))
        found: dict[str, int] = {}
        with self._reading() as conn:
            head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
            for chunk in _chunks(ids):
                for generation_id, seq in conn.execute(
                    select(LogEntry.generation_id, func.max(LogEntry.seq))
                    .where(LogEntry.generation_id.in_(chunk), LogEntry.seq >= 1, LogEntry.seq <= head)
                    .group_by(LogEntry.generation_id)
                ):
                    if generation_id is not None:
                        found[generation_id] = int(seq)
        return found

    # ------------------------------------------------------------------------------ generations

    def generations(
        self,
        limit: int = 50,
        status: str | None = None,
        since: datetime | None = None,
        *,
        offset: int = 0,
        until: datetime | None = None,
        decision: PromptAction | None = None,
        tenant: str | None = None,
    ) -> list[GenerationSummary]:
        """The newest generations first (ties by id); `status` filters, `since` / `until` keep those
        created at or after / before them, `decision` those whose prompt decision was that action,
        `tenant` those of actors "<tenant>" and "<tenant>/..."; `offset` skips that many (pages of
        `limit`)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise BadInputError(f"limit: expected a positive integer, found {limit!r}")
        _check_count(offset, "offset", minimum=0)
        if status is not None and status not in GENERATION_STATUSES:
            raise BadInputError(f"status: expected one of {GENERATION_STATUSES} or None, found {status!r}")
        if decision is not None and not isinstance(decision, PromptAction):
            raise BadInputError(f"decision: expected a PromptAction or None, found {decision!r}")
        image_count = (
            select(func.count(Image.id))
            .where(Image.generation_id == Generation.id)
            .correlate(Generation)
            .scalar_subquery()
        )
        query = _generation_filters(
            select(Generation.__table__, image_count.label("image_count")), status, since, until, None, tenant
        )
        if decision is not None:
            query = query.where(Generation.decision_action == decision.value)
        query = query.order_by(Generation.created_at.desc(), Generation.id).limit(limit)
        if offset:
            query = query.offset(offset)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return [GenerationSummary(**_summary_fields(row._mapping, row.image_count)) for row in rows]

    def count_generations(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prompt_like: str | None = None,
        tenant: str | None = None,
    ) -> int:
        """How many generations match (the filters as in `report_generations`)."""
        query = _generation_filters(
            select(func.count()).select_from(Generation), status, since, until, prompt_like, tenant
        )
        with self._reading() as conn:
            return int(conn.execute(query).scalar_one())

    def generation(self, generation_id: str, *, with_events: bool = True) -> GenerationDetail | None:
        """One generation with its images and its chained entries, or None if not recorded.

        `with_events=False` leaves `events` empty: they grow with every later event about the generation
        (each verification of its images adds one), so lookups that need only the record skip them."""
        with self._reading() as conn:
            generation = conn.execute(
                select(Generation.__table__).where(Generation.id == generation_id, _chained(Generation.id))
            ).first()
            if generation is None:
                return None
            images = conn.execute(
                select(Image.__table__).where(Image.generation_id == generation_id).order_by(Image.index)
            ).all()
            events: Sequence[Any] = ()
            if with_events:
                head = conn.execute(select(ChainHead.seq).where(ChainHead.id == 1)).scalar_one()
                events = conn.execute(
                    select(LogEntry.__table__)
                    .where(LogEntry.generation_id == generation_id, LogEntry.seq >= 1, LogEntry.seq <= head)
                    .order_by(LogEntry.seq)
                ).all()
        row = generation._mapping
        storage = PromptStorage(row["prompt_storage"])
        return GenerationDetail(
            **_summary_fields(row, len(images)),
            pipeline_class=row["pipeline_class"],
            seed=row["seed"],
            negative_prompt=_stored_prompt(row, "negative_prompt", storage),
            rewritten_prompt=None
            if row["rewritten_prompt_length"] is None
            else _stored_prompt(row, "rewritten_prompt", storage),
            params=GenerationParams(**json.loads(row["params_json"])),
            decision=_stored_decision(row),
            error=row["error"],
            extra=json.loads(row["extra_json"]),
            images=tuple(_stored_image(image._mapping) for image in images),
            events=tuple(_stored_event(event._mapping) for event in events),
        )

    # ----------------------------------------------------------------------------------- images

    def image_by_mark_id(self, mark_id: int) -> StoredImage | None:
        """The image whose pixel watermark carries `mark_id` (signed or unsigned 64-bit reading)."""
        signed = check_int64(mark_id, "mark_id")
        with self._reading() as conn:
            row = conn.execute(
                select(Image.__table__).where(Image.mark_id == signed, _chained(Image.generation_id))
            ).first()
        return None if row is None else _stored_image(row._mapping)

    def images_by_sha256(self, sha256: str) -> list[StoredImage]:
        """Every recorded image with these exact bytes (hex digest, either case)."""
        digest = sha256.lower() if isinstance(sha256, str) else sha256
        if (
            not isinstance(digest, str)
            or len(digest) != 64
            or not all(c in "0123456789abcdef" for c in digest)
        ):
            raise BadInputError(f"sha256: expected 64 hex digits, found {sha256!r}")
        with self._reading() as conn:
            rows = conn.execute(
                select(Image.__table__)
                .where(Image.sha256 == digest, _chained(Image.generation_id))
                .order_by(Image.generation_id, Image.index)
            ).all()
        return [_stored_image(row._mapping) for row in rows]

    def similar_images(self, phash: int, max_distance: int = 8, limit: int = 20) -> list[SimilarImage]:
        """Recorded images within `max_distance` bits (0..11) of the perceptual hash `phash` (either
        64-bit reading), nearest first, ties by generation and index; at most `limit`. Exact: multi-index
        hashing over the segment indexes (genguard.audit.similar) finds every one, and only those."""
        signed = check_int64(phash, "phash")
        with self._reading() as conn:
            found = find_similar(conn, signed, max_distance, limit)
        return [SimilarImage(_stored_image(item.row), item.distance) for item in found]

    def quarantined_images(
        self,
        generation_id: str | None = None,
        index: int | None = None,
        *,
        limit: int | None = None,
        offset: int = 0,
        tenant: str | None = None,
    ) -> list[QuarantinedImage]:
        """Images recorded as quarantined, oldest generation first (then generation id, index); the
        review queue is those without a review decision (events "review.*"). `tenant`: only the
        generations of actors "<tenant>" and "<tenant>/..."."""
        if limit is not None:
            _check_count(limit, "limit", minimum=1)
        _check_count(offset, "offset", minimum=0)
        query = (
            select(
                Image.generation_id,
                Image.index,
                Image.verdict_json,
                Generation.created_at,
                Generation.actor,
                Generation.prompt_storage,
                Generation.prompt_text,
                Generation.prompt_digest,
                Generation.prompt_length,
                Generation.policy_name,
                Generation.policy_version,
                Generation.policy_digest,
            )
            .join(Generation, Generation.id == Image.generation_id)
            .where(Image.status == "quarantined", _chained(Generation.id))
        )
        if generation_id is not None:
            query = query.where(Image.generation_id == generation_id)
        if index is not None:
            query = query.where(Image.index == index)
        if tenant is not None:
            query = _generation_filters(query, None, None, None, None, tenant)
        query = query.order_by(Generation.created_at, Image.generation_id, Image.index)
        if limit is not None:
            query = query.limit(limit)
        if offset:
            query = query.offset(offset)
        with self._reading() as conn:
            rows = conn.execute(query).all()
        return [
            QuarantinedImage(
                generation_id=row.generation_id,
                index=row._mapping["index"],
                created_at=chain.parse_time(row.created_at),
                actor=row.actor,
                prompt=_stored_prompt(row._mapping, "prompt", PromptStorage(row.prompt_storage)),
                policy=_policy(row._mapping),
                verdict=_verdict(json.loads(row.verdict_json)),
            )
            for row in rows
        ]

    # ---------------------------------------------------------------------------------- reports

    def report_generations(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prompt_like: str | None = None,
        tenant: str | None = None,
        extra_keys: Sequence[str] = (),
    ) -> Iterator[ReportGeneration]:
        """Generations matching the filters, streamed by id in chunks (bounded memory, one transaction).

        `status`: one of GENERATION_STATUSES; `since` / `until`: created at or after / before;
        `prompt_like`: an SQL LIKE pattern (any case) the stored full-text prompt matches (hashed and
        redacted prompts never match); `tenant`: actors "<tenant>" and "<tenant>/..."; `extra_keys`: the
        keys of the record's `extra` to read (only records that name one are parsed)."""
        if status is not None and status not in GENERATION_STATUSES:
            raise BadInputError(f"status: expected one of {GENERATION_STATUSES} or None, found {status!r}")
        query = _generation_filters(
            select(*_REPORT_GENERATION_COLUMNS), status, since, until, prompt_like, tenant
        )
        with self._reading() as conn:
            for row in _keyset(conn, query, Generation.id, "", lambda r: str(r.id)):
                yield _report_generation(row._mapping, extra_keys)

    def report_images(
        self,
        *,
        status: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        prompt_like: str | None = None,
        tenant: str | None = None,
        extra_keys: Sequence[str] = (),
    ) -> Iterator[ReportImage]:
        """Images with their generation, streamed in chunks (bounded memory, one transaction).
        `status`: the image's (one of IMAGE_STATUSES); the other filters are the generation's, as in
        `report_generations`."""
        if status is not None and status not in IMAGE_STATUSES:
            raise BadInputError(f"status: expected one of {IMAGE_STATUSES} or None, found {status!r}")
        query = _generation_filters(
            select(
                *_REPORT_GENERATION_COLUMNS,
                Image.id.label("image_id"),
                Image.index,
                Image.status.label("image_status"),
                Image.verdict_json,
                Image.mark_id.is_not(None).label("pixel_marked"),
                Image.latent_nonce.is_not(None).label("latent_marked"),
                Image.manifest.is_not(None).label("signed"),
            ).join(Image, Image.generation_id == Generation.id),
            None,
            since,
            until,
            prompt_like,
            tenant,
        )
        if status is not None:
            query = query.where(Image.status == status)
        last: ReportGeneration | None = None
        with self._reading() as conn:
            for row in _keyset(conn, query, Image.id, 0, lambda r: int(r.image_id)):
                mapping = row._mapping
                if last is None or last.generation_id != mapping["id"]:  # a generation's images are adjacent
                    last = _report_generation(mapping, extra_keys)
                yield ReportImage(
                    generation=last,
                    index=mapping["index"],
                    status=mapping["image_status"],
                    verdict=_verdict(json.loads(mapping["verdict_json"])),
                    pixel_marked=bool(mapping["pixel_marked"]),
                    latent_marked=bool(mapping["latent_marked"]),
                    signed=bool(mapping["signed"]),
                )


# -------------------------------------------------------------------------------- query helpers

_REPORT_GENERATION_COLUMNS = (
    Generation.id,
    Generation.created_at,
    Generation.status,
    Generation.actor,
    Generation.policy_name,
    Generation.policy_version,
    Generation.policy_digest,
    Generation.prompt_storage,
    Generation.prompt_text,
    Generation.prompt_digest,
    Generation.prompt_length,
    Generation.decision_json,
    Generation.extra_json,
)


@contextmanager
def _translated(engine: Engine, snapshot: bool) -> Iterator[Connection]:
    """A read transaction whose database errors become AuditUnavailableError."""
    try:
        with db.read_transaction(engine, snapshot) as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise db.unavailable(engine.url, exc) from exc


_GENERATION_EVENT_TYPES = (
    "generation.recorded",
    "generation.blocked",
    "generation.failed",
    "generation.invalid",
)


def _chained(generation_id: Any) -> ColumnElement[bool]:
    """True for a generation that a "generation.*" entry inside the chain (seq 1 .. head) records."""
    head = select(ChainHead.seq).where(ChainHead.id == 1).scalar_subquery()
    return exists().where(
        LogEntry.generation_id == generation_id,
        LogEntry.event_type.in_(_GENERATION_EVENT_TYPES),
        LogEntry.seq >= 1,
        LogEntry.seq <= head,
    )


def _generation_filters(
    query: _Query,
    status: str | None,
    since: datetime | None,
    until: datetime | None,
    prompt_like: str | None,
    tenant: str | None,
) -> _Query:
    query = query.where(_chained(Generation.id))
    if status is not None:
        query = query.where(Generation.status == status)
    if since is not None:
        query = query.where(Generation.created_at >= chain.format_time(since))
    if until is not None:
        query = query.where(Generation.created_at < chain.format_time(until))
    if prompt_like:
        query = query.where(Generation.prompt_text.ilike(prompt_like))
    if tenant is not None:
        _check_tenant(tenant)
        query = query.where(or_(Generation.actor == tenant, Generation.actor.startswith(f"{tenant}/")))
    return query


def _check_tenant(tenant: Any) -> None:
    if not isinstance(tenant, str) or not tenant or "/" in tenant:
        raise BadInputError(f"tenant: expected a name without '/', found {tenant!r}")


def in_tenant(actor: str, tenant: str) -> bool:
    """True when a generation of `actor` is the tenant's: the actor is "<tenant>" or "<tenant>/..."
    (the rule the `tenant` filters apply in SQL)."""
    _check_tenant(tenant)
    return actor == tenant or actor.startswith(f"{tenant}/")


def _keyset(
    conn: Connection,
    query: Select[*tuple[Any, ...]],
    key: Any,
    after: Any,
    key_of: Callable[[Any], Any],
) -> Iterator[Any]:
    """The rows of `query` ordered by the unique `key`, read CHUNK at a time after `after`."""
    while True:
        chunk = conn.execute(query.where(key > after).order_by(key).limit(CHUNK)).all()
        yield from chunk
        if len(chunk) < CHUNK:
            return
        after = key_of(chunk[-1])


def _merge_by_seq(streams: list[Iterator[Any]]) -> Iterator[Any]:
    if len(streams) == 1:
        yield from streams[0]
        return
    yield from heapq.merge(*streams, key=lambda row: row.seq)


def _chunks(items: Sequence[_T], size: int = _IN_LIST) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _strings(values: Iterable[str], where: str) -> list[str]:
    if isinstance(values, str):
        raise BadInputError(f"{where}: expected a collection of strings, found the string {values!r}")
    found = list(values)
    for value in found:
        if not isinstance(value, str):
            raise BadInputError(f"{where}: expected strings, found {type(value).__name__} {value!r}")
    return found


def _check_count(value: Any, where: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise BadInputError(f"{where}: expected an integer >= {minimum}, found {value!r}")


def check_int64(value: Any, where: str) -> int:
    """Accept a 64-bit value in either reading (signed or unsigned) and give the signed one."""
    if isinstance(value, bool) or not isinstance(value, int) or not _INT64_MIN <= value < _UINT64_END:
        raise BadInputError(f"{where}: expected a 64-bit integer (-2**63 .. 2**64-1), found {value!r}")
    return to_signed64(value)


# ---------------------------------------------------------------------------------- row decoders


def _policy(row: _RowMap) -> PolicyRef:
    return PolicyRef(row["policy_name"], row["policy_version"], row["policy_digest"])


def _stored_prompt(row: _RowMap, prefix: str, storage: PromptStorage) -> StoredPrompt:
    return StoredPrompt(storage, row[f"{prefix}_length"], row[f"{prefix}_text"], row[f"{prefix}_digest"])


def _summary_fields(mapping: _RowMap, image_count: int) -> dict[str, Any]:
    return {
        "generation_id": mapping["id"],
        "created_at": chain.parse_time(mapping["created_at"]),
        "status": mapping["status"],
        "actor": mapping["actor"],
        "model_id": mapping["model_id"],
        "decision_action": PromptAction(mapping["decision_action"]),
        "policy": _policy(mapping),
        "prompt": _stored_prompt(mapping, "prompt", PromptStorage(mapping["prompt_storage"])),
        "image_count": image_count,
    }


def _categories(decision: Mapping[str, Any]) -> tuple[CategoryScore, ...]:
    return tuple(
        CategoryScore(c["category"], c["score"], PromptAction(c["action"])) for c in decision["categories"]
    )


def _stored_decision(row: _RowMap) -> StoredDecision:
    decision = json.loads(row["decision_json"])
    return StoredDecision(
        action=PromptAction(row["decision_action"]),
        policy=_policy(row),
        categories=_categories(decision),
        rules=tuple(RuleHit(**r) for r in decision["rules"]),
        negative_prompt_additions=tuple(decision["negative_prompt_additions"]),
        heightened_categories=tuple(decision["heightened_categories"]),
    )


def _report_generation(row: _RowMap, extra_keys: Sequence[str]) -> ReportGeneration:
    extra_json = row["extra_json"]
    extra: dict[str, Any] = {}
    if any(f'"{key}"' in extra_json for key in extra_keys):  # cheap test before parsing: most rows have none
        parsed = json.loads(extra_json)
        extra = {key: parsed[key] for key in extra_keys if key in parsed}
    return ReportGeneration(
        generation_id=row["id"],
        created_at=chain.parse_time(row["created_at"]),
        status=row["status"],
        actor=row["actor"],
        policy=_policy(row),
        prompt=_stored_prompt(row, "prompt", PromptStorage(row["prompt_storage"])),
        categories=_categories(json.loads(row["decision_json"])),
        extra=extra,
    )


def _verdict(verdict: Mapping[str, Any]) -> ImageVerdict:
    return ImageVerdict(
        action=ImageAction(verdict["action"]),
        scores=tuple(ClassifierScore(**score) for score in verdict["scores"]),
        flagged=tuple((category, threshold) for category, threshold in verdict["flagged"]),
        checks=tuple(CheckStatus(**check) for check in verdict.get("checks", ())),
    )


def _stored_image(row: _RowMap) -> StoredImage:
    return StoredImage(
        generation_id=row["generation_id"],
        index=row["index"],
        sha256=row["sha256"],
        phash=to_unsigned64(row["phash"]),
        width=row["width"],
        height=row["height"],
        status=row["status"],
        path=row["path"],
        mark_id=None if row["mark_id"] is None else to_unsigned64(row["mark_id"]),
        verdict=_verdict(json.loads(row["verdict_json"])),
        manifest=None if row["manifest"] is None else bytes(row["manifest"]),
        latent_nonce=None if row["latent_nonce"] is None else bytes(row["latent_nonce"]),
    )


def _stored_event(row: _RowMap) -> StoredEvent:
    return StoredEvent(
        seq=row["seq"],
        event_type=row["event_type"],
        recorded_at=chain.parse_time(row["recorded_at"]),
        generation_id=row["generation_id"],
        payload=json.loads(row["payload_json"]),
        prev_hash=row["prev_hash"],
        entry_hash=row["entry_hash"],
    )


__all__ = [
    "CHUNK",
    "AuditReader",
    "ChainHeadState",
    "GenerationDetail",
    "GenerationSummary",
    "QuarantinedImage",
    "ReportGeneration",
    "ReportImage",
    "SimilarImage",
    "StoredDecision",
    "StoredEvent",
    "StoredImage",
    "StoredPrompt",
    "check_int64",
    "in_tenant",
]
