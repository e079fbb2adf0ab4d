"""Entity resolution: link contacts to leads (one per real person) and build each lead's golden record.

A cascade: exact keys (email key; phone with a compatible name), then Fellegi–Sunter scores on
blocked pairs, then constrained clustering (a cannot-link or two person emails without strong
name evidence keep clusters apart), then survivorship per field.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from transforms.match import (
    EXACT_KEYS,
    Features,
    MatchSettings,
    block_keys,
    compare,
    features,
    probability,
)
from transforms.records import Contact, Lead, Link, stable_id

MUST_LINK, CANNOT_LINK = "must_link", "cannot_link"


@dataclass(frozen=True, slots=True)
class ReviewPair:
    """A grey-zone pair that a person should decide; decisions come back as ReviewDecision."""

    contact_a: str
    contact_b: str
    score: float
    evidence: dict[str, Any]

    @property
    def review_id(self) -> str:
        return review_id(self.contact_a, self.contact_b)


@dataclass(frozen=True, slots=True)
class ReviewDecision:
    contact_a: str
    contact_b: str
    decision: str  # MUST_LINK or CANNOT_LINK


def review_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return stable_id("rev", lo, hi)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Links for every contact whose lead is new or changed, golden records, merges (old→new),
    grey-zone pairs for review, and the leads a cannot-link decision split off (new, from)."""

    links: list[Link]
    leads: list[Lead]
    merges: list[tuple[str, str]] = field(default_factory=list)
    reviews: list[ReviewPair] = field(default_factory=list)
    splits: list[tuple[str, str]] = field(default_factory=list)  # (new lead, split from)


# Per field: how the golden value is chosen. Fields in one group come from the same contact.
SURVIVORSHIP: tuple[tuple[tuple[str, ...], str], ...] = (
    (("first_name", "last_name", "full_name"), "most_frequent"),
    (("email",), "most_recent"),
    (("phone",), "most_frequent"),
    (("company", "company_key", "company_domain"), "source_priority"),
    (("job_title",), "most_recent"),
    (("city", "postal_code", "country"), "source_priority"),
)
GOLDEN_FIELDS = tuple(f for group, _ in SURVIVORSHIP for f in group)
# Typed-in forms, sheets and address cards beat a mail signature or a From header for company
# and address.
SOURCE_PRIORITY = {"webform": 0, "spreadsheet": 1, "vcard": 1, "email": 2}


def names_compatible(a: Contact, b: Contact) -> bool:
    """A shared phone links two contacts only if their names do not contradict each other."""
    if not a.name_key or not b.name_key or a.name_key == b.name_key:
        return True
    fa, fb = features(a), features(b)
    if fa.last and fa.last == fb.last:
        return fa.first[:1] == fb.first[:1] or not (fa.first and fb.first)
    # Swapped order: "Işık İsmail" against "İsmail Işık".
    return bool(fa.first and fa.first == fb.last and fa.last == fb.first)


def _order(c: Contact) -> tuple[datetime, str]:
    return (c.received_at, c.contact_id)


class _Clusters:
    """Union-find over contact indices that refuses unions breaking a constraint."""

    def __init__(self, n: int, emails: Sequence[str], bans: dict[int, set[int]]) -> None:
        self.parent = list(range(n))
        self.email_of = emails
        self.emails: dict[int, frozenset[str]] = {}  # person emails of merged clusters
        self.bans = bans  # contact index → contact indices it must never share a cluster with
        self.banned: dict[int, set[int]] = {i: set(v) for i, v in bans.items()}

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def _emails(self, root: int) -> frozenset[str] | None:
        got = self.emails.get(root)
        if got is None and self.email_of[root]:
            return frozenset((self.email_of[root],))
        return got

    def union(self, a: int, b: int, strong_name: bool) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        ea, eb = self._emails(ra), self._emails(rb)
        if ea and eb and not (ea & eb) and not strong_name:
            return False
        for r1, r2 in ((ra, rb), (rb, ra)):
            if any(self.find(x) == r2 for x in self.banned.get(r1, ())):
                return False
        lo, hi = (ra, rb) if ra < rb else (rb, ra)
        self.parent[hi] = lo
        if ea or eb:
            self.emails[lo] = (ea or frozenset()) | (eb or frozenset())
        if hi in self.banned:
            self.banned.setdefault(lo, set()).update(self.banned.pop(hi))
        return True


