"""Log signatures: one Ed25519 signature per committed batch of entries (genguard.audit.log_key).

Entries appended before this migration carry no signature: `audit_meta` row ``log_signed_from`` records
the first seq that must be signed (the chain head + 1 at migration time; 1 for a new database), and
`audit verify` says that the entries before it were verified under the old rules (chain only).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_signatures",
        sa.Column("last_seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("first_seq", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("signature", sa.String(128), nullable=False),
    )
    head = op.get_bind().execute(sa.text("SELECT seq FROM chain_head WHERE id = 1")).scalar_one()
    meta = sa.table("audit_meta", sa.column("key", sa.String), sa.column("value", sa.LargeBinary))
    op.bulk_insert(meta, [{"key": "log_signed_from", "value": str(int(head) + 1).encode("ascii")}])


def downgrade() -> None:
    op.execute("DELETE FROM audit_meta WHERE key = 'log_signed_from'")
    op.drop_table("log_signatures")
