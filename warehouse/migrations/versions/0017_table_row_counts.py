"""row counts of the volume check's tables kept by the database (PostgreSQL)

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

# The tables the volume check counts (`warehouse.quality.VOLUME_TABLES` when this was written;
# a migration keeps its own copy).
_COUNTED = ("raw_contacts", "contacts", "leads", "lead_links", "opportunities", "accounts")

# One row per statement and table: how many rows it inserted (+) or deleted (−). A TRUNCATE
# puts the table's rows back to one of 0. Statement-level, with the statement's rows as a transition
# table: a COPY of a million rows adds one row here (measured on 1M raw records, the COPY took
# 9.0–10.0 s without the trigger and 9.8–10.0 s with it).
_FUNCTION = """
CREATE FUNCTION leadflow_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
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


def upgrade() -> None:
    op.create_table(
        "table_row_deltas",
        sa.Column("delta_id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("delta", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("delta_id", name=op.f("pk_table_row_deltas")),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(_FUNCTION)
    for name in _COUNTED:
        # The triggers first, then the rows already there, counted once: creating a trigger waits
        # for the table's writers to commit and holds off new ones until this commits, so a row
        # is either counted here or by a trigger, never both nor neither.
        op.execute(
            f"CREATE TRIGGER leadflow_count_inserts AFTER INSERT ON {name} "
            "REFERENCING NEW TABLE AS leadflow_new_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION leadflow_count_rows()"
        )
        op.execute(
            f"CREATE TRIGGER leadflow_count_deletes AFTER DELETE ON {name} "
            "REFERENCING OLD TABLE AS leadflow_old_rows "
            "FOR EACH STATEMENT EXECUTE FUNCTION leadflow_count_rows()"
        )
        op.execute(
            f"CREATE TRIGGER leadflow_count_truncates AFTER TRUNCATE ON {name} "
            "FOR EACH STATEMENT EXECUTE FUNCTION leadflow_count_rows()"
        )
        op.execute(
            f"INSERT INTO table_row_deltas (table_name, delta) "  # noqa: S608
            f"SELECT '{name}', count(*) FROM {name}"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _COUNTED:
            for trigger in ("inserts", "deletes", "truncates"):
                op.execute(f"DROP TRIGGER leadflow_count_{trigger} ON {name}")
        op.execute("DROP FUNCTION leadflow_count_rows()")
    op.drop_table("table_row_deltas")
