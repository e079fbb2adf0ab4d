"""Who may read what: the PostgreSQL role for BI tools, which sees the `mart_*` views and nothing else."""

from __future__ import annotations

import re

from sqlalchemy import Connection, text

MART_PREFIX = "mart_"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def mart_views(conn: Connection) -> list[str]:
    """The views of the current schema named `mart_*`: the only relations a BI reader may select."""
    rows = conn.execute(
        text(
            "SELECT viewname FROM pg_catalog.pg_views "
            "WHERE schemaname = current_schema() AND starts_with(viewname, :prefix) "
            "ORDER BY viewname"
        ),
        {"prefix": MART_PREFIX},
    )
    return list(rows.scalars())


def grant_bi_reader(conn: Connection, role: str = "bi_reader") -> list[str]:
    """Create (or reset) a login role that may select the mart views and nothing else.

    Idempotent: privileges the role held before are revoked first, so re-running it after new
    marts were added grants exactly the marts that exist now. Returns the views granted.
    """
    if conn.dialect.name != "postgresql":
        raise ValueError("a BI reader role exists only on PostgreSQL warehouses")
    if not _ROLE_NAME.match(role):
        raise ValueError(f"not a plain role name: {role!r}")
    exists = conn.execute(
        text("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = :role"), {"role": role}
    ).first()
    r = _quote(conn, role)
    if not exists:
        conn.execute(text(f"CREATE ROLE {r} LOGIN"))
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    schema = _quote(conn, conn.execute(text("SELECT current_schema()")).scalar_one())
    conn.execute(text(f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {r}"))
    conn.execute(text(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {r}"))
    conn.execute(text(f"REVOKE CREATE ON SCHEMA {schema} FROM {r}"))
    conn.execute(text(f"GRANT CONNECT ON DATABASE {database} TO {r}"))
    conn.execute(text(f"GRANT USAGE ON SCHEMA {schema} TO {r}"))
    views = mart_views(conn)
    for view in views:
        # Views run with their owner's rights, so the role reads a mart without reading its tables.
        conn.execute(text(f"GRANT SELECT ON {schema}.{_quote(conn, view)} TO {r}"))
    return views


def drop_bi_reader(conn: Connection, role: str = "bi_reader") -> None:
    """Remove the role's privileges in this database and the role itself."""
    if not _ROLE_NAME.match(role):
        raise ValueError(f"not a plain role name: {role!r}")
    r = _quote(conn, role)
    database = _quote(conn, conn.execute(text("SELECT current_database()")).scalar_one())
    conn.execute(text(f"DROP OWNED BY {r}"))
    conn.execute(text(f"REVOKE ALL ON DATABASE {database} FROM {r}"))
    conn.execute(text(f"DROP ROLE IF EXISTS {r}"))
