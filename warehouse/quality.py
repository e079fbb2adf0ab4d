"""Data-quality gate: Great Expectations suites over what a run is about to publish.

Two scopes, both checked before the run's transaction commits:

- **staged** — the rows one chunk is about to merge (frames built from its `PublishSet` and the raw
  rows it came from): nulls, uniqueness inside the batch, formats, value sets, ranges. A duplicate
  key must be caught here, because the merge itself would silently keep only one of the rows.
- **published** — the live tables as they stand inside the transaction, after every chunk merged:
  referential checks, one open opportunity per lead, volume against the previous run, freshness per
  source. The frames are read through the transaction's own connection, so they show exactly the
  state a reader will see after the commit.

  The referential and one-open-opportunity checks read only the rows the run could have changed
  (`publish.Touched`, joined through temporary key tables: its contacts' links and every link to
  one of its leads, its opportunities and those of its leads, the converted leads among its leads
  or pointing at its opportunities), so their unexpected counts and sample ids describe the run's
  scope. A rebuild, or a scope that is most of a table, reads whole tables, in parts of
  `PART_ROWS` rows (memory bounded by a part, not by the warehouse); so do every
  `full_checks_every`-th run and `leadflow check`, which find rows broken outside any run. Volume
  (exact counts) and freshness (from an index) always describe the whole warehouse.

GX 1.x runs on pandas frames here: its SQL data sources open their own connections and could not
see the uncommitted state. Great Expectations is imported lazily (~2.4 s).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
from sqlalchemy import (
    Connection,
    FromClause,
    Select,
    TableClause,
    and_,
    case,
    func,
    or_,
    select,
    union,
)

from transforms.erasure import ERASED
from transforms.qualify import STAGE_PROBABILITY, STATUSES
from warehouse import schema as t
from warehouse.load import Rows, index_lookups, key_table, pg_arrow_batches, planner, utc
from warehouse.publish import PublishSet, Touched

if TYPE_CHECKING:
    from great_expectations.data_context import AbstractDataContext

E164 = r"^\+[1-9][0-9]{6,14}$"
EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
COUNTRY = r"^[A-Z]{2}$"
CLOSED_STAGES = ("Closed Won", "Closed Lost")
STAGED, PUBLISHED = "staged", "published"
CRITICAL, WARNING = "critical", "warning"
VOLUME_TABLES = ("raw_contacts", "contacts", "leads", "lead_links", "opportunities", "accounts")


@dataclass(frozen=True)
class Check:
    """One expectation of a suite: the GX class name, its arguments, and what a failure means."""

    suite: str
    scope: str
    expectation: str
    kwargs: Mapping[str, Any]
    severity: str
    description: str

    @property
    def column(self) -> str | None:
        return self.kwargs.get("column") or self.kwargs.get("column_list", [None])[0]


def _c(suite: str, kind: str, severity: str, description: str, **kwargs: Any) -> Check:
    return Check(suite, STAGED, kind, kwargs, severity, description)


def _p(suite: str, kind: str, severity: str, description: str, **kwargs: Any) -> Check:
    return Check(suite, PUBLISHED, kind, kwargs, severity, description)


def _not_null(suite: str, *columns: str) -> list[Check]:
    return [
        _c(suite, "ExpectColumnValuesToNotBeNull", CRITICAL, f"{c} is set", column=c)
        for c in columns
    ]


def _unique(suite: str, column: str) -> Check:
    return _c(suite, "ExpectColumnValuesToBeUnique", CRITICAL, f"{column} is unique", column=column)


def _formats(suite: str) -> list[Check]:
    """Email and phone formats, and the country code: normalize's promises about a person."""
    return [
        _c(suite, "ExpectColumnValuesToMatchRegex", WARNING, f"{c} {what}", column=c, regex=rx)
        for c, what, rx in (
            ("email", "looks like an address", EMAIL),
            ("country", "is ISO 3166 alpha-2", COUNTRY),
        )
    ] + [
        _c(
            suite,
            "ExpectColumnValuesToMatchRegex",
            CRITICAL,
            "phone is E.164",
            column="phone",
            regex=E164,
        )
    ]


