"""What resolving and qualifying a chunk read from the warehouse: the review decisions that bind the
resolver, published contacts and leads as records, prior states, the stage catalogue, the data's clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from transforms.qualify import Prior, Stage
from transforms.records import Contact, Lead
from transforms.resolve import CANNOT_LINK, MUST_LINK, ReviewDecision
from warehouse import schema as t
from warehouse.load import index_joins, key_table, utc

BINDING = (MUST_LINK, CANNOT_LINK)  # the decisions a review row can hold that bind the resolver


_CONTACT_FIELDS = [f.name for f in dataclasses.fields(Contact)]


def _contact_from_values(values: dict[str, Any]) -> Contact:
    values["received_at"] = utc(values["received_at"])
    values["issues"] = tuple(values["issues"] or ())
    for name in ("other_emails", "other_phones"):
        values[name] = tuple(values.get(name) or ())
    if isinstance(values.get("budget_amount"), Decimal):
        values["budget_amount"] = float(values["budget_amount"])
    return Contact(**values)


def decision_leads(conn: Connection) -> set[str]:
    """The leads of the contacts of review decisions no run has applied yet: the next chunk
    resolves them, so each decision takes effect on the next run."""
    mr, lk = t.match_review, t.lead_links
    pending = select(mr.c.contact_a, mr.c.contact_b).where(decision_pending())
    ids = {x for row in conn.execute(pending) for x in row}
    keys = key_table(conn, ids, "decision_contacts")
    return set(conn.execute(select(lk.c.lead_id).join(keys, keys.c.k == lk.c.contact_id)).scalars())


def decision_pending() -> Any:
    """A review row whose decision no run has applied yet."""
    mr = t.match_review
    return and_(mr.c.decision.in_(BINDING), mr.c.applied == False)  # noqa: E712


def pending_decisions(conn: Connection) -> int:
    """How many review decisions no run has applied yet."""
    q = select(func.count()).select_from(t.match_review).where(decision_pending())
    return int(conn.execute(q).scalar_one())


def revocation_pending() -> Any:
    """A review row whose revocation no rebuild has applied yet."""
    # a revoked pair is open again, a revoked split 'revoked'; either keeps `revoked_at`
    mr = t.match_review
    return and_(
        mr.c.revoked_at.is_not(None),
        mr.c.decision.not_in(BINDING),
        mr.c.applied == False,  # noqa: E712
    )


def pending_revocations(conn: Connection) -> int:
    """How many revoked decisions still wait for a rebuild: a run adds to the clustering but
    cannot take back a merge or a split it made, a rebuild derives every lead again."""
    q = select(func.count()).select_from(t.match_review).where(revocation_pending())
    return int(conn.execute(q).scalar_one())


def mark_revocations_applied(conn: Connection) -> None:
    """In a rebuild's transaction: the leads it derives no longer hold any revoked decision."""
    mr = t.match_review
    conn.execute(mr.update().where(revocation_pending()).values(applied=True))


def review_decisions(conn: Connection, contact_ids: Sequence[str]) -> list[ReviewDecision]:
    """Decided review pairs that touch any of `contact_ids` (revoked ones bind nothing).

    A warehouse where no steward has decided anything answers from the index on the decision,
    without loading the ids (a chunk's context is hundreds of thousands at 1M contacts)."""
    mr = t.match_review
    if (
        conn.execute(select(mr.c.review_id).where(mr.c.decision.in_(BINDING)).limit(1)).first()
        is None
    ):
        return []
    ids = select(key_table(conn, contact_ids, "decision_keys").c.k)
    q = select(mr.c.review_id, mr.c.contact_a, mr.c.contact_b, mr.c.decision, mr.c.kind).where(
        mr.c.decision.in_(BINDING), or_(mr.c.contact_a.in_(ids), mr.c.contact_b.in_(ids))
    )
    out = {
        row.review_id: ReviewDecision(
            row.contact_a, row.contact_b, row.decision, split_out=row.kind == "split"
        )
        for row in conn.execute(q)
    }
    return [out[k] for k in sorted(out)]


