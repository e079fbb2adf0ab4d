"""Reads and writes of the pipeline's tables; every function takes a Connection, the caller owns the transaction."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, and_, bindparam, case, delete, exists, func, not_, or_, select

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
from transforms.resolve import CANNOT_LINK, MUST_LINK, ReviewDecision, ReviewPair, review_id
from warehouse import matching
from warehouse import schema as t
from warehouse.load import count_present, delete_keys, in_chunks, key_table, upsert

BINDING = (MUST_LINK, CANNOT_LINK)  # the decisions a review row can hold that bind the resolver


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
    new = upsert(conn, t.raw_contacts, rows, update=False)
    reject_rows = [
        _reject_row(
            Reject(j.source, j.source_record_id, "extract", j.code, j.message, j.raw), run_id
        )
        for j in rejects
    ]
    upsert(conn, t.rejects, reject_rows, update=False)
    if move_cursor and cursor is not None:
        upsert(conn, t.source_cursors, [{"source": source, "cursor": cursor, "run_id": run_id}])
    return new


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# ---- reading what is pending ---------------------------------------------------------------


def iter_pending_raw(
    conn: Connection, batch_size: int = 50_000, landed_by: str | None = None
) -> Iterator[list[RawRow]]:
    """Raw records that have neither become a contact nor been rejected at normalize.

    `landed_by` keeps only those first landed by that run (a rebuild replays runs in order).
    """
    r = t.raw_contacts
    done_contact = exists().where(t.contacts.c.raw_id == r.c.raw_id)
    done_reject = exists().where(
        and_(t.rejects.c.raw_id == r.c.raw_id, t.rejects.c.stage == "normalize")
    )
    where = not_(or_(done_contact, done_reject))
    if landed_by is not None:
        where = and_(where, r.c.run_id == landed_by)
    yield from _iter_raw_where(conn, where, batch_size)


def iter_raw(
    conn: Connection, raw_ids: Sequence[str], batch_size: int = 50_000
) -> Iterator[list[RawRow]]:
    """The named raw records that have not become a contact yet (a replay's input)."""
    r = t.raw_contacts
    done_contact = exists().where(t.contacts.c.raw_id == r.c.raw_id)
    batch: list[RawRow] = []
    for chunk in in_chunks(sorted(set(raw_ids))):
        for rows in _iter_raw_where(conn, and_(r.c.raw_id.in_(chunk), not_(done_contact))):
            batch += rows
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _iter_raw_where(
    conn: Connection, where: Any, batch_size: int = 50_000
) -> Iterator[list[RawRow]]:
    r = t.raw_contacts
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


# ---- quarantine ----------------------------------------------------------------------------

QUARANTINED, REPLAYED = "open", "replayed"


def quarantine(
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
    """Decided review pairs that touch any of `contact_ids` (revoked ones bind nothing)."""
    mr = t.match_review
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


def open_reviews(conn: Connection, limit: int = 100) -> list[dict[str, Any]]:
    """Grey-zone pairs still waiting for a person, strongest first."""
    mr = t.match_review
    q = (
        select(mr)
        .where(mr.c.decision == "open")
        .order_by(mr.c.score.desc(), mr.c.review_id)
        .limit(limit)
    )
    return [dict(row._mapping) for row in conn.execute(q)]


def decide_review(
    conn: Connection, review_id: str, decision: str, decided_by: str, decided_at: datetime
) -> None:
    """Record a person's decision on a pair; the next run applies it and every run honours it."""
    if decision not in (MUST_LINK, CANNOT_LINK):
        raise ValueError(f"decision must be {MUST_LINK} or {CANNOT_LINK}, not {decision!r}")
    mr = t.match_review
    done = conn.execute(
        mr.update()
        .where(mr.c.review_id == review_id)
        .values(decision=decision, decided_by=decided_by, decided_at=decided_at, applied=False)
    )
    if done.rowcount != 1:
        raise KeyError(f"no review pair {review_id}")


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
    for r in conn.execute(q):
        created = utc(r.created_at) if r.created_at is not None else None
        out[r.lead_id] = Prior(r.status, r.opportunity_id, r.account_id, created, r.stage)
    # A lead not (yet) in `leads` — a rebuild recomputing it — still owns its opportunity.
    orphans = select(o.c.lead_id, o.c.opportunity_id, o.c.account_id, o.c.created_at, o.c.stage)
    orphans = orphans.join(keys, keys.c.k == o.c.lead_id)
    for o_row in conn.execute(orphans):
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


# ---- publishing ----------------------------------------------------------------------------


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _row(obj: Any) -> dict[str, Any]:
    d = {name: getattr(obj, name) for name in _field_names(type(obj))}
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


def publish(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """Merge a run's results into the live tables; call inside one transaction."""
    upsert(conn, t.contacts, [_row(c) for c in ps.contacts])
    upsert(conn, t.rejects, [_reject_row(j, run_id) for j in ps.rejects], update=False)
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


# ---- run log and counts --------------------------------------------------------------------


def start_run(
    conn: Connection, run_id: str, flow: str, params: dict[str, Any], holder: str | None = None
) -> None:
    """A run begins; `holder` (host:pid:start of its process) lets a later run tell it died."""
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
                "stats": {"holder": holder} if holder else {},
                "error": None,
            }
        ],
    )


