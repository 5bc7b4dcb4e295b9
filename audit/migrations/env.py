"""Alembic environment. genguard runs it programmatically (genguard.audit.db.upgrade_to_head) with an open
connection in `config.attributes["connection"]`; the lock around the upgrade is taken by the caller."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from genguard.audit.models import Base

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise TypeError(
        "audit migrations: expected an open SQLAlchemy connection in config.attributes['connection'];"
        " run them through genguard.audit.db.upgrade_to_head, not the alembic command line"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