def resolve_contacts(
    new: Sequence[Contact],
    existing: Sequence[tuple[Contact, str]],
    decisions: Sequence[ReviewDecision] = (),
    settings: MatchSettings | None = None,
    common_keys: frozenset[str] = frozenset(),
) -> Resolution:
    """Match new contacts with each other and with the existing leads' contacts.

    `existing` holds every contact of every lead that could be affected, with its lead id.
    `common_keys` are blocking keys known to be too common (counted over the whole warehouse,
    of which `existing` holds only a part): no pair is compared for sharing one of them.
    An existing lead keeps its id; when new evidence joins two leads, the older lead survives.
    Review decisions are honoured: must-link pairs are joined, cannot-link pairs never are.
    """
    cfg = settings or MatchSettings()
    existing, new, split = _unpin_split_leads(existing, new, decisions)
    old = sorted(existing, key=lambda x: _order(x[0]))
    seen = {c.contact_id for c, _ in old}
    fresh = sorted((c for c in new if c.contact_id not in seen), key=_order)
    contacts = [c for c, _ in old] + fresh
    n_old = len(old)
    index = {c.contact_id: i for i, c in enumerate(contacts)}
    feats = [features(c) for c in contacts]
    bans: dict[int, set[int]] = defaultdict(set)
    musts: list[tuple[int, int]] = []
    for d in decisions:
        ia, ib = index.get(d.contact_a), index.get(d.contact_b)
        if ia is None or ib is None:
            continue
        if d.decision == CANNOT_LINK:
            bans[ia].add(ib)
            bans[ib].add(ia)
        elif d.decision == MUST_LINK:
            musts.append((ia, ib))
    cl = _Clusters(len(contacts), [f.email_key for f in feats], bans)
    reason: dict[int, tuple[str, float, int, dict[str, Any]]] = {}

    def join(
        i: int, j: int, rule: str, weight: float, levels: dict[str, Any], strong: bool
    ) -> bool:
        if not cl.union(i, j, strong):
            return False
        for x, y in ((i, j), (j, i)):
            if x >= n_old and x not in reason:
                reason[x] = (rule, weight, y, levels)
        return True

    # Existing leads stay whole: their contacts were linked by earlier runs.
    first_of_lead: dict[str, int] = {}
    for i, (_, lead_id) in enumerate(old):
        j = first_of_lead.setdefault(lead_id, i)
        if j != i:
            cl.union(j, i, True)
    for i, j in musts:
        cl.union(i, j, True)
        for x, y in ((i, j), (j, i)):
            if x >= n_old:
                reason.setdefault(x, (MUST_LINK, 1.0, y, {"decision": MUST_LINK}))

    candidates = _scored_pairs(feats, n_old, cfg, common_keys)
    # Exact keys first, then the strongest probabilistic evidence: a weak pair can never
    # chain two clusters that a stronger pair's constraint has already kept apart.
    reviews: list[tuple[int, int, float, dict[str, Any]]] = []
    for weight, i, j, rule, levels, strong in candidates:
        if rule == "phone_and_name" and not names_compatible(contacts[i], contacts[j]):
            continue
        if rule != "probabilistic" or weight >= cfg.link_weight:
            if join(i, j, rule, weight, levels, strong or rule == "email_key"):
                continue
        if weight >= cfg.review_weight and cl.find(i) != cl.find(j):
            reviews.append((i, j, weight, levels))

    resolution = _build(contacts, n_old, old, cl, reason, reviews, cfg)
    return _renamed_splits(resolution, split, {lead_id for _, lead_id in old})


def _unpin_split_leads(
    existing: Sequence[tuple[Contact, str]],
    new: Sequence[Contact],
    decisions: Sequence[ReviewDecision],
) -> tuple[list[tuple[Contact, str]], list[Contact], dict[str, list[Contact]]]:
    """A lead holding both contacts of a cannot-link decision is split: its contacts are
    resolved again like new ones (so the decision keeps them apart), and the lead id goes to
    the part holding its earliest contact (`_renamed_splits`)."""
    lead_of = {c.contact_id: lead_id for c, lead_id in existing}
    broken = {
        lead_of[d.contact_a]
        for d in decisions
        if d.decision == CANNOT_LINK
        and d.contact_a in lead_of
        and lead_of[d.contact_a] == lead_of.get(d.contact_b)
    }
    if not broken:
        return list(existing), list(new), {}
    split: dict[str, list[Contact]] = defaultdict(list)
    kept: list[tuple[Contact, str]] = []
    for c, lead_id in existing:
        if lead_id in broken:
            split[lead_id].append(c)
        else:
            kept.append((c, lead_id))
    return kept, [*new, *(c for cs in split.values() for c in cs)], dict(split)