def running_runs(conn: Connection) -> list[tuple[str, str | None]]:
    """(run id, holder) of every run still marked running."""
    r = t.pipeline_runs
    rows = conn.execute(select(r.c.run_id, r.c.stats).where(r.c.status == "running"))
    return [(run_id, (stats or {}).get("holder")) for run_id, stats in rows]


def fail_run(conn: Connection, run_id: str, why: str) -> None:
    """Mark a run that is still marked running as failed (its process is known to be dead)."""
    r = t.pipeline_runs
    conn.execute(
        r.update()
        .where(and_(r.c.run_id == run_id, r.c.status == "running"))
        .values(status="failed", finished_at=datetime.now(UTC), error=why)
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


# ---- locks ---------------------------------------------------------------------------------


def try_lock(
    conn: Connection,
    name: str,
    run_id: str,
    now: datetime,
    ttl: timedelta,
    holder: str | None = None,
) -> dict[str, Any] | None:
    """Take the lock `name` for `run_id`; None when taken, else the holder's row.

    Call in a transaction of its own: the row is the lock, so it must be committed to be seen by
    other runs. An expired lock (its holder died) is taken over.
    """
    lk = t.pipeline_locks
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.expires_at < now)))
    mine = {"name": name, "run_id": run_id, "acquired_at": now, "expires_at": now + ttl}
    upsert(conn, lk, [{**mine, "holder": holder}], update=False)
    row = conn.execute(select(lk).where(lk.c.name == name)).first()
    if row is None:  # pragma: no cover - the row was just written in this transaction
        raise RuntimeError(f"lock {name!r} vanished")
    return None if row.run_id == run_id else dict(row._mapping)


def break_lock(conn: Connection, name: str, run_id: str, why: str) -> None:
    """Take the lock `name` away from `run_id`, whose process is known to be dead; its run,
    if still marked running, is marked failed with `why`."""
    lk, runs = t.pipeline_locks, t.pipeline_runs
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.run_id == run_id)))
    conn.execute(
        runs.update()
        .where(and_(runs.c.run_id == run_id, runs.c.status == "running"))
        .values(status="failed", finished_at=datetime.now(UTC), error=why)
    )


def refresh_lock(conn: Connection, name: str, run_id: str, now: datetime, ttl: timedelta) -> None:
    lk = t.pipeline_locks
    conn.execute(
        lk.update()
        .where(and_(lk.c.name == name, lk.c.run_id == run_id))
        .values(expires_at=now + ttl)
    )


def release_lock(conn: Connection, name: str, run_id: str) -> None:
    lk = t.pipeline_locks
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.run_id == run_id)))


