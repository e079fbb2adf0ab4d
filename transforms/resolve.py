"""Entity resolution: which lead each new contact belongs to, and each lead's golden record.

The pairs to compare come from blocking (`transforms.match`), their scores from the trained
model (`transforms.scoring`, Splink); what Splink does not do is here: stable lead ids (an
existing lead keeps its id, a merge is recorded), clustering under constraints (a cannot-link
decision, two different person mailboxes without strong name evidence, two birth dates that
cannot be one), the review queue, and survivorship per field.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.match import MATCH_SCHEMA, MatchSettings, candidate_pairs, match_table
from transforms.records import Contact, Lead, Link, stable_id
from transforms.scoring import (
    TF_COLUMNS,
    Engine,
    Model,
    default_model,
    evidence,
    score_pairs,
    term_frequencies,
)

MUST_LINK, CANNOT_LINK = "must_link", "cannot_link"
MODEL_RULE = "model"  # a link the model's score made


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
    # a steward's "not this person": contact_a is taken out of its lead, which stays the others'
    split_out: bool = False


def review_id(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return stable_id("rev", lo, hi)


# The existing contacts resolution reads: every contact of every lead a new contact could join.
CONTEXT_SCHEMA = pa.schema(
    [
        pa.field("lead_id", pa.string(), nullable=False),
        pa.field("received_at", pa.timestamp("us", tz="UTC"), nullable=False),
        *MATCH_SCHEMA,
    ]
)


@dataclass(frozen=True, slots=True)
class Context:
    """What the warehouse knows that resolving a chunk needs, read before it: the members of every
    lead that shares a blocking key with the chunk (matching columns only), how often each
    term-frequency value occurs among the warehouse's contacts, and the blocking keys that are
    too common over the warehouse to be compared."""

    members: pa.Table = field(default_factory=CONTEXT_SCHEMA.empty_table)
    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    common: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Linking:
    """Links for every contact whose lead is new or changed, merges (old→new), grey-zone pairs,
    the leads a cannot-link decision split off (new, from), and the contacts of each lead whose
    golden record must be built again."""

    links: list[Link]
    merges: list[tuple[str, str]]
    reviews: list[ReviewPair]
    splits: list[tuple[str, str]]
    members: dict[str, list[str]]
    scored_pairs: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    """A linking with the golden records of the leads it touched."""

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


# Name evidence strong enough to join two different person mailboxes (one person, two inboxes).
_STRONG_NAME = frozenset(
    ("exact", "jaro_winkler >= 0.9", "swapped with the surname", "swapped with the first name")
)


def _close_births(a: str, b: str) -> bool:
    """Two ISO birth dates a clerk could have written for one person: equal, one digit apart, or
    day and month swapped."""
    if a == b:
        return True
    if len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 1:
        return True
    return a[:4] == b[:4] and a[5:7] == b[8:10] and a[8:10] == b[5:7]


class _Clusters:
    """Union-find over contact indices that refuses unions breaking a constraint: a cannot-link
    pair, two different person mailboxes without strong name evidence, birth dates that cannot
    be one person's. It starts with each existing lead's members (`leads`, indices ascending)
    joined, and remembers the indices each later union joined (`touched`)."""

    def __init__(
        self,
        n: int,
        emails: Sequence[str | None],
        births: Sequence[str | None],
        bans: dict[int, set[int]],
        leads: Iterable[Sequence[int]] = (),
    ) -> None:
        self.parent = list(range(n))
        self.email_of, self.birth_of = emails, births
        # the person emails and birth dates of clusters that have merged; a lone contact's are
        # read from `email_of` / `birth_of` when it first meets another
        self.emails: dict[int, frozenset[str]] = {}
        self.births: dict[int, frozenset[str]] = {}
        self.banned: dict[int, set[int]] = {i: set(v) for i, v in bans.items()}
        self.touched: set[int] = set()
        for group in leads:
            self._join_lead(group)
        self.touched = set()  # joining the leads' own members touches no one

    def _join_lead(self, group: Sequence[int]) -> None:
        """Join an existing lead's members under its earliest, as earlier runs linked them. Only
        birth dates can refuse that (a cannot-link inside a lead splits it before): with two or
        more, `union` decides member by member, as it always has."""
        root = group[0]
        births = frozenset(b for i in group if (b := self.birth_of[i]))
        if len(births) > 1:
            for i in group[1:]:
                self.union(root, i, True)
            return
        for i in group[1:]:
            self.parent[i] = root
            if i in self.banned:
                self.banned.setdefault(root, set()).update(self.banned.pop(i))
        self.emails[root] = frozenset(e for i in group if (e := self.email_of[i]))
        self.births[root] = births

    @staticmethod
    def _of(
        root: int, merged: dict[int, frozenset[str]], own: Sequence[str | None]
    ) -> frozenset[str]:
        got = merged.get(root)
        if got is not None:
            return got
        value = own[root]
        return frozenset((value,)) if value else frozenset()

    def find(self, x: int) -> int:
        p = self.parent
        root = x
        while p[root] != root:
            root = p[root]
        while p[x] != root:
            p[x], x = root, p[x]
        return root

    def union(self, a: int, b: int, strong_name: bool) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return True
        ea, eb = self._of(ra, self.emails, self.email_of), self._of(rb, self.emails, self.email_of)
        if ea and eb and not (ea & eb) and not strong_name:
            return False
        ba, bb = self._of(ra, self.births, self.birth_of), self._of(rb, self.births, self.birth_of)
        if ba and bb and not any(_close_births(x, y) for x in ba for y in bb):
            return False
        for r1, r2 in ((ra, rb), (rb, ra)):
            if any(self.find(x) == r2 for x in self.banned.get(r1, ())):
                return False
        lo, hi = (ra, rb) if ra < rb else (rb, ra)
        self.parent[hi] = lo
        self.touched.update((a, b))
        self.emails[lo] = ea | eb
        self.births[lo] = ba | bb
        self.emails.pop(hi, None)
        self.births.pop(hi, None)
        if hi in self.banned:
            self.banned.setdefault(lo, set()).update(self.banned.pop(hi))
        return True


def link_contacts(
    new: Sequence[Contact],
    context: Context,
    decisions: Sequence[ReviewDecision] = (),
    settings: MatchSettings | None = None,
    model: Model | None = None,
    engine: Engine | None = None,
    new_table: pa.Table | None = None,
) -> Linking:
    """Match new contacts with each other and with the existing leads' contacts in `context`.

    An existing lead keeps its id; when new evidence joins two leads, the one seen first
    survives. Review decisions are honoured: must-link pairs are joined, cannot-link pairs never
    are, and a lead holding both contacts of a cannot-link decision is split. `new_table` is
    the new contacts' matching columns when the caller has them already.
    """
    cfg = settings or MatchSettings()
    model = model or default_model()
    old, fresh, split = _ordered(new, context.members, decisions)
    n_old = len(old.contact_ids)
    ids = old.contact_ids + [f.contact_id for f in fresh]
    index = {cid: i for i, cid in enumerate(ids)}
    members = context.members.select(MATCH_SCHEMA.names).cast(MATCH_SCHEMA)
    # New contacts are featurized here; a split lead's members come back from the context.
    if new_table is None:
        new_table = match_table(f.contact for f in fresh if f.contact is not None)
    new_at = {cid: i for i, cid in enumerate(new_table.column("contact_id").to_pylist())}
    records = pa.concat_tables(
        [
            members.take(old.rows),
            pa.concat_tables([members, new_table]).take(
                pa.array(
                    [
                        f.row if f.row is not None else members.num_rows + new_at[f.contact_id]
                        for f in fresh
                    ],
                    pa.int64(),
                )
            ),
        ]
    )
    position = np.arange(len(ids), dtype=np.int64)
    records = records.append_column("is_new", pa.array(position >= n_old))
    records = records.append_column("ord", pa.array(position))

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
    # Existing leads stay whole: their contacts were linked by earlier runs.
    cl = _Clusters(
        len(ids),
        records.column("email_key").to_pylist(),
        records.column("birth").to_pylist(),
        bans,
        old.shared.values(),
    )
    reason: dict[int, tuple[str, float, int, dict[str, Any]]] = {}
    for i, j in musts:
        cl.union(i, j, True)
        for x, y in ((i, j), (j, i)):
            if x >= n_old:
                reason.setdefault(x, (MUST_LINK, 1.0, y, {"decision": MUST_LINK}))

    eng = engine or Engine()
    con = eng.connect()
    try:
        pairs = candidate_pairs(records, context.common, cfg.max_block_size, con)
    finally:
        con.close()
    counts, totals = _with_chunk_counts(context, new_table)
    tf = term_frequencies(records, counts, totals, model)
    scored = score_pairs(model, records.drop_columns(["is_new", "ord"]), pairs, tf, eng)
    scored = scored.filter(
        pc.greater_equal(scored.column("match_probability"), cfg.review_probability)
    )
    labels = model.labels()
    strong_first = {g for g, label in labels["first"].items() if label in _STRONG_NAME}
    strong_last = {g for g, label in labels["last"].items() if label in _STRONG_NAME}
    left = [index[c] for c in scored.column("contact_id_l").to_pylist()]
    right = [index[c] for c in scored.column("contact_id_r").to_pylist()]
    prob = scored.column("match_probability").to_pylist()
    weight = scored.column("match_weight").to_pylist()
    g_first = scored.column("gamma_first").to_pylist()
    g_last = scored.column("gamma_last").to_pylist()
    # Strongest evidence first (then in the order contacts were seen): a weak pair can never
    # chain two clusters that a stronger pair's constraint has already kept apart.
    order = sorted(range(len(prob)), key=lambda k: (-weight[k], left[k], right[k]))
    joined: dict[int, tuple[str, float, int, int]] = {}  # contact → (rule, p, other, scored row)
    review_rows: list[tuple[int, int, float, int]] = []
    for k in order:
        i, j, p = left[k], right[k], prob[k]
        strong = g_first[k] in strong_first and g_last[k] in strong_last
        if p >= cfg.link_probability and cl.union(i, j, strong):
            for x, y in ((i, j), (j, i)):
                if x >= n_old and x not in reason and x not in joined:
                    joined[x] = (MODEL_RULE, p, y, k)
            continue
        if cl.find(i) != cl.find(j):
            review_rows.append((i, j, p, k))
    # Evidence only for the pairs that made a link or a review, read in one pass.
    wanted = sorted({k for *_, k in joined.values()} | {k for *_, k in review_rows})
    proof = dict(zip(wanted, scored.take(pa.array(wanted, pa.int64())).to_pylist(), strict=True))
    for x, (rule, p, y, k) in joined.items():
        reason[x] = (rule, p, y, evidence(model, proof[k], labels))
    reviews = [(i, j, p, evidence(model, proof[k], labels)) for i, j, p, k in review_rows]

    linking = _build(ids, old, cl, reason, reviews)
    linking = replace(linking, scored_pairs=pairs.num_rows)
    taken_out = {d.contact_a for d in decisions if d.split_out and d.decision == CANNOT_LINK}
    return _renamed_splits(linking, split, old.lead_ids, fresh, taken_out)


@dataclass(frozen=True, slots=True)
class _Fresh:
    """A contact to resolve: a new one (`contact`), or a split lead's member (`row` of the
    context table)."""

    received_at: datetime
    contact_id: str
    contact: Contact | None = None
    row: int | None = None


@dataclass(frozen=True, slots=True)
class _Existing:
    """The existing members that stay in their leads, in the order they were first seen, as
    parallel columns: each one's row in the context table, contact id and lead id; and the
    positions (ascending) of the members of each lead that has more than one."""

    rows: pa.Array
    contact_ids: list[str]
    lead_ids: list[str]
    shared: dict[str, list[int]]


def _ordered(
    new: Sequence[Contact], members: pa.Table, decisions: Sequence[ReviewDecision]
) -> tuple[_Existing, list[_Fresh], dict[str, list[str]]]:
    """Existing members in the order they were first seen, then the contacts to resolve in
    theirs. A lead holding both contacts of a cannot-link decision is split: its members are
    resolved again like new ones (so the decision keeps them apart), and its id goes back to the
    part holding its earliest contact (`_renamed_splits`)."""
    rows = members.select(["received_at", "contact_id", "lead_id"]).append_column(
        "row", pa.array(np.arange(members.num_rows, dtype=np.int64))
    )
    split: dict[str, list[str]] = {}
    fresh: list[_Fresh] = []
    broken = _broken_leads(members, decisions)
    if broken:
        in_broken = pc.is_in(rows.column("lead_id"), pa.array(sorted(broken), pa.string()))
        for r in rows.filter(in_broken).to_pylist():
            split.setdefault(r["lead_id"], []).append(r["contact_id"])
            fresh.append(_Fresh(_utc(r["received_at"]), r["contact_id"], row=r["row"]))
        rows = rows.filter(pc.invert(in_broken))
    # a stable sort: rows received at the same instant with the same id keep the table's order
    rows = rows.take(
        pc.sort_indices(rows, [("received_at", "ascending"), ("contact_id", "ascending")])
    )
    seen = pc.is_in(
        pa.array([c.contact_id for c in new], pa.string()), members.column("contact_id")
    ).to_pylist()
    fresh += [
        _Fresh(_utc(c.received_at), c.contact_id, contact=c)
        for c, known in zip(new, seen, strict=True)
        if not known
    ]
    fresh.sort(key=lambda f: (f.received_at, f.contact_id))
    old = _Existing(
        rows=rows.column("row").combine_chunks(),
        contact_ids=rows.column("contact_id").to_pylist(),
        lead_ids=rows.column("lead_id").to_pylist(),
        shared=_shared_leads(rows.column("lead_id").combine_chunks()),
    )
    return old, fresh, split


def _broken_leads(members: pa.Table, decisions: Sequence[ReviewDecision]) -> set[str]:
    """The leads holding both contacts of a cannot-link decision."""
    cannot = [d for d in decisions if d.decision == CANNOT_LINK]
    if not cannot:
        return set()
    named = pa.array(sorted({c for d in cannot for c in (d.contact_a, d.contact_b)}), pa.string())
    hit = members.filter(pc.is_in(members.column("contact_id"), named))
    lead_of = dict(
        zip(hit.column("contact_id").to_pylist(), hit.column("lead_id").to_pylist(), strict=True)
    )
    return {
        lead_of[d.contact_a]
        for d in cannot
        if d.contact_a in lead_of and lead_of[d.contact_a] == lead_of.get(d.contact_b)
    }


def _shared_leads(lead_ids: pa.Array) -> dict[str, list[int]]:
    """The positions of each lead's members, ascending, for the leads that have more than one;
    grouped by a stable sort of the lead codes, not row by row."""
    encoded = pc.dictionary_encode(lead_ids)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    by_lead = np.argsort(codes, kind="stable").tolist()
    sizes = np.bincount(codes, minlength=len(encoded.dictionary))
    ends = np.cumsum(sizes)
    shared = np.flatnonzero(sizes > 1)
    return {
        lead_id: by_lead[end - size : end]
        for lead_id, size, end in zip(
            encoded.dictionary.take(pa.array(shared)).to_pylist(),
            sizes[shared].tolist(),
            ends[shared].tolist(),
            strict=True,
        )
    }


def _utc(value: datetime) -> datetime:
    if value.tzinfo is UTC:
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _order(c: Contact) -> tuple[datetime, str]:
    return (_utc(c.received_at), c.contact_id)


def _with_chunk_counts(
    context: Context, fresh: pa.Table
) -> tuple[dict[str, dict[str, int]], dict[str, int]]:
    """The warehouse's term counts plus the chunk's own (its contacts are not published yet)."""
    counts = {col: dict(context.counts.get(col, {})) for col in TF_COLUMNS}
    totals = dict(context.totals)
    for col in TF_COLUMNS:
        own = Counter(v for v in fresh.column(col).to_pylist() if v is not None)
        for value, n in own.items():
            counts[col][value] = counts[col].get(value, 0) + n
        totals[col] = totals.get(col, 0) + sum(own.values())
    return counts, totals


def _build(
    ids: Sequence[str],
    old: _Existing,
    cl: _Clusters,
    reason: dict[int, tuple[str, float, int, dict[str, Any]]],
    reviews: Sequence[tuple[int, int, float, dict[str, Any]]],
) -> Linking:
    n_old, old_leads = len(old.contact_ids), old.lead_ids
    # Only a cluster holding a new contact or two existing leads gives anything, and one of the
    # latter was made by later unions: the leads of the contacts they touched hold all its
    # existing members. Walked in index order, each cluster lists its members as before.
    roots = {cl.find(i) for i in cl.touched} | {cl.find(i) for i in range(n_old, len(ids))}
    picked = set(range(n_old, len(ids)))
    for i in cl.touched:
        if i < n_old:
            picked.update(old.shared.get(old_leads[i], (i,)))
    clusters: dict[int, list[int]] = defaultdict(list)
    for i in sorted(picked):
        root = cl.find(i)
        if root in roots:
            clusters[root].append(i)
    links: list[Link] = []
    merges: list[tuple[str, str]] = []
    members: dict[str, list[str]] = {}
    for group in clusters.values():
        has_new = group[-1] >= n_old
        first_seen: dict[str, int] = {}
        for i in group:
            if i < n_old:
                first_seen.setdefault(old_leads[i], i)  # members are in time order
        if not has_new and len(first_seen) < 2:
            continue
        if first_seen:
            survivor = min(first_seen, key=lambda lid: (first_seen[lid], lid))
        else:
            survivor = stable_id("lead", ids[group[0]])
        merges += [(lid, survivor) for lid in first_seen if lid != survivor]
        for i in group:
            if i >= n_old:
                rule, score, other, proof = reason.get(i, ("new_lead", 1.0, i, {}))
                proof = {"matched_contact_id": ids[other], **proof} if rule != "new_lead" else {}
                links.append(Link(ids[i], survivor, rule, round(score, 6), proof))
            elif old_leads[i] != survivor:
                links.append(Link(ids[i], survivor, "merge", 1.0, {"merged_from": old_leads[i]}))
        members[survivor] = [ids[i] for i in group]
    review_pairs = {
        (min(ids[i], ids[j]), max(ids[i], ids[j])): ReviewPair(
            min(ids[i], ids[j]), max(ids[i], ids[j]), score=round(p, 6), evidence=proof
        )
        for i, j, p, proof in reviews
        if cl.find(i) != cl.find(j)
    }
    links.sort(key=lambda lk: lk.contact_id)
    return Linking(
        links=links,
        merges=sorted(merges),
        reviews=[review_pairs[k] for k in sorted(review_pairs)],
        splits=[],
        members=members,
    )


def _renamed_splits(
    res: Linking,
    split: dict[str, list[str]],
    old_leads: Sequence[str],
    fresh: Sequence[_Fresh],
    taken_out: AbstractSet[str] = frozenset(),
) -> Linking:
    """Give each split lead's id back to the part holding its earliest contact (of those a
    steward did not take out of it: the lead stays the others'); the other parts are new leads,
    recorded in `splits` as (new lead, the lead it was split from). `old_leads` are the other
    existing leads: one of them that took the earliest contact absorbs the split lead."""
    if not split:
        return res
    pinned = set(old_leads)
    when = {f.contact_id: f.received_at for f in fresh}  # a split lead's members are all fresh
    lead_of = {lk.contact_id: lk.lead_id for lk in res.links}
    for lead_id, cids in res.members.items():
        for cid in cids:
            lead_of.setdefault(cid, lead_id)
    rename: dict[str, str] = {}
    merged: list[tuple[str, str]] = []
    for old_id in sorted(split):
        stay = [cid for cid in split[old_id] if cid not in taken_out] or split[old_id]
        target = lead_of[min(stay, key=lambda cid: (when[cid], cid))]
        if target not in pinned and target not in rename:
            rename[target] = old_id
        else:  # its earliest contact joined another existing lead: the split lead merges into it
            merged.append((old_id, target))
    splits = sorted(
        {
            (rename.get(lead_of[cid], lead_of[cid]), old_id)
            for old_id, cids in split.items()
            for cid in cids
            if rename.get(lead_of[cid]) != old_id
        }
    )

    def renamed(lead_id: str) -> str:
        return rename.get(lead_id, lead_id)

    links = [replace(lk, lead_id=renamed(lk.lead_id)) for lk in res.links]
    members = {renamed(k): v for k, v in res.members.items()}
    merges = sorted(
        {(renamed(a), renamed(b)) for a, b in [*res.merges, *merged] if renamed(a) != renamed(b)}
    )
    return replace(res, links=links, merges=merges, splits=splits, members=members)


def golden_leads(linking: Linking, contacts: Mapping[str, Contact]) -> list[Lead]:
    """The golden record of every lead the linking touched, from its members' full contacts."""
    return sorted(
        (
            golden_record(lead_id, [contacts[c] for c in cids])
            for lead_id, cids in linking.members.items()
        ),
        key=lambda ld: ld.lead_id,
    )