def contacts_of_leads(conn: Connection, lead_ids: set[str]) -> list[tuple[Contact, str]]:
    c, lk = t.contacts, t.lead_links
    if not lead_ids:
        return []
    keys = key_table(conn, lead_ids, "lead_keys")
    q = (
        select(c, lk.c.lead_id)
        .join(lk, lk.c.contact_id == c.c.contact_id)
        .join(keys, keys.c.k == lk.c.lead_id)
        .order_by(lk.c.lead_id, c.c.contact_id)
    )
    result = conn.execute(q)
    # Positions once per query, not a mapping per row: this reads the resolution context.
    columns = list(result.keys())
    at = [(name, columns.index(name)) for name in _CONTACT_FIELDS]
    lead_at = len(columns) - 1
    return [
        (_contact_from_values({name: row[i] for name, i in at}), row[lead_at]) for row in result
    ]


def lead_memberships(conn: Connection) -> list[tuple[str, str]]:
    """(contact_id, lead_id) of every published contact."""
    lk = t.lead_links
    return [(r.contact_id, r.lead_id) for r in conn.execute(select(lk.c.contact_id, lk.c.lead_id))]


def contacts_by_id(conn: Connection, contact_ids: Iterable[str]) -> dict[str, Contact]:
    """Whole contacts by id (the members of the leads a chunk changed)."""
    ids = sorted(set(contact_ids))
    if not ids:
        return {}
    c = t.contacts
    keys = key_table(conn, ids, "contact_keys")
    result = conn.execute(select(c).join(keys, keys.c.k == c.c.contact_id))
    columns = list(result.keys())
    at = [(name, columns.index(name)) for name in _CONTACT_FIELDS]
    out = {}
    for row in result:
        contact = _contact_from_values({name: row[i] for name, i in at})
        out[contact.contact_id] = contact
    return out


def data_clock(conn: Connection) -> datetime | None:
    """The data's own clock: the newest received time of a published contact. Never the wall clock.

    Published contacts, not landed raw records: a rebuild that replays the landing runs in order
    then sees the same clock at each step as the runs that first processed them.
    """
    newest = conn.execute(select(func.max(t.contacts.c.received_at))).scalar_one()
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
    if not lead_ids:
        return out
    keys = key_table(conn, lead_ids, "prior_keys")
    q = select(
        ld.c.lead_id,
        ld.c.status,
        o.c.opportunity_id,
        o.c.account_id,
        o.c.created_at,
        o.c.stage,
    ).select_from(
        # The lead's own opportunity: a merged lead's closed one may point here too.
        ld.join(keys, keys.c.k == ld.c.lead_id).outerjoin(
            o, o.c.opportunity_id == ld.c.opportunity_id
        )
    )
    # A lead not (yet) in `leads` — a rebuild recomputing it — still owns its opportunity.
    orphans = select(o.c.lead_id, o.c.opportunity_id, o.c.account_id, o.c.created_at, o.c.stage)
    orphans = orphans.join(keys, keys.c.k == o.c.lead_id)
    with index_joins(conn):
        rows, orphan_rows = conn.execute(q).all(), conn.execute(orphans).all()
    for r in rows:
        created = utc(r.created_at) if r.created_at is not None else None
        out[r.lead_id] = Prior(r.status, r.opportunity_id, r.account_id, created, r.stage)
    for o_row in orphan_rows:
        lead_id = o_row.lead_id
        if lead_id not in out or out[lead_id].opportunity_id is None:
            status = out[lead_id].status if lead_id in out else None
            created = utc(o_row.created_at) if o_row.created_at is not None else None
            out[lead_id] = Prior(
                status, o_row.opportunity_id, o_row.account_id, created, o_row.stage
            )
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
