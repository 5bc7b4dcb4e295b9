"""The audit store: one transaction per generation record, a chained event log, queries and verify.

Prompt storage (`GenerationRecord.prompt_storage`, applied to the prompt, the negative prompt and
the rewritten prompt alike):
- full: the text and its length (in Unicode code points);
- hashed: HMAC-SHA256 of the UTF-8 text under a random 32-byte key created with the database
  (table audit_meta) and the length. A plain SHA-256 of a short prompt can be reversed by hashing
  guesses; with a per-database key, a guess can only be checked by someone holding this database
  (`AuditStore.prompt_digest`), never with a table precomputed once for all installations;
- redacted: the length only.
Rule hits are stored as `decision.rules` holds them (rule ids and scores), never matched text.

What the chain covers: every generation row and image row is the payload of one log entry
("generation.recorded" / "generation.blocked" / "generation.failed" / "generation.invalid", then one
"image.recorded" per image); the payload is built from the row's stored values (image manifests
by SHA-256 and length), so `verify_chain` rebuilds it from the rows and catches an edit to a log entry or to a domain row.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Self, cast

from sqlalchemy import Row, func, select
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from genguard.audit import chain, db, log_key
from genguard.audit.checkpoint import (
    AutoCheckpoints,
    latest_checkpoint,
    pin_log_signing,
    write_auto_checkpoint,
)
from genguard.audit.models import AuditMeta, ChainHead, Generation, Image, LogEntry, LogSignature
from genguard.audit.reader import (
    AuditReader,
    GenerationDetail,
    GenerationSummary,
    SimilarImage,
    StoredDecision,
    StoredEvent,
    StoredImage,
    StoredPrompt,
    check_int64,
)
from genguard.audit.records import GENERATION_STATUSES, IMAGE_STATUSES, GenerationRecord, ImageRecord
from genguard.guard.config import default_db_url, warn_if_exposed
from genguard.guard.errors import AuditUnavailableError, BadInputError, GenguardError
from genguard.guard.phash import to_unsigned64
from genguard.guard.types import (
    ImageAction,
    ImageVerdict,
    PromptAction,
    PromptDecision,
    PromptStorage,
)

GENERATION_EVENTS = {
    "completed": "generation.recorded",
    "blocked": "generation.blocked",
    "failed": "generation.failed",
    "invalid": "generation.invalid",
}
IMAGE_EVENT = "image.recorded"
RESERVED_EVENTS = frozenset((*GENERATION_EVENTS.values(), IMAGE_EVENT))

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_BUSY_RETRIES = 5
_LOG = logging.getLogger("genguard.audit")
_VERIFY_CHUNK = 1000
_IMAGE_INDEX = re.compile(rb',"index":(0|[1-9][0-9]{0,18}),')
_RowMap = Mapping[Any, Any]  # a row as a mapping (SQLAlchemy RowMapping, or the dict about to be inserted)
_INT64_MIN, _UINT64_END = -(1 << 63), 1 << 64

# The columns each domain event's payload is built from. Explicit lists: a later migration that adds
# a column must not change what entries written before it hash to.
_GENERATION_FIELDS = (
    "id", "created_at", "status", "actor", "model_id", "pipeline_class", "seed", "prompt_storage",
    "prompt_text", "prompt_digest", "prompt_length", "negative_prompt_text", "negative_prompt_digest",
    "negative_prompt_length", "rewritten_prompt_text", "rewritten_prompt_digest", "rewritten_prompt_length",
    "params_json", "decision_action", "policy_name", "policy_version", "policy_digest", "decision_json",
    "error", "extra_json",
)  # fmt: skip
_IMAGE_FIELDS = (
    "generation_id", "index", "sha256", "phash", "phash_c0", "phash_c1", "phash_c2", "phash_c3",
    "width", "height", "status", "path", "mark_id", "verdict_action", "verdict_json", "manifest",
    "latent_nonce",
)  # fmt: skip
LATENT_NONCE_SIZES = range(12, 65)  # bytes; the pipeline uses 16


# ----------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class ChainVerification:
    """What `verify_chain` found. `first_bad_seq` is None when ok, or when the fault is a domain row
    that no entry covers (then `reason` names the row)."""

    ok: bool
    entries_checked: int
    first_bad_seq: int | None
    reason: str | None
    head_seq: int
    # Set by `verify_log` (None from `verify_chain`, which checks the chain alone): the first seq that
    # must carry a log signature (entries before it predate signing: verified under the old rules),
    # how many signed batches verified, and the trusted log key's id.
    signed_from: int | None = None
    batches_verified: int = 0
    log_key_id: str | None = None


# ------------------------------------------------------------------------------ pure row builders


def phash_chunks(phash: int) -> tuple[int, int, int, int]:
    """The four 16-bit chunks of a 64-bit hash, most significant first: stored columns that the chained
    payload covers (near-duplicate lookup indexes its own segments, see genguard.audit.similar)."""
    bits = to_unsigned64(phash)
    return (bits >> 48) & 0xFFFF, (bits >> 32) & 0xFFFF, (bits >> 16) & 0xFFFF, bits & 0xFFFF


def _json_text(value: Any, where: str) -> str:
    return chain.canonical_json(value, where).decode("utf-8")


def _check_text(value: Any, where: str, optional: bool = False) -> None:
    """A string a text column can hold on every database: PostgreSQL's text cannot hold NUL, and a
    record SQLite accepts must be accepted by PostgreSQL too."""
    if value is None and optional:
        return
    if not isinstance(value, str):
        expected = "a string or None" if optional else "a string"
        raise BadInputError(f"{where}: expected {expected}, found {type(value).__name__}")
    if "\x00" in value:
        raise BadInputError(
            f"{where}: expected text without NUL characters, found one at position {value.index(chr(0))}"
        )


def _prompt_columns(prefix: str, text: str, storage: PromptStorage, key: bytes) -> dict[str, Any]:
    if storage is PromptStorage.FULL:
        _check_text(text, prefix)  # only stored text must fit a text column
    elif not isinstance(text, str):
        raise BadInputError(f"{prefix}: expected a string, found {type(text).__name__}")
    digest = hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
    return {
        f"{prefix}_text": text if storage is PromptStorage.FULL else None,
        f"{prefix}_digest": digest if storage is PromptStorage.HASHED else None,
        f"{prefix}_length": len(text),
    }


# The two builders below give what `to_json()` gives (tests check it), less the decision's prompts, action
# and policy, which have columns of their own. Written out because dataclasses.asdict deep-copies
# every score and was the largest cost of recording a generation.


def _decision_json(decision: PromptDecision) -> dict[str, Any]:
    return {
        "categories": [
            {"category": c.category, "score": c.score, "action": str(c.action)} for c in decision.categories
        ],
        "rules": [
            {"category": r.category, "layer": r.layer, "rule": r.rule, "score": r.score}
            for r in decision.rules
        ],
        "negative_prompt_additions": list(decision.negative_prompt_additions),
        "heightened_categories": list(decision.heightened_categories),
    }


def _verdict_json(verdict: ImageVerdict) -> dict[str, Any]:
    return {
        "action": str(verdict.action),
        "scores": [
            {"classifier": s.classifier, "model_id": s.model_id, "category": s.category, "score": s.score}
            for s in verdict.scores
        ],
        "flagged": [[category, threshold] for category, threshold in verdict.flagged],
        "checks": [
            {"classifier": c.classifier, "model_id": c.model_id, "ran": c.ran, "reason": c.reason}
            for c in verdict.checks
        ],
    }


# The write path's two largest documents, written directly in canonical form: the general encoder
# proves its output by parsing it back, which cost more than building the rows. Same bytes as
# `_json_text(_decision_json(...))` (tests compare them on varied values); any value outside the
# expected shape (a subclass, a non-finite float, a lone surrogate) takes the general path, which names it.


def _optional_string_json(value: Any) -> str:
    return "null" if value is None else chain.string_json(value)


def _decision_text(decision: PromptDecision, where: str) -> str:
    s, n = chain.string_json, chain.number_json
    try:
        text = "".join(
            (
                '{"categories":[',
                ",".join(
                    f'{{"action":{s(str(c.action))},"category":{s(c.category)},"score":{n(c.score)}}}'
                    for c in decision.categories
                ),
                '],"heightened_categories":[',
                ",".join(s(c) for c in decision.heightened_categories),
                '],"negative_prompt_additions":[',
                ",".join(s(a) for a in decision.negative_prompt_additions),
                '],"rules":[',
                ",".join(
                    f'{{"category":{s(r.category)},"layer":{s(r.layer)},"rule":{s(r.rule)},"score":{n(r.score)}}}'
                    for r in decision.rules
                ),
                "]}",
            )
        )
        if text.isascii() or _encodes(text):
            return text
    except (TypeError, AttributeError, BadInputError):
        pass
    return _json_text(_decision_json(decision), where)


def _verdict_text(verdict: ImageVerdict, where: str) -> str:
    s, n, o = chain.string_json, chain.number_json, _optional_string_json
    try:
        checks = []
        for c in verdict.checks:
            if type(c.ran) is not bool:
                raise TypeError("ran")
            checks.append(
                f'{{"classifier":{s(c.classifier)},"model_id":{o(c.model_id)},'
                f'"ran":{"true" if c.ran else "false"},"reason":{o(c.reason)}}}'
            )
        text = "".join(
            (
                '{"action":',
                s(str(verdict.action)),
                ',"checks":[',
                ",".join(checks),
                '],"flagged":[',
                ",".join(f"[{s(category)},{n(threshold)}]" for category, threshold in verdict.flagged),
                '],"scores":[',
                ",".join(
                    f'{{"category":{s(x.category)},"classifier":{s(x.classifier)},'
                    f'"model_id":{s(x.model_id)},"score":{n(x.score)}}}'
                    for x in verdict.scores
                ),
                "]}",
            )
        )
        if text.isascii() or _encodes(text):
            return text
    except (TypeError, ValueError, AttributeError, BadInputError):
        pass
    return _json_text(_verdict_json(verdict), where)


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _generation_row(record: GenerationRecord, created_at: str, key: bytes) -> dict[str, Any]:
    where = f"generation {record.generation_id!r}"
    if (
        not isinstance(record.generation_id, str)
        or not 0 < len(record.generation_id) <= 64
        or "\x00" in record.generation_id
    ):
        raise BadInputError(
            f"generation_id: expected 1 to 64 characters, no NUL, found {record.generation_id!r}"
        )
    if record.status not in GENERATION_STATUSES:
        raise BadInputError(f"{where}: status expected one of {GENERATION_STATUSES}, found {record.status!r}")
    if record.status in ("failed", "invalid") and not record.error:
        raise BadInputError(
            f"{where}: status {record.status!r} expects the error text, found {record.error!r}"
        )
    if record.status in ("blocked", "invalid") and record.images:
        raise BadInputError(
            f"{where}: status {record.status!r} expects no images, found {len(record.images)}"
        )
    try:
        storage = PromptStorage(record.prompt_storage)
    except ValueError:
        choices = [s.value for s in PromptStorage]
        raise BadInputError(
            f"{where}: prompt_storage expected one of {choices}, found {record.prompt_storage!r}"
        )
    if record.seed is not None and not (
        isinstance(record.seed, int)
        and not isinstance(record.seed, bool)
        and _INT64_MIN <= record.seed < 1 << 63
    ):
        raise BadInputError(f"{where}: seed expected a signed 64-bit integer, found {record.seed!r}")
    _check_text(record.request.actor, f"{where}: request.actor")
    for name in ("model_id", "pipeline_class"):
        _check_text(getattr(record, name), f"{where}: {name}")
    _check_text(record.error, f"{where}: error", optional=True)
    decision = record.decision
    row: dict[str, Any] = {
        "id": record.generation_id,
        "created_at": created_at,
        "status": record.status,
        "actor": record.request.actor,
        "model_id": record.model_id,
        "pipeline_class": record.pipeline_class,
        "seed": record.seed,
        "prompt_storage": storage.value,
        "params_json": _json_text(vars(record.request.params), f"{where}.request.params"),
        "decision_action": PromptAction(decision.action).value,
        "policy_name": decision.policy.name,
        "policy_version": decision.policy.version,
        "policy_digest": decision.policy.digest,
        "decision_json": _decision_text(decision, f"{where}.decision"),
        "error": record.error,
        "extra_json": _json_text(record.extra, f"{where}.extra"),
    }
    row |= _prompt_columns("prompt", record.request.prompt, storage, key)
    row |= _prompt_columns("negative_prompt", record.request.negative_prompt, storage, key)
    rewritten = decision.prompt if decision.prompt != decision.original_prompt else None
    if rewritten is None:
        row |= {
            "rewritten_prompt_text": None,
            "rewritten_prompt_digest": None,
            "rewritten_prompt_length": None,
        }
    else:
        row |= _prompt_columns("rewritten_prompt", rewritten, storage, key)
    return row


def _image_row(generation_id: str, image: ImageRecord) -> dict[str, Any]:
    where = f"generation {generation_id!r} image {image.index!r}"
    if not isinstance(image.sha256, str) or not _SHA256_HEX.fullmatch(image.sha256):
        raise BadInputError(f"{where}: sha256 expected 64 lower-case hex digits, found {image.sha256!r}")
    if image.status not in IMAGE_STATUSES:
        raise BadInputError(f"{where}: status expected one of {IMAGE_STATUSES}, found {image.status!r}")
    for name in ("index", "width", "height"):
        value = getattr(image, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "index" else 1):
            raise BadInputError(f"{where}: {name} expected a {'non-negative' if name == 'index' else 'positive'} "
                                f"integer, found {value!r}")  # fmt: skip
    if image.manifest is not None and not isinstance(image.manifest, bytes):
        raise BadInputError(
            f"{where}: manifest expected bytes or None, found {type(image.manifest).__name__}"
        )
    nonce = image.latent_nonce
    if nonce is not None and not (isinstance(nonce, bytes) and len(nonce) in LATENT_NONCE_SIZES):
        found = f"{len(nonce)} bytes" if isinstance(nonce, bytes) else type(nonce).__name__
        raise BadInputError(f"{where}: latent_nonce expected None or 12 to 64 bytes, found {found}")
    _check_text(image.path, f"{where}: path", optional=True)
    phash = check_int64(image.phash, f"{where}: phash")
    c0, c1, c2, c3 = phash_chunks(phash)
    return {
        "generation_id": generation_id,
        "index": image.index,
        "sha256": image.sha256,
        "phash": phash,
        "phash_c0": c0,
        "phash_c1": c1,
        "phash_c2": c2,
        "phash_c3": c3,
        "width": image.width,
        "height": image.height,
        "status": image.status,
        "path": image.path,
        "mark_id": None if image.mark_id is None else check_int64(image.mark_id, f"{where}: mark_id"),
        "verdict_action": ImageAction(image.verdict.action).value,
        "verdict_json": _verdict_text(image.verdict, f"{where}.verdict"),
        "manifest": image.manifest,
        "latent_nonce": nonce,
    }


def _row_payload(row: _RowMap, fields: Sequence[str]) -> dict[str, Any]:
    """The chained payload of a domain row: its fields, JSON columns inlined, binary ones by SHA-256."""
    payload: dict[str, Any] = {}
    for name in fields:
        value = row[name]
        if name.endswith("_json"):
            # Stored canonical: spliced as is, so any change to the column's bytes changes the payload.
            payload[name.removesuffix("_json")] = chain.RawJSON(value)
        elif name == "latent_nonce":  # short, and needed to detect the watermark: kept in the entry itself
            payload[name] = None if value is None else bytes(value).hex()
        elif isinstance(value, (bytes, memoryview)):
            blob = bytes(value)
            payload[f"{name}_sha256"] = hashlib.sha256(blob).hexdigest()
            payload[f"{name}_length"] = len(blob)
        elif value is None and name == "manifest":
            payload["manifest_sha256"] = payload["manifest_length"] = None
        else:
            payload[name] = value
    return payload


class _PayloadWriter:
    """`flat_object_json(_row_payload(row, fields))` for rows of the expected column types, with the key
    order and key text worked out once: every record and every verified entry builds these payloads.
    A value of any other type (a tampered or foreign row) takes the general path, which gives the
    same bytes or names the fault (tests compare both paths)."""

    def __init__(self, fields: Sequence[str]) -> None:
        self._fields = tuple(fields)
        items: list[tuple[str, str, str]] = []  # (payload key, source column, kind)
        for name in fields:
            if name.endswith("_json"):
                items.append((name.removesuffix("_json"), name, "json"))
            elif name in ("latent_nonce", "manifest"):
                kinds = ("nonce",) if name == "latent_nonce" else ("length", "sha256")
                items += [(name if kind == "nonce" else f"{name}_{kind}", name, kind) for kind in kinds]
            else:
                items.append((name, name, "plain"))
        assert all(key.isascii() for key, _, _ in items)  # ASCII keys: code point order is UTF-16 order
        items.sort()
        self._items = tuple(
            (("," if position else "{") + f'"{key}":', source, kind)
            for position, (key, source, kind) in enumerate(items)
        )

    def __call__(self, row: _RowMap) -> bytes:
        out: list[str] = []
        append = out.append
        for prefix, source, kind in self._items:
            value = row[source]
            append(prefix)
            if value is None and kind != "json":
                append("null")
                continue
            if kind == "plain":
                if type(value) is str:
                    append(encode_basestring(value))
                elif type(value) is int:
                    append(int.__repr__(value))
                else:
                    return self._general(row)
            elif kind == "json":
                if type(value) is not str:
                    return self._general(row)
                append(value)
            elif type(value) is not bytes and type(value) is not memoryview:
                return self._general(row)
            elif kind == "nonce":
                append(f'"{bytes(value).hex()}"')
            elif kind == "length":
                append(str(len(bytes(value))))
            else:
                append(f'"{hashlib.sha256(value).hexdigest()}"')
        append("}")
        text = "".join(out)
        if not text.isascii():
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError:
                return self._general(row)  # a lone surrogate: the general path names where
        return text.encode("ascii")

    def _general(self, row: _RowMap) -> bytes:
        return chain.flat_object_json(_row_payload(row, self._fields))


_generation_payload = _PayloadWriter(_GENERATION_FIELDS)
_image_payload = _PayloadWriter(_IMAGE_FIELDS)


def generation_payload(row: _RowMap) -> bytes:
    """Canonical payload of a generation row (what its "generation.*" entry hashes)."""
    return _generation_payload(row)


def image_payload(row: _RowMap) -> bytes:
    """Canonical payload of an image row (what its "image.recorded" entry hashes)."""
    return _image_payload(row)


# ------------------------------------------------------------------------------------------ store

_GENERATION_COLUMNS = tuple(column.name for column in Generation.__table__.columns)
_IMAGE_COLUMNS = tuple(column.name for column in Image.__table__.columns if column.name != "id")
# In the order `AuditStore._append` builds an entry's tuple
_ENTRY_COLUMNS = (
    "seq",
    "event_type",
    "recorded_at",
    "generation_id",
    "payload_json",
    "prev_hash",
    "entry_hash",
)


class _Writer:
    """The write path's SQL for one engine, made once from the table definitions, run as driver SQL.

    Profiling showed SQLAlchemy's per-execution work (cache key, parameter processing) costing more
    than the database's: these statements need none of it (their values are str, int, bytes and None,
    which both drivers take as they are). Each table gets one statement per transaction: an
    executemany on SQLite (in process: no round trips to save); on PostgreSQL one multi-row
    ``INSERT ... VALUES (...), (...)`` (one round trip; psycopg's pipelined executemany took twice as
    long), and the chain head moves in the same statement as the entries are inserted, so that the
    head's lock is held for two round trips and the commit.
    """

    _MAX_ROWS = 1000  # rows per multi-row INSERT: PostgreSQL takes at most 65,535 parameters

    def __init__(self, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        marker = {"qmark": "?", "format": "%s", "pyformat": "%s"}.get(dialect.paramstyle)
        if marker is None:
            raise BadInputError(
                f"audit database driver {dialect.driver!r}: expected paramstyle qmark, format or "
                f"pyformat, found {dialect.paramstyle!r}"
            )
        self._multirow = dialect.name == "postgresql"
        self._marker = marker
        self._prefix = {
            table: f"INSERT INTO {quote(table)} ({', '.join(quote(name) for name in columns)}) VALUES "
            for table, columns in (
                ("generations", _GENERATION_COLUMNS),
                ("images", _IMAGE_COLUMNS),
                ("audit_log", _ENTRY_COLUMNS),
            )
        }
        self._row = {
            "generations": f"({', '.join([marker] * len(_GENERATION_COLUMNS))})",
            "images": f"({', '.join([marker] * len(_IMAGE_COLUMNS))})",
            "audit_log": f"({', '.join([marker] * len(_ENTRY_COLUMNS))})",
        }
        self._sql: dict[tuple[str, int, bool], str] = {}
        # FOR UPDATE serialises writers on PostgreSQL; on SQLite, BEGIN IMMEDIATE already did.
        lock = " FOR UPDATE" if self._multirow else ""
        self.lock_head = f"SELECT seq, entry_hash FROM chain_head WHERE id = 1{lock}"
        self._move_head = f"UPDATE chain_head SET seq = {marker}, entry_hash = {marker} WHERE id = 1"
        self._sign = (
            f"INSERT INTO {quote('log_signatures')} (last_seq, first_seq, key_id, signature) "
            f"VALUES ({marker}, {marker}, {marker}, {marker})"
        )

    def insert(self, conn: Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not self._multirow:
            conn.exec_driver_sql(self._prefix[table] + self._row[table], list(rows))
            return
        for first in range(0, len(rows), self._MAX_ROWS):
            chunk = rows[first : first + self._MAX_ROWS]
            conn.exec_driver_sql(self._values_sql(table, len(chunk), False), _flat(chunk))

    def append_entries(
        self,
        conn: Connection,
        rows: Sequence[tuple[Any, ...]],
        head: tuple[int, str],
        signature: tuple[int, int, str, str],
    ) -> None:
        """Insert the entry rows and the batch's signature row (last seq, first seq, key id, signature)
        and move the chain head to `head` (seq, entry hash)."""
        if not self._multirow or len(rows) > self._MAX_ROWS:
            self.insert(conn, "audit_log", rows)
            conn.exec_driver_sql(self._move_head, head)
            conn.exec_driver_sql(self._sign, signature)
            return
        conn.exec_driver_sql(
            self._values_sql("audit_log", len(rows), True), (*head, *signature, *_flat(rows))
        )

    def _values_sql(self, table: str, count: int, move_head: bool) -> str:
        key = (table, count, move_head)
        sql = self._sql.get(key)
        if sql is None:
            # A data-modifying WITH runs exactly once, whether or not the INSERT reads it (PostgreSQL).
            head = f"WITH moved AS ({self._move_head}), signed AS ({self._sign}) " if move_head else ""
            sql = self._sql[key] = head + self._prefix[table] + ", ".join([self._row[table]] * count)
        return sql


def _flat(rows: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(value for row in rows for value in row)


@dataclass(frozen=True)
class _PendingEvent:
    event_type: str
    generation_id: str | None
    payload_json: bytes


@dataclass(frozen=True)
class _PreparedGeneration:
    """A record's rows (as column-ordered tuples) and its events' payloads, built before any lock."""

    generation: tuple[Any, ...]
    images: tuple[tuple[Any, ...], ...]
    events: tuple[_PendingEvent, ...]


def _prepare(record: GenerationRecord, created_at: str, key: bytes) -> _PreparedGeneration:
    """Validate a record and build everything its transaction writes except the entry hashes."""
    generation = _generation_row(record, created_at, key)
    indices = [image.index for image in record.images]
    if len(set(indices)) != len(indices):
        raise BadInputError(
            f"generation {record.generation_id!r}: image indices expected unique, found {indices}"
        )
    images = [_image_row(record.generation_id, image) for image in record.images]
    events = [
        _PendingEvent(GENERATION_EVENTS[record.status], record.generation_id, generation_payload(generation))
    ]
    events += [_PendingEvent(IMAGE_EVENT, record.generation_id, image_payload(row)) for row in images]
    return _PreparedGeneration(
        tuple(generation[name] for name in _GENERATION_COLUMNS),
        tuple(tuple(row[name] for name in _IMAGE_COLUMNS) for row in images),
        tuple(events),
    )


class AuditStore:
    """The audit database. Open with `AuditStore.open(url)`; safe to share between threads."""

    def __init__(
        self,
        engine: Engine,
        prompt_key: bytes,
        read_only: bool = False,
        *,
        log_signer: log_key.LogSigner | None = None,
        auto_checkpoints: AutoCheckpoints | None = None,
    ) -> None:
        self._engine = engine
        self._prompt_key = prompt_key
        self._writer = _Writer(engine.dialect)
        self._read_only = read_only
        self._log_signer = log_signer  # loaded (genguard.audit.log_key) before the first write when None
        self._log_id = hmac.new(prompt_key, b"genguard/audit-log/id/v1", hashlib.sha256).hexdigest()[:32]
        self._auto = auto_checkpoints
        self._auto_state: tuple[int, float] | None = None  # last checkpoint's tree size, its time (epoch s)
        self._auto_lock = threading.Lock()
        self._local = threading.local()  # per thread: the head after this thread's last append
        self._pinned = False  # the log key and signing start pinned beside the automatic checkpoints

    @classmethod
    def open(
        cls,
        url: str | None = None,
        *,
        read_only: bool = False,
        allow_read_only: bool = False,
        log_signer: log_key.LogSigner | None = None,
        auto_checkpoints: AutoCheckpoints | None | bool = True,
    ) -> Self:
        """Connect, migrate to head (unless `read_only`) and check the database can be written.

        `url`: any SQLAlchemy URL; None means `guard.config.default_db_url()`. Raises
        AuditUnavailableError (naming the database, password masked) when it cannot be used.
        `read_only`: never write (SQLite opened by URI in read-only mode, PostgreSQL sessions read-only);
        the schema must already be at head. `allow_read_only`: open for writing when the database can be
        written, else read-only (a file without write permission, a role with SELECT only) instead of
        failing; `read_only` then says which it got, and every write raises AuditUnavailableError.
        A writer refuses an SQLite file whose mode has no write bit even when it could write it (root).
        `log_signer`: signs each committed batch of entries (default: the local log key,
        genguard.audit.log_key, loaded at the first write). `auto_checkpoints`: True (default) writes
        checkpoints as `AutoCheckpoints.from_env()` says, an `AutoCheckpoints` sets them, False or None
        switches them off (genguard.audit.checkpoint).
        """
        parsed = db.normalise_url(url if url is not None else default_db_url())
        path = db.sqlite_file(parsed)
        if path is not None and not read_only:
            if db.read_only_file(path):
                if not allow_read_only:
                    raise AuditUnavailableError(
                        f"audit database {db.describe(parsed)}: expected a writable file, found mode "
                        f"{path.stat().st_mode & 0o777:04o} (read-only: nothing can be recorded)"
                    )
                read_only = True
            else:
                warn_if_exposed(path)  # a new file is created 0600 (genguard.audit.db)
        if path is not None and read_only and not path.is_file():
            raise AuditUnavailableError(
                f"audit database {db.describe(parsed)}: expected an existing database file to read, found none"
            )
        engine = db.create_audit_engine(parsed, read_only=read_only)
        try:
            if read_only:
                with db.read_transaction(engine) as conn:
                    revision = db.current_revision(conn)
                if revision != db.HEAD_REVISION:
                    raise BadInputError(
                        f"audit database {db.describe(parsed)}: expected schema revision "
                        f"{db.HEAD_REVISION}, found {revision} (open it once without read_only to migrate)"
                    )
            else:
                for attempt in range(_BUSY_RETRIES + 1):
                    try:  # a fresh SQLite file: openers racing to switch it to WAL may see it busy
                        db.upgrade_to_head(engine)
                        db.check_writable(engine)
                        break
                    except SQLAlchemyError as exc:
                        if not db.is_sqlite_busy(exc) or attempt == _BUSY_RETRIES:
                            raise
                        time.sleep(0.05 * 2**attempt)
            with db.read_transaction(engine) as conn:
                key = conn.execute(
                    select(AuditMeta.value).where(AuditMeta.key == "prompt_hmac_key")
                ).scalar_one()
        except (SQLAlchemyError, db.ReadOnlyDatabase) as exc:
            engine.dispose()
            if allow_read_only and not read_only and db.is_read_only_error(exc):
                return cls.open(url, read_only=True, log_signer=log_signer, auto_checkpoints=auto_checkpoints)
            if isinstance(exc, db.ReadOnlyDatabase):
                raise AuditUnavailableError(
                    f"audit database {db.describe(parsed)} is unavailable for writing: {exc}"
                ) from None
            raise db.unavailable(parsed, exc) from exc
        except BaseException:
            engine.dispose()
            raise
        auto = AutoCheckpoints.from_env() if auto_checkpoints is True else auto_checkpoints or None
        return cls(engine, bytes(key), read_only, log_signer=log_signer, auto_checkpoints=auto)

    @property
    def auto_checkpoints(self) -> AutoCheckpoints | None:
        """When and where this store writes checkpoints by itself (None: it does not)."""
        return self._auto

    @property
    def read_only(self) -> bool:
        """True when this store was opened read-only: every write raises AuditUnavailableError."""
        return self._read_only

    @property
    def url(self) -> str:
        """The database URL with any password masked."""
        return db.describe(self._engine.url)

    def close(self) -> None:
        self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def prompt_digest(self, prompt: str) -> str:
        """The digest a hashed prompt is stored under in this database (to check a suspected prompt)."""
        return hmac.new(self._prompt_key, prompt.encode("utf-8"), hashlib.sha256).hexdigest()

    # ----------------------------------------------------------------------------------- writing

    def record_generation(self, record: GenerationRecord) -> None:
        """Write the request, decision and images with their chained entries in ONE transaction."""
        self.record_generations((record,))

    def record_generations(self, records: Sequence[GenerationRecord]) -> None:
        """Write several generations in ONE transaction (group commit): all of them or none.

        Each generation gets its own chained entries, exactly as `record_generation` writes them; one
        commit (one disk sync) covers the batch. An invalid record fails the whole batch before the
        database is touched.
        """
        if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
            raise BadInputError(
                f"records: expected a sequence of GenerationRecord, found {type(records).__name__}"
            )
        if not records:
            return
        ids = [record.generation_id for record in records]
        if len(set(ids)) != len(ids):
            raise BadInputError(f"records: generation ids expected unique within a batch, found {ids}")
        created_at = chain.format_time(datetime.now(UTC))
        prepared = [_prepare(record, created_at, self._prompt_key) for record in records]
        generations = [item.generation for item in prepared]
        images = [row for item in prepared for row in item.images]
        events = [event for item in prepared for event in item.events]

        def write(conn: Connection) -> None:
            # Domain rows first: on PostgreSQL they are written before the head's lock is taken, so that
            # concurrent writers overlap here and hold the lock only to hash, append and commit.
            self._writer.insert(conn, "generations", generations)
            if images:
                self._writer.insert(conn, "images", images)
            self._append(conn, events)

        what = f"generation {ids[0]!r}" if len(ids) == 1 else f"generations {ids[0]!r}..{ids[-1]!r}"
        self._write(write, what)

    def append_event(self, event_type: str, payload: _RowMap, generation_id: str | None = None) -> int:
        """Append one generic event (e.g. "verification.performed", "review.decision"); returns its seq."""
        if not isinstance(event_type, str) or len(event_type) > 64 or not _EVENT_TYPE.fullmatch(event_type):
            raise BadInputError(
                f"event_type: expected dotted lower-case words of at most 64 characters, found {event_type!r}"
            )
        if event_type in RESERVED_EVENTS:
            raise BadInputError(f"event_type: {event_type!r} is written only by record_generation")
        if not isinstance(payload, Mapping):
            raise BadInputError(f"payload: expected a mapping, found {type(payload).__name__}")
        _check_text(generation_id, "generation_id", optional=True)
        event = _PendingEvent(event_type, generation_id, chain.canonical_json(dict(payload)))
        seqs: list[int] = []
        self._write(lambda conn: seqs.extend(self._append(conn, [event])), f"event {event_type!r}")
        return seqs[0]

    def _append(self, conn: Connection, events: Sequence[_PendingEvent]) -> list[int]:
        """Chain `events` after the head; the caller's transaction holds, or here takes, the write lock."""
        seq, prev_hex = conn.exec_driver_sql(self._writer.lock_head).one()
        prev = bytes.fromhex(prev_hex)
        recorded_at = chain.format_time(datetime.now(UTC))  # taken under the lock: time order is seq order
        first = seq + 1
        rows = []
        for event in events:
            seq += 1
            document = chain.event_json(
                seq, event.event_type, recorded_at, event.generation_id, event.payload_json
            )
            entry = chain.entry_hash(prev, document)
            entry_hex = entry.hex()
            payload_text = event.payload_json.decode("utf-8")
            rows.append(
                (seq, event.event_type, recorded_at, event.generation_id, payload_text, prev_hex, entry_hex)
            )
            prev, prev_hex = entry, entry_hex
        signer = self._signer()
        signature = signer.sign(log_key.batch_message(self._log_id, first, seq, prev))
        self._writer.append_entries(
            conn, rows, (seq, prev_hex), (seq, first, log_key.key_id(signer.public_key), signature.hex())
        )
        self._local.head = seq
        return list(range(first, seq + 1))

    def _signer(self) -> log_key.LogSigner:
        if self._log_signer is None:
            self._log_signer = log_key.load_log_signer()
        return self._log_signer

    @property
    def log_public_key(self) -> bytes:
        """The raw Ed25519 public key this store signs its batches with (loads or creates the local key)."""
        return self._signer().public_key

    def _write(self, work: Callable[[Connection], object], what: str) -> None:
        """Run `work(conn)` in a write transaction, retrying while SQLite reports the database busy."""
        if self._read_only:
            raise AuditUnavailableError(
                f"{what}: not recorded, audit database {self.url} is unavailable for writing (opened read-only)"
            )
        self._signer()  # before the transaction: a missing or bad key fails here, closed, holding no lock
        if self._auto is not None and not self._pinned:
            self._pin(self._auto)
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                with db.write_transaction(self._engine) as conn:
                    work(conn)
                break
            except (IntegrityError, DataError) as exc:
                raise BadInputError(
                    f"{what}: not recorded, it conflicts with a stored row ({_cause(exc)})"
                ) from None
            except SQLAlchemyError as exc:
                if db.is_sqlite_busy(exc) and attempt < _BUSY_RETRIES:
                    time.sleep(0.05 * 2**attempt)
                    continue
                raise db.unavailable(self._engine.url, exc) from exc
        if self._auto is not None and not getattr(self._local, "checkpointing", False):
            self._maybe_checkpoint(self._auto, getattr(self._local, "head", 0))

    def _pin(self, policy: AutoCheckpoints) -> None:
        """Pin the log key and the signing start beside the checkpoints before this store's first write
        (genguard.audit.checkpoint.pin_log_signing). A failure is logged and retried at the next write:
        the record itself does not depend on it."""
        try:
            pin_log_signing(policy.folder_for(self.log_id()), self.log_public_key, self.log_signed_from())
            self._pinned = True
        except (GenguardError, OSError, SQLAlchemyError) as exc:
            _LOG.warning("audit log signing pins not written: %s", exc)

    def log_signed_from(self) -> int:
        """The first entry that must carry a log signature, as the database records it (1 for a log
        signed from its start; the head + 1 at migration for a log written before signing)."""
        with self._reading() as conn:
            return _signed_from(
                conn.execute(
                    select(AuditMeta.value).where(AuditMeta.key == "log_signed_from")
                ).scalar_one_or_none()
            )

    def checkpoint_if_due(self) -> None:
        """Write an automatic checkpoint now if one is due: what a long-running process calls when the log
        may be idle (`CheckpointTimer`), since writes alone evaluate the time trigger only when they
        happen. Does nothing when automatic checkpoints are off or the store is read-only."""
        if self._auto is None or self._read_only:
            return
        try:
            head = self.reader().head().seq
        except GenguardError as exc:
            _LOG.warning("automatic audit checkpoint not checked: %s", exc)
            return
        self._maybe_checkpoint(self._auto, head)

    def _maybe_checkpoint(self, policy: AutoCheckpoints, head: int) -> None:
        """Write an automatic checkpoint when `policy` says one is due (after the commit: a failure here
        loses no record; it is logged, and the next write tries again)."""
        with self._auto_lock:
            try:
                if self._auto_state is None:
                    latest = latest_checkpoint(policy.folder_for(self.log_id()))
                    if latest is not None:
                        self._auto_state = (latest[0].tree_size, latest[0].timestamp.timestamp())
                    else:  # none yet: the period runs from the log's first entry, not from this process's start
                        first = self.reader().entry(1)
                        began = first.recorded_at.timestamp() if first is not None else time.time()
                        self._auto_state = (0, began)
                size, made = self._auto_state
                if not policy.due(size, made, head, time.time()):
                    return
                self._local.checkpointing = True
                try:
                    # cast: mypy names this module audit.store, checkpoint.py imports genguard.audit.store
                    checkpoint = write_auto_checkpoint(cast(Any, self), policy)
                finally:
                    self._local.checkpointing = False
                self._auto_state = (checkpoint.tree_size, checkpoint.timestamp.timestamp())
            except (GenguardError, OSError, SQLAlchemyError) as exc:
                _LOG.warning("automatic audit checkpoint not written: %s", exc)

    # ----------------------------------------------------------------------------------- reading

    def reader(self) -> AuditReader:
        """The read-only view of this database (genguard.audit.reader): typed reads with pagination,
        for review, reports, verify, the CLI and the service. The methods below are its shorthands."""
        return AuditReader(self._engine)

    def list_generations(
        self, limit: int = 50, status: str | None = None, since: datetime | None = None
    ) -> list[GenerationSummary]:
        """The newest generations first; `status` filters, `since` keeps those created at or after it."""
        return self.reader().generations(limit, status, since)

    def get_generation(self, generation_id: str, *, with_events: bool = True) -> GenerationDetail | None:
        """One generation with its images and its log entries, or None if not recorded
        (`AuditReader.generation`)."""
        return self.reader().generation(generation_id, with_events=with_events)

    def find_image_by_mark_id(self, mark_id: int) -> StoredImage | None:
        """The image whose pixel watermark carries `mark_id` (signed or unsigned 64-bit reading)."""
        return self.reader().image_by_mark_id(mark_id)

    def find_images_by_sha256(self, sha256: str) -> list[StoredImage]:
        """Every recorded image with these exact bytes (hex digest, either case)."""
        return self.reader().images_by_sha256(sha256)

    def find_similar_images(self, phash: int, max_distance: int = 8, limit: int = 20) -> list[SimilarImage]:
        """Recorded images within `max_distance` bits (0..11) of `phash`, nearest first
        (`AuditReader.similar_images`)."""
        return self.reader().similar_images(phash, max_distance, limit)

    def _reading(self, snapshot: bool = False) -> AbstractContextManager[Connection]:
        return _translated(self._engine, snapshot)

    # ------------------------------------------------------------------------------------ verify

    def verify_chain(self) -> ChainVerification:
        """Recompute every entry hash and every domain payload from the stored rows, in one snapshot.

        Names the first entry that does not match: a changed entry or row, a missing, reordered or
        forged entry, a tail cut off (the chain head names a later entry), or a row no entry covers.
        """
        with self._reading(snapshot=True) as conn:
            return _verify(conn, None)

    def verify_log(
        self, public_key: bytes | None = None, *, pinned_signed_from: int | None = None
    ) -> ChainVerification:
        """`verify_chain`, plus the log signatures: every entry from `signed_from` (the first seq written
        with signing; earlier ones are verified under the old rules, chain only) up to the head must be
        covered by a batch signature that verifies under the trusted log key.

        `public_key`: the trusted raw Ed25519 log key; default: the local log key's public half
        (genguard.audit.log_key). With none and signed entries to check, the result fails closed (ok
        False, no entry named). Names the first unsigned or wrongly signed entry otherwise.
        `pinned_signed_from`: the signing start pinned outside the database
        (genguard.audit.checkpoint.pinned_signed_from); a database that records another fails."""
        trusted = public_key if public_key is not None else log_key.local_public_key()
        with self._reading(snapshot=True) as conn:
            raw = conn.execute(
                select(AuditMeta.value).where(AuditMeta.key == "log_signed_from")
            ).scalar_one_or_none()
            signed_from = _signed_from(raw)
            return _verify(conn, _SignatureCheck(self._log_id, signed_from, trusted, pinned_signed_from))

    # -------------------------------------------------------------- checkpoints (genguard.audit.checkpoint)

    def log_id(self) -> str:
        """A stable identity of this log for checkpoints: HMAC of a fixed label under the database's
        random key, so it differs between databases and reveals nothing about the key."""
        return self._log_id

    def entry_hashes(self) -> list[bytes]:
        """Every entry's chained hash in seq order, from one snapshot: the leaves of the checkpoint tree.

        By position, not by seq value, so a missing or moved entry shifts the leaves after it. A stored
        hash that is not hex is returned as its text bytes (a leaf that then matches no checkpoint)."""
        hashes: list[bytes] = []
        with self._reading(snapshot=True) as conn:
            for chunk in _log_chunks(conn, LogEntry.seq, LogEntry.entry_hash, size=20_000):
                for row in chunk:
                    text = row.entry_hash
                    try:
                        hashes.append(bytes.fromhex(text))
                    except ValueError:
                        hashes.append(text.encode("utf-8"))
        return hashes

    def entry(self, seq: int) -> StoredEvent | None:
        """The log entry `seq`, or None."""
        return self.reader().entry(seq)


