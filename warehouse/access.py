"""Who may read what: the PostgreSQL role for BI tools, which reads the marts schema and nothing else."""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

from warehouse.marts import DEFAULT_SCHEMA

_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def schema_relations(conn: Connection, schema: str) -> list[str]:
    """Tables, views and materialized views of the marts schema: what a BI reader may select."""
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_catalog.pg_class c "
            "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :schema AND c.relkind IN ('r', 'v', 'm', 'p') ORDER BY c.relname"
        ),
        {"schema": schema},
    )
    return list(rows.scalars())


def grant_bi_reader(
    conn: Connection, role: str = "bi_reader", schema: str = DEFAULT_SCHEMA
) -> list[str]:
    """Create (or reset) a login role that may select the marts schema and nothing else.

    Idempotent: every privilege the role held in this database is dropped first, so re-running
    it leaves exactly: CONNECT on the database, USAGE on the marts schema, SELECT on its tables
    (also on marts created later, by default privileges) and the marts schema as its search
    path, so `select * from mart_pipeline` needs no schema. Returns the relations granted.
    """
    if conn.dialect.name != "postgresql":
        raise ValueError("a BI reader role exists only on PostgreSQL warehouses")
    for what, name in (("role", role), ("schema", schema)):
        if not _ROLE_NAME.match(name):
            raise ValueError(f"not a plain {what} name: {name!r}")
    exists = conn.execute(
        text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    r, s = _quote(conn, role), _quote(conn, schema)
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    if not exists:
        conn.execute(text(f"CREATE ROLE {r} LOGIN"))
    conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {s}"))
    # Whatever it was granted before in this database (another schema, a table) goes; not with
    # DROP OWNED, which would also revoke its CONNECT on every other database of the cluster.
    others = conn.execute(
        text(
            "SELECT nspname FROM pg_catalog.pg_namespace "
            "WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'"
        )
    ).scalars()
    for name in others:
        q = _quote(conn, name)
        conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {q} FROM {r}"))
        conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {q} FROM {r}"))
        conn.execute(text(f"REVOKE ALL ON SCHEMA {q} FROM {r}"))
    conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {r}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA {s} TO {r}"))
    # Views and tables alike: a mart view runs with its owner's rights, never the reader's.
    conn.execute(text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {r}"))
    conn.execute(text(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {r}"))
    conn.execute(text(f"ALTER ROLE {r} IN DATABASE {database} SET search_path = {s}"))
    return schema_relations(conn, schema)


def drop_bi_reader(conn: Connection, role: str = "bi_reader") -> None:
    """Remove the role's privileges in this database and the role itself."""
    if not _ROLE_NAME.match(role):
        raise ValueError(f"not a plain role name: {role!r}")
    r = _quote(conn, role)
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    conn.execute(text(f"DROP OWNED BY {r}"))
    conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM {r}"))
    conn.execute(text(f"ALTER ROLE {r} IN DATABASE {database} RESET ALL"))
    conn.execute(text(f"DROP ROLE IF EXISTS {r}"))
