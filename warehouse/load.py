"""Dialect differences in one place: bulk writes (COPY + ON CONFLICT on PostgreSQL, executemany on
SQLite), key lists, and the timestamps SQLite hands back naive."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import JSON, Connection, Table, Text, column, delete, func, select, table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.expression import TableClause

if TYPE_CHECKING:
    import psycopg

CHUNK = 10_000


def _dedupe(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Last row per primary key wins, so one statement never touches a row twice."""
    pk = [c.name for c in table.primary_key.columns]
    by_key = {tuple(r[k] for k in pk): r for r in rows}
    return list(by_key.values())


def _pg_copy_merge(conn: Connection, table: Table, rows: list[dict[str, Any]], update: bool) -> int:
    """COPY every row into a temporary copy of the table, then merge it in one statement.

    Identifiers come from the MetaData (a fixed whitelist) and are quoted by psycopg; values only
    travel through COPY. Unchanged rows are not rewritten, so a re-run writes (almost) nothing.
    """
    from psycopg import sql

    keys = rows[0].keys()
    if any(r.keys() != keys for r in rows):
        raise ValueError(f"{table.name}: rows of one upsert must all have the same columns")
    cols = [c.name for c in table.columns if c.name in keys]
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
    pk = [c.name for c in table.primary_key.columns]
    target = sql.Identifier(table.name)
    tmp = sql.Identifier(f"stage_{table.name}")
    col_list = sql.SQL(", ").join(map(sql.Identifier, cols))
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    with dbapi.cursor() as cur:
        # ON COMMIT DROP: the staging table lives exactly as long as the publishing transaction.
        cur.execute(
            sql.SQL(
                "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DROP"
            ).format(tmp, target)
        )
        cur.execute(sql.SQL("TRUNCATE {}").format(tmp))
        with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(tmp, col_list)) as copy:
            # the values of a row in column order, JSON columns as their text (the hot loop of a
            # publish: one C-level getter per row, Python only for the JSON cells)
            get = itemgetter(*cols) if len(cols) > 1 else lambda r: (r[cols[0]],)
            json_at = [i for i, c in enumerate(cols) if c in json_cols]
            for r in rows:
                values = get(r)
                if json_at:
                    values = list(values)
                    for i in json_at:
                        values[i] = json.dumps(values[i], default=str)
                copy.write_row(values)
        non_pk = [c for c in cols if c not in pk]
        if update and non_pk:

            def side(alias: str, c: str) -> sql.Composable:
                ref = sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c))
                # json has no equality operator; its text form is what was written.
                return sql.SQL("{}::text").format(ref) if c in json_cols else ref

            action: sql.Composable = sql.SQL(
                "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})"
            ).format(
                sql.SQL(", ").join(
                    sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c))
                    for c in non_pk
                ),
                sql.SQL(", ").join(side(table.name, c) for c in non_pk),
                sql.SQL(", ").join(side("excluded", c) for c in non_pk),
            )
        else:
            action = sql.SQL("DO NOTHING")
        cur.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) {}").format(
                target,
                col_list,
                col_list,
                tmp,
                sql.SQL(", ").join(map(sql.Identifier, pk)),
                action,
            )
        )
        return max(cur.rowcount, 0)


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: bool = True
) -> int:
    """Insert rows, updating (or, with update=False, keeping) the row already under each key.

    Returns how many rows were written (with update=False: how many were new).
    PostgreSQL: one COPY and one merge statement per call. SQLite: executemany in chunks that
    stay under its bound-parameter limit.
    """
    if not rows:
        return 0
    unique = _dedupe(table, rows)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _pg_copy_merge(conn, table, unique, update)
    if dialect != "sqlite":
        raise NotImplementedError(f"no bulk path for the {dialect} dialect")
    stmt = sqlite_insert(table)
    pk = [c.name for c in table.primary_key.columns]
    non_pk = [c.name for c in table.columns if c.name not in pk and c.name in unique[0]]
    if update and non_pk:
        stmt = stmt.on_conflict_do_update(
            index_elements=pk, set_={c: stmt.excluded[c] for c in non_pk}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=pk)
    written = 0
    for start in range(0, len(unique), CHUNK):
        written += max(conn.execute(stmt, unique[start : start + CHUNK]).rowcount, 0)
    return written


def key_table(conn: Connection, keys: Iterable[Any], name: str = "lookup_keys") -> TableClause:
    """The distinct `keys` in a temporary one-column table (`k`), to join against.

    One bulk load and one join replace a query per list of bound keys: on a table filled by this
    run and not analyzed yet, PostgreSQL scans the whole table once per list. The table lives
    until the transaction ends (PostgreSQL) or the next call with the same name.
    """
    unique = sorted(set(keys))
    tmp = table(name, column("k", Text))
    if conn.dialect.name == "postgresql":
        from psycopg import sql

        dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
        ident = sql.Identifier(name)
        with dbapi.cursor() as cur:
            cur.execute(
                sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (k text) ON COMMIT DROP").format(ident)
            )
            cur.execute(sql.SQL("TRUNCATE {}").format(ident))
            with cur.copy(sql.SQL("COPY {} (k) FROM STDIN").format(ident)) as copy:
                for k in unique:
                    copy.write_row((k,))
            cur.execute(sql.SQL("ANALYZE {}").format(ident))
        return tmp
    quoted = conn.dialect.identifier_preparer.quote(name)
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {quoted} (k TEXT)")
    conn.execute(delete(tmp))
    if unique:
        conn.execute(tmp.insert(), [{"k": k} for k in unique])
    return tmp


def count_present(conn: Connection, table_: Table, column_name: str, keys: Iterable[Any]) -> int:
    """How many of the distinct `keys` are in `table_.column_name` (one join, any number)."""
    tmp = key_table(conn, keys, "present_keys")
    col = table_.c[column_name]
    return int(
        conn.execute(
            select(func.count()).select_from(tmp.join(table_, col == tmp.c.k))
        ).scalar_one()
    )


def insert_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Plain append (no key conflicts possible), by the dialect's bulk path."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(pg_insert(table), list(rows))
    else:
        conn.execute(table.insert(), list(rows))


def delete_keys(conn: Connection, table: Table, column: str, keys: Iterable[Any]) -> None:
    keys = list(keys)
    col = table.c[column]
    for start in range(0, len(keys), 900):
        conn.execute(delete(table).where(col.in_(keys[start : start + 900])))


def in_chunks(keys: Iterable[Any], size: int = 900) -> Iterable[list[Any]]:
    """Key lists split to stay under every dialect's bound-parameter limit."""
    keys = list(keys)
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = [
    "count_present",
    "delete_keys",
    "in_chunks",
    "insert_rows",
    "key_table",
    "upsert",
    "utc",
]
