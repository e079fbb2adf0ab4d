"""Which raw records are landed, asked through a connection that cannot write (a dry run's):
no temporary tables, plain lookups in chunks."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, func, select

from warehouse import schema as t
from warehouse.load import in_chunks


def landed_count(conn: Connection, raw_ids: Iterable[str]) -> int:
    """How many of these raw ids are already in `raw_contacts`."""
    r = t.raw_contacts
    return sum(
        int(conn.execute(select(func.count()).where(r.c.raw_id.in_(chunk))).scalar_one())
        for chunk in in_chunks(sorted(set(raw_ids)))
    )
