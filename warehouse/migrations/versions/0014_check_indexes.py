"""indexes the scoped published-state checks read by: each source's newest raw record, and the
lead that points at an opportunity; and the newest published contact (the data's clock)

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # max(received_at) per source is one step down this index instead of a pass over the
    # payload-heavy raw_contacts
    op.create_index("ix_raw_contacts_source_received_at", "raw_contacts", ["source", "received_at"])
    # a run's opportunities find the leads that point at them without a pass over leads
    op.create_index("ix_leads_opportunity_id", "leads", ["opportunity_id"])
    # the data's clock (the newest published contact) is one step down this index, not a pass
    # over contacts, for every chunk and every marts refresh
    op.create_index("ix_contacts_received_at", "contacts", ["received_at"])


def downgrade() -> None:
    op.drop_index("ix_contacts_received_at", table_name="contacts")
    op.drop_index("ix_leads_opportunity_id", table_name="leads")
    op.drop_index("ix_raw_contacts_source_received_at", table_name="raw_contacts")