# -------------------------------------------------------------------------------- query helpers


@contextmanager
def _translated(engine: Engine, snapshot: bool) -> Iterator[Connection]:
    """A read transaction whose database errors become AuditUnavailableError."""
    try:
        with db.read_transaction(engine, snapshot) as conn:
            yield conn
    except SQLAlchemyError as exc:
        raise db.unavailable(engine.url, exc) from exc


def _cause(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


# --------------------------------------------------------------------------------------- verify


class _Fault(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq, self.reason = seq, reason


def _log_chunks(conn: Connection, *columns: Any, size: int = _VERIFY_CHUNK) -> Iterator[Sequence[Row[Any]]]:
    """The log in seq order, `size` entries at a time: whole rows, or only `columns` (seq among them)."""
    after = 0
    query = select(*columns) if columns else select(LogEntry.__table__)
    while True:
        chunk = conn.execute(query.where(LogEntry.seq > after).order_by(LogEntry.seq).limit(size)).all()
        if not chunk:
            return
        yield chunk
        after = chunk[-1].seq


def _signed_from(raw: bytes | None) -> int:
    """The stored first seq that must be signed; a missing or malformed value means 1 (all of them)."""
    try:
        value = int(bytes(raw).decode("ascii")) if raw is not None else 1
    except (ValueError, UnicodeDecodeError):
        return 1
    return max(value, 1)


@dataclass
class _SignatureCheck:
    """State of the signature walk: the next entry a batch must start at, batches verified so far."""

    log_id: str
    signed_from: int
    public_key: bytes | None
    pinned_signed_from: int | None = None
    next_first: int = 0
    batches: int = 0

    def __post_init__(self) -> None:
        self.next_first = self.signed_from

    def check(self, seq: int, entry_hash: bytes, signature: Row[Any] | None) -> None:
        if signature is None or seq < self.signed_from:
            return
        first = signature.first_seq
        where = f"entries {first}..{seq}" if first != seq else f"entry {seq}"
        if first != self.next_first:
            raise _Fault(
                min(first, self.next_first),
                f"{where}: the log signature's batch does not start where the previous one ended "
                f"(entry {self.next_first}): batches were removed, merged or forged",
            )
        assert self.public_key is not None  # checked before the walk
        expected_id = log_key.key_id(self.public_key)
        if signature.key_id != expected_id:
            raise _Fault(
                first,
                f"{where}: signed by log key {str(signature.key_id)[:16]}, expected the trusted log key "
                f"{expected_id[:16]} (appended without the log key)",
            )
        try:
            signature_bytes = bytes.fromhex(signature.signature)
        except (TypeError, ValueError):
            signature_bytes = b""
        message = log_key.batch_message(self.log_id, first, seq, entry_hash)
        if not log_key.verify_batch(self.public_key, signature_bytes, message):
            raise _Fault(
                first,
                f"{where}: the log signature does not verify (appended or rewritten without the log key)",
            )
        self.next_first, self.batches = seq + 1, self.batches + 1


def _verify(conn: Connection, signatures: _SignatureCheck | None) -> ChainVerification:
    head = conn.execute(select(ChainHead.seq, ChainHead.entry_hash).where(ChainHead.id == 1)).one()
    checked = 0
    extra: dict[str, Any] = {}
    if signatures is not None:
        extra = {"signed_from": signatures.signed_from}
        if signatures.public_key is not None:
            extra["log_key_id"] = log_key.key_id(signatures.public_key)
    try:
        pinned = signatures.pinned_signed_from if signatures is not None else None
        if signatures is not None and pinned is not None and pinned != signatures.signed_from:
            low, high = sorted((pinned, signatures.signed_from))
            raise _Fault(
                low,
                f"the database says log signing starts at entry {signatures.signed_from}, the pin outside "
                f"it says entry {pinned}: the signing start was moved (entries {low}..{high - 1} would be "
                "read under the wrong rules)",
            )
        if signatures is not None and signatures.public_key is None and head.seq >= signatures.signed_from:
            raise _Fault(
                None,
                f"the log signatures of entries {signatures.signed_from}..{head.seq} cannot be checked: "
                "expected a trusted log public key (--log-public-key, the local log key, or log-key.pem "
                "beside the checkpoints), found none",
            )
        prev, generations_seen, images_seen = _verify_entries(conn, head.seq, signatures)
        checked = head.seq
        if prev.hex() != head.entry_hash:
            raise _Fault(head.seq or None, f"the chain head's hash does not match entry {head.seq}")
        if signatures is not None and signatures.next_first <= head.seq:
            first = signatures.next_first
            raise _Fault(
                first,
                f"entries {first}..{head.seq} carry no log signature (appended without the log key)",
            )
        _verify_outside(conn, head.seq, signatures)
        _verify_coverage(conn, generations_seen, images_seen)
    except _Fault as fault:
        checked = fault.seq - 1 if fault.seq is not None and fault.seq >= 1 else checked
        batches = signatures.batches if signatures is not None else 0
        return ChainVerification(
            False, max(min(checked, head.seq), 0), fault.seq, fault.reason, head.seq,
            batches_verified=batches, **extra,
        )  # fmt: skip
    batches = signatures.batches if signatures is not None else 0
    return ChainVerification(True, checked, None, None, head.seq, batches_verified=batches, **extra)


def _verify_outside(conn: Connection, head_seq: int, signatures: _SignatureCheck | None) -> None:
    """Rows outside the chain are tampering: readers ignore them, verify names them."""
    below = conn.execute(
        select(LogEntry.seq, LogEntry.event_type).where(LogEntry.seq <= 0).order_by(LogEntry.seq).limit(1)
    ).first()
    if below is not None:
        raise _Fault(
            below.seq,
            f"entry {below.seq} ({below.event_type}) lies outside the chain (seq <= 0): not appended by genguard",
        )
    total, distinct = conn.execute(
        select(func.count(), func.count(func.distinct(LogEntry.seq))).select_from(LogEntry)
    ).one()
    if total != distinct:
        (dup,) = conn.execute(
            select(LogEntry.seq)
            .group_by(LogEntry.seq)
            .having(func.count() > 1)
            .order_by(LogEntry.seq)
            .limit(1)
        ).one()
        raise _Fault(dup, f"entry {dup} is stored more than once (duplicate seq): not appended by genguard")
    if signatures is not None:
        stray = conn.execute(
            select(LogSignature.first_seq, LogSignature.last_seq)
            .where((LogSignature.last_seq > head_seq) | (LogSignature.last_seq < signatures.signed_from))
            .order_by(LogSignature.last_seq)
            .limit(1)
        ).first()
        if stray is not None:
            raise _Fault(
                stray.first_seq,
                f"a log signature for entries {stray.first_seq}..{stray.last_seq} lies outside the signed "
                f"chain (entries {signatures.signed_from}..{head_seq}): the tail was cut or the signing "
                "start was moved",
            )


def _verify_entries(
    conn: Connection, head_seq: int, signatures: _SignatureCheck | None = None
) -> tuple[bytes, set[str], int]:
    prev, expected_seq = chain.GENESIS_PREV, 1
    generations_seen: set[str] = set()
    images_seen = 0
    for chunk in _log_chunks(conn):
        batch_ends: dict[int, Row[Any]] = {}
        if signatures is not None:
            batch_ends = {
                row.last_seq: row
                for row in conn.execute(
                    select(LogSignature.__table__).where(
                        LogSignature.last_seq >= chunk[0].seq, LogSignature.last_seq <= chunk[-1].seq
                    )
                )
            }
        ids = {
            e.generation_id for e in chunk if e.event_type in RESERVED_EVENTS and e.generation_id is not None
        }
        generations = {
            r.id: r._mapping for r in conn.execute(select(Generation.__table__).where(Generation.id.in_(ids)))
        }
        images = {
            (r.generation_id, r._mapping["index"]): r._mapping
            for r in conn.execute(select(Image.__table__).where(Image.generation_id.in_(ids)))
        }
        for entry in chunk:
            seq = entry.seq
            if seq == expected_seq - 1 and seq >= 1:
                raise _Fault(
                    seq, f"entry {seq} is stored more than once (duplicate seq): not appended by genguard"
                )
            if seq != expected_seq:
                raise _Fault(
                    expected_seq, f"entry {expected_seq} is missing (the next stored entry is {seq})"
                )
            if seq > head_seq:
                raise _Fault(
                    seq,
                    f"entry {seq} lies beyond the chain head (entry {head_seq}): not appended by genguard",
                )
            if entry.prev_hash != prev.hex():
                raise _Fault(seq, f"entry {seq}: prev_hash does not match the hash of entry {seq - 1}")
            payload_bytes = entry.payload_json.encode("utf-8")
            document = chain.event_json(
                seq, entry.event_type, entry.recorded_at, entry.generation_id, payload_bytes
            )
            computed = chain.entry_hash(prev, document)
            if computed.hex() != entry.entry_hash:
                raise _Fault(
                    seq, f"entry {seq}: its hash does not match its contents (the entry was changed)"
                )
            _check_payload(entry, payload_bytes, generations, images)
            if signatures is not None:
                signatures.check(seq, computed, batch_ends.get(seq))
            if entry.event_type == IMAGE_EVENT:
                images_seen += 1
            elif entry.event_type in RESERVED_EVENTS:
                if entry.generation_id in generations_seen:
                    raise _Fault(seq, f"entry {seq}: generation {entry.generation_id!r} is recorded twice")
                generations_seen.add(entry.generation_id)
            prev, expected_seq = computed, seq + 1
    if expected_seq - 1 != head_seq:
        last = expected_seq - 1
        raise _Fault(last + 1, f"the log ends at entry {last} but the chain head names entry {head_seq}: "
                               "entries were removed from the tail")  # fmt: skip
    return prev, generations_seen, images_seen


def _check_payload(
    entry: Row[Any],
    payload_bytes: bytes,
    generations: Mapping[str, _RowMap],
    images: Mapping[tuple[str, int], _RowMap],
) -> None:
    seq, gid = entry.seq, entry.generation_id
    # A domain entry whose payload is byte for byte the payload rebuilt from its row (always canonical
    # JSON, written by the same builders) is checked; only a mismatch needs the slow walk below to name
    # the fault. Parsing and re-encoding every payload was most of verify's time.
    if entry.event_type == IMAGE_EVENT:
        found = _IMAGE_INDEX.search(payload_bytes)  # `,"index":` never occurs inside a JSON string
        row = images.get((gid, int(found[1]))) if found is not None else None
        if row is not None and image_payload(row) == payload_bytes:
            return
    elif entry.event_type in RESERVED_EVENTS:
        row = generations.get(gid or "")
        if (
            row is not None
            and GENERATION_EVENTS.get(row["status"]) == entry.event_type
            and generation_payload(row) == payload_bytes
        ):
            return
    try:
        payload = json.loads(payload_bytes)
    except ValueError:
        raise _Fault(seq, f"entry {seq}: payload is not JSON") from None
    if chain.canonical_json(payload) != payload_bytes:
        raise _Fault(seq, f"entry {seq}: payload is not in canonical form")
    if entry.event_type == IMAGE_EVENT:
        key = (gid, payload.get("index") if isinstance(payload, dict) else None)
        image = images.get(key)  # type: ignore[arg-type]
        if image is None:
            raise _Fault(seq, f"entry {seq}: image {key[1]!r} of generation {gid!r} has no row (deleted?)")
        if image_payload(image) != payload_bytes:
            raise _Fault(seq, f"entry {seq}: the row of image {key[1]} of generation {gid!r} was changed")
    elif entry.event_type in RESERVED_EVENTS:
        generation = generations.get(gid or "")
        if generation is None:
            raise _Fault(seq, f"entry {seq}: generation {gid!r} has no row (deleted?)")
        if (
            GENERATION_EVENTS.get(generation["status"]) != entry.event_type
            or generation_payload(generation) != payload_bytes
        ):
            raise _Fault(seq, f"entry {seq}: the row of generation {gid!r} was changed")


def _verify_coverage(conn: Connection, generations_seen: set[str], images_seen: int) -> None:
    """Every domain row must be covered by an entry: a row added behind genguard's back is a fault too."""
    generation_count = conn.execute(select(func.count()).select_from(Generation)).scalar_one()
    if generation_count != len(generations_seen):
        for (gid,) in conn.execute(select(Generation.id)):
            if gid not in generations_seen:
                raise _Fault(None, f"generation {gid!r} has a row but no log entry (inserted behind the log)")
    image_count = conn.execute(select(func.count()).select_from(Image)).scalar_one()
    if image_count != images_seen:
        raise _Fault(
            None, f"{image_count} image rows but {images_seen} image entries (rows inserted behind the log)"
        )


__all__ = [  # the read types live in genguard.audit.reader; named here too, where they always were
    "GENERATION_EVENTS",
    "GENERATION_STATUSES",
    "IMAGE_EVENT",
    "IMAGE_STATUSES",
    "RESERVED_EVENTS",
    "AuditStore",
    "ChainVerification",
    "GenerationDetail",
    "GenerationSummary",
    "SimilarImage",
    "StoredDecision",
    "StoredEvent",
    "StoredImage",
    "StoredPrompt",
    "generation_payload",
    "image_payload",
    "phash_chunks",
]
