"""raw records counted per source by the database too (PostgreSQL)

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

# 0017's function counts a statement's rows per table; the new one adds, for raw_contacts, one
# row per source the statement touched: the source-quality mart reads how many records each
# source landed from these rows instead of counting raw_contacts by source in every run (a pass
# over the whole table). The downgrade puts 0017's back.
_HEAD = "CREATE OR REPLACE FUNCTION leadflow_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
_PER_TABLE = """TG_OP = 'INSERT' THEN
    INSERT INTO table_row_deltas (table_name, delta)
      SELECT TG_TABLE_NAME, count(*) FROM leadflow_new_rows HAVING count(*) > 0;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO table_row_deltas (table_name, delta)
      SELECT TG_TABLE_NAME, -count(*) FROM leadflow_old_rows HAVING count(*) > 0;
  ELSE
    DELETE FROM table_row_deltas WHERE table_name = TG_TABLE_NAME;
    INSERT INTO table_row_deltas (table_name, delta) VALUES (TG_TABLE_NAME, 0);
  END IF;
  RETURN NULL;
END
$$
"""
_PER_SOURCE = """  IF TG_OP = 'INSERT' AND TG_TABLE_NAME = 'raw_contacts' THEN
    INSERT INTO table_row_deltas (table_name, source, delta)
      SELECT TG_TABLE_NAME, source, count(*) FROM leadflow_new_rows GROUP BY source;
  ELSIF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'raw_contacts' THEN
    INSERT INTO table_row_deltas (table_name, source, delta)
      SELECT TG_TABLE_NAME, source, -count(*) FROM leadflow_old_rows GROUP BY source;
"""
_FUNCTION = _HEAD + _PER_SOURCE + "  ELSIF " + _PER_TABLE
_FUNCTION_0017 = _HEAD + "  IF " + _PER_TABLE


def upgrade() -> None:
    op.add_column("table_row_deltas", sa.Column("source", sa.String(length=64), nullable=True))
    if op.get_bind().dialect.name != "postgresql":
        return
    # Writers of raw_contacts wait until this commits: the rows already there are counted per
    # source once, and every statement after it by the new function. An empty table has no row
    # until its first landing; until then its count is `count(*)` (`quality.table_counts`).
    op.execute("LOCK TABLE raw_contacts IN SHARE MODE")
    op.execute(_FUNCTION)
    op.execute("DELETE FROM table_row_deltas WHERE table_name = 'raw_contacts'")
    op.execute(
        "INSERT INTO table_row_deltas (table_name, source, delta) "
        "SELECT 'raw_contacts', source, count(*) FROM raw_contacts GROUP BY source"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("LOCK TABLE raw_contacts IN SHARE MODE")
        op.execute(_FUNCTION_0017)
        op.execute(
            "WITH folded AS (DELETE FROM table_row_deltas WHERE table_name = 'raw_contacts' "
            "RETURNING delta) INSERT INTO table_row_deltas (table_name, delta) "
            "SELECT 'raw_contacts', COALESCE(sum(delta), 0) FROM folded"
        )
    with op.batch_alter_table("table_row_deltas") as batch:
        batch.drop_column("source")
