"""Dialect differences in one place: bulk writes (COPY + ON CONFLICT on PostgreSQL, executemany on
SQLite), key lists, and the timestamps SQLite hands back naive."""

from __future__ import annotations

import io
import json
import re
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Float,
    Integer,
    Numeric,
    Table,
    Text,
    column,
    delete,
    func,
    select,
    table,
    text,
)
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.sql.expression import TableClause

if TYPE_CHECKING:
    import psycopg

CHUNK = 10_000

# One encoder for every JSON cell a COPY writes (json.dumps builds a new one per call).
_json_text = json.JSONEncoder(default=str).encode


@dataclass(frozen=True, slots=True)
class Rows:
    """Rows of one table as tuples, each value in `columns` order (JSON cells as Python values).

    Built straight from the records, so a bulk write needs no dict per row."""

    columns: tuple[str, ...]
    values: Sequence[tuple[Any, ...]]

    @classmethod
    def of_dicts(cls, table: Table, rows: Sequence[dict[str, Any]]) -> Rows:
        """Dict rows (all with the same keys) as tuples, the columns in the table's order."""
        keys = rows[0].keys()
        if any(r.keys() != keys for r in rows):
            raise ValueError(f"{table.name}: rows of one upsert must all have the same columns")
        unknown = set(keys) - {c.name for c in table.columns}
        if unknown:
            raise ValueError(f"{table.name}: no columns {sorted(unknown)}")
        cols = tuple(c.name for c in table.columns if c.name in keys)
        get = itemgetter(*cols) if len(cols) > 1 else lambda r: (r[cols[0]],)
        return cls(cols, [get(r) for r in rows])


def _dedupe(table: Table, rows: Rows) -> Rows:
    """Last row per primary key wins, so one statement never touches a row twice; the rows come
    back in key order.

    In key order because a COPY's rows then reach the primary key's index in order: each leaf
    page is visited once per batch instead of at random. Measured on PostgreSQL, 300k blocking
    keys into a table of 3.6M: 4.0–5.7 s in random order, 2.1–3.3 s sorted."""
    at = [rows.columns.index(c.name) for c in table.primary_key.columns]
    if not at:  # no primary key (the blocking keys): every row is its own
        return Rows(rows.columns, sorted(rows.values))
    key = itemgetter(*at)
    by_key: dict[Any, tuple[Any, ...]] = {key(v): v for v in rows.values}
    return Rows(rows.columns, [by_key[k] for k in sorted(by_key)])


def _binary_type(col: Column[Any]) -> tuple[str, Callable[[Any], Any] | None]:
    """The PostgreSQL type a column's values are sent as in a binary COPY, and the conversion a
    cell needs first (None: the Python value is sent as it is)."""
    kind = col.type
    if isinstance(kind, JSON):
        return "text", _json_text  # json's binary input is its text; None becomes JSON null
    if isinstance(kind, DateTime):
        return ("timestamptz", _aware) if kind.timezone else ("timestamp", None)
    if isinstance(kind, Date):
        return "date", None
    if isinstance(kind, Boolean):
        return "bool", None
    if isinstance(kind, BigInteger):
        return "int8", None
    if isinstance(kind, Integer):
        return "int4", None
    if isinstance(kind, Float):
        return "float8", None
    if isinstance(kind, Numeric):
        return "numeric", _decimal
    return "text", None


def _aware(value: datetime | None) -> datetime | None:
    # what the warehouse stores is UTC: a naive time is one (text COPY read it in the session's zone)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _decimal(value: Any) -> Any:
    # psycopg's binary numeric takes Decimal and int, not float; repr is the float's shortest text,
    # the same digits a text COPY sent
    return Decimal(repr(value)) if isinstance(value, float) else value


