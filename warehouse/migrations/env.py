"""Alembic environment: runs migrations on the connection leadflow hands it."""

from __future__ import annotations

from alembic import context

from warehouse.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # pragma: no cover - leadflow always passes its connection
    raise RuntimeError("run migrations through `leadflow db upgrade`")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