def _renamed_splits(
    res: Resolution, split: dict[str, list[Contact]], pinned: set[str]
) -> Resolution:
    """Give each split lead's id back to the part holding its earliest contact; the other parts
    are new leads, recorded in `splits` as (new lead, the lead it was split from). `pinned` are
    the other existing leads: one of them that took the earliest contact absorbs the split lead."""
    if not split:
        return res
    lead_of = {lk.contact_id: lk.lead_id for lk in res.links}
    rename: dict[str, str] = {}
    merged: list[tuple[str, str]] = []
    for old_id in sorted(split):
        target = lead_of[min(split[old_id], key=_order).contact_id]
        if target not in pinned and target not in rename:
            rename[target] = old_id
        else:  # its earliest contact joined another existing lead: the split lead merges into it
            merged.append((old_id, target))
    splits = sorted(
        {
            (rename.get(lead_of[c.contact_id], lead_of[c.contact_id]), old_id)
            for old_id, cs in split.items()
            for c in cs
            if rename.get(lead_of[c.contact_id]) != old_id
        }
    )

    def renamed(lead_id: str) -> str:
        return rename.get(lead_id, lead_id)

    links = [replace(lk, lead_id=renamed(lk.lead_id)) for lk in res.links]
    leads = sorted(
        (replace(ld, lead_id=renamed(ld.lead_id)) for ld in res.leads), key=lambda ld: ld.lead_id
    )
    merges = sorted(
        {(renamed(a), renamed(b)) for a, b in [*res.merges, *merged] if renamed(a) != renamed(b)}
    )
    return Resolution(links, leads, merges, res.reviews, splits)


def _scored_pairs(
    feats: Sequence[Features],
    n_old: int,
    cfg: MatchSettings,
    common_keys: frozenset[str] = frozenset(),
) -> list[tuple[float, int, int, str, dict[str, Any], bool]]:
    """Every blocked pair with at least one new contact, scored, strongest first."""
    # Only blocks holding a new contact produce pairs: an existing contact's other keys are
    # not collected (the blocks that are kept, and their order, stay the same).
    wanted = {key for f in feats[n_old:] for key in block_keys(f)}
    blocks: dict[str, list[int]] = defaultdict(list)
    for i, f in enumerate(feats):
        for key in block_keys(f):
            if key in wanted:
                blocks[key].append(i)
    done: set[int] = set()
    n = len(feats)
    out: list[tuple[float, int, int, str, dict[str, Any], bool]] = []
    for key, members in blocks.items():
        if len(members) < 2 or members[-1] < n_old:
            continue
        exact = key[:2] in EXACT_KEYS
        if not exact and (len(members) > cfg.max_block_size or key in common_keys):
            continue  # too common a key to say anything; other blocks carry these pairs
        rule = "email_key" if key[:2] == "e:" else "phone_and_name" if exact else "probabilistic"
        pairs: Iterable[tuple[int, int]]
        if exact:
            # A shared key links each contact to the first one seen with it: a star, not a clique.
            pairs = ((members[0], j) for j in members[1:] if j >= n_old or members[0] >= n_old)
        else:
            pairs = (
                (members[a], members[b])
                for b in range(1, len(members))
                if members[b] >= n_old
                for a in range(b)
            )
        for i, j in pairs:
            code = i * n + j
            if code in done:
                continue
            done.add(code)
            weight, levels, strong = compare(feats[i], feats[j])
            if exact:
                weight = max(weight, cfg.link_weight)
            elif weight < cfg.review_weight:
                continue
            out.append((weight, i, j, rule, levels, strong))
    rank = {"email_key": 0, "phone_and_name": 1, "probabilistic": 2}
    out.sort(key=lambda p: (rank[p[3]], -p[0], p[1], p[2]))
    return out