def _pg_copy(
    cur: psycopg.Cursor[Any], target: Any, table: Table, rows: Rows, binary: bool = True
) -> None:
    """COPY the rows into `target` (a live table or its staging copy): a tuple per row as it is,
    JSON cells encoded once on the way.

    Binary for the publish's rows: PostgreSQL parses no text and psycopg formats less (measured
    on 50k contacts: a third less of both). Text for `upsert`'s callers, whose cells may be of a
    looser type than their column (a binary COPY takes exactly the column's)."""
    from psycopg import sql

    col_list = sql.SQL(", ").join(map(sql.Identifier, rows.columns))
    plan = [_binary_type(table.c[c]) for c in rows.columns]
    if not binary:
        plan = [("text", _json_text if fix is _json_text else None) for _, fix in plan]
    fixes = [(i, fix) for i, (_, fix) in enumerate(plan) if fix is not None]
    stmt = sql.SQL("COPY {} ({}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")).format(
        target, col_list
    )
    with cur.copy(stmt) as copy:
        if binary:
            copy.set_types([name for name, _ in plan])
        write = copy.write_row
        if not fixes:
            for v in rows.values:
                write(v)
            return
        for v in rows.values:
            values = list(v)
            for i, fix in fixes:
                values[i] = fix(values[i])
            write(values)


def _pg_copy_merge(
    conn: Connection, table: Table, rows: Rows, update: bool, binary: bool = True
) -> int:
    """COPY every row into a temporary copy of the table (`stage_<table>`, kept until the next
    merge into the same table or the end of the transaction), then merge it in one statement.

    Identifiers come from the MetaData (a fixed whitelist) and are quoted by psycopg; values only
    travel through COPY. Unchanged rows are not rewritten, so a re-run writes (almost) nothing.
    """
    from psycopg import sql

    cols = rows.columns
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
        _pg_copy(cur, tmp, table, rows, binary)
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
    return merge(conn, table, Rows.of_dicts(table, rows), update, binary=False)


def merge(
    conn: Connection, table: Table, rows: Rows, update: bool = True, binary: bool = True
) -> int:
    """`upsert` of rows already in tuples: the idempotent path for rows that may exist.
    `binary`: a binary COPY on PostgreSQL (each cell exactly of its column's type)."""
    if not rows.values:
        return 0
    unique = _dedupe(table, rows)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return _pg_copy_merge(conn, table, unique, update, binary)
    if dialect != "sqlite":
        raise NotImplementedError(f"no bulk path for the {dialect} dialect")
    stmt = sqlite_insert(table)
    pk = [c.name for c in table.primary_key.columns]
    non_pk = [c for c in unique.columns if c not in pk]
    if update and non_pk:
        stmt = stmt.on_conflict_do_update(
            index_elements=pk, set_={c: stmt.excluded[c] for c in non_pk}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=pk)
    written = 0
    for part in _dict_chunks(unique):
        written += max(conn.execute(stmt, part).rowcount, 0)
    return written


def insert_new(conn: Connection, table: Table, rows: Rows) -> int:
    """Append rows the caller has proved are not in the table: no staging table, no ON CONFLICT.

    PostgreSQL: one COPY straight into the live table; SQLite: one executemany INSERT. A row
    that is there after all fails the statement (a unique violation), and with it the caller's
    transaction: nothing half-written, never a silent overwrite. Returns how many were written.
    """
    if not rows.values:
        return 0
    unique = _dedupe(table, rows)
    dialect = conn.dialect.name
    if dialect == "postgresql":
        from psycopg import sql

        dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
        with dbapi.cursor() as cur:
            _pg_copy(cur, sql.Identifier(table.name), table, unique)
        return len(unique.values)
    if dialect != "sqlite":
        raise NotImplementedError(f"no bulk path for the {dialect} dialect")
    stmt = table.insert()
    for part in _dict_chunks(unique):
        conn.execute(stmt, part)
    return len(unique.values)


def arrow_rows(data: pa.Table) -> Rows:
    """An Arrow table as row tuples (a column at a time into Python, then zipped)."""
    columns = [data.column(n).to_pylist() for n in data.column_names]
    return Rows(tuple(data.column_names), list(zip(*columns, strict=True)))