def held_locks(conn: Connection) -> list[dict[str, Any]]:
    lk = t.pipeline_locks
    return [dict(r._mapping) for r in conn.execute(select(lk).order_by(lk.c.name))]


# ---- rebuild -------------------------------------------------------------------------------

# Everything derived from raw_contacts; a rebuild empties these and processes every raw record.
DERIVED_TABLES = (
    "contacts",
    "contact_features",
    "contact_blocks",
    "match_term_counts",
    "lead_links",
    "lead_merges",
    "lead_splits",
    "leads",
    "accounts",
    "opportunities",
)


def landing_runs(conn: Connection) -> list[str]:
    """The runs that first landed raw records, in the order they started."""
    r, pr = t.raw_contacts, t.pipeline_runs
    q = (
        select(r.c.run_id, func.min(pr.c.started_at))
        .join(pr, pr.c.run_id == r.c.run_id, isouter=True)
        .group_by(r.c.run_id)
    )
    earliest = datetime.min.replace(tzinfo=UTC)
    rows = [(utc(started) if started else earliest, run_id) for run_id, started in conn.execute(q)]
    return [run_id for _, run_id in sorted(rows)]


# Conversion is sticky: a rebuild recomputes the leads but never removes an opportunity (nor the
# account it belongs to); the leads re-find their opportunities by lead id (`prior_states`).
KEPT_BY_REBUILD = ("accounts", "opportunities")


def clear_derived(conn: Connection) -> None:
    """Forget every derived row so all landed raw records are pending again (same transaction);
    opportunities and their accounts stay."""
    for name in DERIVED_TABLES:
        if name not in KEPT_BY_REBUILD:
            conn.execute(delete(t.metadata.tables[name]))
    conn.execute(delete(t.rejects).where(t.rejects.c.stage != "extract"))
    matching.mark_index_current(conn)  # the contacts published again bring their index along


# ---- applied rules -------------------------------------------------------------------------


def applied_rules(conn: Connection) -> list[dict[str, Any]]:
    """The rules `rebuild --rules --apply` applied, newest first."""
    ar = t.applied_rules
    q = select(ar).order_by(ar.c.applied_at.desc(), ar.c.rules_version)
    return [dict(r._mapping) for r in conn.execute(q)]


def record_applied_rules(
    conn: Connection,
    version: str,
    sha256: str,
    text: str,
    path: str | None,
    run_id: str,
    at: datetime,
) -> None:
    """Record (or re-date) the rules applied under `version`; the caller checked the hash."""
    upsert(
        conn,
        t.applied_rules,
        [
            {
                "rules_version": version,
                "sha256": sha256,
                "rules_text": text,
                "path": path,
                "applied_at": at,
                "run_id": run_id,
            }
        ],
    )


# ---- erasure -------------------------------------------------------------------------------

ERASED = "erased"


def person_key_hash(kind: str, value: str) -> str:
    """The hash a tombstone keeps: of the normalized email key or E.164 phone, never the value."""
    return hashlib.sha256(f"leadflow-erasure\x1f{kind}\x1f{value}".encode()).hexdigest()


def contact_key_hashes(c: Contact) -> list[str]:
    out = []
    if c.email_key:
        out.append(person_key_hash("email", c.email_key))
    if c.phone:
        out.append(person_key_hash("phone", c.phone))
    return out


def tombstoned(conn: Connection, hashes: Iterable[str]) -> set[str]:
    ts = t.erasure_tombstones
    if conn.execute(select(ts.c.key_hash).limit(1)).first() is None:
        return set()  # nobody was ever erased: nothing to look up
    keys = key_table(conn, hashes, "tombstone_keys")
    return set(conn.execute(select(ts.c.key_hash).join(keys, keys.c.k == ts.c.key_hash)).scalars())


def lift_tombstones(conn: Connection, hashes: Iterable[str]) -> None:
    delete_keys(conn, t.erasure_tombstones, "key_hash", sorted(set(hashes)))


