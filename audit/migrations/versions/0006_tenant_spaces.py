"""Tenant spaces: each tenant's policy pack and signing identity / watermark key, when not the service's.

Every column is NULL for a tenant that uses the service's own (`genguard serve --policy`, the configured
signing key and watermark key). Paths, never key material: `signing_key`, `signing_chain` and
`watermark_key` name files (relative ones are inside the tenant's folder, `<service home>/tenants/<id>/`).
A tenant's audit chain is its own database (genguard.audit.tenant_spaces); nothing of it lives here.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_COLUMNS = ("policy", "signing_key", "signing_chain", "watermark_key")


def upgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tenants") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
