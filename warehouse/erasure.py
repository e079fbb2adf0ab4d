"""Erasure in the warehouse: tombstones, finding a person's leads, and erasing them everywhere."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, select

from transforms.erasure import ERASED, person_hashes, person_values
from transforms.records import Reject
from warehouse import matching
from warehouse import schema as t
from warehouse.landing import content_hash
from warehouse.load import delete_keys, in_chunks, key_table, upsert
from warehouse.quarantine import reject_row
from warehouse.resolution import contacts_of_leads


def any_tombstones(conn: Connection) -> bool:
    """Whether anybody was ever erased (most warehouses: no, and nothing needs hashing)."""
    ts = t.erasure_tombstones
    return conn.execute(select(ts.c.key_hash).limit(1)).first() is not None


def tombstoned(conn: Connection, hashes: Iterable[str]) -> set[str]:
    ts = t.erasure_tombstones
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
    hashes = person_hashes(contacts, email_key)
    values = person_values(contacts, email, email_key)
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
            reject_row(
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


def scrub_raw(conn: Connection, raw_ids: Sequence[str]) -> None:
    """Empty the payload of raw records that belong to an erased person; the row (and its id) stay."""
    r = t.raw_contacts
    empty = "{}"
    for chunk in in_chunks(sorted(set(raw_ids))):
        conn.execute(
            r.update()
            .where(r.c.raw_id.in_(chunk))
            .values(payload=empty, content_hash=content_hash(empty))
        )
