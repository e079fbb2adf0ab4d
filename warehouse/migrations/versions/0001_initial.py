"""initial warehouse tables

Revision ID: 0001
Revises:
Create Date: 2026-11-27 00:07:27.966795
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("domain", sa.Text(), nullable=True),
        sa.Column("company_key", sa.Text(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    op.create_table(
        "contacts",
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("raw_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("full_name", sa.Text(), nullable=True),
        sa.Column("name_key", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("email_key", sa.Text(), nullable=True),
        sa.Column("email_is_role", sa.Boolean(), nullable=False),
        sa.Column("email_is_free", sa.Boolean(), nullable=False),
        sa.Column("email_is_disposable", sa.Boolean(), nullable=False),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("phone_raw", sa.Text(), nullable=True),
        sa.Column("company", sa.Text(), nullable=True),
        sa.Column("company_key", sa.Text(), nullable=True),
        sa.Column("company_domain", sa.Text(), nullable=True),
        sa.Column("job_title", sa.Text(), nullable=True),
        sa.Column("street", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("postal_code", sa.String(length=20), nullable=True),
        sa.Column("region", sa.Text(), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("birth_date", sa.Date(), nullable=True),
        sa.Column("interest", sa.Text(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("budget_amount", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("budget_currency", sa.String(length=3), nullable=True),
        sa.Column("timeline_months", sa.Integer(), nullable=True),
        sa.Column("consent", sa.Boolean(), nullable=True),
        sa.Column("issues", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("raw_id", name=op.f("uq_contacts_raw_id")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_contacts_email_key"), ["email_key"], unique=False)
        batch_op.create_index(batch_op.f("ix_contacts_phone"), ["phone"], unique=False)

    op.create_table(
        "dq_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("suite", sa.String(length=64), nullable=False),
        sa.Column("expectation", sa.String(length=128), nullable=False),
        sa.Column("column_name", sa.String(length=64), nullable=True),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("unexpected_count", sa.Integer(), nullable=False),
        sa.Column("sample_ids", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dq_results")),
    )
    with op.batch_alter_table("dq_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dq_results_run_id"), ["run_id"], unique=False)

    op.create_table(
        "lead_links",
        sa.Column("contact_id", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("rule", sa.String(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", name=op.f("pk_lead_links")),
    )
    with op.batch_alter_table("lead_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lead_links_lead_id"), ["lead_id"], unique=False)

    op.create_table(
        "lead_merges",
        sa.Column("merged_lead_id", sa.String(length=40), nullable=False),
        sa.Column("into_lead_id", sa.String(length=40), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("merged_lead_id", name=op.f("pk_lead_merges")),
    )
    with op.batch_alter_table("lead_merges", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_lead_merges_into_lead_id"), ["into_lead_id"], unique=False
        )

    op.create_table(
        "leads",
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("first_name", sa.Text(), nullable=True),
        sa.Column("last_name", sa.Text(), nullable=True),
        sa.Column("full_name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("company", sa.Text(), nullable=True),
        sa.Column("company_key", sa.Text(), nullable=True),
        sa.Column("company_domain", sa.Text(), nullable=True),
        sa.Column("job_title", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=True),
        sa.Column("postal_code", sa.String(length=20), nullable=True),
        sa.Column("country", sa.String(length=2), nullable=True),
        sa.Column("lead_source", sa.String(length=64), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("contact_count", sa.Integer(), nullable=False),
        sa.Column("source_count", sa.Integer(), nullable=False),
        sa.Column("survivorship", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("score", sa.Integer(), nullable=False),
        sa.Column("grade", sa.String(length=1), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("rules_version", sa.String(length=32), nullable=False),
        sa.Column("converted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("opportunity_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("lead_id", name=op.f("pk_leads")),
    )
    op.create_table(
        "opportunities",
        sa.Column("opportunity_id", sa.String(length=40), nullable=False),
        sa.Column("lead_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("primary_contact_id", sa.String(length=40), nullable=False),
        sa.Column("lead_source", sa.String(length=64), nullable=False),
        sa.Column("stage", sa.String(length=40), nullable=False),
        sa.Column("probability", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=18, scale=2), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("close_date", sa.Date(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("opportunity_id", name=op.f("pk_opportunities")),
        sa.UniqueConstraint("lead_id", name=op.f("uq_opportunities_lead_id")),
    )
    with op.batch_alter_table("opportunities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_opportunities_account_id"), ["account_id"], unique=False
        )

    op.create_table(
        "pipeline_runs",
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.Column("flow", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_pipeline_runs")),
    )
    op.create_table(
        "raw_contacts",
        sa.Column("raw_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_kind", sa.String(length=16), nullable=False),
        sa.Column("source_record_id", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("raw_id", name=op.f("pk_raw_contacts")),
        sa.UniqueConstraint(
            "source", "source_record_id", name=op.f("uq_raw_contacts_source_source_record_id")
        ),
    )
    op.create_table(
        "rejects",
        sa.Column("reject_id", sa.String(length=40), nullable=False),
        sa.Column("raw_id", sa.String(length=40), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("source_record_id", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=16), nullable=False),
        sa.Column("code", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("reject_id", name=op.f("pk_rejects")),
    )
    with op.batch_alter_table("rejects", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rejects_raw_id"), ["raw_id"], unique=False)

    op.create_table(
        "source_cursors",
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("cursor", sa.JSON(), nullable=False),
        sa.Column("run_id", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("source", name=op.f("pk_source_cursors")),
    )


def downgrade() -> None:

    op.drop_table("source_cursors")
    with op.batch_alter_table("rejects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rejects_raw_id"))

    op.drop_table("rejects")
    op.drop_table("raw_contacts")
    op.drop_table("pipeline_runs")
    with op.batch_alter_table("opportunities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_opportunities_account_id"))

    op.drop_table("opportunities")
    op.drop_table("leads")
    with op.batch_alter_table("lead_merges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_merges_into_lead_id"))

    op.drop_table("lead_merges")
    with op.batch_alter_table("lead_links", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lead_links_lead_id"))

    op.drop_table("lead_links")
    with op.batch_alter_table("dq_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dq_results_run_id"))

    op.drop_table("dq_results")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_phone"))
        batch_op.drop_index(batch_op.f("ix_contacts_email_key"))

    op.drop_table("contacts")
    op.drop_table("accounts")
