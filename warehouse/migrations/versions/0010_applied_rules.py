"""applied rules and lead splits: the rules `rebuild --rules --apply` applied (version, hash,
text), the leads a cannot-link decision split off, and who dismissed a reject and why

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "applied_rules",
        sa.Column("rules_version", sa.String(length=32), primary_key=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("rules_text", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
    )
    op.create_table(
        "lead_splits",
        sa.Column("lead_id", sa.String(length=40), primary_key=True),
        sa.Column("split_from_lead_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
    )
    op.create_index("ix_lead_splits_split_from_lead_id", "lead_splits", ["split_from_lead_id"])
    # nullable columns: SQLite adds them in place, no table rebuild (the marts stay)
    op.add_column("rejects", sa.Column("dismissed_by", sa.Text(), nullable=True))
    op.add_column("rejects", sa.Column("dismissed_why", sa.Text(), nullable=True))
    op.add_column("rejects", sa.Column("dismissed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    # ALTER TABLE … DROP COLUMN in place (SQLite 3.35+ too): no rebuild of a table views read
    for col in ("dismissed_at", "dismissed_why", "dismissed_by"):
        op.execute(f"ALTER TABLE rejects DROP COLUMN {col}")
    op.drop_index("ix_lead_splits_split_from_lead_id", table_name="lead_splits")
    op.drop_table("lead_splits")
    op.drop_table("applied_rules")