def find_person(conn: Connection, *, email_key: str | None, lead_id: str | None) -> set[str]:
    """The lead ids of a person named by their email key or a lead id (merged ids followed)."""
    found: set[str] = set()
    if lead_id:
        m = t.lead_merges
        into = conn.execute(
            select(m.c.into_lead_id).where(m.c.merged_lead_id == lead_id)
        ).scalar_one_or_none()
        found.update(
            conn.execute(select(t.leads.c.lead_id).where(t.leads.c.lead_id == (into or lead_id)))
            .scalars()
            .all()
        )
    if email_key:
        c, lk = t.contacts, t.lead_links
        q = (
            select(lk.c.lead_id)
            .join(c, c.c.contact_id == lk.c.contact_id)
            .where(c.c.email_key == email_key)
        )
        found.update(conn.execute(q).scalars())
    return found


def _raw_ids_mentioning(conn: Connection, values: Sequence[str]) -> set[str]:
    r = t.raw_contacts
    out: set[str] = set()
    for v in values:
        out.update(
            conn.execute(
                select(r.c.raw_id).where(r.c.payload.contains(v, autoescape=True))
            ).scalars()
        )
    return out


def merged_into(conn: Connection, lead_ids: set[str]) -> set[str]:
    """Every lead id ever merged into these leads, following merges of merges."""
    m = t.lead_merges
    found: set[str] = set()
    frontier = set(lead_ids)
    while frontier:
        step: set[str] = set()
        for chunk in in_chunks(sorted(frontier)):
            step.update(
                conn.execute(
                    select(m.c.merged_lead_id).where(m.c.into_lead_id.in_(chunk))
                ).scalars()
            )
        frontier = step - found - lead_ids
        found |= frontier
    return found


