"""Reads and writes of the pipeline's tables; every function takes a Connection, the caller owns the transaction."""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, bindparam, case, exists, func, not_, or_, select

from transforms.qualify import Prior, Stage, StageChange, StatusChange
from transforms.records import (
    Account,
    Contact,
    Lead,
    Link,
    Opportunity,
    Qualification,
    RawRow,
    Reject,
    raw_id_for,
)
from warehouse import schema as t
from warehouse.load import delete_keys, in_chunks, upsert


def utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# ---- cursors and landing -------------------------------------------------------------------


def read_cursor(conn: Connection, source: str) -> dict[str, Any] | None:
    row = conn.execute(
        select(t.source_cursors.c.cursor).where(t.source_cursors.c.source == source)
    ).first()
    return dict(row[0]) if row else None


def land_batch(
    conn: Connection,
    *,
    source: str,
    records: Sequence[Any],
    rejects: Sequence[Any],
    cursor: dict[str, Any] | None,
    run_id: str,
    move_cursor: bool = True,
) -> int:
    """Append raw records (idempotent on source + record id) and advance the cursor with them.

    Returns how many records were new. Extraction rejects land in `rejects` with stage 'extract'.
    """
    rows = [
        {
            "raw_id": raw_id_for(r.source, r.source_record_id),
            "source": r.source,
            "source_kind": r.source_kind,
            "source_record_id": r.source_record_id,
            "received_at": r.received_at,
            "payload": (payload := r.payload_json()),
            "content_hash": _sha(payload),
            "run_id": run_id,
        }
        for r in records
    ]
    before = _count_existing(conn, [r["raw_id"] for r in rows])
    upsert(conn, t.raw_contacts, rows, update=False)
    reject_rows = [
        _reject_row(
            Reject(j.source, j.source_record_id, "extract", j.code, j.message, j.raw), run_id
        )
        for j in rejects
    ]
    upsert(conn, t.rejects, reject_rows, update=False)
    if move_cursor and cursor is not None:
        upsert(conn, t.source_cursors, [{"source": source, "cursor": cursor, "run_id": run_id}])
    return len({r["raw_id"] for r in rows}) - before


