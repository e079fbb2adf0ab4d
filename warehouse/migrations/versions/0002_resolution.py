"""entity resolution: contact blocking keys, phone details, the match review queue

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("phone_ext", sa.String(length=10), nullable=True))
        batch_op.add_column(sa.Column("phone_is_mobile", sa.Boolean(), nullable=True))
    op.create_table(
        "contact_blocks",
        sa.Column("block_key", sa.Text(), nullable=False),
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("block_key", "contact_id", name=op.f("pk_contact_blocks")),
    )
    op.create_table(
        "match_review",
        sa.Column("review_id", sa.String(length=40), nullable=False),
        sa.Column("contact_a", sa.String(length=40), nullable=False),
        sa.Column("contact_b", sa.String(length=40), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("review_id", name=op.f("pk_match_review")),
    )
    with op.batch_alter_table("match_review", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_match_review_contact_a"), ["contact_a"], unique=False)
        batch_op.create_index(batch_op.f("ix_match_review_contact_b"), ["contact_b"], unique=False)
    # The keys themselves are filled by the pipeline, which rebuilds them whenever their
    # definition changes (`warehouse.matching.ensure_index`): a migration runs no live code.


def downgrade() -> None:
    op.drop_table("match_review")
    op.drop_table("contact_blocks")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("phone_is_mobile")
        batch_op.drop_column("phone_ext")
