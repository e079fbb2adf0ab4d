"""qualification: opportunity stages, status and stage history, BI marts

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-27 00:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from warehouse.migrations.legacy_views import create_legacy_views, drop_legacy_views

revision = "0003"
down_revision = "0005"
branch_labels = None
depends_on = None

# The common CRM defaults, as they were when this revision was written (a migration is frozen:
# later changes to the stage list need a migration of their own).
STAGES = [
    ("Prospecting", 1, 10, "Pipeline", False, False),
    ("Qualification", 2, 10, "Pipeline", False, False),
    ("Needs Analysis", 3, 20, "Pipeline", False, False),
    ("Value Proposition", 4, 50, "Pipeline", False, False),
    ("Id. Decision Makers", 5, 60, "Pipeline", False, False),
    ("Perception Analysis", 6, 70, "Pipeline", False, False),
    ("Proposal/Price Quote", 7, 75, "Pipeline", False, False),
    ("Negotiation/Review", 8, 90, "Pipeline", False, False),
    ("Closed Won", 9, 100, "Closed", True, True),
    ("Closed Lost", 10, 0, "Omitted", True, False),
]


def upgrade() -> None:
    stages = op.create_table(
        "opportunity_stages",
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("sort_order", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Integer(), nullable=False),
        sa.Column("forecast_category", sa.String(length=16), nullable=False),
        sa.Column("is_closed", sa.Boolean(), nullable=False),
        sa.Column("is_won", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("stage", name=op.f("pk_opportunity_stages")),
        sa.UniqueConstraint("sort_order", name=op.f("uq_opportunity_stages_sort_order")),
    )
    assert stages is not None
    keys = ("stage", "sort_order", "probability", "forecast_category", "is_closed", "is_won")
    op.bulk_insert(stages, [dict(zip(keys, row, strict=True)) for row in STAGES])

    op.create_table(
        "lead_status_history",
        sa.Column("history_id", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("from_status", sa.String(length=32), nullable=True),
        sa.Column("to_status", sa.String(length=32), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rules_version", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_lead_status_history")),
    )
    with op.batch_alter_table("lead_status_history") as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_status_history_lead_id"), ["lead_id"])

    op.create_table(
        "opportunity_stage_history",
        sa.Column("history_id", sa.String(length=40), nullable=False),
        sa.Column("opportunity_id", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("from_stage", sa.String(length=40), nullable=True),
        sa.Column("to_stage", sa.String(length=40), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("rules_version", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("history_id", name=op.f("pk_opportunity_stage_history")),
    )
    with op.batch_alter_table("opportunity_stage_history") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_opportunity_stage_history_opportunity_id"), ["opportunity_id"]
        )

    create_legacy_views(op.get_bind())


def downgrade() -> None:
    bind = op.get_bind()
    drop_legacy_views(bind)
    if bind.dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS strftime(text, timestamptz)")
    op.drop_table("opportunity_stage_history")
    op.drop_table("lead_status_history")
    op.drop_table("opportunity_stages")
