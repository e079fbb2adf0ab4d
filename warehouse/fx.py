"""The exchange rates the marts convert with: `fx_rates` rows, loaded once per changed rates file."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sqlalchemy import Connection

from transforms.fx import Rate
from warehouse import schema as t
from warehouse.landing import read_cursor
from warehouse.load import upsert


def cursor_name(path: str) -> str:
    # source_cursors keys are short names; a rates file is known by its path's digest.
    return "fx:" + hashlib.sha256(path.encode()).hexdigest()[:24]


def already_loaded(conn: Connection, path: str, fingerprint: str) -> bool:
    cursor = read_cursor(conn, cursor_name(path))
    return cursor is not None and cursor.get("sha256") == fingerprint


def load_rates(
    conn: Connection, path: str, fingerprint: str, rates: Sequence[Rate], run_id: str
) -> int:
    """Upsert a file's rates (a corrected rate replaces the old one) and remember the file."""
    rows = [{"rate_date": r.day, "currency": r.currency, "rate": r.rate} for r in rates]
    written = upsert(conn, t.fx_rates, rows) if rows else 0
    upsert(
        conn,
        t.source_cursors,
        [{"source": cursor_name(path), "cursor": {"sha256": fingerprint}, "run_id": run_id}],
    )
    return written
