"""Near-duplicate lookup: index the perceptual hash as three segments (21, 21, 22 bits).

Multi-index hashing over expression indexes (see genguard.audit.similar): each index holds a segment of
`phash`, then `phash` itself (and, on PostgreSQL, `id`) so that candidates are read from the index
alone. The expressions are written out here, frozen, and must stay what genguard.audit.similar.SEGMENT_SQL
queries. The four single-column indexes on the 16-bit chunks phash_c0..c3 are dropped: nothing
reads them now, and each costs every write. The columns stay: the chained image payload covers them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_SEGMENTS = ("((phash >> 43) & 2097151)", "((phash >> 22) & 2097151)", "(phash & 4194303)")
_CHUNKS = ("phash_c0", "phash_c1", "phash_c2", "phash_c3")


def upgrade() -> None:
    for column in _CHUNKS:
        op.drop_index(f"ix_images_{column}", table_name="images")
    for number, expression in enumerate(_SEGMENTS):
        op.create_index(
            f"ix_images_phash_segment{number}",
            "images",
            [sa.text(expression), sa.text("phash")],
            postgresql_include=["id"],
        )


def downgrade() -> None:
    for number in range(len(_SEGMENTS)):
        op.drop_index(f"ix_images_phash_segment{number}", table_name="images")
    for column in _CHUNKS:
        op.create_index(f"ix_images_{column}", "images", [column])
