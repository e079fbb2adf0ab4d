"""lock holders: which process holds a pipeline lock, so a dead holder's lock can be taken over

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("pipeline_locks", sa.Column("holder", sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pipeline_locks") as batch:
        batch.drop_column("holder")