SUITES: tuple[Check, ...] = (
    # raw_contacts: the chunk of landed records being processed
    *_not_null("raw_contacts", "raw_id", "source", "source_record_id", "received_at"),
    _unique("raw_contacts", "raw_id"),
    _c(
        "raw_contacts",
        "ExpectCompoundColumnsToBeUnique",
        CRITICAL,
        "one raw record per (source, source record id)",
        column_list=["source", "source_record_id"],
    ),
    # contacts
    *_not_null("contacts", "contact_id", "raw_id", "source", "received_at"),
    _unique("contacts", "contact_id"),
    _unique("contacts", "raw_id"),
    *_formats("contacts"),
    # leads
    *_not_null("leads", "lead_id", "lead_source", "status", "first_seen_at"),
    _unique("leads", "lead_id"),
    _c(
        "leads",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "status is a known lead status",
        column="status",
        value_set=list(STATUSES),
    ),
    _c(
        "leads",
        "ExpectColumnValuesToBeBetween",
        CRITICAL,
        "score is 0–100",
        column="score",
        min_value=0,
        max_value=100,
    ),
    _c(
        "leads",
        "ExpectColumnValuesToBeBetween",
        CRITICAL,
        "a lead has at least one contact",
        column="contact_count",
        min_value=1,
    ),
    *_formats("leads"),
    # lead_links
    *_not_null("lead_links", "contact_id", "lead_id", "rule"),
    _unique("lead_links", "contact_id"),
    _c(
        "lead_links",
        "ExpectColumnValuesToBeBetween",
        CRITICAL,
        "link score is 0–1",
        column="score",
        min_value=0,
        max_value=1,
    ),
    # opportunities
    *_not_null("opportunities", "opportunity_id", "lead_id", "account_id", "close_date"),
    _unique("opportunities", "opportunity_id"),
    _unique("opportunities", "lead_id"),
    _c(
        "opportunities",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "stage is a known stage",
        column="stage",
        value_set=list(STAGE_PROBABILITY),
    ),
    _c(
        "opportunities",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "probability is a whole percentage 0–100",
        column="probability",
        value_set=list(range(101)),
    ),
    _c(
        "opportunities",
        "ExpectColumnValuesToBeBetween",
        WARNING,
        "amount is not negative",
        column="amount",
        min_value=0,
    ),
    # accounts
    *_not_null("accounts", "account_id", "name", "kind"),
    _unique("accounts", "account_id"),
    _c(
        "accounts",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "kind is business or person",
        column="kind",
        value_set=["business", "person"],
    ),
    _c(
        "accounts",
        "ExpectColumnValuesToMatchRegex",
        WARNING,
        "country is ISO 3166 alpha-2",
        column="country",
        regex=COUNTRY,
    ),
    # the state after the merge, read inside the publishing transaction
    _p(
        "lead_links",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "every link's lead exists",
        column="lead_exists",
        value_set=[True],
    ),
    _p(
        "opportunities",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "every opportunity's lead exists",
        column="lead_exists",
        value_set=[True],
    ),
    _p(
        "opportunities",
        "ExpectColumnValuesToBeUnique",
        CRITICAL,
        "at most one open opportunity per lead",
        column="open_lead_id",
    ),
    _p(
        "leads",
        "ExpectColumnValuesToBeInSet",
        CRITICAL,
        "a converted lead's opportunity exists",
        column="opportunity_exists",
        value_set=[True],
    ),
    _p(
        "volume",
        "ExpectColumnValuesToBeBetween",
        WARNING,
        "row count moved less than the threshold since the previous run",
        column="change",
        min_value=None,
        max_value=None,
    ),
    _p(
        "volume",
        "ExpectColumnValuesToBeBetween",
        WARNING,
        "the kept row counts equal count(*) (whole checks, PostgreSQL)",
        column="count_drift",
        min_value=0,
        max_value=0,
    ),
    _p(
        "freshness",
        "ExpectColumnValuesToBeBetween",
        WARNING,
        "each source delivered within the freshness window",
        column="age_hours",
        min_value=None,
        max_value=None,
    ),
)

# The column whose values name a failing row in dq_results.sample_ids.
ID_COLUMNS = {
    "raw_contacts": "raw_id",
    "contacts": "contact_id",
    "leads": "lead_id",
    "lead_links": "contact_id",
    "opportunities": "opportunity_id",
    "accounts": "account_id",
    "volume": "table",
    "freshness": "source",
}
SAMPLE_SIZE = 10


@dataclass(frozen=True)
class CheckResult:
    suite: str
    expectation: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int
    sample_ids: list[str] = field(default_factory=list)
    scope: str = STAGED
    description: str = ""
    observed_value: float | None = None


@dataclass(frozen=True)
class QualityReport:
    results: list[CheckResult]

    @property
    def critical_failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.severity == CRITICAL and not r.success]

    @property
    def warnings(self) -> list[CheckResult]:
        return [r for r in self.results if r.severity != CRITICAL and not r.success]

    @property
    def passed(self) -> bool:
        return not self.critical_failures

    def summary(self) -> str:
        bad = self.critical_failures
        if not bad:
            return f"{len(self.results)} checks, no critical failure"
        parts = [
            f"{r.suite}.{r.column}: {r.description or r.expectation} — {r.unexpected_count} "
            f"row(s), e.g. {', '.join(r.sample_ids[:3]) or '-'}"
            for r in bad
        ]
        return "critical data-quality failures: " + "; ".join(parts)


@dataclass(frozen=True)
class Thresholds:
    volume_max_change: float = 0.5
    freshness_hours: float = 24 * 7
    full_checks_every: int = 0  # every n-th run checks the whole published state (0: never)


# ---- frames ------------------------------------------------------------------------------


def _frame(data: Mapping[str, list[Any]]) -> pd.DataFrame:
    # No rows: untyped (object) columns, as a frame built from no records has.
    df = (
        pd.DataFrame(dict(data), columns=list(data))
        if _has_rows(data)
        else pd.DataFrame(columns=list(data))
    )
    for col in df.columns:
        # Decimals and mixed objects confuse GX's numeric checks; NaN stands for "not set".
        if col in {"amount", "score", "probability", "contact_count"}:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df


def _has_rows(data: Mapping[str, list[Any]]) -> bool:
    return any(len(v) for v in data.values())


def _of_objects(objs: Sequence[Any], columns: Sequence[str]) -> pd.DataFrame:
    return _frame({c: [getattr(o, c) for o in objs] for c in columns})


def _of_rows(rows: Rows, columns: Sequence[str]) -> pd.DataFrame:
    at = {name: i for i, name in enumerate(rows.columns)}
    return _frame({c: [v[at[c]] for v in rows.values] if at else [] for c in columns})