def _sha(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _count_existing(conn: Connection, raw_ids: list[str]) -> int:
    n = 0
    for chunk in in_chunks(set(raw_ids)):
        n += conn.execute(
            select(func.count()).where(t.raw_contacts.c.raw_id.in_(chunk))
        ).scalar_one()
    return n


# ---- reading what is pending ---------------------------------------------------------------


def iter_pending_raw(conn: Connection, batch_size: int = 50_000) -> Iterator[list[RawRow]]:
    """Raw records that have neither become a contact nor been rejected at normalize."""
    r = t.raw_contacts
    done_contact = exists().where(t.contacts.c.raw_id == r.c.raw_id)
    done_reject = exists().where(
        and_(t.rejects.c.raw_id == r.c.raw_id, t.rejects.c.stage == "normalize")
    )
    q = (
        select(
            r.c.raw_id,
            r.c.source,
            r.c.source_kind,
            r.c.source_record_id,
            r.c.received_at,
            r.c.payload,
        )
        .where(not_(or_(done_contact, done_reject)))
        .order_by(r.c.received_at, r.c.raw_id)
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
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


_CONTACT_FIELDS = [f.name for f in dataclasses.fields(Contact)]


def _contact_from_row(row: Any) -> Contact:
    d = dict(row._mapping)
    d.pop("lead_id", None)
    d["received_at"] = utc(d["received_at"])
    d["issues"] = tuple(d["issues"] or ())
    if isinstance(d.get("budget_amount"), Decimal):
        d["budget_amount"] = float(d["budget_amount"])
    return Contact(**{k: d[k] for k in _CONTACT_FIELDS})


def lead_context(conn: Connection, new: Sequence[Contact]) -> list[tuple[Contact, str]]:
    """Every contact of every existing lead that shares an email key or phone with `new`."""
    c, lk = t.contacts, t.lead_links
    emails = sorted({x.email_key for x in new if x.email_key and not x.email_is_role})
    phones = sorted({x.phone for x in new if x.phone})
    lead_ids: set[str] = set()
    for col, keys in ((c.c.email_key, emails), (c.c.phone, phones)):
        for chunk in in_chunks(keys):
            q = (
                select(lk.c.lead_id)
                .join(c, c.c.contact_id == lk.c.contact_id)
                .where(col.in_(chunk))
            )
            lead_ids.update(conn.execute(q).scalars())
    return contacts_of_leads(conn, lead_ids)


def contacts_of_leads(conn: Connection, lead_ids: set[str]) -> list[tuple[Contact, str]]:
    c, lk = t.contacts, t.lead_links
    out: list[tuple[Contact, str]] = []
    for chunk in in_chunks(sorted(lead_ids)):
        q = (
            select(c, lk.c.lead_id)
            .join(lk, lk.c.contact_id == c.c.contact_id)
            .where(lk.c.lead_id.in_(chunk))
        )
        out += [(_contact_from_row(row), row.lead_id) for row in conn.execute(q)]
    return out


def data_clock(conn: Connection) -> datetime | None:
    """The data's own clock: the newest time any raw record was received. Never the wall clock."""
    newest = conn.execute(select(func.max(t.raw_contacts.c.received_at))).scalar_one()
    return utc(newest) if isinstance(newest, datetime) else _parse_ts(newest)


def _parse_ts(value: Any) -> datetime | None:
    # SQLite returns aggregate results untyped: the stored text of the timestamp.
    return utc(datetime.fromisoformat(value)) if isinstance(value, str) else None


def read_stages(conn: Connection) -> tuple[Stage, ...]:
    s = t.opportunity_stages
    rows = conn.execute(select(s).order_by(s.c.sort_order))
    return tuple(
        Stage(
            r.stage,
            r.sort_order,
            r.probability,
            r.forecast_category,
            bool(r.is_closed),
            bool(r.is_won),
        )
        for r in rows
    )


def prior_states(conn: Connection, lead_ids: set[str]) -> dict[str, Prior]:
    """What the warehouse holds for these leads: status, and the opportunity once converted."""
    ld, o = t.leads, t.opportunities
    out: dict[str, Prior] = {}
    for chunk in in_chunks(sorted(lead_ids)):
        q = (
            select(
                ld.c.lead_id,
                ld.c.status,
                o.c.opportunity_id,
                o.c.account_id,
                o.c.created_at,
                o.c.stage,
            )
            .select_from(ld.outerjoin(o, o.c.lead_id == ld.c.lead_id))
            .where(ld.c.lead_id.in_(chunk))
        )
        for r in conn.execute(q):
            created = utc(r.created_at) if r.created_at is not None else None
            out[r.lead_id] = Prior(r.status, r.opportunity_id, r.account_id, created, r.stage)
    return out


_LEAD_FIELDS = [f.name for f in dataclasses.fields(Lead)]


def iter_leads(conn: Connection, batch_size: int = 5_000) -> Iterator[list[Lead]]:
    """Every live lead, in lead id order, in batches."""
    ld = t.leads
    batch: list[Lead] = []
    for row in conn.execute(select(*(ld.c[f] for f in _LEAD_FIELDS)).order_by(ld.c.lead_id)):
        d = dict(row._mapping)
        d["first_seen_at"], d["last_seen_at"] = utc(d["first_seen_at"]), utc(d["last_seen_at"])
        batch.append(Lead(**d))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


# ---- publishing ----------------------------------------------------------------------------


def _row(obj: Any) -> dict[str, Any]:
    d = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    for k, v in d.items():
        if isinstance(v, tuple):
            d[k] = list(v)
    return d


def _reject_row(j: Reject, run_id: str) -> dict[str, Any]:
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


@dataclasses.dataclass(frozen=True)
class PublishSet:
    """Everything one run publishes, staged in memory, written in one transaction."""

    contacts: list[Contact]
    rejects: list[Reject]
    links: list[Link]
    leads: list[Lead]
    qualifications: list[Qualification]
    merges: list[tuple[str, str]]
    accounts: list[Account]
    opportunities: list[Opportunity]
    conversions: dict[str, tuple[str, str, datetime]]  # lead → (opp, account, converted_at)
    status_history: list[StatusChange] = dataclasses.field(default_factory=list)
    stage_history: list[StageChange] = dataclasses.field(default_factory=list)

    def lead_rows(self) -> list[dict[str, Any]]:
        quals = {q.lead_id: q for q in self.qualifications}
        rows = []
        for lead in self.leads:
            q = quals[lead.lead_id]
            opp = self.conversions.get(lead.lead_id)
            row = _row(lead)
            row.update(
                status=q.status,
                score=q.score,
                grade=q.grade,
                reasons=q.reasons,
                rules_version=q.rules_version,
                converted_at=opp[2] if opp else None,
                account_id=opp[1] if opp else None,
                opportunity_id=opp[0] if opp else None,
            )
            rows.append(row)
        return rows


def publish(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """Merge a run's results into the live tables; call inside one transaction."""
    upsert(conn, t.contacts, [_row(c) for c in ps.contacts])
    upsert(conn, t.rejects, [_reject_row(j, run_id) for j in ps.rejects], update=False)
    upsert(conn, t.lead_links, [_row(lk) for lk in ps.links])
    if ps.merges:
        upsert(
            conn,
            t.lead_merges,
            [{"merged_lead_id": a, "into_lead_id": b, "run_id": run_id} for a, b in ps.merges],
        )
        delete_keys(conn, t.leads, "lead_id", [a for a, _ in ps.merges])
    upsert(conn, t.accounts, [_row(a) for a in ps.accounts])
    upsert(conn, t.opportunities, [_row(o) for o in ps.opportunities], update=False)
    upsert(conn, t.leads, ps.lead_rows())
    record_history(conn, ps.status_history, ps.stage_history)


def record_history(
    conn: Connection, statuses: Sequence[StatusChange], stages: Sequence[StageChange]
) -> None:
    """Append status and stage changes; a stage change of an existing opportunity moves it too."""
    upsert(
        conn,
        t.lead_status_history,
        [{"history_id": h.history_id, **_row(h)} for h in statuses],
        update=False,
    )
    stage_rows = [{"history_id": h.history_id, **_row(h)} for h in stages]
    for r in stage_rows:
        r.pop("probability")
    upsert(conn, t.opportunity_stage_history, stage_rows, update=False)
    moves = [
        {"oid": h.opportunity_id, "st": h.to_stage, "p": h.probability}
        for h in stages
        if h.from_stage is not None
    ]
    if moves:
        o = t.opportunities
        conn.execute(
            o.update()
            .where(o.c.opportunity_id == bindparam("oid"))
            .values(stage=bindparam("st"), probability=bindparam("p")),
            moves,
        )


# ---- run log and counts --------------------------------------------------------------------


def start_run(conn: Connection, run_id: str, flow: str, params: dict[str, Any]) -> None:
    upsert(
        conn,
        t.pipeline_runs,
        [
            {
                "run_id": run_id,
                "flow": flow,
                "status": "running",
                "started_at": datetime.now(UTC),
                "finished_at": None,
                "params": params,
                "stats": {},
                "error": None,
            }
        ],
    )


def finish_run(
    conn: Connection, run_id: str, status: str, stats: dict[str, Any], error: str | None = None
) -> None:
    conn.execute(
        t.pipeline_runs.update()
        .where(t.pipeline_runs.c.run_id == run_id)
        .values(status=status, finished_at=datetime.now(UTC), stats=stats, error=error)
    )


def recent_runs(conn: Connection, limit: int = 10) -> list[dict[str, Any]]:
    r = t.pipeline_runs
    q = select(r).order_by(r.c.started_at.desc()).limit(limit)
    return [dict(row._mapping) for row in conn.execute(q)]


def table_counts(conn: Connection) -> dict[str, int]:
    return {
        name: conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar_one()
        for name in (*t.DATA_TABLES, "pipeline_runs", "dq_results")
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
