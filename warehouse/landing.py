"""Landing: source cursors, raw records appended with their cursor, what is pending, what is landed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    Connection,
    Text,
    and_,
    any_,
    bindparam,
    exists,
    func,
    not_,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from transforms.records import RawRow, Reject, raw_id_for
from warehouse import schema as t
from warehouse.load import Rows, count_present, in_chunks, insert_new, merge, upsert, utc
from warehouse.quarantine import reject_row


def read_cursor(conn: Connection, source: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(t.source_cursors.c.cursor).where(t.source_cursors.c.source == source)
    ).first()
    return dict(row[0]) if row else None


@dataclass(frozen=True, slots=True)
class Landed:
    """What landing one batch did: its distinct raw records, how many of them were new, and how
    many of them the warehouse holds afterwards (the reconciliation)."""

    distinct: int
    new: int
    present: int


def land_batch(
    conn: Connection,
    *,
    source: str,
    records: Sequence[Any],
    rejects: Sequence[Any],
    cursor: dict[str, Any] | None,
    run_id: str,
    move_cursor: bool = True,
) -> Landed:
    """Append raw records (idempotent on source + record id), put them on the pending queue and
    advance the cursor with them; then count how many of them are in `raw_contacts`.

    On PostgreSQL the ids already landed are probed first and only the others are COPYed, straight
    into `raw_contacts` (`_append_absent`); on SQLite the records go through the merge. Extraction
    rejects land in `rejects` with stage 'extract'.
    """
    rows = [
        {
            "raw_id": raw_id_for(r.source, r.source_record_id),
            "source": r.source,
            "source_kind": r.source_kind,
            "source_record_id": r.source_record_id,
            "received_at": r.received_at,
            "payload": (payload := r.payload_json()),
            "content_hash": content_hash(payload),
            "run_id": run_id,
        }
        for r in records
    ]
    raw_ids = {r["raw_id"] for r in rows}
    new, present = 0, 0
    # Every id goes on the queue, landed before or not: one already settled leaves it again at
    # the next processing (`settle_pending`).
    if rows and conn.dialect.name == "postgresql":
        new, present = _append_absent(conn, rows, sorted(raw_ids))
    elif rows:
        new = merge(conn, t.raw_contacts, Rows.of_dicts(t.raw_contacts, rows), update=False)
        upsert(conn, t.raw_pending, [{"raw_id": k} for k in raw_ids], update=False)
        present = count_present(conn, t.raw_contacts, "raw_id", raw_ids)
    reject_rows = [
        reject_row(
            Reject(j.source, j.source_record_id, "extract", j.code, j.message, j.raw), run_id
        )
        for j in rejects
    ]
    upsert(conn, t.rejects, reject_rows, update=False)
    if move_cursor and cursor is not None:
        upsert(conn, t.source_cursors, [{"source": source, "cursor": cursor, "run_id": run_id}])
    return Landed(len(raw_ids), new, int(present))


def _append_absent(conn: Connection, rows: list[dict[str, Any]], ids: list[str]) -> tuple[int, int]:
    """PostgreSQL: the batch's records whose ids `raw_contacts` lacks, COPYed straight in (binary),
    and every id put on the queue; how many were new, and how many the table holds after.

    One probe of the primary key for the whole batch instead of a staging table and an
    `INSERT … ON CONFLICT DO NOTHING` from it: a first load's rows are written once, not twice,
    and PostgreSQL parses no text. Its source's lock keeps any other run from landing the same
    ids meanwhile (a raw id is its source's and the record's); should one slip in after all,
    the COPY fails on the key and the batch's transaction with it: nothing half-landed, the
    cursor not moved."""
    r, q = t.raw_contacts, t.raw_pending
    keys = bindparam("ids", ids, type_=ARRAY(Text))
    held = set(conn.execute(select(r.c.raw_id).where(r.c.raw_id == any_(keys))).scalars())
    absent = [row for row in rows if row["raw_id"] not in held]
    new = insert_new(conn, r, Rows.of_dicts(r, absent)) if absent else 0
    listed = select(func.unnest(keys).label("raw_id"))
    conn.execute(pg_insert(q).from_select(["raw_id"], listed).on_conflict_do_nothing())
    return new, len(held) + new


def content_hash(text: str) -> str:
    """The hash `raw_contacts.content_hash` keeps of a payload's text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