def _columns(suite: str, scope: str) -> list[str]:
    cols = {c.column for c in SUITES if c.suite == suite and c.scope == scope and c.column}
    for c in SUITES:
        if c.suite == suite and c.scope == scope:
            cols.update(c.kwargs.get("column_list", []))
    return sorted({ID_COLUMNS[suite], *cols})


def staged_frames(ps: PublishSet, raw_rows: Sequence[Any]) -> dict[str, pd.DataFrame]:
    """The rows one chunk is about to merge, one frame per table suite (only the columns the
    checks read, built column by column)."""
    objects: dict[str, Sequence[Any]] = {
        "raw_contacts": raw_rows,
        "contacts": ps.contacts,
        "lead_links": ps.links,
        "opportunities": ps.opportunities,
        "accounts": ps.accounts,
    }
    frames = {name: _of_objects(objs, _columns(name, STAGED)) for name, objs in objects.items()}
    frames["leads"] = _of_rows(ps.lead_rows(), _columns("leads", STAGED))
    order = ("raw_contacts", "contacts", "leads", "lead_links", "opportunities", "accounts")
    return {name: frames[name] for name in order}


# A scope holding more than this share of a table's rows (by the previous run's counts) is checked
# as the whole table: one pass over it costs less than a join per key.
WHOLE_TABLE_SHARE = 0.5


# The table a kind of touched key scopes (`Touched`'s names).
_SCOPED_TABLES = {"leads": "leads", "contacts": "lead_links", "opportunities": "opportunities"}


def scope_limits(previous_counts: Mapping[str, int]) -> dict[str, int]:
    """The most keys of each kind a run's scope holds before its checks read the whole table
    (`is_whole`): the bounds `Touched` drops its keys at."""
    return {
        kind: int(WHOLE_TABLE_SHARE * previous_counts.get(table, 0))
        for kind, table in _SCOPED_TABLES.items()
    }


def is_whole(touched: Touched, previous_counts: Mapping[str, int]) -> bool:
    """Whether the published checks read whole tables: a rebuild, or a scope that is most of one."""
    if touched.everything:
        return True
    limits = scope_limits(previous_counts)
    scopes = (
        ("leads", touched.leads),
        ("contacts", touched.contacts),
        ("opportunities", touched.opportunities),
    )
    return any(keys and len(keys) > limits[kind] for kind, keys in scopes)


# A whole table is read and checked in parts of at most this many rows (streamed by COPY into
# Arrow on PostgreSQL, through a server-side cursor on SQLite), so the published checks' memory
# is bounded by a part, not by the warehouse: the links of 10M contacts as one frame took ~2 GB.
PART_ROWS = 200_000

# Frames per suite: the scoped checks' one frame each, or a whole table's parts (read lazily).
Frames = dict[str, Iterable[pd.DataFrame]]


def published_frames(
    conn: Connection,
    now: datetime,
    previous_counts: Mapping[str, int],
    thresholds: Thresholds,
    touched: Touched,
    part_rows: int | None = None,  # PART_ROWS
) -> tuple[Frames, dict[str, int]]:
    """The merged state as the transaction sees it, reduced to the columns the checks need.

    Only the rows the run could have changed are read (`touched`: the links of its contacts and
    leads, wherever else in the warehouse a link or opportunity points at one of its leads, its
    opportunities, the leads pointing at them), one frame per suite; whole tables when
    `is_whole`, in parts of `part_rows` that are read as the gate checks them
    (`QualityGate.check_parts`). Returns the frames and the row counts per table (recorded, so
    the next run can compare).
    """
    frames: Frames
    whole = is_whole(touched, previous_counts)
    if whole:
        part_rows = part_rows or PART_ROWS
        frames = {
            "lead_links": _links(conn, None, part_rows),
            "opportunities": _opportunities(conn, None, part_rows),
            "leads": _converted(conn, None, part_rows),
        }
    else:
        with index_lookups(conn):
            scope = _scope(conn, touched)
            frames = {
                "lead_links": list(_links(conn, scope)),
                "opportunities": list(_opportunities(conn, scope)),
                "leads": list(_converted(conn, scope)),
            }
    # A whole check counts every table (`count(*)`) and compares the kept counts with it; the
    # run then corrects them (`repair_row_counts`). Otherwise the kept counts are the counts.
    kept = table_counts(conn)
    counted = counted_and_kept(conn) if whole else {}
    counts = {name: counted[name][0] if name in counted else n for name, n in kept.items()}
    frames["volume"] = [
        pd.DataFrame(
            [
                {
                    "table": name,
                    "rows": n,
                    "change": (n - previous_counts[name]) / previous_counts[name]
                    if previous_counts.get(name)
                    else math.nan,  # nothing to compare with: GX skips missing values
                    "count_drift": counted[name][1] if name in counted else math.nan,
                }
                for name, n in counts.items()
            ],
            columns=["table", "rows", "change", "count_drift"],
        )
    ]
    frames["freshness"] = [
        pd.DataFrame(
            [
                {"source": s, "age_hours": (now - utc(ts)).total_seconds() / 3600.0}
                for s, ts in newest_per_source(conn)
            ],
            columns=["source", "age_hours"],
        )
    ]
    return frames, counts


@dataclass(frozen=True)
class _Scope:
    """The run's keys in temporary tables (column `k`), to join the live tables against."""

    leads: TableClause
    contacts: TableClause
    opportunities: TableClause


