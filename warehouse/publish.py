"""Publishing: a run's results, staged in memory as a PublishSet, merged into the live tables in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, bindparam

from transforms.qualify import StageChange, StatusChange
from transforms.records import Account, Contact, Lead, Link, Opportunity, Qualification, Reject
from transforms.resolve import ReviewDecision, ReviewPair, review_id
from warehouse import matching
from warehouse import schema as t
from warehouse.load import delete_keys, in_chunks, upsert
from warehouse.quarantine import reject_row

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _row(obj: Any) -> dict[str, Any]:
    names = _field_names(type(obj))
    values = attrgetter(*names)(obj) if len(names) > 1 else (getattr(obj, names[0]),)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in zip(names, values, strict=True)}


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
    reviews: list[ReviewPair] = dataclasses.field(default_factory=list)
    decisions: list[ReviewDecision] = dataclasses.field(default_factory=list)
    status_history: list[StatusChange] = dataclasses.field(default_factory=list)
    stage_history: list[StageChange] = dataclasses.field(default_factory=list)
    reparented: dict[str, str] = dataclasses.field(default_factory=dict)  # opportunity → lead
    splits: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (new lead, from)
    features: pa.Table | None = None  # the new contacts' matching columns
    model_version: str | None = None  # the match model that scored the links and reviews

    def lead_rows(self) -> list[dict[str, Any]]:
        """The leads as rows of `leads` (built once: the gate and the merge both read them)."""
        cached: list[dict[str, Any]] | None = self.__dict__.get("_lead_rows")
        if cached is None:
            cached = self._build_lead_rows()
            object.__setattr__(self, "_lead_rows", cached)
        return cached

    def _build_lead_rows(self) -> list[dict[str, Any]]:
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


@dataclasses.dataclass
class Touched:
    """The keys a run wrote to, or deleted from, the live tables: the rows whose published state
    it may have changed. Lead ids include leads merged away and leads split from."""

    leads: set[str] = dataclasses.field(default_factory=set)
    contacts: set[str] = dataclasses.field(default_factory=set)
    opportunities: set[str] = dataclasses.field(default_factory=set)
    everything: bool = False  # a rebuild: every derived row was written again

    def add(self, ps: PublishSet) -> None:
        self.leads.update(ld.lead_id for ld in ps.leads)
        self.leads.update(k for pair in ps.merges for k in pair)
        self.leads.update(k for pair in ps.splits for k in pair)
        self.leads.update(lk.lead_id for lk in ps.links)
        self.leads.update(ps.reparented.values())
        self.contacts.update(c.contact_id for c in ps.contacts)
        self.contacts.update(lk.contact_id for lk in ps.links)
        self.opportunities.update(o.opportunity_id for o in ps.opportunities)
        self.opportunities.update(ps.reparented)
        self.opportunities.update(opp for opp, _, _ in ps.conversions.values())
        self.opportunities.update(c.opportunity_id for c in ps.stage_history)


def publish(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """Merge a run's results into the live tables; call inside one transaction."""
    upsert(conn, t.contacts, [_row(c) for c in ps.contacts])
    upsert(conn, t.rejects, [reject_row(j, run_id) for j in ps.rejects], update=False)
    if ps.features is not None:
        matching.write_features(conn, ps.features)
    upsert(conn, t.lead_links, [{**_row(lk), "model_version": ps.model_version} for lk in ps.links])
    _publish_reviews(conn, ps, run_id)
    if ps.merges:
        upsert(
            conn,
            t.lead_merges,
            [{"merged_lead_id": a, "into_lead_id": b, "run_id": run_id} for a, b in ps.merges],
        )
        delete_keys(conn, t.leads, "lead_id", [a for a, _ in ps.merges])
    if ps.splits:
        rows = [{"lead_id": a, "split_from_lead_id": b, "run_id": run_id} for a, b in ps.splits]
        upsert(conn, t.lead_splits, rows, update=False)
    upsert(conn, t.accounts, [_row(a) for a in ps.accounts])
    upsert(conn, t.opportunities, [_row(o) for o in ps.opportunities], update=False)
    if ps.reparented:
        o = t.opportunities
        conn.execute(
            o.update()
            .where(o.c.opportunity_id == bindparam("oid"))
            .values(lead_id=bindparam("lid")),
            [{"oid": k, "lid": v} for k, v in sorted(ps.reparented.items())],
        )
    upsert(conn, t.leads, ps.lead_rows())
    record_history(conn, ps.status_history, ps.stage_history)


# What the next chunk's lookups read by key lists (resolution context, priors, reviews).
_LOOKUP_TABLES = (
    "contacts",
    "contact_blocks",
    "lead_links",
    "leads",
    "opportunities",
    "match_review",
)


def refresh_statistics(conn: Connection) -> None:
    """Fresh planner statistics on PostgreSQL, inside the transaction (it sees its own rows).

    Without them a table filled by this run looks empty to the planner, which then picks plans
    for an empty table (a scan per lookup) for the next chunk's lookups.
    """
    if conn.dialect.name != "postgresql":
        return
    names = ", ".join(conn.dialect.identifier_preparer.quote(n) for n in _LOOKUP_TABLES)
    conn.exec_driver_sql(f"ANALYZE {names}")


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


def _publish_reviews(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """New grey-zone pairs open; existing ones keep their decision. Applied decisions are marked."""
    rows = [
        {
            "review_id": r.review_id,
            "contact_a": r.contact_a,
            "contact_b": r.contact_b,
            "score": r.score,
            "evidence": r.evidence,
            "decision": "open",
            "decided_by": None,
            "decided_at": None,
            "applied": False,
            "run_id": run_id,
            "model_version": ps.model_version,
        }
        for r in ps.reviews
    ]
    upsert(conn, t.match_review, rows, update=False)
    ids = sorted({review_id(d.contact_a, d.contact_b) for d in ps.decisions})
    mr = t.match_review
    for chunk in in_chunks(ids):
        conn.execute(
            mr.update()
            .where(mr.c.review_id.in_(chunk), mr.c.applied == False)  # noqa: E712
            .values(applied=True)
        )