def insert_new_arrow(conn: Connection, table: Table, data: pa.Table) -> int:
    """`insert_new` for rows that are already an Arrow table of text and integer columns (the
    matching columns, the blocking keys): on PostgreSQL sorted by the primary key (a table
    without one: by its first index) and handed to COPY as CSV written by Arrow's C writer, with
    no Python object per cell; elsewhere as `insert_new`.

    Every valid cell is quoted and a NULL is not, so PostgreSQL's CSV reader keeps an empty
    string and a NULL apart. A row already in the table fails the COPY, as in `insert_new`.
    """
    if data.num_rows == 0:
        return 0
    names = list(data.column_names)
    if conn.dialect.name != "postgresql":
        return insert_new(conn, table, arrow_rows(data))
    other = [
        n
        for n in names
        if not (
            pa.types.is_string(data.schema.field(n).type)
            or pa.types.is_integer(data.schema.field(n).type)
        )
    ]
    if other:
        raise TypeError(f"insert_new_arrow takes text and integer columns only, not {other}")
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from psycopg import sql

    key = table.primary_key.columns or next(iter(table.indexes)).columns
    ordered = data.take(
        pc.sort_indices(data, [(c.name, "ascending") for c in key])
    )  # see `_dedupe`
    out = pa.BufferOutputStream()
    pacsv.write_csv(
        ordered,
        out,
        pacsv.WriteOptions(include_header=False, quoting_style="all_valid"),
    )
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    stmt = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(map(sql.Identifier, names))
    )
    with dbapi.cursor() as cur, cur.copy(stmt) as copy:
        copy.write(memoryview(out.getvalue()))
    return data.num_rows


def _dict_chunks(rows: Rows) -> Iterator[list[dict[str, Any]]]:
    """Rows as SQLAlchemy parameter sets (its types encode JSON and SQLite's timestamps), in
    chunks that stay under SQLite's bound-parameter limit."""
    cols = rows.columns
    for start in range(0, len(rows.values), CHUNK):
        yield [dict(zip(cols, v, strict=True)) for v in rows.values[start : start + CHUNK]]


# PostgreSQL planner settings for statements that join a few thousand keys against tables of
# millions, where the default estimates favour hashing (or scanning) the whole big table:
# random reads costed as on SSD or a cached warehouse (the scoped checks, the resolution
# context); and, for the marts' incremental refresh, whose every join has an index on its inner
# side, nested loops only and no JIT (compiling costs more than these statements run).
INDEX_LOOKUPS = {"random_page_cost": "1.1"}
INDEX_JOINS = {"enable_hashjoin": "off", "enable_mergejoin": "off", "jit": "off"}


def ddl_in_transaction(conn: Connection) -> None:
    """Make the caller's transaction hold the schema changes that follow, on SQLite too.

    PostgreSQL's DDL is transactional. Python's sqlite3 module begins its implicit transaction
    only before a data change, so a CREATE or DROP issued first commits on its own; a process
    killed between two of them leaves half a change. Here that transaction begins at once
    (IMMEDIATE: it takes the write lock, as every writer here does), unless one is open already.
    """
    if conn.dialect.name != "sqlite":
        return
    dbapi = conn.connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def planner(conn: Connection, settings: Mapping[str, str]) -> Iterator[None]:
    """PostgreSQL: these planner settings for the statements inside, the previous ones put back
    afterwards (the rest of the run's transaction plans as before). Other dialects: nothing."""
    if conn.dialect.name != "postgresql":
        yield
        return
    saved = {}
    for name, value in settings.items():
        saved[name] = conn.execute(text("SELECT current_setting(:n)"), {"n": name}).scalar_one()
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})
    yield  # after a failure the transaction is rolled back, the settings with it
    for name, value in saved.items():
        conn.execute(text("SELECT set_config(:n, :v, true)"), {"n": name, "v": value})


def index_lookups(conn: Connection) -> AbstractContextManager[None]:
    """`INDEX_LOOKUPS` for the statements inside: with the default random_page_cost (4) the
    planner hash-joins 10k keys against the whole of lead_links or contact_blocks (a scan of
    millions of rows) instead of probing their indexes."""
    return planner(conn, INDEX_LOOKUPS)


def index_joins(conn: Connection) -> AbstractContextManager[None]:
    """Nested loops over index probes, and no JIT, for the statements inside: a key table of a
    chunk's ids joined to a live table. The planner's row estimates for such a join follow the
    big table's skew (a few keys held by thousands of rows), so it hashes the whole live table
    even for ten thousand keys; a probe per key keeps the cost with the keys, whatever the
    warehouse's size."""
    return planner(conn, {**INDEX_LOOKUPS, **INDEX_JOINS})