def context_of(existing: Sequence[tuple[Contact, str]]) -> pa.Table:
    """A context table built from whole contacts and their lead ids (tests, benchmarks)."""
    table = match_table(c for c, _ in existing)
    return pa.table(
        {
            "lead_id": pa.array([lead for _, lead in existing], pa.string()),
            "received_at": pa.array(
                [_utc(c.received_at) for c, _ in existing], pa.timestamp("us", tz="UTC")
            ),
            **{name: table.column(name) for name in MATCH_SCHEMA.names},
        },
        schema=CONTEXT_SCHEMA,
    )


def resolve_contacts(
    new: Sequence[Contact],
    existing: Sequence[tuple[Contact, str]] = (),
    decisions: Sequence[ReviewDecision] = (),
    settings: MatchSettings | None = None,
    model: Model | None = None,
    common_keys: frozenset[str] = frozenset(),
) -> Resolution:
    """Link `new` against `existing` (whole contacts with their lead ids) and build the golden
    records: the linking and survivorship in one call, where all contacts are at hand."""
    context = Context(members=context_of(existing), common=common_keys)
    linking = link_contacts(new, context, decisions, settings, model)
    everyone = {c.contact_id: c for c, _ in existing} | {c.contact_id: c for c in new}
    return Resolution(
        links=linking.links,
        leads=golden_leads(linking, everyone),
        merges=linking.merges,
        reviews=linking.reviews,
        splits=linking.splits,
    )


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
    if len(members) == 1:  # most leads: every value is its one contact's own
        (only,) = members
        values = {f: getattr(only, f) or None for f in GOLDEN_FIELDS}
        supplied = {f: only.contact_id for f, v in values.items() if v}
        return Lead(
            lead_id=lead_id,
            **values,
            lead_source=only.source,
            first_seen_at=only.received_at,
            last_seen_at=only.received_at,
            contact_count=1,
            source_count=1,
            survivorship=supplied,
        )
    ordered = sorted(members, key=_order)
    values = dict.fromkeys(GOLDEN_FIELDS)
    supplied = {}
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
