"""Entity resolution: link contacts to leads (one per real person) and build each lead's golden record."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from transforms.normalize import fold
from transforms.records import Contact, Lead, Link, stable_id

GOLDEN_FIELDS = (
    "first_name",
    "last_name",
    "full_name",
    "email",
    "phone",
    "company",
    "company_key",
    "company_domain",
    "job_title",
    "city",
    "postal_code",
    "country",
)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Links for every contact whose lead is new or changed, golden records, and merges (old→new)."""

    links: list[Link]
    leads: list[Lead]
    merges: list[tuple[str, str]] = field(default_factory=list)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def names_compatible(a: Contact, b: Contact) -> bool:
    """A shared phone links two contacts only if their names do not contradict each other."""
    if not a.name_key or not b.name_key:
        return True
    if a.name_key == b.name_key:
        return True
    la, lb = fold(a.last_name or ""), fold(b.last_name or "")
    fa, fb = fold(a.first_name or ""), fold(b.first_name or "")
    return bool(la and la == lb and fa[:1] == fb[:1]) or bool(fa and fa == fb and not (la and lb))


def _order(c: Contact) -> tuple[str, str]:
    return (c.received_at.isoformat(), c.contact_id)


def golden_record(lead_id: str, members: Sequence[Contact]) -> Lead:
    """Survivorship: per field the most recent non-empty value, remembering which contact gave it."""
    ordered = sorted(members, key=_order)
    values: dict[str, str | None] = {}
    supplied: dict[str, str] = {}
    for f in GOLDEN_FIELDS:
        values[f] = None
        for c in reversed(ordered):
            v = getattr(c, f)
            if v:
                values[f], supplied[f] = v, c.contact_id
                break
    first = ordered[0]
    return Lead(
        lead_id=lead_id,
        **values,
        lead_source=first.source,
        first_seen_at=first.received_at,
        last_seen_at=ordered[-1].received_at,
        contact_count=len(ordered),
        source_count=len({c.source for c in ordered}),
        survivorship=supplied,
    )


def resolve_contacts(new: Sequence[Contact], existing: Sequence[tuple[Contact, str]]) -> Resolution:
    """Match new contacts with each other and with existing leads' contacts by exact keys.

    `existing` holds every contact of every lead that could be affected, with its lead id.
    An existing lead keeps its id; when new evidence joins two leads, the older lead survives.
    """
    uf = _UnionFind()
    lead_of: dict[str, str] = {}
    by_id: dict[str, Contact] = {}
    for c, lead_id in existing:
        by_id[c.contact_id] = c
        lead_of[c.contact_id] = lead_id
        uf.union(c.contact_id, "lead:" + lead_id)
    reason: dict[str, tuple[str, str]] = {}  # contact → (rule, matched contact)
    by_email: dict[str, str] = {}
    by_phone: dict[str, list[str]] = defaultdict(list)
    for c in sorted(by_id.values(), key=_order):
        if c.email_key and not c.email_is_role:
            by_email.setdefault(c.email_key, c.contact_id)
        if c.phone:
            by_phone[c.phone].append(c.contact_id)
    for c in sorted(new, key=_order):
        by_id[c.contact_id] = c
        uf.find(c.contact_id)
        if c.email_key and not c.email_is_role:
            other = by_email.setdefault(c.email_key, c.contact_id)
            if other != c.contact_id:
                uf.union(c.contact_id, other)
                reason.setdefault(c.contact_id, ("email_key", other))
        if c.phone:
            for other in by_phone[c.phone]:
                if names_compatible(c, by_id[other]):
                    uf.union(c.contact_id, other)
                    reason.setdefault(c.contact_id, ("phone_and_name", other))
                    break
            by_phone[c.phone].append(c.contact_id)

    clusters: dict[str, list[Contact]] = defaultdict(list)
    for cid, c in by_id.items():
        clusters[uf.find(cid)].append(c)

    links: list[Link] = []
    leads: list[Lead] = []
    merges: list[tuple[str, str]] = []
    new_ids = {c.contact_id for c in new}
    for members in clusters.values():
        members.sort(key=_order)
        old_leads = sorted({lead_of[c.contact_id] for c in members if c.contact_id in lead_of})
        if old_leads:
            first_seen = {
                lid: min(_order(c) for c in members if lead_of.get(c.contact_id) == lid)
                for lid in old_leads
            }
            survivor = min(old_leads, key=lambda lid: (first_seen[lid], lid))
        else:
            survivor = stable_id("lead", members[0].contact_id)
        merges += [(lid, survivor) for lid in old_leads if lid != survivor]
        for c in members:
            if c.contact_id in new_ids:
                rule, other = reason.get(c.contact_id, ("new_lead", c.contact_id))
                fields = {"email_key": c.email_key, "phone": c.phone, "name_key": c.name_key}
                links.append(
                    Link(
                        c.contact_id,
                        survivor,
                        rule,
                        1.0,
                        {"matched_contact_id": other, "fields": fields},
                    )
                )
            elif lead_of[c.contact_id] != survivor:
                links.append(
                    Link(
                        c.contact_id, survivor, "merge", 1.0, {"merged_from": lead_of[c.contact_id]}
                    )
                )
        if any(c.contact_id in new_ids for c in members) or len(old_leads) > 1:
            leads.append(golden_record(survivor, members))
    links.sort(key=lambda lk: lk.contact_id)
    leads.sort(key=lambda ld: ld.lead_id)
    return Resolution(links=links, leads=leads, merges=sorted(merges))