def key_table(
    conn: Connection,
    keys: Iterable[Any],
    name: str = "lookup_keys",
    type_: type[Text] | type[BigInteger] = Text,
) -> TableClause:
    """The distinct `keys` (text, or 64-bit integers with `type_=BigInteger`) in a temporary
    one-column table (`k`), to join against.

    One bulk load and one join replace a query per list of bound keys: on a table filled by this
    run and not analyzed yet, PostgreSQL scans the whole table once per list. The table lives
    until the transaction ends (PostgreSQL) or the next call with the same name.
    """
    unique = sorted(set(keys))
    tmp = table(name, column("k", type_))
    sql_type = "bigint" if type_ is BigInteger else "text"
    if conn.dialect.name == "postgresql":
        _pg_temp_copy(conn, name, f"k {sql_type}", "k", "", _copy_lines(unique))
        return tmp
    _empty_temp(conn, name, f"k {sql_type.upper()}")
    if unique:
        conn.execute(tmp.insert(), [{"k": k} for k in unique])
    return tmp


def selected_keys(conn: Connection, query: Any, name: str) -> TableClause:
    """The distinct values of a one-column `query` in a temporary key table (`k`), as
    `key_table` makes it, filled by the database itself (`INSERT … SELECT`): keys the next
    statement joins against never travel to Python and back."""
    tmp = table(name, column("k", Text))
    quoted = _empty_temp(conn, name, "k TEXT")
    conn.execute(tmp.insert().from_select(["k"], select(query.subquery().c[0]).distinct()))
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {quoted}")
    return tmp


def counted_keys(conn: Connection, keys: pa.Array | pa.ChunkedArray, name: str) -> TableClause:
    """The distinct `keys` (text or 64-bit integers) with how often each occurs (`k`, `n`) in a
    temporary table, as `key_table`, counted by Arrow and on PostgreSQL handed to COPY as CSV
    written by Arrow's C writer: a chunk's blocking keys (182k distinct for 50k contacts at 1M)
    make no Python object each."""
    import pyarrow.compute as pc

    counted = pc.value_counts(keys.drop_null())
    data = pa.table({"k": counted.field("values"), "n": counted.field("counts")})
    integers = pa.types.is_integer(data.schema.field("k").type)
    sql_type = "bigint" if integers else "text"
    tmp = table(name, column("k", BigInteger if integers else Text), column("n", Integer))
    if conn.dialect.name == "postgresql":
        import pyarrow.csv as pacsv

        out = pa.BufferOutputStream()
        options = pacsv.WriteOptions(include_header=False, quoting_style="all_valid")
        pacsv.write_csv(data, out, options)
        columns = f"k {sql_type}, n bigint"
        _pg_temp_copy(conn, name, columns, "k, n", "(FORMAT csv)", out.getvalue())
        return tmp
    _empty_temp(conn, name, f"k {sql_type.upper()}, n INTEGER")
    if data.num_rows:
        conn.execute(tmp.insert(), data.to_pylist())
    return tmp


def _empty_temp(conn: Connection, name: str, columns: str) -> str:
    """An empty temporary table `name` (`columns`): created once, dropped at commit on
    PostgreSQL, kept by SQLite's connection until the next call empties it. Its quoted name."""
    quoted = conn.dialect.identifier_preparer.quote(name)
    pg = conn.dialect.name == "postgresql"
    tail = " ON COMMIT DROP" if pg else ""
    conn.exec_driver_sql(f"CREATE TEMP TABLE IF NOT EXISTS {quoted} ({columns}){tail}")
    if pg:  # a chunk's key tables are refilled in one transaction: no dead rows left behind
        conn.exec_driver_sql(f"TRUNCATE {quoted}")
    else:
        conn.execute(delete(table(name)))
    return quoted


def _pg_temp_copy(
    conn: Connection, name: str, columns: str, names: str, options: str, data: Any
) -> None:
    """A temporary table `name` (`columns`, dropped at commit) emptied, filled by one COPY of
    `data` (bytes or a buffer in COPY's format given by `options`), and analyzed."""
    from psycopg import sql

    quoted = _empty_temp(conn, name, columns)
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    with dbapi.cursor() as cur:
        stmt = sql.SQL("COPY {} ({}) FROM STDIN {}").format(
            sql.SQL(quoted), sql.SQL(names), sql.SQL(options)
        )
        with cur.copy(stmt) as copy:
            copy.write(memoryview(data))
        cur.execute(sql.SQL("ANALYZE {}").format(sql.SQL(quoted)))


