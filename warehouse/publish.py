"""Publishing: a run's results, staged in memory as a PublishSet, merged into the live tables in one transaction."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from itertools import chain
from operator import attrgetter
from typing import Any

import pyarrow as pa
from sqlalchemy import Connection, Table, bindparam

from transforms.qualify import StageChange, StatusChange
from transforms.records import Account, Contact, Lead, Link, Opportunity, Qualification, Reject
from transforms.resolve import ReviewDecision, ReviewPair, review_id
from warehouse import matching
from warehouse import schema as t
from warehouse.load import Rows, delete_keys, in_chunks, insert_new, merge, upsert
from warehouse.quarantine import reject_row

_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _tuples(table: Table, objs: Sequence[Any], **extra: Any) -> Rows:
    """Records as rows of `table`: one C-level getter per record, the columns in the table's
    order, then `extra` (the same value on every row). Attributes that are no column (a stage
    change's probability) are left out; a tuple-valued field stays a tuple (a JSON array)."""
    if not objs:
        return Rows((), [])
    cls = type(objs[0])
    have = {*_field_names(cls), *(n for n in ("history_id",) if hasattr(cls, n))}
    cols = tuple(c.name for c in table.columns if c.name in have and c.name not in extra)
    get = attrgetter(*cols)
    if len(cols) == 1:
        values = [(get(o),) for o in objs]
    elif extra:
        tail = tuple(extra.values())
        values = [get(o) + tail for o in objs]
    else:
        values = [get(o) for o in objs]
    return Rows(cols + tuple(extra), values)


def _write(conn: Connection, table: Table, rows: Rows, new: bool, update: bool = True) -> None:
    """Rows proved new go in by plain insert (COPY), the others by the idempotent merge."""
    if new:
        insert_new(conn, table, rows)
    else:
        merge(conn, table, rows, update)


def _split(rows: Rows, key: str, new_keys: set[str] | frozenset[str]) -> tuple[Rows, Rows]:
    """(rows whose `key` is in `new_keys`, the rest)."""
    if not new_keys:
        return Rows(rows.columns, []), rows
    at = rows.columns.index(key)
    fresh: list[tuple[Any, ...]] = []
    rest: list[tuple[Any, ...]] = []
    for v in rows.values:
        (fresh if v[at] in new_keys else rest).append(v)
    return Rows(rows.columns, fresh), Rows(rows.columns, rest)


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
    blocks: pa.Table | None = None  # their blocking keys (`block_table`), when computed already
    model_version: str | None = None  # the match model that scored the links and reviews
    # What the chunk proved absent from the live tables when it read them, so it goes in by
    # plain insert (COPY) instead of the merge: every contact comes from a raw row that had no
    # contact yet (contact_id derives from raw_id), which makes its features, blocking keys and
    # link new too; and the lead ids it read as not in `leads`.
    new_contacts: bool = False
    new_leads: frozenset[str] = frozenset()

    def lead_rows(self) -> Rows:
        """The leads as rows of `leads` (built once: the gate and the merge both read them)."""
        cached: Rows | None = self.__dict__.get("_lead_rows")
        if cached is None:
            cached = self._build_lead_rows()
            object.__setattr__(self, "_lead_rows", cached)
        return cached

    def _build_lead_rows(self) -> Rows:
        """A tuple per lead: its golden record, its qualification, its conversion (one C-level
        getter per lead, no dict: 30 µs a lead as dicts, a sixth of a chunk's gate)."""
        if not self.leads:
            return Rows((), [])
        quals = {q.lead_id: q for q in self.qualifications}
        have = set(_field_names(Lead))
        cols = tuple(c.name for c in t.leads.columns if c.name in have)
        get = attrgetter(*cols)
        no_conversion = (None, None, None)
        values = []
        for lead in self.leads:
            q = quals[lead.lead_id]
            opp = self.conversions.get(lead.lead_id)
            values.append(
                get(lead)
                + (q.status, q.score, q.grade, q.reasons, q.rules_version)
                + ((opp[2], opp[1], opp[0]) if opp else no_conversion)
            )
        return Rows(cols + _QUALIFIED_COLUMNS, values)


# What a lead's row adds to its golden record, in `_build_lead_rows`' order.
_QUALIFIED_COLUMNS = (
    "status",
    "score",
    "grade",
    "reasons",
    "rules_version",
    "converted_at",
    "account_id",
    "opportunity_id",
)


class Touched:
    """The keys a run wrote to, or deleted from, the live tables: the rows whose published state
    it may have changed. Lead ids include leads merged away and leads split from.

    A run touches a few ids per contact, a million contacts touch millions. What `add` is given
    waits in Arrow arrays, one per chunk, and becomes the sets of Python strings only when they
    are read, after the chunks: held as strings from chunk to chunk, they were small objects
    scattered among each chunk's freed ones, where the allocator cannot give memory back.

    `limits` bounds them: once the keys of one kind pass its limit (what the checks would read
    as the whole table anyway, `quality.scope_limits`), the run counts as having touched
    `everything` and the keys are dropped. A large run into a small warehouse, or any run into
    an empty one, holds no keys at all, however many it writes."""

    _NAMES = ("leads", "contacts", "opportunities")

    def __init__(
        self,
        leads: Iterable[str] = (),
        contacts: Iterable[str] = (),
        opportunities: Iterable[str] = (),
        everything: bool = False,  # a rebuild: every derived row was written again
        limits: Mapping[str, int] | None = None,  # most keys of a kind before `everything`
    ) -> None:
        self.everything = everything
        self._sets: dict[str, set[str]] = {
            "leads": set(leads),
            "contacts": set(contacts),
            "opportunities": set(opportunities),
        }
        self._waiting: dict[str, list[pa.Array]] = {name: [] for name in self._NAMES}
        self._limits = dict(limits or {})
        # Keys held per kind, at most: a key added by two chunks counts twice until compacted.
        self._held = {name: len(keys) for name, keys in self._sets.items()}

    @property
    def leads(self) -> set[str]:
        return self._keys("leads")

    @property
    def contacts(self) -> set[str]:
        return self._keys("contacts")

    @property
    def opportunities(self) -> set[str]:
        return self._keys("opportunities")

    def _keys(self, name: str) -> set[str]:
        keys, waiting = self._sets[name], self._waiting[name]
        if waiting:
            keys.update(pa.chunked_array(waiting, pa.string()).unique().to_pylist())
            waiting.clear()
        return keys

    def _wait(self, name: str, ids: Iterable[str]) -> None:
        if self.everything:
            return
        arr = pa.array(ids, pa.string()).unique()
        if not len(arr):
            return
        waiting = self._waiting[name]
        waiting.append(arr)
        self._held[name] += len(arr)
        limit = self._limits.get(name)
        if limit is None or self._held[name] <= limit:
            return
        # Over the limit counting repeats: count the distinct keys, and keep them compacted.
        distinct = pa.chunked_array(waiting, pa.string()).unique()
        waiting[:] = [distinct]
        self._held[name] = len(distinct) + len(self._sets[name])
        if self._held[name] > limit:
            self._give_up_keys()

    def _give_up_keys(self) -> None:
        """Every row counts as touched: the keys are not needed any more."""
        self.everything = True
        for name in self._NAMES:
            self._sets[name] = set()
            self._waiting[name] = []
            self._held[name] = 0

    def add(self, ps: PublishSet) -> None:
        self._wait(
            "leads",
            chain(
                (ld.lead_id for ld in ps.leads),
                (k for pair in ps.merges for k in pair),
                (k for pair in ps.splits for k in pair),
                (lk.lead_id for lk in ps.links),
                ps.reparented.values(),
            ),
        )
        self._wait(
            "contacts",
            chain((c.contact_id for c in ps.contacts), (lk.contact_id for lk in ps.links)),
        )
        self._wait(
            "opportunities",
            chain(
                (o.opportunity_id for o in ps.opportunities),
                ps.reparented,
                (opp for opp, _, _ in ps.conversions.values()),
                (c.opportunity_id for c in ps.stage_history),
            ),
        )


def publish(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """Merge a run's results into the live tables; call inside one transaction.

    What the PublishSet proved new (`new_contacts`, `new_leads`) is appended by COPY
    (PostgreSQL) or one executemany INSERT (SQLite); everything else goes through the merge
    (`load.merge`), so rows already there are updated, never duplicated."""
    new_ids = {c.contact_id for c in ps.contacts} if ps.new_contacts else set()
    _write(conn, t.contacts, _tuples(t.contacts, ps.contacts), ps.new_contacts)
    upsert(conn, t.rejects, [reject_row(j, run_id) for j in ps.rejects], update=False)
    if ps.features is not None:
        matching.write_features(conn, ps.features, new=ps.new_contacts, blocks=ps.blocks)
    fresh, rest = _split(
        _tuples(t.lead_links, ps.links, model_version=ps.model_version), "contact_id", new_ids
    )
    insert_new(conn, t.lead_links, fresh)
    merge(conn, t.lead_links, rest)
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
    merge(conn, t.accounts, _tuples(t.accounts, ps.accounts))
    merge(conn, t.opportunities, _tuples(t.opportunities, ps.opportunities), update=False)
    if ps.reparented:
        o = t.opportunities
        conn.execute(
            o.update()
            .where(o.c.opportunity_id == bindparam("oid"))
            .values(lead_id=bindparam("lid")),
            [{"oid": k, "lid": v} for k, v in sorted(ps.reparented.items())],
        )
    lead_rows = ps.lead_rows()
    if lead_rows.values:
        fresh, rest = _split(lead_rows, "lead_id", ps.new_leads)
        insert_new(conn, t.leads, fresh)
        merge(conn, t.leads, rest)
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
    merge(conn, t.lead_status_history, _tuples(t.lead_status_history, statuses), update=False)
    stage_rows = _tuples(t.opportunity_stage_history, stages)
    merge(conn, t.opportunity_stage_history, stage_rows, update=False)
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


_REVIEW_COLUMNS = (
    "review_id",
    "contact_a",
    "contact_b",
    "score",
    "evidence",
    "decision",
    "decided_by",
    "decided_at",
    "applied",
    "run_id",
    "model_version",
)


def _publish_reviews(conn: Connection, ps: PublishSet, run_id: str) -> None:
    """New grey-zone pairs open; existing ones keep their decision. Applied decisions are marked.

    Always merged: review pairs outlive a rebuild (a steward's decision binds the next one), so a
    pair of contacts published again can already be there."""
    mv = ps.model_version
    values = [
        (r.review_id, r.contact_a, r.contact_b, r.score, r.evidence, "open")
        + (None, None, False, run_id, mv)
        for r in ps.reviews
    ]
    merge(conn, t.match_review, Rows(_REVIEW_COLUMNS, values), update=False)
    ids = sorted({review_id(d.contact_a, d.contact_b) for d in ps.decisions})
    mr = t.match_review
    for chunk in in_chunks(ids):
        conn.execute(
            mr.update()
            .where(mr.c.review_id.in_(chunk), mr.c.applied == False)  # noqa: E712
            .values(applied=True)
        )
