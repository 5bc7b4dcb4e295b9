"""Initial audit schema: generations, images, the chained log, its head, and per-database secrets.

Revision ID: 0001
Revises:
Create Date: 2026-11-20
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_BIGINT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    meta = op.create_table(
        "audit_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
    )
    op.create_table(
        "generations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.String(27), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(256), nullable=False),
        sa.Column("model_id", sa.String(512), nullable=False),
        sa.Column("pipeline_class", sa.String(256), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=True),
        sa.Column("prompt_storage", sa.String(16), nullable=False),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("prompt_digest", sa.String(64), nullable=True),
        sa.Column("prompt_length", sa.Integer(), nullable=False),
        sa.Column("negative_prompt_text", sa.Text(), nullable=True),
        sa.Column("negative_prompt_digest", sa.String(64), nullable=True),
        sa.Column("negative_prompt_length", sa.Integer(), nullable=False),
        sa.Column("rewritten_prompt_text", sa.Text(), nullable=True),
        sa.Column("rewritten_prompt_digest", sa.String(64), nullable=True),
        sa.Column("rewritten_prompt_length", sa.Integer(), nullable=True),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("decision_action", sa.String(16), nullable=False),
        sa.Column("policy_name", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
        sa.Column("policy_digest", sa.String(128), nullable=False),
        sa.Column("decision_json", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("extra_json", sa.Text(), nullable=False),
    )
    for column in ("created_at", "status", "decision_action"):
        op.create_index(f"ix_generations_{column}", "generations", [column])

    op.create_table(
        "images",
        sa.Column("id", _BIGINT_ID, primary_key=True),
        sa.Column("generation_id", sa.String(64), sa.ForeignKey("generations.id"), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("phash", sa.BigInteger(), nullable=False),
        sa.Column("phash_c0", sa.Integer(), nullable=False),
        sa.Column("phash_c1", sa.Integer(), nullable=False),
        sa.Column("phash_c2", sa.Integer(), nullable=False),
        sa.Column("phash_c3", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("mark_id", sa.BigInteger(), nullable=True),
        sa.Column("verdict_action", sa.String(16), nullable=False),
        sa.Column("verdict_json", sa.Text(), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=True),
        sa.Column("latent_nonce", sa.LargeBinary(), nullable=True),
        sa.UniqueConstraint("generation_id", "index", name="uq_images_generation_index"),
    )
    for column in ("generation_id", "sha256", "phash_c0", "phash_c1", "phash_c2", "phash_c3"):
        op.create_index(f"ix_images_{column}", "images", [column])
    op.create_index("ix_images_mark_id", "images", ["mark_id"], unique=True)

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(27), nullable=False),
        sa.Column("generation_id", sa.String(64), sa.ForeignKey("generations.id"), nullable=True),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False, unique=True),
    )
    op.create_index("ix_audit_log_event_type", "audit_log", ["event_type"])
    op.create_index("ix_audit_log_generation_id", "audit_log", ["generation_id"])

    head = op.create_table(
        "chain_head",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_hash", sa.String(64), nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "entry_hash": "00" * 32}])
    # The key for hashed prompts: random per database, so that a hash cannot be looked up in a
    # table precomputed for every genguard database (see genguard.audit.store, prompt storage).
    op.bulk_insert(meta, [{"key": "prompt_hmac_key", "value": os.urandom(32)}])


def downgrade() -> None:
    for table in ("chain_head", "audit_log", "images", "generations", "audit_meta"):
        op.drop_table(table)