def erase_person(
    conn: Connection,
    lead_ids: set[str],
    *,
    email: str | None,
    email_key: str | None,
    now: datetime,
) -> dict[str, int]:
    """Erase the people behind `lead_ids` (and `email`) everywhere, leaving hashed tombstones.

    Call in one transaction. The email as the operator gave it also finds raw records and rejects
    that never became a contact of those leads, and is tombstoned even when nothing was found yet.
    Raw rows stay, emptied, so the same record landed again stays suppressed; opportunities stay
    for the sales figures, without the person (duplicates too, under their merged lead ids).
    """
    merged = merged_into(conn, lead_ids)
    contacts = [c for c, _ in contacts_of_leads(conn, lead_ids)]
    hashes = {h for c in contacts for h in contact_key_hashes(c)}
    if email_key:
        hashes.add(person_key_hash("email", email_key))
    extra_values = [v for v in (email, email_key) if v]
    values = sorted(
        {v for c in contacts for v in (c.email, c.email_key, c.phone, c.phone_raw) if v}
        | {v for v in extra_values if v}
    )
    raw_ids = {c.raw_id for c in contacts} | _raw_ids_mentioning(conn, values)
    contact_ids = [c.contact_id for c in contacts]
    counts: dict[str, int] = {"leads": len(lead_ids), "contacts": len(contact_ids)}

    r = t.raw_contacts
    raw_rows: list[Any] = []
    for chunk in in_chunks(sorted(raw_ids)):
        raw_rows += conn.execute(
            select(r.c.raw_id, r.c.source, r.c.source_record_id).where(r.c.raw_id.in_(chunk))
        ).all()
    scrub_raw(conn, sorted(raw_ids))
    counts["raw_contacts"] = len(raw_rows)

    rj = t.rejects
    n_rejects = 0
    for chunk in in_chunks(sorted(raw_ids)):
        n_rejects += conn.execute(delete(rj).where(rj.c.raw_id.in_(chunk))).rowcount
    for v in values:
        n_rejects += conn.execute(delete(rj).where(rj.c.raw.contains(v, autoescape=True))).rowcount
    counts["rejects"] = n_rejects
    # The emptied raw rows are marked done, so they are never processed (nor re-landed) again.
    upsert(
        conn,
        rj,
        [
            _reject_row(
                Reject(
                    row.source,
                    row.source_record_id,
                    "normalize",
                    ERASED,
                    "the person asked to be erased",
                    "",
                    row.raw_id,
                ),
                "erasure",
            )
            for row in raw_rows
        ],
    )

    o = t.opportunities
    counts["opportunities"] = 0
    for chunk in in_chunks(sorted(lead_ids | merged)):
        counts["opportunities"] += conn.execute(
            o.update().where(o.c.lead_id.in_(chunk)).values(name=ERASED, primary_contact_id=ERASED)
        ).rowcount
    a = t.accounts
    person_accounts = {
        row.account_id
        for chunk in in_chunks(sorted(lead_ids))
        for row in conn.execute(
            select(t.leads.c.account_id).where(
                and_(t.leads.c.lead_id.in_(chunk), t.leads.c.account_id.is_not(None))
            )
        )
    }
    for chunk in in_chunks(sorted(lead_ids | merged)):
        person_accounts.update(
            conn.execute(select(o.c.account_id).where(o.c.lead_id.in_(chunk))).scalars()
        )
    for chunk in in_chunks(sorted(person_accounts)):
        conn.execute(
            a.update()
            .where(and_(a.c.account_id.in_(chunk), a.c.kind == "person"))
            .values(name=ERASED, domain=None)
        )
    matching.forget_features(conn, contact_ids)  # their values leave the term counts too
    delete_keys(conn, t.lead_links, "contact_id", contact_ids)
    delete_keys(conn, t.contacts, "contact_id", contact_ids)
    delete_keys(conn, t.lead_merges, "into_lead_id", sorted(lead_ids))
    delete_keys(conn, t.lead_merges, "merged_lead_id", sorted(lead_ids))
    delete_keys(conn, t.leads, "lead_id", sorted(lead_ids))
    counts["other_rows"] = _erase_referencing(conn, lead_ids, set(contact_ids))
    upsert(
        conn,
        t.erasure_tombstones,
        [{"key_hash": h, "kind": "person", "erased_at": now} for h in sorted(hashes)],
    )
    counts["tombstones"] = len(hashes)
    return counts


# Erased explicitly above; any other table is swept by the ids it references.
_HANDLED = {
    "raw_contacts",
    "contacts",
    "contact_features",
    "contact_blocks",
    "leads",
    "lead_links",
    "lead_merges",
    "accounts",
    "opportunities",
    "rejects",
    "erasure_tombstones",
}


def _erase_referencing(conn: Connection, lead_ids: set[str], contact_ids: set[str]) -> int:
    """Rows of any other table (a review queue, say) that point at the erased lead or contacts."""
    n = 0
    for table in t.metadata.sorted_tables:
        if table.name in _HANDLED:
            continue
        for col in table.columns:
            keys = (
                lead_ids
                if col.name.endswith("lead_id")
                else contact_ids
                if col.name.endswith("contact_id")
                else None
            )
            if keys:
                for chunk in in_chunks(sorted(keys)):
                    n += conn.execute(delete(table).where(col.in_(chunk))).rowcount
    return n


# ---- status --------------------------------------------------------------------------------


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


def count_raw(conn: Connection, raw_ids: Iterable[str]) -> int:
    """How many of these raw ids are in the warehouse (a landing's reconciliation)."""
    return count_present(conn, t.raw_contacts, "raw_id", raw_ids)


def scrub_raw(conn: Connection, raw_ids: Sequence[str]) -> None:
    """Empty the payload of raw records that belong to an erased person; the row (and its id) stay."""
    r = t.raw_contacts
    empty = "{}"
    for chunk in in_chunks(sorted(set(raw_ids))):
        conn.execute(
            r.update().where(r.c.raw_id.in_(chunk)).values(payload=empty, content_hash=_sha(empty))
        )