def _scope(conn: Connection, touched: Touched) -> _Scope:
    o, m = t.opportunities, t.lead_merges
    opps = key_table(conn, touched.opportunities, "dq_opportunities")
    # The leads of the run's opportunities (and where a merged one lives now) join the lead scope,
    # so the one-open-opportunity check sees every opportunity of those people.
    owners = conn.execute(
        select(o.c.lead_id, m.c.into_lead_id)
        .select_from(o.join(opps, opps.c.k == o.c.opportunity_id))
        .outerjoin(m, m.c.merged_lead_id == o.c.lead_id)
    ).all()
    leads = {*touched.leads, *(k for pair in owners for k in pair if k is not None)}
    return _Scope(
        key_table(conn, leads, "dq_leads"),
        key_table(conn, touched.contacts, "dq_contacts"),
        opps,
    )


def _row_parts(
    conn: Connection, q: Select[Any], part_rows: int | None, key_at: int | None = None
) -> Iterator[Sequence[Any]]:
    """The rows of `q` as tuples (SQLite's read): all at once (`part_rows` None), or in parts of
    about `part_rows`.

    With `key_at`, `q` must be ordered by that column, and rows with the same value there stay
    in one part (a uniqueness check must see them together). At least one part, maybe empty."""
    if part_rows is None:
        yield conn.execute(q).all()
        return
    # Options of this statement only: on the connection they would stay for its later ones. A
    # server-side cursor is planned for its first rows (`cursor_tuple_fraction` 0.1); every row
    # is read here, so it is planned for all of them (at 200k links: 0.3 s less).
    with planner(conn, {"cursor_tuple_fraction": "1"}):
        result = conn.execute(q.execution_options(stream_results=True, yield_per=part_rows))
    carry: list[Any] = []
    sent = False
    for got in result.partitions(part_rows):
        rows = carry + list(got)
        carry = []
        if key_at is not None:
            last = rows[-1][key_at]
            cut = len(rows)
            while cut and rows[cut - 1][key_at] == last:
                cut -= 1
            rows, carry = rows[:cut], rows[cut:]
        if rows:
            sent = True
            yield rows
    if carry or not sent:
        yield carry


