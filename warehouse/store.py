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

from sqlalchemy import Connection, and_, case, delete, exists, func, not_, or_, select

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
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _count_existing(conn: Connection, raw_ids: list[str]) -> int:
    n = 0
    for chunk in in_chunks(set(raw_ids)):
        n += conn.execute(
            select(func.count()).where(t.raw_contacts.c.raw_id.in_(chunk))
        ).scalar_one()
    return n


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
    if landed_by is not None:
        q = q.where(r.c.run_id == landed_by)
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


def converted_leads(conn: Connection, lead_ids: set[str]) -> dict[str, tuple[str, str, datetime]]:
    """lead_id → (opportunity_id, account_id, created_at) for leads already converted."""
    o = t.opportunities
    out: dict[str, tuple[str, str, datetime]] = {}
    for chunk in in_chunks(sorted(lead_ids)):
        q = select(o.c.lead_id, o.c.opportunity_id, o.c.account_id, o.c.created_at).where(
            o.c.lead_id.in_(chunk)
        )
        for row in conn.execute(q):
            out[row.lead_id] = (row.opportunity_id, row.account_id, utc(row.created_at))
    return out


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
    conn: Connection, name: str, run_id: str, now: datetime, ttl: timedelta
) -> dict[str, Any] | None:
    """Take the lock `name` for `run_id`; None when taken, else the holder's row.

    Call in a transaction of its own: the row is the lock, so it must be committed to be seen by
    other runs. An expired lock (its holder died) is taken over.
    """
    lk = t.pipeline_locks
    conn.execute(delete(lk).where(and_(lk.c.name == name, lk.c.expires_at < now)))
    upsert(
        conn,
        lk,
        [{"name": name, "run_id": run_id, "acquired_at": now, "expires_at": now + ttl}],
        update=False,
    )
    row = conn.execute(select(lk).where(lk.c.name == name)).first()
    if row is None:  # pragma: no cover - the row was just written in this transaction
        raise RuntimeError(f"lock {name!r} vanished")
    return None if row.run_id == run_id else dict(row._mapping)


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
DERIVED_TABLES = ("contacts", "lead_links", "lead_merges", "leads", "accounts", "opportunities")


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


def clear_derived(conn: Connection) -> None:
    """Forget every derived row so all landed raw records are pending again (same transaction)."""
    for name in DERIVED_TABLES:
        conn.execute(delete(t.metadata.tables[name]))
    conn.execute(delete(t.rejects).where(t.rejects.c.stage != "extract"))


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
    found: set[str] = set()
    for chunk in in_chunks(sorted(set(hashes))):
        found.update(conn.execute(select(ts.c.key_hash).where(ts.c.key_hash.in_(chunk))).scalars())
    return found


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
    for the sales figures, without the person.
    """
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
    for chunk in in_chunks(sorted(lead_ids)):
        counts["opportunities"] += conn.execute(
            o.update().where(o.c.lead_id.in_(chunk)).values(name=ERASED, primary_contact_id=ERASED)
        ).rowcount
    a = t.accounts
    person_accounts = [
        row.account_id
        for chunk in in_chunks(sorted(lead_ids))
        for row in conn.execute(
            select(t.leads.c.account_id).where(
                and_(t.leads.c.lead_id.in_(chunk), t.leads.c.account_id.is_not(None))
            )
        )
    ]
    for chunk in in_chunks(person_accounts):
        conn.execute(
            a.update()
            .where(and_(a.c.account_id.in_(chunk), a.c.kind == "person"))
            .values(name=ERASED, domain=None)
        )
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
_HANDLED = set(t.DATA_TABLES) - {"source_cursors"}


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
    return _count_existing(conn, list(raw_ids))


def scrub_raw(conn: Connection, raw_ids: Sequence[str]) -> None:
    """Empty the payload of raw records that belong to an erased person; the row (and its id) stay."""
    r = t.raw_contacts
    empty = "{}"
    for chunk in in_chunks(sorted(set(raw_ids))):
        conn.execute(
            r.update().where(r.c.raw_id.in_(chunk)).values(payload=empty, content_hash=_sha(empty))
        )
