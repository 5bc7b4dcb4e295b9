"""The audit schema as SQLAlchemy 2.0 typed models. Migrations in audit/migrations build the same tables.

Times are stored as fixed-width ISO 8601 UTC text (genguard.audit.chain.format_time) so that the chained
payloads rebuilt from these rows are byte-identical on every database (no driver time zones).
64-bit values (perceptual hash, mark id) are stored as signed 64-bit integers, the type both
SQLite and PostgreSQL have natively.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class AuditMeta(Base):
    """Per-database settings and secrets, e.g. the HMAC key for hashed prompts."""

    __tablename__ = "audit_meta"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[bytes] = mapped_column(LargeBinary)


class Generation(Base):
    """One request: what was asked (stored as the policy says), what the policy decided, the outcome."""

    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[str] = mapped_column(String(27), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    actor: Mapped[str] = mapped_column(String(256))
    model_id: Mapped[str] = mapped_column(String(512))
    pipeline_class: Mapped[str] = mapped_column(String(256))
    seed: Mapped[int | None] = mapped_column(BigInteger)
    prompt_storage: Mapped[str] = mapped_column(String(16))
    prompt_text: Mapped[str | None] = mapped_column(Text)
    prompt_digest: Mapped[str | None] = mapped_column(String(64))
    prompt_length: Mapped[int] = mapped_column(Integer)
    negative_prompt_text: Mapped[str | None] = mapped_column(Text)
    negative_prompt_digest: Mapped[str | None] = mapped_column(String(64))
    negative_prompt_length: Mapped[int] = mapped_column(Integer)
    # NULL length: the policy did not rewrite the prompt
    rewritten_prompt_text: Mapped[str | None] = mapped_column(Text)
    rewritten_prompt_digest: Mapped[str | None] = mapped_column(String(64))
    rewritten_prompt_length: Mapped[int | None] = mapped_column(Integer)
    params_json: Mapped[str] = mapped_column(Text)
    decision_action: Mapped[str] = mapped_column(String(16), index=True)
    policy_name: Mapped[str] = mapped_column(String(128))
    policy_version: Mapped[str] = mapped_column(String(64))
    policy_digest: Mapped[str] = mapped_column(String(128))
    decision_json: Mapped[str] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    extra_json: Mapped[str] = mapped_column(Text)


class Image(Base):
    """One output image. `phash_c0..c3` are the hash's 16-bit chunks (c0 = most significant), kept because
    the chained payload covers them; near-duplicate lookup uses the segment indexes (genguard.audit.similar)."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("generation_id", "index", name="uq_images_generation_index"),
        # Migration 0002: the hash's 21/21/22-bit segments, then the hash (and id) for index-only reads
        *(
            Index(
                f"ix_images_phash_segment{number}", text(expression), text("phash"), postgresql_include=["id"]
            )
            for number, expression in enumerate(
                ("((phash >> 43) & 2097151)", "((phash >> 22) & 2097151)", "(phash & 4194303)")
            )
        ),
    )

    # BIGINT on PostgreSQL; INTEGER on SQLite, where only that spelling aliases the rowid
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    generation_id: Mapped[str] = mapped_column(ForeignKey("generations.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    phash: Mapped[int] = mapped_column(BigInteger)
    phash_c0: Mapped[int] = mapped_column(Integer)
    phash_c1: Mapped[int] = mapped_column(Integer)
    phash_c2: Mapped[int] = mapped_column(Integer)
    phash_c3: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    path: Mapped[str | None] = mapped_column(Text)
    mark_id: Mapped[int | None] = mapped_column(BigInteger, unique=True, index=True)
    verdict_action: Mapped[str] = mapped_column(String(16))
    verdict_json: Mapped[str] = mapped_column(Text)
    manifest: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The latent (Gaussian-Shading) watermark's per-image nonce: with the key and mark_id it
    # regenerates the initial noise, which detection needs.
    latent_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)


class LogEntry(Base):
    """One chained event. `payload_json` is canonical JSON; hashes are lower-case hex."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_type: Mapped[str] = mapped_column(String(64), index=True)
    recorded_at: Mapped[str] = mapped_column(String(27))
    generation_id: Mapped[str | None] = mapped_column(ForeignKey("generations.id"), index=True)
    payload_json: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    entry_hash: Mapped[str] = mapped_column(String(64), unique=True)


class ChainHead(Base):
    """The single row (id 1) naming the last entry; updated in the same transaction as each append.

    It lets verify notice a truncated tail. Someone who can rewrite the database can rewrite it too:
    signed checkpoints kept elsewhere close that gap.
    """

    __tablename__ = "chain_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    entry_hash: Mapped[str] = mapped_column(String(64))


# ------------------------------------------------------------------ the service (migration 0003)


class Tenant(Base):
    """A customer of the service: its keys, jobs and files are its own."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[str] = mapped_column(String(27))
    # NULL: the service's own (migration 0006); paths, never key material
    policy: Mapped[str | None] = mapped_column(Text, nullable=True)
    signing_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    signing_chain: Mapped[str | None] = mapped_column(Text, nullable=True)
    watermark_key: Mapped[str | None] = mapped_column(Text, nullable=True)


class ApiKey(Base):
    """An API key: its id, tenant and role, and the SHA-256 of the key (the key itself is never stored)."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    label: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[str] = mapped_column(String(27))
    expires_at: Mapped[str | None] = mapped_column(String(27))
    revoked_at: Mapped[str | None] = mapped_column(String(27))


class Job(Base):
    """A generation asked of the service: queued, running, then done / blocked / invalid / failed."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[str] = mapped_column(String(27), index=True)
    started_at: Mapped[str | None] = mapped_column(String(27))
    finished_at: Mapped[str | None] = mapped_column(String(27))
    request_json: Mapped[str] = mapped_column(Text)
    generation_id: Mapped[str | None] = mapped_column(String(64), index=True)
    result_json: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)


# ------------------------------------------------------------------ log signatures (migration 0004)


class LogSignature(Base):
    """One Ed25519 signature per committed batch of entries first_seq..last_seq (genguard.audit.log_key).

    `key_id` is the SHA-256 of the signer's public key; the private key is never stored."""

    __tablename__ = "log_signatures"

    last_seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    first_seq: Mapped[int] = mapped_column(BigInteger)
    key_id: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))


# ------------------------------------------------------------------- job inputs (migration 0005)


class JobInput(Base):
    """An edit job's input image or mask, sealed (AES-256-GCM, genguard.audit.job_inputs), kept only
    until its job finishes. `part`: "image" or "mask"; `sha256` and `size_bytes` of the clear bytes."""

    __tablename__ = "job_inputs"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), primary_key=True)
    part: Mapped[str] = mapped_column(String(16), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)
