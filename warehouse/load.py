"""Bulk writes per dialect, in one place: COPY + ON CONFLICT on PostgreSQL, executemany on SQLite."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import JSON, Connection, Table, delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

if TYPE_CHECKING:
    import psycopg

CHUNK = 10_000


def _dedupe(table: Table, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Last row per primary key wins, so one statement never touches a row twice."""
    pk = [c.name for c in table.primary_key.columns]
    by_key = {tuple(r[k] for k in pk): r for r in rows}
    return list(by_key.values())


def _pg_copy_merge(
    conn: Connection, table: Table, rows: list[dict[str, Any]], update: bool
) -> None:
    cols = [
        c.name for c in table.columns if not (c.autoincrement is True and c.name not in rows[0])
    ]
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSON)}
    pk = [c.name for c in table.primary_key.columns]
    tmp = f"tmp_{table.name}"
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    col_list = ", ".join(f'"{c}"' for c in cols)
    with dbapi.cursor() as cur:
        cur.execute(
            f'CREATE TEMP TABLE IF NOT EXISTS "{tmp}" (LIKE "{table.name}" INCLUDING DEFAULTS) '
            "ON COMMIT DROP"
        )
        cur.execute(f'TRUNCATE "{tmp}"')
        with cur.copy(f'COPY "{tmp}" ({col_list}) FROM STDIN') as copy:
            for r in rows:
                copy.write_row(
                    [json.dumps(r[c], default=str) if c in json_cols else r[c] for c in cols]
                )
        conflict = ", ".join(f'"{k}"' for k in pk)
        non_pk = [c for c in cols if c not in pk]
        if update and non_pk:
            sets = ", ".join(f'"{c}" = EXCLUDED."{c}"' for c in non_pk)
            action = f"DO UPDATE SET {sets}"
        else:
            action = "DO NOTHING"
        cur.execute(
            f'INSERT INTO "{table.name}" ({col_list}) SELECT {col_list} FROM "{tmp}" '  # noqa: S608
            f"ON CONFLICT ({conflict}) {action}"
        )


def upsert(
    conn: Connection, table: Table, rows: Sequence[dict[str, Any]], update: bool = True
) -> None:
    """Insert rows, updating (or, with update=False, keeping) the row already under each key."""
    if not rows:
        return
    unique = _dedupe(table, rows)
    dialect = conn.dialect.name
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        if dialect == "postgresql":
            _pg_copy_merge(conn, table, chunk, update)
            continue
        if dialect != "sqlite":
            raise NotImplementedError(f"no bulk path for the {dialect} dialect")
        stmt = sqlite_insert(table)
        pk = [c.name for c in table.primary_key.columns]
        non_pk = [c.name for c in table.columns if c.name not in pk and c.name in chunk[0]]
        if update and non_pk:
            stmt = stmt.on_conflict_do_update(
                index_elements=pk, set_={c: stmt.excluded[c] for c in non_pk}
            )
        else:
            stmt = stmt.on_conflict_do_nothing(index_elements=pk)
        conn.execute(stmt, chunk)


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


__all__ = ["delete_keys", "in_chunks", "insert_rows", "upsert"]