BatchSize = int | Callable[[], int]


def iter_pending_raw(
    conn: Connection, batch_size: BatchSize = 50_000, landed_by: str | None = None
) -> Iterator[list[RawRow]]:
    """Raw records that have neither become a contact nor been rejected at normalize.

    Only those on the `raw_pending` queue are looked at: the cost follows the work waiting, not
    the size of `raw_contacts`. `landed_by` keeps only those first landed by that run (a rebuild
    replays runs in order). `batch_size`: a number, or a function asked for the size of each
    batch as it starts (when the one before has been taken).
    """
    r = t.raw_contacts
    where = and_(r.c.raw_id.in_(select(t.raw_pending.c.raw_id)), not_(_settled(r.c.raw_id)))
    if landed_by is not None:
        where = and_(where, r.c.run_id == landed_by)
    yield from _iter_raw_where(conn, where, batch_size)


def _settled(raw_id: Any) -> Any:
    """A raw record that became a contact or was rejected at normalize."""
    return or_(
        exists().where(t.contacts.c.raw_id == raw_id),
        exists().where(and_(t.rejects.c.raw_id == raw_id, t.rejects.c.stage == "normalize")),
    )


def settle_pending(conn: Connection) -> int:
    """Take the settled raw records off the queue (in the processing's transaction)."""
    q = t.raw_pending
    return int(conn.execute(q.delete().where(_settled(q.c.raw_id))).rowcount or 0)


def queue_all(conn: Connection) -> None:
    """Every raw record is pending again (a rebuild, after the derived rows were emptied)."""
    conn.execute(t.raw_pending.delete())
    conn.execute(t.raw_pending.insert().from_select(["raw_id"], select(t.raw_contacts.c.raw_id)))


def iter_raw(
    conn: Connection, raw_ids: Sequence[str], batch_size: BatchSize = 50_000
) -> Iterator[list[RawRow]]:
    """The named raw records that have not become a contact yet (a replay's input)."""
    r = t.raw_contacts
    done_contact = exists().where(t.contacts.c.raw_id == r.c.raw_id)
    size = _sizer(batch_size)
    batch: list[RawRow] = []
    limit = size()
    for chunk in in_chunks(sorted(set(raw_ids))):
        for rows in _iter_raw_where(conn, and_(r.c.raw_id.in_(chunk), not_(done_contact))):
            for row in rows:
                batch.append(row)
                if len(batch) >= limit:
                    yield batch
                    batch = []
                    limit = size()
    if batch:
        yield batch


def _sizer(batch_size: BatchSize) -> Callable[[], int]:
    if callable(batch_size):
        return lambda: max(1, batch_size())
    fixed = max(1, batch_size)
    return lambda: fixed


def _iter_raw_where(
    conn: Connection, where: Any, batch_size: BatchSize = 50_000
) -> Iterator[list[RawRow]]:
    r = t.raw_contacts
    size = _sizer(batch_size)
    limit = size()
    q = (
        select(
            r.c.raw_id,
            r.c.source,
            r.c.source_kind,
            r.c.source_record_id,
            r.c.received_at,
            r.c.payload,
        )
        .where(where)
        .order_by(r.c.received_at, r.c.raw_id)
        # a server-side cursor on PostgreSQL: memory holds a batch, not every pending record
        .execution_options(stream_results=True, max_row_buffer=limit)
    )
    batch: list[RawRow] = []
    for row in conn.execute(q):
        batch.append(
            RawRow(
                row.raw_id,
                row.source,
                row.source_kind,
                row.source_record_id,
                utc(row.received_at),
                json.loads(row.payload),
            )
        )
        if len(batch) >= limit:
            yield batch
            batch = []
            limit = size()
    if batch:
        yield batch


def landed_count(conn: Connection, raw_ids: Iterable[str]) -> int:
    """How many of these raw ids are already in `raw_contacts`, asked through a connection that
    cannot write (a dry run's): no temporary tables, plain lookups in chunks."""
    r = t.raw_contacts
    return sum(
        int(conn.execute(select(func.count()).where(r.c.raw_id.in_(chunk))).scalar_one())
        for chunk in in_chunks(sorted(set(raw_ids)))
    )
