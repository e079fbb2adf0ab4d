"""match models: the matching columns of each contact, term counts, trained models and the
model version behind each link and review pair

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

MATCH_COLUMNS = (
    "first",
    "last",
    "email_key",
    "email_local",
    "email_domain",
    "phone",
    "phone_nsn",
    "company",
    "house",
    "street_name",
    "postcode",
    "city",
    "birth",
    "country",
)


def upgrade() -> None:
    # Filled by the pipeline, not here: the matching columns and blocking keys are an index it
    # rebuilds whenever their definition changes (`warehouse.matching.ensure_index`), so a
    # migration never runs today's code on yesterday's schema.
    op.create_table(
        "contact_features",
        sa.Column("contact_id", sa.String(length=40), primary_key=True),
        *(sa.Column(name, sa.Text(), nullable=True) for name in MATCH_COLUMNS),
    )
    op.create_table(
        "match_term_counts",
        sa.Column("column_name", sa.String(length=32), primary_key=True),
        sa.Column("value", sa.Text(), primary_key=True),
        sa.Column("n", sa.Integer(), nullable=False),
    )
    op.create_table(
        "match_models",
        sa.Column("version", sa.String(length=64), primary_key=True),
        sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("model", sa.JSON(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
    )
    op.create_table(
        "warehouse_state",
        sa.Column("key", sa.String(length=64), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
    )
    # nullable columns: SQLite adds them in place, no table rebuild
    op.add_column("lead_links", sa.Column("model_version", sa.String(length=64), nullable=True))
    op.add_column("match_review", sa.Column("model_version", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("match_review", "model_version")
    op.drop_column("lead_links", "model_version")
    op.drop_table("warehouse_state")
    op.drop_table("match_models")
    op.drop_table("match_term_counts")
    op.drop_table("contact_features")
