"""CRM opportunity updates in the warehouse: what they match, and their moves written with history."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from transforms.outcomes import OpportunityState, UpdatePlan
from warehouse import schema as t
from warehouse.landing import read_cursor
from warehouse.load import in_chunks, upsert
from warehouse.quarantine import reject_row


def cursor_name(source: str, path: str) -> str:
    # One cursor per export file: its bytes' digest says whether it was applied already.
    return f"{source[:30]}:" + hashlib.sha256(path.encode()).hexdigest()[:24]


def api_cursor_name(source: str) -> str:
    # An API source's cursor: the newest modification time it has applied.
    return f"{source[:30]}:api"


def already_applied(conn: Connection, source: str, path: str, fingerprint: str) -> bool:
    cursor = read_cursor(conn, cursor_name(source, path))
    return cursor is not None and cursor.get("sha256") == fingerprint


def opportunity_context(
    conn: Connection, refs: Sequence[str], email_keys: Sequence[str]
) -> tuple[dict[str, OpportunityState], dict[str, tuple[str, ...]]]:
    """The opportunities the updates may touch: by id, and by the email of their lead's contacts."""
    o, c, lk, ld = t.opportunities, t.contacts, t.lead_links, t.leads
    by_email: dict[str, set[str]] = defaultdict(set)
    for chunk in in_chunks(sorted(set(email_keys))):
        q = (
            select(c.c.email_key, ld.c.opportunity_id)
            .select_from(
                c.join(lk, lk.c.contact_id == c.c.contact_id).join(ld, ld.c.lead_id == lk.c.lead_id)
            )
            .where(c.c.email_key.in_(chunk), ld.c.opportunity_id.is_not(None))
        )
        for key, opp in conn.execute(q):
            by_email[key].add(opp)
    ids = set(refs) | {opp for opps in by_email.values() for opp in opps}
    by_id: dict[str, OpportunityState] = {}
    h = t.opportunity_stage_history
    for chunk in in_chunks(sorted(ids)):
        last = dict(
            conn.execute(
                select(h.c.opportunity_id, func.max(h.c.changed_at))
                .where(h.c.opportunity_id.in_(chunk))
                .group_by(h.c.opportunity_id)
            ).all()
        )
        for r in conn.execute(select(o).where(o.c.opportunity_id.in_(chunk))):
            by_id[r.opportunity_id] = OpportunityState(
                r.opportunity_id,
                r.lead_id,
                r.stage,
                r.probability,
                Decimal(str(r.amount)) if r.amount is not None else None,
                r.currency,
                r.close_date
                if isinstance(r.close_date, date)
                else date.fromisoformat(r.close_date),
                _utc(last.get(r.opportunity_id)),
            )
    return by_id, {k: tuple(sorted(v)) for k, v in by_email.items()}


def file_cursor(source: str, path: str, fingerprint: str) -> tuple[str, dict[str, Any]]:
    return cursor_name(source, path), {"sha256": fingerprint, "path": path}


def _utc(value: datetime | str | None) -> datetime | None:
    # SQLite hands timestamps back naive (stored in UTC), PostgreSQL aware.
    if value is None:
        return None
    when = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def write_plan(
    conn: Connection,
    plan: UpdatePlan,
    cursor: tuple[str, dict[str, Any]] | None,
    run_id: str,
) -> None:
    """The moves, their history and the rejects, and the source's cursor (a file's digest, an
    API's last modification time), in the caller's transaction."""
    o = t.opportunities
    if plan.states:
        conn.execute(
            o.update()
            .where(o.c.opportunity_id == bindparam("oid"))
            .values(
                stage=bindparam("st"),
                probability=bindparam("p"),
                amount=bindparam("amt"),
                currency=bindparam("cur"),
                close_date=bindparam("close"),
            ),
            [
                {
                    "oid": s.opportunity_id,
                    "st": s.stage,
                    "p": s.probability,
                    "amt": s.amount,
                    "cur": s.currency,
                    "close": s.close_date,
                }
                for s in plan.states
            ],
        )
    rows = []
    for h in plan.history:
        rows.append(
            {
                "history_id": h.history_id,
                "opportunity_id": h.opportunity_id,
                "lead_id": h.lead_id,
                "from_stage": h.from_stage,
                "to_stage": h.to_stage,
                "changed_at": h.changed_at,
                "reason": h.reason,
                "rules_version": h.rules_version,
            }
        )
    upsert(conn, t.opportunity_stage_history, rows, update=False)
    upsert(conn, t.rejects, [reject_row(j, run_id) for j in plan.rejects], update=False)
    if cursor is not None:
        name, value = cursor
        upsert(conn, t.source_cursors, [{"source": name, "cursor": value, "run_id": run_id}])
