"""stewardship: who decided a review pair and when it was revoked, splits, the decision log, search indexes

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("match_review") as batch:
        # 'pair': a grey-zone pair the resolver found; 'split': a steward said a contact is not
        # the person of its lead (one cannot_link row against each other contact of the lead).
        batch.add_column(
            sa.Column("kind", sa.String(length=16), nullable=False, server_default="pair")
        )
        batch.add_column(sa.Column("lead_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("revoked_by", sa.Text(), nullable=True))
        batch.add_column(sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_match_review_decision_kind", "match_review", ["decision", "kind"])
    op.create_table(
        "review_log",
        sa.Column("log_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("review_id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("steward", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("log_id", name=op.f("pk_review_log")),
    )
    op.create_index("ix_review_log_review_id", "review_log", ["review_id"])
    # The console's lead search: exact and prefix lookups on the normalized keys.
    op.create_index("ix_contacts_name_key", "contacts", ["name_key"])
    op.create_index("ix_contacts_company_key", "contacts", ["company_key"])


def downgrade() -> None:
    op.drop_index("ix_contacts_company_key", table_name="contacts")
    op.drop_index("ix_contacts_name_key", table_name="contacts")
    op.drop_index("ix_review_log_review_id", table_name="review_log")
    op.drop_table("review_log")
    op.drop_index("ix_match_review_decision_kind", table_name="match_review")
    with op.batch_alter_table("match_review") as batch:
        batch.drop_column("revoked_at")
        batch.drop_column("revoked_by")
        batch.drop_column("lead_id")
        batch.drop_column("kind")
