"""raw_pending: the raw records landed and not yet settled, so a run finds its pending work
without scanning raw_contacts

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("raw_pending", sa.Column("raw_id", sa.String(40), primary_key=True))
    # What is pending today, by the definition the queue replaces: neither a contact nor a
    # reject at normalize.
    op.execute(
        """
        INSERT INTO raw_pending (raw_id)
        SELECT r.raw_id FROM raw_contacts r
        WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.raw_id = r.raw_id)
          AND NOT EXISTS (
            SELECT 1 FROM rejects j WHERE j.raw_id = r.raw_id AND j.stage = 'normalize'
          )
        """
    )


def downgrade() -> None:
    op.drop_table("raw_pending")
