"""quarantine status and richer data-quality results

Revision ID: 0004
Revises: 0001
Create Date: 2026-11-27 00:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rejects already in the warehouse are still in quarantine: server default 'open'.
    with op.batch_alter_table("rejects") as batch:
        batch.add_column(
            sa.Column("status", sa.String(length=16), nullable=False, server_default="open")
        )
        batch.add_column(sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("replay_run_id", sa.String(length=40), nullable=True))
        batch.create_index("ix_rejects_status_code", ["status", "code"])
    with op.batch_alter_table("dq_results") as batch:
        batch.add_column(sa.Column("scope", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("observed_value", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dq_results") as batch:
        batch.drop_column("observed_value")
        batch.drop_column("scope")
    with op.batch_alter_table("rejects") as batch:
        batch.drop_index("ix_rejects_status_code")
        batch.drop_column("replay_run_id")
        batch.drop_column("replayed_at")
        batch.drop_column("status")