def _links(
    conn: Connection, scope: _Scope | None, part_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """Each link in scope and whether its lead exists: the run's contacts' links, and every link
    to one of the run's leads (a lead it merged away or deleted included)."""
    ld, lk = t.leads, t.lead_links
    src: FromClause = lk
    if scope is not None:
        cols = (lk.c.contact_id, lk.c.lead_id)
        src = union(
            select(*cols).join(scope.contacts, scope.contacts.c.k == lk.c.contact_id),
            select(*cols).join(scope.leads, scope.leads.c.k == lk.c.lead_id),
        ).subquery()
    q = select(src.c.contact_id, ld.c.lead_id.is_not(None)).select_from(
        src.outerjoin(ld, ld.c.lead_id == src.c.lead_id)
    )
    yield from _frame_parts(conn, q, _LINKS, part_rows)


def _opportunities(
    conn: Connection, scope: _Scope | None, part_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """Each opportunity in scope, whether its lead exists, and the lead whose open opportunity it
    is: its own lead, or, for a lead merged away, the lead `lead_merges` says it went into.

    In parts, the rows come ordered by that lead, so one lead's opportunities share a part."""
    ld, o, m = t.leads, t.opportunities, t.lead_merges
    src: FromClause = o
    if scope is not None:
        cols = (o.c.opportunity_id, o.c.lead_id, o.c.stage, o.c.primary_contact_id)
        src = union(
            select(*cols).join(scope.opportunities, scope.opportunities.c.k == o.c.opportunity_id),
            select(*cols).join(scope.leads, scope.leads.c.k == o.c.lead_id),
            # a duplicate kept under a lead merged into one of the run's leads
            select(*cols)
            .select_from(o.join(m, m.c.merged_lead_id == o.c.lead_id))
            .join(scope.leads, scope.leads.c.k == m.c.into_lead_id),
        ).subquery()
    person = case(
        (ld.c.lead_id.is_not(None), src.c.lead_id),
        else_=func.coalesce(m.c.into_lead_id, src.c.lead_id),
    )
    q = select(
        src.c.opportunity_id,
        src.c.lead_id,
        src.c.stage,
        # An erased person's opportunity stays for the sales figures without its lead, and a
        # duplicate opportunity stays with the lead id that was merged into another lead.
        or_(
            ld.c.lead_id.is_not(None),
            src.c.primary_contact_id == ERASED,
            m.c.merged_lead_id.is_not(None),
        ),
        person,
    ).select_from(
        src.outerjoin(ld, ld.c.lead_id == src.c.lead_id).outerjoin(
            m, m.c.merged_lead_id == src.c.lead_id
        )
    )
    if part_rows is not None:
        q = q.order_by(person)
    for opps in _frame_parts(conn, q, _OPPORTUNITIES, part_rows, key="person"):
        opps["open_lead_id"] = opps["person"].where(~opps["stage"].isin(CLOSED_STAGES))
        yield opps.drop(columns="person")


def _converted(
    conn: Connection, scope: _Scope | None, part_rows: int | None = None
) -> Iterator[pd.DataFrame]:
    """Each converted lead in scope and whether its opportunity exists: the run's leads, and
    every lead pointing at one of the run's opportunities."""
    ld, o = t.leads, t.opportunities
    src: FromClause = ld
    if scope is not None:
        # No `opportunity_id IS NOT NULL` in SQL here: pushed into the branches, it makes the
        # planner walk every converted lead; the unconverted are dropped below.
        cols = (ld.c.lead_id, ld.c.opportunity_id)
        src = union(
            select(*cols).join(scope.leads, scope.leads.c.k == ld.c.lead_id),
            select(*cols).join(scope.opportunities, scope.opportunities.c.k == ld.c.opportunity_id),
        ).subquery()
    q = select(src.c.lead_id, src.c.opportunity_id, o.c.opportunity_id.is_not(None)).select_from(
        src.outerjoin(o, o.c.opportunity_id == src.c.opportunity_id)
    )
    if scope is None:
        q = q.where(src.c.opportunity_id.is_not(None))
    for part in _frame_parts(conn, q, _CONVERTED, part_rows):
        converted = part[part["opportunity_id"].notna()].reset_index(drop=True)
        yield converted.drop(columns="opportunity_id")


# The published frames' columns. On PostgreSQL they are read by COPY into Arrow, with no Python
# object per row; a check's NULL (`x OR NULL`) is false, as it is read on SQLite.
_LINKS = pa.schema([("contact_id", pa.string()), ("lead_exists", pa.bool_())])
_OPPORTUNITIES = pa.schema(
    [
        ("opportunity_id", pa.string()),
        ("lead_id", pa.string()),
        ("stage", pa.string()),
        ("lead_exists", pa.bool_()),
        ("person", pa.string()),
    ]
)
_CONVERTED = pa.schema(
    [
        ("lead_id", pa.string()),
        ("opportunity_id", pa.string()),
        ("opportunity_exists", pa.bool_()),
    ]
)


def _frame_parts(
    conn: Connection,
    q: Select[Any],
    schema: pa.Schema,
    part_rows: int | None,
    key: str | None = None,
) -> Iterator[pd.DataFrame]:
    """The rows of `q` as frames of `schema`'s columns: all at once (`part_rows` None), or in
    parts of about `part_rows` rows; with `key`, `q` must be ordered by it and the rows sharing
    a value of it stay in one part. At least one frame, maybe empty.

    On PostgreSQL through `pg_arrow_batches` (COPY as CSV, parsed by Arrow: at 1M contacts a
    whole check's rows are no longer a tuple each); elsewhere through `_row_parts`."""
    if not _reads_arrow(conn):
        key_at = schema.names.index(key) if key else None
        for rows in _row_parts(conn, q, part_rows, key_at):
            yield _flags(pd.DataFrame(rows, columns=schema.names), schema)
        return
    for part in _table_parts(pg_arrow_batches(conn, q, schema), schema, part_rows, key):
        yield _flags(part.to_pandas(), schema)


def _reads_arrow(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def _table_parts(
    batches: Iterable[pa.RecordBatch], schema: pa.Schema, part_rows: int | None, key: str | None
) -> Iterator[pa.Table]:
    """`batches` regrouped into tables of at most `part_rows` rows (one table when None); a run
    of equal `key` values is never split (a part holds more rows only for a longer run). At
    least one table, maybe empty."""
    held: list[pa.RecordBatch] = []
    count = 0
    sent = False
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        while part_rows is not None and count > part_rows:
            table = pa.Table.from_batches(held, schema)
            cut = _cut(table, part_rows, key)
            if cut is None:
                break  # one key's rows reach past what is read: read on
            sent = True
            yield table.slice(0, cut)
            rest = table.slice(cut)
            held, count = rest.to_batches(), rest.num_rows
    if held or not sent:
        yield pa.Table.from_batches(held, schema)


def _cut(table: pa.Table, part_rows: int, key: str | None) -> int | None:
    """Where the next part of `table` (longer than `part_rows`) ends: at `part_rows`, moved back
    to the start of the run of `key` values crossing it, or, for a run that starts the table,
    forward to its end (None: it reaches the end of the table)."""
    if key is None:
        return part_rows
    values = table.column(key)
    crossing = values[part_rows].as_py()
    cut = part_rows
    while cut and values[cut - 1].as_py() == crossing:
        cut -= 1
    if cut:
        return cut
    cut = part_rows + 1
    while cut < table.num_rows and values[cut].as_py() == crossing:
        cut += 1
    return cut if cut < table.num_rows else None


def _flags(df: pd.DataFrame, schema: pa.Schema) -> pd.DataFrame:
    """`df` with its boolean columns as booleans, a NULL false."""
    for f in schema:
        if pa.types.is_boolean(f.type):
            df[f.name] = df[f.name].fillna(False).astype(bool)
    return df


def table_counts(conn: Connection) -> dict[str, int]:
    """Exact row counts of the VOLUME_TABLES (the volume check and the next run's baseline).

    On PostgreSQL the sums of `table_row_deltas`, which the database's own triggers keep (the
    same as `count(*)` under the same snapshot, in a read of a few rows instead of a pass over
    each table: 1.6 s of an incremental run of 10k into 1M, on a copy of the warehouse just
    made); `count(*)` elsewhere, and for a table with no row there."""
    counts: dict[str, int] = {}
    if conn.dialect.name == "postgresql":
        d = t.table_row_deltas
        q = (
            select(d.c.table_name, func.sum(d.c.delta))
            .where(d.c.table_name.in_(VOLUME_TABLES))
            .group_by(d.c.table_name)
        )
        counts = {name: int(n) for name, n in conn.execute(q)}
    return {
        name: counts[name]
        if name in counts
        else int(
            conn.execute(select(func.count()).select_from(t.metadata.tables[name])).scalar_one()
        )
        for name in VOLUME_TABLES
    }


def _groups_sql(name: str) -> str:
    """One table's rows counted and kept, per group (raw_contacts: per source; another table is
    one group, ''), in one statement: under one snapshot, so a landing committing meanwhile is
    on both sides or on neither. Columns: the group, `count(*)`, the kept count (NULL where
    nothing is kept for the group)."""
    group = "source" if name == "raw_contacts" else "''"
    return (
        f"WITH c AS (SELECT {group} AS grp, count(*) AS n FROM {name} GROUP BY 1), "  # noqa: S608
        "k AS (SELECT COALESCE(source, '') AS grp, sum(delta) AS kept FROM table_row_deltas "
        f"WHERE table_name = '{name}' GROUP BY 1) "
        "SELECT grp, COALESCE(c.n, 0) AS n, k.kept FROM c FULL JOIN k USING (grp)"
    )


def counted_and_kept(conn: Connection) -> dict[str, tuple[int, int]]:
    """PostgreSQL: each VOLUME_TABLE's `count(*)` and how many rows its kept counts are off by
    (per source for raw_contacts, summed; 0 when they agree or when nothing is kept for the
    table). A pass over every table: the whole checks'. Nothing elsewhere, where nothing is
    kept."""
    if conn.dialect.name != "postgresql":
        return {}
    out: dict[str, tuple[int, int]] = {}
    for name in VOLUME_TABLES:
        groups = conn.exec_driver_sql(_groups_sql(name)).all()
        kept = any(k is not None for _, _, k in groups)
        off = sum(abs(int(n) - int(k or 0)) for _, n, k in groups) if kept else 0
        out[name] = (sum(int(n) for _, n, _ in groups), off)
    return out


def repair_row_counts(conn: Connection) -> dict[str, int]:
    """PostgreSQL: where a kept count differs from `count(*)` (a source's, for raw_contacts), one
    row in `table_row_deltas` that makes them equal; returns the tables corrected and by how
    many rows the kept counts were off.

    The counts drift only when rows were written with the triggers off: under
    `session_replication_role = replica`, `ALTER TABLE … DISABLE TRIGGER`, or a data-only
    `pg_restore --disable-triggers`. Each table is compared and corrected in one statement,
    under one snapshot: a landing committing meanwhile adds its own rows and stays counted once.
    """
    if conn.dialect.name != "postgresql":
        return {}
    drift: dict[str, int] = {}
    for name in VOLUME_TABLES:
        groups = _groups_sql(name)
        fixed = conn.exec_driver_sql(
            "INSERT INTO table_row_deltas (table_name, source, delta) "  # noqa: S608
            f"SELECT '{name}', NULLIF(grp, ''), n - COALESCE(kept, 0) FROM ({groups}) AS g "
            f"WHERE n <> COALESCE(kept, 0) AND EXISTS (SELECT 1 FROM table_row_deltas "
            f"WHERE table_name = '{name}') RETURNING delta"
        ).scalars()
        off = sum(abs(int(d)) for d in fixed)
        if off:
            drift[name] = off
    return drift


def fold_row_counts(conn: Connection) -> None:
    """`table_row_deltas` folded into one row per table (PostgreSQL; in the caller's
    transaction, which should be the publish's: the rows stay few whatever the runs did).

    Only the rows this statement sees are folded: those of a landing not yet committed stay as
    they are and count when it commits, so nothing is counted twice or lost."""
    if conn.dialect.name != "postgresql":
        return
    conn.exec_driver_sql(
        "WITH folded AS (DELETE FROM table_row_deltas RETURNING table_name, source, delta) "
        "INSERT INTO table_row_deltas (table_name, source, delta) "
        "SELECT table_name, source, sum(delta) FROM folded GROUP BY table_name, source"
    )


def newest_per_source(conn: Connection) -> list[tuple[str, datetime]]:
    """The newest `received_at` of each source in raw_contacts, from the indexes alone.

    The sources are walked by a loose index scan (the next source after the last one, on the
    unique index that starts with `source`), and each one's newest record is one step down
    ix_raw_contacts_source_received_at: a few index probes per source, never a pass over the
    payload-heavy table (a plain GROUP BY reads all of it, or all of an index, on both dialects).
    """
    raw = t.raw_contacts
    nxt, newest = raw.alias("nxt"), raw.alias("newest")
    walk = select(func.min(raw.c.source).label("source")).cte("dq_sources", recursive=True)
    walk = walk.union_all(
        select(
            select(func.min(nxt.c.source)).where(nxt.c.source > walk.c.source).scalar_subquery()
        ).where(walk.c.source.is_not(None))
    )
    latest = (
        select(func.max(newest.c.received_at))
        .where(newest.c.source == walk.c.source)
        .scalar_subquery()
    )
    rows = conn.execute(select(walk.c.source, latest).where(walk.c.source.is_not(None)))
    return [(s, ts) for s, ts in rows if ts is not None]


def _bounded(check: Check, thresholds: Thresholds) -> dict[str, Any]:
    """Fill the bounds that come from settings into the checks that use them."""
    kwargs = dict(check.kwargs)
    if check.suite == "volume":
        kwargs.update(
            min_value=-thresholds.volume_max_change, max_value=thresholds.volume_max_change
        )
    elif check.suite == "freshness":
        kwargs.update(min_value=0, max_value=thresholds.freshness_hours)
    return kwargs


def full_check_due(conn: Connection, every: int) -> bool:
    """Whether this run checks the whole published state: every `every`-th run, counted by the
    runs that succeeded, so that after a failed one the next run checks the whole state again."""
    if every <= 0:
        return False
    r = t.pipeline_runs
    done = conn.execute(
        select(func.count()).select_from(r).where(r.c.status == "succeeded")
    ).scalar_one()
    return int(done) % every == 0


def previous_counts(conn: Connection) -> dict[str, int]:
    """Row counts recorded by the latest run whose publish went through."""
    d, r = t.dq_results, t.pipeline_runs
    last = conn.execute(
        select(d.c.run_id)
        .join(r, r.c.run_id == d.c.run_id)
        .where(and_(d.c.expectation == "row_count", r.c.status == "succeeded"))
        .order_by(r.c.started_at.desc())
        .limit(1)
    ).scalar()
    if last is None:
        return {}
    rows = conn.execute(
        select(d.c.column_name, d.c.observed_value).where(
            and_(d.c.run_id == last, d.c.expectation == "row_count")
        )
    )
    return {name: int(v) for name, v in rows if name and v is not None}


# ---- running the suites ------------------------------------------------------------------


class QualityGate:
    """One run's Great Expectations context: validates frames, keeps every result, builds Data Docs."""

    def __init__(self, run_id: str, thresholds: Thresholds | None = None) -> None:
        self.run_id = run_id
        self.thresholds = thresholds or Thresholds()
        self.results: list[CheckResult] = []
        self._ctx: AbstractDataContext | None = None
        self._source: Any = None
        # One suite and validation definition per (scope, table), built once and run per chunk:
        # building them costs more than validating a chunk of rows.
        self._definitions: dict[tuple[str, str], Any] = {}

    def _context(self) -> AbstractDataContext:
        if self._ctx is None:
            import great_expectations as gx
            from great_expectations.data_context.types.base import ProgressBarsConfig
            from great_expectations.execution_engine import pandas_execution_engine

            # GX fingerprints every pandas batch under 1 GB for its batch markers (a hash of
            # every cell, then MD5), which nothing here reads: 1.4% of a 1M run's samples.
            # A threshold of 0 bytes skips it (`test_no_batch_is_fingerprinted`).
            pandas_execution_engine.HASH_THRESHOLD = 0
            # GX sets INFO on some of its own loggers; its chatter is not the run's news.
            for name in ("great_expectations", "great_expectations.data_context.types.base"):
                logging.getLogger(name).setLevel(logging.ERROR)
            self._ctx = gx.get_context(mode="ephemeral")
            self._ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
            self._source = self._ctx.data_sources.add_pandas("leadflow")
        return self._ctx

    def check(self, frames: Mapping[str, pd.DataFrame], scope: str) -> QualityReport:
        """Run every suite of `scope` whose frame is given; results are kept for dq_results and docs."""
        return self.check_parts({name: (frame,) for name, frame in frames.items()}, scope)

    def check_parts(self, parts: Mapping[str, Iterable[pd.DataFrame]], scope: str) -> QualityReport:
        """`check` over frames given in parts (a whole table, read a part at a time): each part
        is validated on its own and each check's results are summed into one (passed if every
        part passed, the unexpected rows counted over all parts, the first sample ids)."""
        out: list[CheckResult] = []
        for name, frames in parts.items():
            checks = [c for c in SUITES if c.suite == name and c.scope == scope]
            if not checks:
                continue
            merged: dict[str, CheckResult] = {}
            for frame in frames:
                for r in self._validate(name, checks, frame, scope):
                    merged[r.description] = _summed(merged.get(r.description), r)
            out += merged.values()
        self.results += out
        return QualityReport(out)

    def _validate(
        self, name: str, checks: Sequence[Check], frame: pd.DataFrame, scope: str
    ) -> list[CheckResult]:
        """`checks` (the suite `name` of `scope`) on one frame, through GX."""
        import great_expectations as gx
        import great_expectations.expectations as gxe
        from great_expectations.core.run_identifier import RunIdentifier

        ctx = self._context()
        vd = self._definitions.get((scope, name))
        if vd is None:
            key = f"{scope}.{name}"
            suite = ctx.suites.add(gx.ExpectationSuite(name=key))
            for c in checks:
                suite.add_expectation(
                    getattr(gxe, c.expectation)(
                        **_bounded(c, self.thresholds),
                        description=c.description,
                        meta={"severity": c.severity},
                    )
                )
            asset = self._source.add_dataframe_asset(key)
            batch_def = asset.add_batch_definition_whole_dataframe(key)
            vd = ctx.validation_definitions.add(
                gx.ValidationDefinition(name=key, data=batch_def, suite=suite)
            )
            self._definitions[(scope, name)] = vd
        id_col = ID_COLUMNS[name]
        batch = {"dataframe": frame.reset_index(drop=True)}
        run_id = RunIdentifier(run_name=self.run_id)
        # Pass or fail first, the cheapest result GX gives: about half the time of a full one,
        # most of it GX's own work per expectation, whatever the rows. Only a suite that
        # failed is run again in full, for its counts and sample ids; under the same run
        # identifier its full result takes the pass-or-fail one's place in the store, so
        # Data Docs show each suite once per chunk.
        res = vd.run(
            batch_parameters=batch,
            result_format={"result_format": "BOOLEAN_ONLY"},
            run_id=run_id,
        )
        if not res.success:
            res = vd.run(
                batch_parameters=batch,
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": [id_col],
                },
                run_id=run_id,
            )
        by_description = {c.description: c for c in checks}
        out = []
        for r in res.results:
            c = by_description[getattr(r.expectation_config, "description", "") or ""]
            result = r.result or {}
            out.append(
                CheckResult(
                    suite=name,
                    expectation=c.expectation,
                    column=c.column,
                    severity=c.severity,
                    success=bool(r.success),
                    unexpected_count=int(result.get("unexpected_count") or 0),
                    sample_ids=_samples(result, id_col),
                    scope=scope,
                    description=c.description,
                )
            )
        return out

    def record_counts(self, counts: Mapping[str, int]) -> None:
        """Row counts go to dq_results beside the checks: the next run's volume baseline."""
        self.results += [
            CheckResult(
                suite="volume",
                expectation="row_count",
                column=name,
                severity=WARNING,
                success=True,
                unexpected_count=0,
                scope=PUBLISHED,
                description=f"rows in {name}",
                observed_value=float(n),
            )
            for name, n in counts.items()
        ]

    def build_docs(self, folder: Path) -> Path | None:
        """Write the run's Data Docs site to `folder`; returns its index page (None: nothing checked)."""
        if self._ctx is None:
            return None
        folder = folder.resolve()
        self._ctx.add_data_docs_site(
            site_name="leadflow",
            site_config={
                "class_name": "SiteBuilder",
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(folder),
                },
            },
        )
        self._ctx.build_data_docs(site_names=["leadflow"])
        return folder / "index.html"


def _summed(before: CheckResult | None, part: CheckResult) -> CheckResult:
    """One check's result over the parts so far, given the next part's."""
    if before is None:
        return part
    return replace(
        before,
        success=before.success and part.success,
        unexpected_count=before.unexpected_count + part.unexpected_count,
        sample_ids=[*before.sample_ids, *part.sample_ids][:SAMPLE_SIZE],
    )


def _samples(result: Mapping[str, Any], id_col: str) -> list[str]:
    seen: list[str] = []
    for item in result.get("unexpected_index_list") or []:
        value = item.get(id_col) if isinstance(item, Mapping) else item
        text = str(value)
        if text not in seen:
            seen.append(text)
        if len(seen) >= SAMPLE_SIZE:
            break
    return seen


def warning_line(r: CheckResult) -> str:
    """A failed check in one line: suite, expectation, column, how many rows, what it means."""
    column = f" on {r.column}" if r.column else ""
    rows = f": {r.unexpected_count} unexpected" if r.unexpected_count else ""
    observed = f" (observed {r.observed_value:g})" if r.observed_value is not None else ""
    what = f" ({r.description})" if r.description else ""
    return f"{r.suite} {r.expectation}{column}{rows}{observed}{what}"


def dq_rows(run_id: str, results: Sequence[CheckResult]) -> list[dict[str, Any]]:
    return [
        {
            "run_id": run_id,
            "suite": r.suite,
            "expectation": r.expectation,
            "column_name": r.column,
            "severity": r.severity,
            "success": r.success,
            "unexpected_count": r.unexpected_count,
            "sample_ids": r.sample_ids,
            "scope": r.scope,
            "observed_value": r.observed_value,
        }
        for r in results
    ]


def results_of(conn: Connection, run_id: str) -> list[CheckResult]:
    """A run's recorded results, as written by `dq_rows`."""
    d = t.dq_results
    rows = conn.execute(select(d).where(d.c.run_id == run_id).order_by(d.c.id))
    by_key = {(c.suite, c.scope, c.expectation, c.column): c.description for c in SUITES}
    return [
        CheckResult(
            suite=r.suite,
            expectation=r.expectation,
            column=r.column_name,
            severity=r.severity,
            success=bool(r.success),
            unexpected_count=r.unexpected_count,
            sample_ids=list(r.sample_ids or []),
            scope=r.scope or STAGED,
            description=by_key.get((r.suite, r.scope, r.expectation, r.column_name), ""),
            observed_value=r.observed_value,
        )
        for r in rows
    ]


def markdown(run_id: str, results: Sequence[CheckResult], docs: Path | None) -> str:
    """A markdown table of a run's checks, failures first, for the Prefect UI."""
    checks = [r for r in results if r.expectation != "row_count"]
    failed = [r for r in checks if not r.success]
    lines = [
        f"# Data quality — run `{run_id}`",
        "",
        f"{len(checks)} checks, {sum(r.severity == CRITICAL for r in failed)} critical failures, "
        f"{sum(r.severity != CRITICAL for r in failed)} warnings.",
        "",
        "| result | severity | scope | suite | column | check | unexpected | sample ids |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(checks, key=lambda r: (r.success, r.severity != CRITICAL, r.suite)):
        lines.append(
            f"| {'pass' if r.success else 'FAIL'} | {r.severity} | {r.scope} | {r.suite} | "
            f"{r.column or ''} | {r.description or r.expectation} | {r.unexpected_count} | "
            f"{', '.join(r.sample_ids[:3])} |"
        )
    if docs is not None:
        lines += ["", f"Data Docs: `{docs}`"]
    return "\n".join(lines)
