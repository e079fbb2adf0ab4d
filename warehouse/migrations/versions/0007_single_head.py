"""single head: joins the two branches that 0003 and 0006 grew from 0005, so the schema has one head

Revision ID: 0007
Revises: 0003, 0006
"""

from __future__ import annotations

revision = "0007"
down_revision = ("0003", "0006")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
