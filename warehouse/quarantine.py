"""Quarantine: the `rejects` table, what is still open, what a replay can re-process, what a person dismissed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, select

from transforms.records import Reject
from warehouse import schema as t
from warehouse.load import in_chunks

QUARANTINED, REPLAYED = "open", "replayed"


def rejects(
    conn: Connection, reason: str | None = None, include_replayed: bool = False
) -> list[dict[str, Any]]:
    """Rejected records, oldest run first; by default only those still in quarantine."""
    j = t.rejects
    q = select(j).order_by(j.c.run_id, j.c.source, j.c.source_record_id)
    if reason:
        q = q.where(j.c.code == reason)
    if not include_replayed:
        q = q.where(j.c.status == QUARANTINED)
    return [dict(row._mapping) for row in conn.execute(q)]


def reject_codes(conn: Connection) -> list[str]:
    """Every reason a record was ever rejected for, quarantined or not."""
    return sorted(conn.execute(select(t.rejects.c.code).distinct()).scalars())


def quarantined_raw_ids(conn: Connection, reason: str | None = None) -> tuple[list[str], int]:
    """Raw ids of quarantined records a replay can re-process, and how many it cannot."""
    j = t.rejects
    q = select(j.c.raw_id).where(j.c.status == QUARANTINED)
    if reason:
        q = q.where(j.c.code == reason)
    ids = list(conn.execute(q).scalars())
    replayable = sorted({i for i in ids if i is not None})
    return replayable, sum(1 for i in ids if i is None)


def release_landed_rejects(conn: Connection, run_id: str, now: datetime) -> int:
    """Quarantined records whose raw record is now a contact leave the quarantine."""
    j = t.rejects
    landed = exists().where(t.contacts.c.raw_id == j.c.raw_id)
    res = conn.execute(
        j.update()
        .where(and_(j.c.status == QUARANTINED, j.c.raw_id.is_not(None), landed))
        .values(status=REPLAYED, replayed_at=now, replay_run_id=run_id)
    )
    return int(res.rowcount or 0)


DISMISSED = "dismissed"


def close_reread_rejects(
    conn: Connection, source: str, fname: str, again: set[str], run_id: str, now: datetime
) -> int:
    """Open extraction rejects of a file that was just read again whole and did not come back
    (the sheet now has a header, the row is no longer ragged): their records landed, they close."""
    j = t.rejects
    q = select(j.c.reject_id, j.c.source_record_id).where(
        j.c.source == source, j.c.stage == "extract", j.c.status == QUARANTINED
    )
    done = [
        r.reject_id
        for r in conn.execute(q)
        if (r.source_record_id == fname or r.source_record_id.startswith(fname + ":"))
        and r.source_record_id not in again
    ]
    for chunk in in_chunks(done):
        conn.execute(
            j.update()
            .where(j.c.reject_id.in_(chunk))
            .values(status=REPLAYED, replayed_at=now, replay_run_id=run_id)
        )
    return len(done)


def extract_reject_sources(conn: Connection, reason: str | None = None) -> set[str]:
    """Sources with open extraction rejects (of `reason`)."""
    j = t.rejects
    q = select(j.c.source).distinct().where(j.c.stage == "extract", j.c.status == QUARANTINED)
    if reason:
        q = q.where(j.c.code == reason)
    return set(conn.execute(q).scalars())


def dismiss_rejects(
    conn: Connection,
    *,
    reason: str | None,
    reject_ids: Sequence[str],
    by: str,
    why: str,
    now: datetime,
) -> int:
    """Close open rejects a person decided to drop (by reason code or by id), with who and why."""
    j = t.rejects
    q = j.update().where(j.c.status == QUARANTINED)
    if reason:
        q = q.where(j.c.code == reason)
    if reject_ids:
        q = q.where(j.c.reject_id.in_(sorted(set(reject_ids))))
    res = conn.execute(
        q.values(status=DISMISSED, dismissed_by=by, dismissed_why=why, dismissed_at=now)
    )
    return int(res.rowcount or 0)


def reject_row(j: Reject, run_id: str) -> dict[str, Any]:
    """A reject as a row of `rejects`, kept with the run that found it."""
    return {
        "reject_id": j.reject_id,
        "raw_id": j.raw_id,
        "source": j.source,
        "source_record_id": j.source_record_id,
        "stage": j.stage,
        "code": j.code,
        "message": j.message,
        "raw": j.raw,
        "run_id": run_id,
    }