def pg_arrow(conn: Connection, query: Any, schema: pa.Schema) -> pa.Table:
    """A PostgreSQL query's rows straight into Arrow: COPY (query) TO STDOUT as CSV, parsed by
    Arrow's C reader, with no Python object per cell. CSV quotes an empty string and not a NULL,
    so the two stay apart. Bound values are rendered into the statement by SQLAlchemy's literal
    quoting; key lists belong in a key table."""
    import pyarrow.csv as pacsv
    from psycopg import sql

    stmt = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    buf = bytearray()
    with dbapi.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(stmt))) as copy:
            for block in copy:
                buf += block
    if not buf:
        return schema.empty_table()
    return pacsv.read_csv(
        pa.py_buffer(buf),  # the bytearray itself: no second copy of the text
        read_options=pacsv.ReadOptions(column_names=schema.names),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False
        ),
    )


class _CopyStream(io.RawIOBase):
    """The blocks of a `COPY … TO STDOUT` as a readable file, for Arrow's streaming reader, which
    reads ahead on a thread of its own: every read holds a lock, and so does `drain`."""

    def __init__(self, blocks: Iterator[Any]) -> None:
        self._blocks = blocks
        self._rest = memoryview(b"")
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._lock:
            while not self._rest:
                block = next(self._blocks, None)
                if block is None:
                    return 0
                self._rest = memoryview(block)
            n = min(len(buffer), len(self._rest))
            buffer[:n] = self._rest[:n]
            self._rest = self._rest[n:]
            return n

    def drain(self) -> None:
        """Read what is left of the COPY and drop it."""
        with self._lock:
            for _ in self._blocks:
                pass
            self._rest = memoryview(b"")


def pg_arrow_batches(
    conn: Connection, query: Any, schema: pa.Schema, block_bytes: int = 4 << 20
) -> Generator[pa.RecordBatch]:
    """`pg_arrow` as a stream: record batches of about `block_bytes` of CSV each, parsed by
    Arrow's streaming reader while the rest of the COPY is still arriving, so memory holds a
    batch, not the result. A value with a line break inside stays one value (CSV quotes it)."""
    import pyarrow.csv as pacsv
    from psycopg import sql

    stmt = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    dbapi = cast("psycopg.Connection[Any]", conn.connection.dbapi_connection)
    with dbapi.cursor() as cur:
        with cur.copy(sql.SQL("COPY ({}) TO STDOUT (FORMAT csv)").format(sql.SQL(stmt))) as copy:
            raw = _CopyStream(iter(copy))
            try:
                stream = io.BufferedReader(raw, buffer_size=block_bytes)
                if not stream.peek(1):
                    return
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(
                        column_names=schema.names, block_size=block_bytes
                    ),
                    parse_options=pacsv.ParseOptions(newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types=schema,
                        strings_can_be_null=True,
                        quoted_strings_can_be_null=False,
                        true_values=["t"],
                        false_values=["f"],
                    ),
                )
                yield from reader
            finally:
                # A consumer that stops early (an error while checking a part) leaves the rest
                # unread: it is read here, so the connection is ready for the transaction's next
                # statement or its rollback. psycopg's own cancel of an abandoned COPY could leave
                # it busy ("another command is already in progress"), hiding the first error.
                raw.drain()


_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})
_NEEDS_ESCAPE = re.compile(r"[\\\r\t]")  # and a newline inside a value, counted apart


def _copy_lines(values: Sequence[Any]) -> bytes:
    """One-column rows in COPY's text format, in one buffer: a key list of 300k rows goes in a
    write, not a `write_row` each (measured 2 s a chunk at 1M contacts). None is not a key."""
    if not values:
        return b""
    try:  # keys are text and almost never hold a character COPY escapes: join them as they are
        text = "\n".join(values)
        plain = text.count("\n") == len(values) - 1 and not _NEEDS_ESCAPE.search(text)
    except TypeError:  # not all text
        plain = False
    if not plain:
        text = "\n".join(str(v).translate(_COPY_ESCAPES) for v in values)
    return (text + "\n").encode()


def count_present(conn: Connection, table_: Table, column_name: str, keys: Iterable[Any]) -> int:
    """How many of the distinct `keys` are in `table_.column_name` (one join, any number)."""
    tmp = key_table(conn, keys, "present_keys")
    col = table_.c[column_name]
    with index_joins(conn):
        return int(
            conn.execute(
                select(func.count()).select_from(tmp.join(table_, col == tmp.c.k))
            ).scalar_one()
        )


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
    "Rows",
    "insert_new",
    "insert_new_arrow",
    "arrow_rows",
    "merge",
    "counted_keys",
    "key_table",
    "upsert",
    "utc",
]