def _build(
    contacts: Sequence[Contact],
    n_old: int,
    old: Sequence[tuple[Contact, str]],
    cl: _Clusters,
    reason: dict[int, tuple[str, float, int, dict[str, Any]]],
    reviews: Sequence[tuple[int, int, float, dict[str, Any]]],
    cfg: MatchSettings,
) -> Resolution:
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in range(len(contacts)):
        clusters[cl.find(i)].append(i)
    links: list[Link] = []
    leads: list[Lead] = []
    merges: list[tuple[str, str]] = []
    for members in clusters.values():
        has_new = members[-1] >= n_old
        old_leads: dict[str, int] = {}
        for i in members:
            if i < n_old:
                old_leads.setdefault(old[i][1], i)  # members are in time order: first sighting
        if not has_new and len(old_leads) < 2:
            continue
        if old_leads:
            survivor = min(old_leads, key=lambda lid: (old_leads[lid], lid))
        else:
            survivor = stable_id("lead", contacts[members[0]].contact_id)
        merges += [(lid, survivor) for lid in old_leads if lid != survivor]
        for i in members:
            c = contacts[i]
            if i >= n_old:
                rule, weight, other, levels = reason.get(i, ("new_lead", 0.0, i, {}))
                evidence = {
                    "matched_contact_id": contacts[other].contact_id,
                    "weight": round(weight, 2),
                    "fields": levels,
                }
                score = (
                    1.0 if rule in ("new_lead", MUST_LINK) else probability(weight, cfg.prior_log2)
                )
                links.append(Link(c.contact_id, survivor, rule, round(score, 6), evidence))
            elif old[i][1] != survivor:
                links.append(Link(c.contact_id, survivor, "merge", 1.0, {"merged_from": old[i][1]}))
        leads.append(golden_record(survivor, [contacts[i] for i in members]))
    review_pairs = [
        ReviewPair(
            min(contacts[i].contact_id, contacts[j].contact_id),
            max(contacts[i].contact_id, contacts[j].contact_id),
            score=round(w, 2),
            evidence={"fields": levels, "probability": round(probability(w, cfg.prior_log2), 6)},
        )
        for i, j, w, levels in reviews
        if cl.find(i) != cl.find(j)
    ]
    links.sort(key=lambda lk: lk.contact_id)
    leads.sort(key=lambda ld: ld.lead_id)
    review_pairs.sort(key=lambda r: (r.contact_a, r.contact_b))
    return Resolution(links=links, leads=leads, merges=sorted(merges), reviews=review_pairs)


def _ranked(members: Sequence[Contact], fields: tuple[str, ...], policy: str) -> list[Contact]:
    """The contacts holding any field of a group, best first under the group's policy."""
    having = [c for c in members if any(getattr(c, f) for f in fields)]
    if len(having) < 2:
        return having

    def value(c: Contact) -> Any:  # the group's leading value that this contact holds
        return next(v for f in fields if (v := getattr(c, f)))

    if policy == "most_frequent":
        counts: dict[Any, int] = defaultdict(int)
        for c in having:
            counts[value(c)] += 1
        return sorted(having, key=lambda c: (counts[value(c)], _order(c)), reverse=True)
    if policy == "source_priority":
        return sorted(
            having,
            key=lambda c: (
                SOURCE_PRIORITY.get(c.source_kind, 9),
                -c.received_at.timestamp(),
                c.contact_id,
            ),
        )
    if fields == ("email",):
        persons = [c for c in having if not c.email_is_role]
        rest = [c for c in having if c.email_is_role]
        return sorted(persons, key=_order, reverse=True) + sorted(rest, key=_order, reverse=True)
    return sorted(having, key=_order, reverse=True)


def _survive(
    ranked: Sequence[Contact], fields: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, str]]:
    """A group's golden values: the best contact's, and each field it lacks from the next best
    contact that has it and contradicts nothing already chosen (no Berlin under Austria)."""
    values: dict[str, Any] = {}
    supplied: dict[str, str] = {}
    for c in ranked:
        own = {f: v for f in fields if (v := getattr(c, f))}
        if any(values.get(f) not in (None, own[f]) for f in own):
            continue
        for f, v in own.items():
            if f not in values:
                values[f] = v
                supplied[f] = c.contact_id
        if len(values) == len(fields):
            break
    return values, supplied


def golden_record(lead_id: str, members: Sequence[Contact]) -> Lead:
    """Survivorship per field group, remembering which contact supplied each golden value.

    Every golden value comes from a contact that holds it: a group's best contact (by the
    group's policy) supplies what it has, and a field it lacks comes from the next best contact
    that has it without contradicting the values chosen.
    """
    ordered = sorted(members, key=_order) if len(members) > 1 else members
    values: dict[str, Any] = dict.fromkeys(GOLDEN_FIELDS)
    supplied: dict[str, str] = {}
    for fields, policy in SURVIVORSHIP:
        got, who = _survive(_ranked(ordered, fields, policy), fields)
        values.update(got)
        supplied.update(who)
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
