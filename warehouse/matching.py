"""Reads and writes of what entity resolution keeps in the warehouse: each contact's matching
columns and blocking keys, the term counts, the match models; and the context a chunk is
resolved against. Every function takes a Connection; the caller owns the transaction."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import BigInteger, Connection, delete, func, select
from sqlalchemy.sql.expression import TableClause

from transforms.match import (
    BLOCKING_RULES,
    EXACT_RULES,
    MATCH_COLUMNS,
    MATCH_SCHEMA,
    block_table,
    hash_rule,
    match_table,
)
from transforms.records import Contact
from transforms.resolve import CONTEXT_SCHEMA, Context
from transforms.scoring import TF_COLUMNS, Model, default_model
from warehouse import schema as t
from warehouse.load import (
    Rows,
    arrow_rows,
    counted_keys,
    index_joins,
    index_lookups,
    insert_new,
    insert_new_arrow,
    key_table,
    merge,
    pg_arrow,
    selected_keys,
    upsert,
    utc,
)

# The definition the stored matching columns and blocking keys were built with: when the code's
# changes, `ensure_index` builds them again from the contacts.
INDEX_VERSION = hashlib.sha256(
    json.dumps(
        {
            "columns": MATCH_COLUMNS,
            "rules": [(r.code, r.columns, r.exact) for r in BLOCKING_RULES],
            "stored_keys": "rule byte + md5 56",  # how `block_hash` stores a key
            "features": 1,  # bump when the way a column is computed changes
        }
    ).encode()
).hexdigest()[:16]
_INDEX_KEY = "matching_index"


# ---- the index: matching columns, blocking keys, term counts --------------------------------


def write_features(
    conn: Connection, table: pa.Table, new: bool = False, blocks: pa.Table | None = None
) -> None:
    """Store the matching columns, blocking keys and term counts of newly published contacts.

    `new`: none of these contacts is in the index yet (they were just published), so their rows
    go in by plain insert (COPY) instead of the merge. `blocks`: their `block_table`, when the
    caller has it already."""
    if table.num_rows == 0:
        return
    features = table.select(MATCH_SCHEMA.names)
    # distinct: a contact's key is stored once
    blocks = (block_table(table) if blocks is None else blocks).select(["block_hash", "contact_id"])
    if new:
        insert_new_arrow(conn, t.contact_features, features)
    else:
        merge(conn, t.contact_features, arrow_rows(features))
        # a contact's keys follow its matching columns: the ones they no longer give go
        b = t.contact_blocks
        ids = key_table(conn, features.column("contact_id").to_pylist(), "feature_keys")
        conn.execute(delete(b).where(b.c.contact_id.in_(select(ids.c.k))))
    insert_new_arrow(conn, t.contact_blocks, blocks)
    _add_counts(conn, _counts_of(table), +1)


def _counts_of(table: pa.Table) -> Counter[tuple[str, str]]:
    out: Counter[tuple[str, str]] = Counter()
    for col in TF_COLUMNS:
        out.update((col, v) for v in table.column(col).to_pylist() if v is not None)
    return out


def _add_counts(conn: Connection, counts: Counter[tuple[str, str]], sign: int) -> None:
    """n += count for each (column, value), in one statement per batch; rows that reach 0 go."""
    if not counts:
        return
    tc = t.match_term_counts
    have = _read_counts(conn, {col: {v for c, v in counts if c == col} for col in TF_COLUMNS})
    added: list[tuple[str, str, int]] = []
    kept: list[tuple[str, str, int]] = []
    for (col, value), n in counts.items():
        before = have.get(col, {}).get(value, 0)
        total = before + sign * n
        if total > 0:
            (kept if before else added).append((col, value, total))
        else:
            conn.execute(delete(tc).where(tc.c.column_name == col, tc.c.value == value))
    names = ("column_name", "value", "n")
    insert_new(conn, tc, Rows(names, added))  # read as absent just above
    merge(conn, tc, Rows(names, kept))


def _read_counts(
    conn: Connection, values: Mapping[str, Iterable[str]]
) -> dict[str, dict[str, int]]:
    tc = t.match_term_counts
    out: dict[str, dict[str, int]] = {}
    for col, vals in values.items():
        keys = key_table(conn, vals, "term_keys")
        q = select(tc.c.value, tc.c.n).join(keys, keys.c.k == tc.c.value)
        out[col] = dict(conn.execute(q.where(tc.c.column_name == col)).tuples().all())
    return out


def _totals(conn: Connection) -> dict[str, int]:
    tc = t.match_term_counts
    q = select(tc.c.column_name, func.sum(tc.c.n)).group_by(tc.c.column_name)
    return {col: int(n) for col, n in conn.execute(q)}


def forget_features(conn: Connection, contact_ids: Sequence[str]) -> None:
    """Remove erased contacts from the index (their rows, keys and share of the term counts)."""
    if not contact_ids:
        return
    keys = key_table(conn, contact_ids, "forget_keys")
    f = t.contact_features
    cols = [f.c.contact_id, *(getattr(f.c, c) for c in TF_COLUMNS)]
    rows = conn.execute(select(*cols).join(keys, keys.c.k == f.c.contact_id)).mappings().all()
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        counts.update((col, row[col]) for col in TF_COLUMNS if row[col] is not None)
    _add_counts(conn, counts, -1)
    conn.execute(delete(f).where(f.c.contact_id.in_(select(keys.c.k))))
    b = t.contact_blocks
    conn.execute(delete(b).where(b.c.contact_id.in_(select(keys.c.k))))


def ensure_index(conn: Connection, batch_size: int = 50_000) -> int:
    """Build the matching columns, blocking keys and term counts of every published contact again
    when they were built with another definition (or never: a warehouse from before them).
    Returns how many contacts were indexed (0 when the index was current)."""
    ws = t.warehouse_state
    current = conn.execute(select(ws.c.value).where(ws.c.key == _INDEX_KEY)).scalar()
    if current == INDEX_VERSION:
        return 0
    for table in (t.contact_features, t.contact_blocks, t.match_term_counts):
        conn.execute(delete(table))
    n = 0
    for batch in _iter_contacts(conn, batch_size):
        write_features(conn, match_table(batch), new=True)  # emptied above; each contact once
        n += len(batch)
    upsert(conn, ws, [{"key": _INDEX_KEY, "value": INDEX_VERSION}])
    return n


def mark_index_current(conn: Connection) -> None:
    """A warehouse whose index is derived from scratch (a rebuild) is current by construction."""
    upsert(conn, t.warehouse_state, [{"key": _INDEX_KEY, "value": INDEX_VERSION}])


_FEATURE_SOURCES = (
    "contact_id",
    "received_at",
    "first_name",
    "last_name",
    "email_key",
    "email_is_role",
    "email_is_free",
    "email_is_disposable",
    "phone",
    "company_key",
    "street",
    "postal_code",
    "city",
    "birth_date",
    "country",
)


def _iter_contacts(conn: Connection, batch_size: int) -> Iterator[list[Contact]]:
    """Published contacts with the fields their matching columns come from."""
    c = t.contacts.c
    result = conn.execute(select(*(getattr(c, n) for n in _FEATURE_SOURCES)))
    while rows := result.fetchmany(batch_size):
        yield [Contact(raw_id="", source="", source_kind="", **dict(r._mapping)) for r in rows]


def clear_index(conn: Connection) -> None:
    """Empty the index with the contacts it describes (a rebuild publishes them again)."""
    for table in (t.contact_features, t.contact_blocks, t.match_term_counts):
        conn.execute(delete(table))


# ---- the context of a chunk ------------------------------------------------------------------


def read_context(
    conn: Connection,
    new: pa.Table,
    max_block_size: int,
    extra_leads: Iterable[str] = (),
    blocks: pa.Table | None = None,
) -> Context:
    """What resolving `new` (their matching columns) needs from the warehouse, read before it:
    every contact of every lead sharing a usable blocking key with them, or named in
    `extra_leads` (leads a pending decision touches); the term counts of the values involved;
    and the keys too common over the warehouse to compare. `blocks`: their `block_table`, when
    the caller has it already."""
    blocks = block_table(new) if blocks is None else blocks
    b, lk = t.contact_blocks, t.lead_links
    # each key of the chunk (as it is stored) with how many of the chunk's contacts hold it
    key_rows = counted_keys(conn, blocks.column("block_hash"), "block_keys")
    # How many published contacts hold each key, counted only as far as the limit: a common
    # key (a first name in a big city) is never counted whole, each count is an index probe.
    held = (
        select(func.count())
        .select_from(
            select(b.c.contact_id)
            .where(b.c.block_hash == key_rows.c.k)
            .limit(max_block_size + 1)
            .correlate(key_rows)
            .subquery()
        )
        .scalar_subquery()
    )
    with index_joins(conn):
        # only the keys over the limit come back, not a row per key of the chunk
        over = conn.execute(select(key_rows.c.k).where(key_rows.c.n + held > max_block_size))
        too_common = [h for h in over.scalars() if hash_rule(h) not in EXACT_RULES]
    # the chunk's own keys of those hashes, as text: how the chunk's pairs are blocked
    at = pc.is_in(blocks.column("block_hash"), pa.array(too_common, pa.int64()))
    common = frozenset(pc.unique(blocks.column("block_key").filter(at)).to_pylist())
    if too_common:  # the usable keys are those left (a hash join: neither table has an index)
        gone = key_table(conn, too_common, "common_keys", BigInteger)
        conn.execute(delete(key_rows).where(key_rows.c.k.in_(select(gone.c.k))))
    with index_joins(conn):
        # IN, not a three-way join: SQLite's planner joined lead_links first and built an
        # automatic index over the whole of contact_blocks for each chunk (4.0 s for 10k new
        # contacts into 200k; under 0.2 s this way); PostgreSQL plans both as the same probes.
        holding = select(b.c.contact_id).where(b.c.block_hash.in_(select(key_rows.c.k)))
        sharing = select(lk.c.lead_id).where(lk.c.contact_id.in_(holding))
        extra = sorted(set(extra_leads))
        leads = (
            sharing.union(select(key_table(conn, extra, "extra_leads").c.k)) if extra else sharing
        )
        # the leads stay in the database, in the key table the members are read through
        keys = selected_keys(conn, leads, "member_keys")
    members = members_of(conn, keys)
    values = {
        col: pc.unique(
            pa.chunked_array(new.column(col).chunks + members.column(col).chunks, pa.string())
        )
        .drop_null()
        .to_pylist()
        for col in TF_COLUMNS
    }
    return Context(
        members=members, counts=_read_counts(conn, values), totals=_totals(conn), common=common
    )


def members_of(conn: Connection, keys: TableClause) -> pa.Table:
    """Every contact of the leads in a key table (`k`): lead id, received time and matching
    columns, in columns."""
    lk, c, f = t.lead_links, t.contacts, t.contact_features
    pg = conn.dialect.name == "postgresql"
    # PostgreSQL hands the time over as epoch seconds: CSV's text of a timestamp depends on the
    # session's time zone and date style
    received = func.extract("epoch", c.c.received_at) if pg else c.c.received_at
    q = select(lk.c.lead_id, received, *(f.c[n] for n in MATCH_SCHEMA.names)).select_from(
        lk.join(keys, keys.c.k == lk.c.lead_id)
        .join(c, c.c.contact_id == lk.c.contact_id)
        .join(f, f.c.contact_id == lk.c.contact_id)
    )
    with index_lookups(conn):
        if pg:
            table = _epoch_to_time(pg_arrow(conn, q, _EPOCH_SCHEMA))
        else:  # the driver's tuples, not a Row object per contact
            rows = conn.execute(q).cursor.fetchall()
            if not rows:
                return CONTEXT_SCHEMA.empty_table()
            data = dict(zip(CONTEXT_SCHEMA.names, map(list, zip(*rows, strict=True)), strict=True))
            data["received_at"] = [_aware(v) for v in data["received_at"]]  # text on SQLite
            table = pa.table(data, schema=CONTEXT_SCHEMA)
    if table.num_rows == 0:
        return CONTEXT_SCHEMA.empty_table()
    # ordered here, not by the database: its sort of a big context spills to disk
    return table.take(
        pc.sort_indices(table, [("lead_id", "ascending"), ("contact_id", "ascending")])
    )


_EPOCH_SCHEMA = CONTEXT_SCHEMA.set(
    CONTEXT_SCHEMA.get_field_index("received_at"), pa.field("received_at", pa.float64())
)


def _epoch_to_time(table: pa.Table) -> pa.Table:
    """received_at from epoch seconds (microseconds exact: 2^53 µs is 285 years) to UTC time."""
    at = table.schema.get_field_index("received_at")
    micros = pc.round(pc.multiply(table.column(at), 1_000_000)).cast(pa.int64())
    timed = table.set_column(at, "received_at", micros.cast(pa.timestamp("us", tz="UTC")))
    return timed.cast(CONTEXT_SCHEMA)  # and the ids' NOT NULL, which CSV does not carry


def _columns(rows: Sequence[Any], names: Sequence[str]) -> dict[str, list[Any]]:
    """Rows of a query as columns, by name."""
    return {name: [row[i] for row in rows] for i, name in enumerate(names)}


def _aware(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return utc(value)


# ---- match models ----------------------------------------------------------------------------


def active_model(conn: Connection) -> Model:
    """The model resolution scores with: the active trained one, else the one leadflow ships."""
    m = t.match_models
    row = conn.execute(select(m.c.version, m.c.model).where(m.c.active == True)).first()  # noqa: E712
    return Model(row.version, row.model) if row else default_model()


def save_model(
    conn: Connection, version: str, spec: Mapping[str, Any], stats: Mapping[str, Any], at: datetime
) -> None:
    text = json.dumps(spec, sort_keys=True)
    row = {
        "version": version,
        "trained_at": at,
        "stats": dict(stats),
        "model": json.loads(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "active": False,
    }
    upsert(conn, t.match_models, [row], update=False)


def activate_model(conn: Connection, version: str) -> None:
    """Make `version` the model runs and rebuilds score with (`default`: the shipped one)."""
    m = t.match_models
    if (
        version != "default"
        and conn.execute(select(m.c.version).where(m.c.version == version)).first() is None
    ):
        raise KeyError(version)
    conn.execute(m.update().values(active=m.c.version == version))


def model_versions(conn: Connection) -> list[dict[str, Any]]:
    m = t.match_models
    q = select(m.c.version, m.c.trained_at, m.c.stats, m.c.active).order_by(m.c.trained_at)
    return [dict(r._mapping) for r in conn.execute(q)]


def model_named(conn: Connection, version: str) -> Model:
    if version == "default" or version == default_model().version:
        return default_model()
    m = t.match_models
    row = conn.execute(select(m.c.model).where(m.c.version == version)).first()
    if row is None:
        raise KeyError(version)
    return Model(version, row.model)


def training_table(conn: Connection, sample: int | None, seed: int) -> pa.Table:
    """The matching columns of the published contacts (a deterministic sample of `sample`)."""
    f = t.contact_features
    q = select(*(f.c[n] for n in MATCH_SCHEMA.names)).order_by(f.c.contact_id)
    rows: Sequence[Any] = conn.execute(q).all()
    if sample is not None and sample < len(rows):
        import random

        rows = sorted(random.Random(seed).sample(list(rows), sample), key=lambda r: r[0])
    return pa.table(_columns(rows, MATCH_SCHEMA.names), schema=MATCH_SCHEMA)
