"""other contact points: a contact's further emails and phones (work and mobile, "E-mail 2")

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(sa.Column("other_emails", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("other_phones", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("other_phones")
        batch.drop_column("other_emails")
