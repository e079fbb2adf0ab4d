"""mart tables: the BI marts become typed tables in their own schema; exchange rates

Revision ID: 0011
Revises: 0010

The `mart_*` views of the default schema go: `warehouse.marts` now builds typed tables (in the
`marts` schema on PostgreSQL, the main database on SQLite) and refreshes them in every publish.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from warehouse.migrations.legacy_views import create_legacy_views, drop_legacy_views

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    drop_legacy_views(op.get_bind())
    op.create_table(
        "fx_rates",
        sa.Column("rate_date", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("rate", sa.Numeric(precision=18, scale=8), nullable=False),
        sa.PrimaryKeyConstraint("rate_date", "currency", name=op.f("pk_fx_rates")),
    )


def downgrade() -> None:
    op.drop_table("fx_rates")
    create_legacy_views(op.get_bind())
