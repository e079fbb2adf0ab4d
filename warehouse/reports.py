"""Counts for people and reports: the funnel by source, table counts, source freshness, rejects by reason."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, case, column, func, select, table

from warehouse import marts
from warehouse import schema as t
from warehouse.load import utc


def table_counts(conn: Connection) -> dict[str, int]:
    return {
        name: conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar_one()
        for name in (*t.DATA_TABLES, "pipeline_runs", "dq_results", "erasure_tombstones")
    }


def funnel(conn: Connection) -> list[dict[str, Any]]:
    """Per source: contacts → leads (first seen there) → qualified → opportunities."""
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"contacts": 0, "leads": 0, "qualified": 0, "opportunities": 0}
    )
    for src, n in conn.execute(
        select(t.contacts.c.source, func.count()).group_by(t.contacts.c.source)
    ):
        per[src]["contacts"] = n
    ld = t.leads
    q = select(
        ld.c.lead_source,
        func.count(),
        func.sum(case((ld.c.status == "Qualified", 1), else_=0)),
        func.count(ld.c.opportunity_id),
    ).group_by(ld.c.lead_source)
    for src, n, qual, opps in conn.execute(q):
        per[src].update(leads=n, qualified=int(qual or 0), opportunities=opps)
    return [{"source": s, **v} for s, v in sorted(per.items())]


def funnel_of_marts(conn: Connection, schema: str | None = None) -> list[dict[str, Any]]:
    """`funnel` as the marts hold it: `mart_funnel_daily` summed over its days.

    The same numbers once a run has refreshed the marts (the daily funnel counts every contact
    and every live lead by the day and source it came from, and qualified and converted leads as
    they are now), read from a row per day and source instead of from every contact and lead:
    the run's summary costs what the marts' size costs, not the warehouse's."""
    f = table(
        "mart_funnel_daily",
        column("source"),
        column("contacts"),
        column("new_leads"),
        column("qualified"),
        column("opportunities"),
        schema=marts.schema_of(conn, schema),
    )
    q = select(
        f.c.source,
        func.sum(f.c.contacts),
        func.sum(f.c.new_leads),
        func.sum(f.c.qualified),
        func.sum(f.c.opportunities),
    ).group_by(f.c.source)
    rows = conn.execute(q.order_by(f.c.source)).tuples()
    return [
        {
            "source": s,
            "contacts": int(c),
            "leads": int(n),
            "qualified": int(q),
            "opportunities": int(o),
        }
        for s, c, n, q, o in rows
    ]


def source_freshness(conn: Connection) -> list[dict[str, Any]]:
    """Per source: raw records, the newest received time, the cursor and the run that set it."""
    r, cur, runs = t.raw_contacts, t.source_cursors, t.pipeline_runs
    per: dict[str, dict[str, Any]] = defaultdict(dict)
    q = select(r.c.source, func.count(), func.max(r.c.received_at)).group_by(r.c.source)
    for src, n, newest in conn.execute(q):
        per[src].update(raw=n, newest_received_at=utc(newest) if newest else None)
    q2 = select(cur.c.source, cur.c.cursor, runs.c.finished_at).join(
        runs, runs.c.run_id == cur.c.run_id, isouter=True
    )
    for src, cursor, finished in conn.execute(q2):
        per[src].update(cursor=cursor, cursor_moved_at=utc(finished) if finished else None)
    return [{"source": s, **v} for s, v in sorted(per.items())]


def rejects_by_reason(conn: Connection, run_id: str | None = None) -> list[dict[str, Any]]:
    rj = t.rejects
    q = select(rj.c.source, rj.c.stage, rj.c.code, func.count()).group_by(
        rj.c.source, rj.c.stage, rj.c.code
    )
    if run_id:
        q = q.where(rj.c.run_id == run_id)
    return [
        {"source": s, "stage": st, "reason": c, "rejects": n}
        for s, st, c, n in sorted(conn.execute(q))
    ]
