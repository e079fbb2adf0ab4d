"""The marts BI tools read: typed tables in their own schema, kept up to date inside the publish transaction.

Each mart is a declared table (names, SQL types, one comment per column) and one SELECT over the
warehouse tables or the marts before it. `refresh_marts` brings them up to date in the caller's
transaction, so a reader sees marts consistent with the leads they summarize: the old state or
the new one. On PostgreSQL the marts live in their own schema (`marts` by default), the only one
`bi_reader` may read; SQLite has one namespace, so there the same table names sit in the main
database.

How a refresh works. A run passes what it wrote or deleted (`warehouse.publish.Touched`: leads,
contacts, opportunities). Those keys are widened to every row they reach (the leads of touched
opportunities and of their stage changes, the opportunities of the leads, every contact of the
leads, the leads of the contacts) into temporary key tables (`warehouse.load.key_table`). Then:

- per-key marts (`mart_contacts`, `mart_lead_dates`, `mart_leads_current`, `mart_opportunities`,
  the two transition marts): the keys' stored rows and their SELECT, restricted to the keys, are
  compared; only the rows that differ are deleted and inserted, and they stay, each with its
  side (-1 taken out, 1 put in), in a temporary `mart_changes_*` table for the marts over it;
- counts and sums (`SUMS`: the daily funnel, `mart_lead_touch_days`, the daily status changes,
  `mart_source_quality`'s contacts, duplicates, leads and conversions): the stored rows of the
  groups the changed rows fall in plus what those rows add and take away, so a day holding a
  million leads costs what the run changed in it; landed records and rejects are counted again;
- other aggregates (`GROUPS`: funnel weeks and months from the daily funnel; pipeline, forecast
  and outcomes, medians among them, from `mart_opportunities`): only the groups the changed rows
  fall in (weeks, months, stages, close and creation months, sources) are recomputed, none when
  no row changed;
- `mart_lead_aging` is a view: the dates stay stored in `mart_lead_dates`, the days are computed
  when read against the clock in `mart_catalog`, so a moving clock rewrites no lead's row;
  `mart_lead_aging_summary` is recomputed whole from `mart_lead_touch_days` (a row per source,
  status and day of last touch, with sums of seconds) and the leads of the two cut-off days;
- `mart_fx_factors` holds the factors amounts convert by; when they change (new rates, another
  clock day, another reporting currency) `mart_opportunities` and the marts over it are
  rebuilt whole.

Without `touched` (a rebuild, a remodel, `forget`, `rescore`, `leadflow db upgrade`), or when a
mart was just created or changed, every mart is rebuilt whole from the same SELECTs; a test runs
a sequence of runs and compares both, row by row, on SQLite and PostgreSQL.

Every "days" figure is measured against the data's clock (the newest published contact), never
the wall clock, so a rebuild reproduces the same marts. Amounts are converted to the reporting
currency at the latest rate on or before the clock's day (at most `FX_MAX_AGE_DAYS` older); an
amount without such a rate is counted in `unconverted_*` columns and reported, never summed as 0.
"""

# ruff: noqa: S608 - every SQL string here is built from this module's constants, never from input

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    DateTime,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    bindparam,
    func,
    inspect,
    select,
    text,
)
from sqlalchemy.types import TypeEngine

from warehouse.load import INDEX_JOINS, ddl_in_transaction, key_table, planner
from warehouse.quality import PUBLISHED, WARNING, CheckResult
from warehouse.schema import fx_rates

DEFAULT_SCHEMA = "marts"
FX_MAX_AGE_DAYS = 7  # a weekend and a holiday week: older than that, a rate is missing, not stale

COUNT = BigInteger()
RATE = Numeric(9, 4)
MONEY = Numeric(18, 2)
DAYS = Numeric(10, 2)
TS = DateTime(timezone=True)
DAY = Date()
KEY = String(40)
NAME = String(64)


@dataclass(frozen=True)
class Col:
    name: str
    type: TypeEngine[Any]
    doc: str
    nullable: bool = True


class Dialect:
    """The few expressions SQLite and PostgreSQL spell differently; everything else is shared SQL."""

    def __init__(self, name: str) -> None:
        self.pg = name == "postgresql"

    def day(self, ts: str) -> str:
        return f"CAST(({ts} AT TIME ZONE 'UTC') AS DATE)" if self.pg else f"date({ts})"

    def week(self, ts: str) -> str:
        """Monday of the ISO week of a UTC timestamp."""
        if self.pg:
            return f"CAST(date_trunc('week', {ts} AT TIME ZONE 'UTC') AS DATE)"
        return f"date({ts}, 'weekday 0', '-6 days')"

    def month(self, ts: str) -> str:
        if self.pg:
            return f"CAST(date_trunc('month', {ts} AT TIME ZONE 'UTC') AS DATE)"
        return f"date({ts}, 'start of month')"

    def week_of_date(self, d: str) -> str:
        if self.pg:
            return f"CAST(date_trunc('week', {d}) AS DATE)"
        return f"date({d}, 'weekday 0', '-6 days')"

    def month_of_date(self, d: str) -> str:
        return (
            f"CAST(date_trunc('month', {d}) AS DATE)" if self.pg else f"date({d}, 'start of month')"
        )

    def days(self, start: str, end: str) -> str:
        """Days from one timestamp to another, two decimals; NULL when either is NULL."""
        if self.pg:
            return f"ROUND(CAST(EXTRACT(EPOCH FROM ({end} - {start})) / 86400.0 AS NUMERIC), 2)"
        return f"ROUND(julianday({end}) - julianday({start}), 2)"

    def seconds(self, ts: str) -> str:
        """Whole seconds since 1970 of a timestamp: integers, so sums of them add up exactly."""
        if self.pg:
            return f"CAST(FLOOR(EXTRACT(EPOCH FROM {ts})) AS BIGINT)"
        return f"CAST(strftime('%s', {ts}) AS INTEGER)"

    def date_key(self, k: str) -> str:
        """A group key table's text as a date (SQLite keeps dates as ISO text already)."""
        return f"CAST({k} AS DATE)" if self.pg else k

    def temp_table(self, name: str, query: str) -> list[str]:
        """A temporary table with the columns of `query`, made anew (PostgreSQL drops it when the
        transaction ends; SQLite keeps it with the connection, so one left there goes first)."""
        if self.pg:
            return [
                f"DROP TABLE IF EXISTS pg_temp.{name}",
                f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {query}",
            ]
        return [f"DROP TABLE IF EXISTS temp.{name}", f"CREATE TEMP TABLE {name} AS {query}"]


@dataclass(frozen=True)
class Scope:
    """Which rows a mart's SELECT reads: all of them (a full refresh), or those of the keys and
    groups in the refresh's temporary key tables (`warehouse.load.key_table`, column `k`).

    An additive mart (`SUMS`) counts and sums the rows of per-key marts through `rows`, `count`,
    `count_if` and `sum`: in a full refresh over every row; in an incremental one over the rows
    the refresh changed (`_changes`: each stored row it took out with `side` -1, each new row
    with 1), added by `so_far` to the sums it had stored."""

    d: Dialect
    full: bool = True

    def keys(self, col: str, of: str) -> str:
        """`col` among the keys of `of` ("leads", "contacts", "opportunities")."""
        return "1 = 1" if self.full else f"{col} IN (SELECT k FROM {_KEYS[of]})"

    def groups(self, col: str, of: str) -> str:
        """`col` (a date or a name) among the groups `of` names (see `_GROUPS`)."""
        if self.full:
            return "1 = 1"
        k = self.d.date_key("k") if _GROUPS[of].dates else "k"
        return f"{col} IN (SELECT {k} FROM {_GROUPS[of].table})"

    def rows(self, mart: str) -> str:
        """The per-key mart's rows: all of them, or the ones the refresh changed."""
        return mart if self.full else _changes(mart)

    def count(self) -> str:
        return "COUNT(*)" if self.full else "SUM(side)"

    def count_if(self, cond: str) -> str:
        return f"SUM(CASE WHEN {cond} THEN {'1' if self.full else 'side'} ELSE 0 END)"

    def sum(self, expr: str) -> str:
        return f"SUM({expr})" if self.full else f"SUM(side * ({expr}))"

    def so_far(self, stored: str, col: str | None = None, of: str = "") -> str:
        """Incremental: the mart's stored sums (`stored`, a SELECT of its group and sum columns)
        of the groups `of` names (every row without `col`), as one more branch of a UNION ALL."""
        if self.full:
            return ""
        return f"UNION ALL\n{stored}" + (f" WHERE {self.groups(col, of)}" if col else "")


def rate(num: str, den: str) -> str:
    # 1.0 * … : no integer division; NULLIF: NULL rather than a division by zero.
    return f"ROUND(1.0 * ({num}) / NULLIF({den}, 0), 4)"


# The temporary key tables of an incremental refresh: the keys a run touched, widened to every
# row they reach (`_widen`), and the groups (days, months, stages, sources) their rows fall in.
_KEYS = {
    "leads": "mart_keys_leads",
    "contacts": "mart_keys_contacts",
    "opportunities": "mart_keys_opportunities",
}


def _changes(mart: str) -> str:
    """The temporary table of the rows an incremental refresh changed in a per-key mart."""
    return "mart_changes_" + mart.removeprefix("mart_")


@dataclass(frozen=True)
class GroupSet:
    table: str
    dates: bool  # the keys are dates (ISO text in the key table)
    # per-key marts and the column whose values in their changed rows (old and new) name the groups
    sources: tuple[tuple[str, str], ...]


_GROUPS: dict[str, GroupSet] = {
    "funnel_days": GroupSet(
        "mart_groups_funnel_days",
        True,
        (("mart_contacts", "received_on"), ("mart_lead_dates", "first_seen_on")),
    ),
    # weeks and months of the funnel days: derived in Python from funnel_days
    "funnel_weeks": GroupSet("mart_groups_funnel_weeks", True, ()),
    "funnel_months": GroupSet("mart_groups_funnel_months", True, ()),
    "stages": GroupSet("mart_groups_stages", False, (("mart_opportunities", "stage"),)),
    "close_months": GroupSet(
        "mart_groups_close_months", True, (("mart_opportunities", "close_month"),)
    ),
    "created_months": GroupSet(
        "mart_groups_created_months", True, (("mart_opportunities", "created_month"),)
    ),
    "opportunity_sources": GroupSet(
        "mart_groups_opportunity_sources", False, (("mart_opportunities", "lead_source"),)
    ),
    "status_days": GroupSet(
        "mart_groups_status_days", True, (("mart_status_transitions", "changed_on"),)
    ),
    "touch_days": GroupSet("mart_groups_touch_days", True, (("mart_lead_dates", "last_touch_on"),)),
}

FULL = "full"  # every row recomputed at every refresh (small marts, or read from small ones)
KEYS = "keys"  # one row per lead, contact, opportunity or history row: the touched keys' rows
GROUPS = "groups"  # an aggregate: the groups the changed rows fall in, recomputed from its source
SUMS = "sums"  # counts and sums: the stored ones of the changed groups plus what the changes add
VIEW = "view"  # computed when read, from stored marts and the clock in mart_catalog


@dataclass(frozen=True)
class Mart:
    name: str
    doc: str  # the table's comment: what one row is
    columns: tuple[Col, ...]
    sql: Callable[[Dialect, Scope], str]
    key: tuple[str, ...]  # what makes a row unique (dbt tests it; the docs say it)
    indexes: tuple[tuple[str, ...], ...] = ()  # for the dashboards' lookups and filters
    # (columns, condition): an index of only the rows the condition picks
    partial_indexes: tuple[tuple[tuple[str, ...], str], ...] = ()
    refresh: str = FULL
    # KEYS: (key set, mart column) — the rows selected again are those whose column holds a key
    # of the set; GROUPS and SUMS: (group set, mart column) — the rows of the groups the changed
    # rows fall in are replaced; SUMS without it: every row (a mart of a few rows)
    by: tuple[str, str] | None = None

    @property
    def column_docs(self) -> dict[str, str]:
        return {c.name: c.doc for c in self.columns}

    def digest(self, dialect: Dialect) -> str:
        cols = ";".join(f"{c.name}:{c.type!r}:{c.nullable}:{c.doc}" for c in self.columns)
        sql = self.sql(dialect, Scope(dialect))
        indexes = f"{self.indexes}{self.partial_indexes}"
        text = f"{self.doc}\n{cols}\n{indexes}\n{self.refresh}\n{self.by}\n{sql}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- funnel ----------------------------------------------------------------------------------

_FUNNEL_COUNTS = (
    Col("source", NAME, "configured source name", False),
    Col("contacts", COUNT, "contacts received from the source in the period", False),
    Col(
        "new_leads",
        COUNT,
        "leads first seen in the period whose first contact came from the source",
        False,
    ),
    Col("qualified", COUNT, "of those new leads, how many are Qualified now", False),
    Col(
        "opportunities",
        COUNT,
        "of those new leads, how many have been converted to an opportunity",
        False,
    ),
    Col("lead_rate", RATE, "new_leads / contacts (NULL without contacts)"),
    Col("qualification_rate", RATE, "qualified / new_leads (NULL without new leads)"),
    Col("conversion_rate", RATE, "opportunities / new_leads (NULL without new leads)"),
)


def _funnel_daily_sql(d: Dialect, f: Scope) -> str:
    # Counted from the per-contact and per-lead marts, which keep the UTC day of each; counts add
    # up, so a refresh adds to the stored days what its changed contacts and leads add.
    return f"""
SELECT day, source,
       SUM(contacts), SUM(new_leads), SUM(qualified), SUM(opportunities),
       {rate("SUM(new_leads)", "SUM(contacts)")},
       {rate("SUM(qualified)", "SUM(new_leads)")},
       {rate("SUM(opportunities)", "SUM(new_leads)")}
FROM (
    SELECT received_on AS day, source, {f.count()} AS contacts,
           0 AS new_leads, 0 AS qualified, 0 AS opportunities
    FROM {f.rows("mart_contacts")}
    GROUP BY received_on, source
    UNION ALL
    SELECT first_seen_on, lead_source, 0, {f.count()},
           {f.count_if("status = 'Qualified'")}, {f.count_if("is_converted")}
    FROM {f.rows("mart_lead_dates")}
    GROUP BY first_seen_on, lead_source
    {f.so_far(_FUNNEL_DAILY_SUMS, "day", "funnel_days")}
) p
GROUP BY day, source
HAVING SUM(contacts) + SUM(new_leads) > 0
"""


_FUNNEL_DAILY_SUMS = (
    "SELECT day, source, contacts, new_leads, qualified, opportunities FROM mart_funnel_daily"
)


_COHORT = (
    "The lead columns follow the cohort of leads first seen in the period (by the source of "
    "their first contact), with their status today."
)

FUNNEL_DAILY = Mart(
    "mart_funnel_daily",
    "One row per UTC day and source that had contacts or new leads. " + _COHORT,
    (
        Col(
            "day",
            DAY,
            "UTC calendar day the contacts arrived and the new leads were first seen",
            False,
        ),
    )
    + _FUNNEL_COUNTS,
    _funnel_daily_sql,
    ("day", "source"),
    indexes=(("day",),),
    refresh=SUMS,
    by=("funnel_days", "day"),
)


def _rollup_sql(
    period: Callable[[Dialect, str], str], col: str, groups: str
) -> Callable[[Dialect, Scope], str]:
    # Counts add up, so a week or a month is the sum of its days: one pass over the daily mart
    # instead of another over every contact and lead.
    def sql(d: Dialect, f: Scope) -> str:
        return f"""
SELECT {period(d, "day")} AS {col}, source,
       SUM(contacts), SUM(new_leads), SUM(qualified), SUM(opportunities),
       {rate("SUM(new_leads)", "SUM(contacts)")},
       {rate("SUM(qualified)", "SUM(new_leads)")},
       {rate("SUM(opportunities)", "SUM(new_leads)")}
FROM mart_funnel_daily
WHERE {f.groups(period(d, "day"), groups)}
GROUP BY 1, 2
"""

    return sql


FUNNEL_WEEKLY = Mart(
    "mart_funnel_weekly",
    "One row per ISO week (Monday to Sunday, UTC) and source. " + _COHORT,
    (Col("week_start", DAY, "Monday (UTC) the ISO week starts on", False),) + _FUNNEL_COUNTS,
    _rollup_sql(Dialect.week_of_date, "week_start", "funnel_weeks"),
    ("week_start", "source"),
    refresh=GROUPS,
    by=("funnel_weeks", "week_start"),
)

FUNNEL_MONTHLY = Mart(
    "mart_funnel_monthly",
    "One row per UTC calendar month and source. " + _COHORT,
    (Col("month_start", DAY, "first day of the UTC calendar month", False),) + _FUNNEL_COUNTS,
    _rollup_sql(Dialect.month_of_date, "month_start", "funnel_months"),
    ("month_start", "source"),
    refresh=GROUPS,
    by=("funnel_months", "month_start"),
)

# ---- opportunities: one row each, then pipeline, forecast and outcomes over them ----------------

# The conversion factor of each currency into the reporting one, as of the clock's day: the
# latest rate within FX_MAX_AGE_DAYS of each of the two currencies (the base currency is 1).
_FX = """
fx_latest AS (
    SELECT f.currency, f.rate_date, f.rate
    FROM fx_rates f
    WHERE f.currency <> :base AND f.rate_date <= :as_of_day AND f.rate_date >= :oldest_rate_day
      AND f.rate_date = (
          SELECT MAX(g.rate_date) FROM fx_rates g
          WHERE g.currency = f.currency AND g.rate_date <= :as_of_day
      )
    UNION ALL
    SELECT :base, :as_of_day, 1.0
),
fx AS (
    SELECT c.currency, 1.0 * r.rate / c.rate AS factor
    FROM fx_latest c
    JOIN fx_latest r ON r.currency = :reporting
)"""

FX_FACTORS = Mart(
    "mart_fx_factors",
    "One row per currency that converts into the reporting currency as of the data clock's "
    "day: the factor mart_opportunities multiplies its amounts by. A refresh that finds other "
    "factors than the stored ones (new rates, another day, another reporting currency) "
    "recomputes the opportunity marts whole.",
    (
        Col("currency", String(3), "ISO currency of the amounts converted", False),
        Col("reporting_currency", String(3), "the reporting currency", False),
        Col(
            "factor", Numeric(), "amount in currency × factor = amount in reporting_currency", False
        ),
    ),
    lambda d, f: f"WITH {_FX.strip()}\nSELECT currency, :reporting, factor FROM fx\n",
    ("currency",),
)

_UNCONVERTED = "amount IS NOT NULL AND amount_reporting IS NULL"

OPPORTUNITIES = Mart(
    "mart_opportunities",
    "One row per opportunity: its stage today, its amount in its own and in the reporting "
    "currency, when it was created and (once closed) when it closed.",
    (
        Col("opportunity_id", KEY, "stable opportunity id", False),
        Col("lead_id", KEY, "the lead it was converted from", False),
        Col("account_id", KEY, "the account it belongs to", False),
        Col("lead_source", NAME, "source of the lead's first contact", False),
        Col("stage", String(40), "current stage", False),
        Col("stage_sort_order", Integer(), "the stage's position in the sales process", False),
        Col(
            "forecast_category",
            String(16),
            "the stage's forecast category (Pipeline, Best Case, Commit, Closed, Omitted)",
            False,
        ),
        Col("is_closed", Boolean(), "true once the opportunity is won or lost", False),
        Col("is_won", Boolean(), "true when it closed won", False),
        Col(
            "probability",
            Integer(),
            "win probability in % (the stage catalogue's, unless set otherwise)",
            False,
        ),
        Col("amount", MONEY, "amount in its own currency; NULL without a stated budget"),
        Col("currency", String(3), "ISO currency of the amount"),
        Col(
            "amount_reporting",
            MONEY,
            "amount in the reporting currency; NULL when there is no amount or no rate",
        ),
        Col(
            "reporting_currency", String(3), "the reporting currency (fx.reporting_currency)", False
        ),
        Col("created_at", TS, "when the lead was converted (the data's clock)", False),
        Col("created_month", DAY, "first day of the UTC month of created_at", False),
        Col("close_date", DAY, "expected close date, or the actual one once closed", False),
        Col("close_month", DAY, "first day of the month of close_date", False),
        Col(
            "closed_at",
            TS,
            "when it entered its closing stage; NULL while open, and when its stage history "
            "went with an erased lead",
        ),
        Col("sales_cycle_days", DAYS, "days from created_at to closed_at; NULL without closed_at"),
    ),
    lambda d, f: (
        f"""
WITH closes AS (
    SELECT h.opportunity_id, MAX(h.changed_at) AS closed_at
    FROM opportunity_stage_history h
    JOIN opportunity_stages s ON s.stage = h.to_stage
    WHERE s.is_closed AND {f.keys("h.opportunity_id", "opportunities")}
    GROUP BY h.opportunity_id
)
SELECT o.opportunity_id, o.lead_id, o.account_id, o.lead_source,
       o.stage, s.sort_order, s.forecast_category, s.is_closed, s.is_won, o.probability,
       o.amount, o.currency, ROUND(o.amount * fx.factor, 2), :reporting,
       o.created_at, {d.month("o.created_at")}, o.close_date, {d.month_of_date("o.close_date")},
       CASE WHEN s.is_closed THEN c.closed_at END,
       CASE WHEN s.is_closed THEN {d.days("o.created_at", "c.closed_at")} END
FROM opportunities o
JOIN opportunity_stages s ON s.stage = o.stage
LEFT JOIN closes c ON c.opportunity_id = o.opportunity_id
LEFT JOIN mart_fx_factors fx ON fx.currency = o.currency
WHERE {f.keys("o.opportunity_id", "opportunities")}
"""
    ),
    ("opportunity_id",),
    indexes=(("opportunity_id",), ("lead_id",)),
    # the amounts left unconverted, which every refresh reports by currency (`_missing_rates`)
    partial_indexes=((("currency",), _UNCONVERTED),),
    refresh=KEYS,
    by=("opportunities", "opportunity_id"),
)

PIPELINE = Mart(
    "mart_pipeline",
    "One row per open stage and currency. Amounts are never summed across currencies here; "
    "weighted_amount uses each opportunity's own probability.",
    (
        Col("stage", String(40), "opportunity stage (open stages only)", False),
        Col(
            "sort_order",
            Integer(),
            "the stage's position in the sales process, for ordering",
            False,
        ),
        Col(
            "forecast_category",
            String(16),
            "the stage's forecast category (Pipeline, Best Case, Commit, …)",
            False,
        ),
        Col(
            "currency",
            String(3),
            "ISO currency of the amounts; NULL for opportunities without a stated budget",
        ),
        Col("opportunities", COUNT, "open opportunities in the stage and currency", False),
        Col("amount", MONEY, "sum of their amounts (NULL when none has an amount)"),
        Col("weighted_amount", MONEY, "sum of amount × probability / 100"),
        Col("amount_reporting", MONEY, "amount in the reporting currency (NULL without a rate)"),
        Col(
            "weighted_amount_reporting",
            MONEY,
            "weighted_amount in the reporting currency (NULL without a rate)",
        ),
    ),
    lambda d, f: (
        f"""
SELECT stage, stage_sort_order, forecast_category, currency, COUNT(*),
       SUM(amount), ROUND(SUM(amount * probability) / 100.0, 2),
       CASE WHEN COUNT(amount) = COUNT(amount_reporting) THEN SUM(amount_reporting) END,
       CASE WHEN COUNT(amount) = COUNT(amount_reporting)
            THEN ROUND(SUM(amount_reporting * probability) / 100.0, 2) END
FROM mart_opportunities
WHERE NOT is_closed AND {f.groups("stage", "stages")}
GROUP BY stage, stage_sort_order, forecast_category, currency
"""
    ),
    ("stage", "currency"),
    refresh=GROUPS,
    by=("stages", "stage"),
)

FORECAST = Mart(
    "mart_forecast",
    "Pipeline and forecast by expected close month and forecast category, in the reporting "
    "currency; closed months show what was won (Closed) and lost (Omitted).",
    (
        Col("close_month", DAY, "first day of the month of the (expected) close date", False),
        Col(
            "forecast_category", String(16), "Pipeline, Best Case, Commit, Closed or Omitted", False
        ),
        Col("reporting_currency", String(3), "currency of the amounts", False),
        Col(
            "opportunities",
            COUNT,
            "opportunities closing (or closed) that month in the category",
            False,
        ),
        Col(
            "amount", MONEY, "sum of their amounts in the reporting currency (converted ones only)"
        ),
        Col(
            "weighted_amount", MONEY, "sum of amount × probability / 100 in the reporting currency"
        ),
        Col(
            "unconverted_opportunities",
            COUNT,
            "opportunities with an amount but no rate: left out of the sums, warned about",
            False,
        ),
    ),
    lambda d, f: (
        f"""
SELECT close_month, forecast_category, reporting_currency, COUNT(*),
       SUM(amount_reporting), ROUND(SUM(amount_reporting * probability) / 100.0, 2),
       SUM(CASE WHEN amount IS NOT NULL AND amount_reporting IS NULL THEN 1 ELSE 0 END)
FROM mart_opportunities
WHERE {f.groups("close_month", "close_months")}
GROUP BY close_month, forecast_category, reporting_currency
"""
    ),
    ("close_month", "forecast_category"),
    refresh=GROUPS,
    by=("close_months", "close_month"),
)

_OUTCOME_COLS = (
    Col("opportunities", COUNT, "opportunities created", False),
    Col("open", COUNT, "of those, still open", False),
    Col("won", COUNT, "closed won", False),
    Col("lost", COUNT, "closed lost", False),
    Col("win_rate", RATE, "won / (won + lost); NULL before any closed"),
    Col("avg_sales_cycle_days", DAYS, "average days from creation to close of the won ones"),
    Col("median_sales_cycle_days", DAYS, "median days from creation to close of the won ones"),
    Col("won_amount", MONEY, "won amount in the reporting currency (converted ones only)"),
    Col("reporting_currency", String(3), "currency of won_amount", False),
    Col(
        "unconverted_opportunities",
        COUNT,
        "won opportunities with an amount but no rate, left out of won_amount",
        False,
    ),
)


def _outcomes_sql(group: str, groups: str) -> Callable[[Dialect, Scope], str]:
    # Median without percentile functions (SQLite has none): the middle one or two of the sorted.
    def sql(d: Dialect, f: Scope) -> str:
        return f"""
WITH ranked AS (
    SELECT {group} AS g, sales_cycle_days AS days,
           ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY sales_cycle_days) AS nth,
           COUNT(*) OVER (PARTITION BY {group}) AS n
    FROM mart_opportunities
    WHERE is_won AND sales_cycle_days IS NOT NULL AND {f.groups(group, groups)}
),
medians AS (
    SELECT g, ROUND(AVG(days), 2) AS median_days
    FROM ranked WHERE nth IN ((n + 1) / 2, (n + 2) / 2)
    GROUP BY g
)
SELECT o.{group},
       COUNT(*),
       SUM(CASE WHEN NOT o.is_closed THEN 1 ELSE 0 END),
       SUM(CASE WHEN o.is_won THEN 1 ELSE 0 END),
       SUM(CASE WHEN o.is_closed AND NOT o.is_won THEN 1 ELSE 0 END),
       {rate("SUM(CASE WHEN o.is_won THEN 1 ELSE 0 END)", "SUM(CASE WHEN o.is_closed THEN 1 ELSE 0 END)")},
       ROUND(AVG(CASE WHEN o.is_won THEN o.sales_cycle_days END), 2),
       MAX(m.median_days),
       SUM(CASE WHEN o.is_won THEN o.amount_reporting END),
       :reporting,
       SUM(CASE WHEN o.is_won AND o.amount IS NOT NULL AND o.amount_reporting IS NULL
                THEN 1 ELSE 0 END)
FROM mart_opportunities o
LEFT JOIN medians m ON m.g = o.{group}
WHERE {f.groups("o." + group, groups)}
GROUP BY o.{group}
"""

    return sql


OUTCOMES_BY_SOURCE = Mart(
    "mart_outcomes_by_source",
    "Win rate and sales cycle per lead source, over every opportunity the source brought.",
    (Col("lead_source", NAME, "source of the leads' first contact", False),) + _OUTCOME_COLS,
    _outcomes_sql("lead_source", "opportunity_sources"),
    ("lead_source",),
    refresh=GROUPS,
    by=("opportunity_sources", "lead_source"),
)

OUTCOMES_BY_MONTH = Mart(
    "mart_outcomes_by_month",
    "Win rate and sales cycle per month the opportunities were created in (a cohort view).",
    (
        Col(
            "created_month",
            DAY,
            "first day of the UTC month the opportunities were created in",
            False,
        ),
    )
    + _OUTCOME_COLS,
    _outcomes_sql("created_month", "created_months"),
    ("created_month",),
    refresh=GROUPS,
    by=("created_months", "created_month"),
)

# ---- sources, leads, history ------------------------------------------------------------------


def _source_quality_sql(d: Dialect, f: Scope) -> str:
    # Contacts and duplicates from mart_contacts, leads and conversions from mart_lead_dates: a
    # refresh adds what its changed rows add to the stored counts. Rejects are counted again;
    # landed records too on SQLite, while PostgreSQL keeps them per source (`table_row_deltas`,
    # migration 0018: a read of a few rows, not a pass over raw_contacts).
    raw = (
        "SELECT source, SUM(delta) AS landed FROM table_row_deltas "
        "WHERE table_name = 'raw_contacts' AND source IS NOT NULL "
        "GROUP BY source HAVING SUM(delta) <> 0"
        if d.pg
        else "SELECT source, COUNT(*) AS landed FROM raw_contacts GROUP BY source"
    )
    return f"""
WITH raw AS ({raw}),
rej AS (
    SELECT source, COUNT(*) AS rejects,
           SUM(CASE WHEN stage = 'extract' THEN 1 ELSE 0 END) AS extract_rejects
    FROM rejects
    WHERE stage <> 'outcome'
    GROUP BY source
),
members AS (
    SELECT source, SUM(contacts) AS contacts, SUM(duplicates) AS duplicates,
           SUM(leads) AS leads, SUM(opportunities) AS opportunities
    FROM (
        SELECT source, {f.count_if("lead_id IS NOT NULL")} AS contacts,
               {f.count_if("is_duplicate")} AS duplicates, 0 AS leads, 0 AS opportunities
        FROM {f.rows("mart_contacts")}
        GROUP BY source
        UNION ALL
        SELECT lead_source, 0, 0, {f.count()}, {f.count_if("is_converted")}
        FROM {f.rows("mart_lead_dates")}
        GROUP BY lead_source
        {f.so_far(_SOURCE_QUALITY_SUMS)}
    ) m
    GROUP BY source
),
sources AS (
    SELECT source FROM raw
    UNION
    SELECT source FROM rej
    UNION
    SELECT source FROM members WHERE leads > 0
),
counts AS (
    SELECT s.source,
           COALESCE(r.landed, 0) + COALESCE(j.extract_rejects, 0) AS records,
           COALESCE(m.contacts, 0) AS contacts,
           COALESCE(j.rejects, 0) AS rejects,
           COALESCE(m.duplicates, 0) AS duplicates,
           COALESCE(m.leads, 0) AS leads,
           COALESCE(m.opportunities, 0) AS opportunities
    FROM sources s
    LEFT JOIN raw r ON r.source = s.source
    LEFT JOIN rej j ON j.source = s.source
    LEFT JOIN members m ON m.source = s.source
)
SELECT source, records, contacts, rejects, duplicates, leads, opportunities,
       {rate("duplicates", "contacts")}, {rate("rejects", "records")},
       {rate("opportunities", "leads")}
FROM counts
"""


SOURCE_QUALITY = Mart(
    "mart_source_quality",
    "One row per source that has landed records, rejects or leads. A duplicate is a contact "
    "that resolved to a lead some earlier contact (any source) had already created.",
    (
        Col("source", NAME, "configured source name", False),
        Col(
            "records",
            COUNT,
            "records read from the source: landed raw records plus extraction rejects",
            False,
        ),
        Col("contacts", COUNT, "records that became contacts", False),
        Col(
            "rejects",
            COUNT,
            "records rejected at extraction or normalization, each with a reason",
            False,
        ),
        Col(
            "duplicates",
            COUNT,
            "contacts that joined a lead some earlier contact (any source) had made",
            False,
        ),
        Col("leads", COUNT, "leads whose first contact came from the source", False),
        Col("opportunities", COUNT, "of those leads, how many have been converted", False),
        Col("duplicate_rate", RATE, "duplicates / contacts"),
        Col("reject_rate", RATE, "rejects / records"),
        Col("conversion_rate", RATE, "opportunities / leads"),
    ),
    _source_quality_sql,
    ("source",),
    refresh=SUMS,
)

_SOURCE_QUALITY_SUMS = (
    "SELECT source, contacts, duplicates, leads, opportunities FROM mart_source_quality"
)

LEADS_CURRENT = Mart(
    "mart_leads_current",
    "One row per live lead (leads merged into another are gone). No names, emails or phones: "
    "business fields, the status and the score.",
    (
        Col("lead_id", KEY, "stable lead id", False),
        Col("lead_source", NAME, "source of the lead's first contact", False),
        Col(
            "company",
            Text(),
            "company name as the lead gave it (business data; no personal fields here)",
        ),
        Col("country", String(2), "ISO-3166 alpha-2 country"),
        Col(
            "status",
            String(32),
            "Open - Not Contacted, Working - Contacted, Nurturing, Qualified or Unqualified",
            False,
        ),
        Col("score", Integer(), "qualification score 0–100", False),
        Col("grade", String(1), "letter grade of the score (rules file)", False),
        Col(
            "rules_version",
            String(32),
            "version of the rules that gave status, score and grade",
            False,
        ),
        Col("first_seen_at", TS, "UTC time of the lead's first contact", False),
        Col("last_seen_at", TS, "UTC time of the lead's newest contact", False),
        Col("contact_count", Integer(), "contacts resolved to the lead", False),
        Col("source_count", Integer(), "distinct sources those contacts came from", False),
        Col(
            "is_converted",
            Boolean(),
            "true when the lead has been converted to an opportunity",
            False,
        ),
        Col(
            "converted_at",
            TS,
            "UTC time of the conversion (the data's clock), NULL if not converted",
        ),
        Col("account_id", KEY, "account the lead converted into"),
        Col("opportunity_id", KEY, "opportunity the lead converted into"),
        Col("opportunity_stage", String(40), "that opportunity's current stage"),
        Col("opportunity_amount", MONEY, "that opportunity's amount"),
        Col("opportunity_currency", String(3), "ISO currency of the amount"),
    ),
    lambda d, f: (
        f"""
SELECT l.lead_id, l.lead_source, l.company, l.country, l.status, l.score, l.grade,
       l.rules_version, l.first_seen_at, l.last_seen_at, l.contact_count, l.source_count,
       l.opportunity_id IS NOT NULL, l.converted_at, l.account_id, l.opportunity_id,
       o.stage, o.amount, o.currency
FROM leads l
LEFT JOIN opportunities o ON o.opportunity_id = l.opportunity_id
WHERE {f.keys("l.lead_id", "leads")}
"""
    ),
    ("lead_id",),
    indexes=(("lead_id",), ("lead_source", "status")),
    refresh=KEYS,
    by=("leads", "lead_id"),
)


def _contacts_sql(d: Dialect, f: Scope) -> str:
    # A duplicate: some other contact of its lead came first (by received_at, then id). Ranked
    # in one pass over the contacts, a lead's contacts side by side; a run's keys hold every
    # contact of their leads (`_widen`), so ranking the keyed contacts ranks whole leads too.
    return f"""
SELECT c.contact_id, c.source, c.received_at, {d.day("c.received_at")}, lk.lead_id,
       CASE WHEN lk.lead_id IS NOT NULL THEN ROW_NUMBER() OVER (
           PARTITION BY lk.lead_id ORDER BY c.received_at, c.contact_id
       ) > 1 END
FROM contacts c
LEFT JOIN lead_links lk ON lk.contact_id = c.contact_id
WHERE {f.keys("c.contact_id", "contacts")}
"""


CONTACTS = Mart(
    "mart_contacts",
    "One row per contact: its source, the UTC day it arrived, the lead it resolved to, and "
    "whether it was a duplicate. No names, emails or phones.",
    (
        Col("contact_id", KEY, "stable contact id", False),
        Col("source", NAME, "configured source name", False),
        Col("received_at", TS, "UTC time the contact was received", False),
        Col("received_on", DAY, "UTC day of received_at", False),
        Col("lead_id", KEY, "the lead it resolved to; NULL while it has none"),
        Col(
            "is_duplicate",
            Boolean(),
            "true when an earlier contact (any source) of its lead came first; NULL without a lead",
        ),
    ),
    lambda d, f: _contacts_sql(d, f),
    ("contact_id",),
    indexes=(("contact_id",), ("lead_id",), ("received_on", "source")),
    refresh=KEYS,
    by=("contacts", "contact_id"),
)


def _lead_dates_sql(d: Dialect, f: Scope) -> str:
    # Stage changes from their copy in mart_stage_transitions (refreshed just before, indexed by
    # lead). A full refresh aggregates each history once; a run's keys look each lead up.
    if f.full:
        aged = """
WITH qualified AS (
    SELECT lead_id, MIN(changed_at) AS qualified_at
    FROM lead_status_history WHERE to_status = 'Qualified'
    GROUP BY lead_id
),
status_changes AS (
    SELECT lead_id, to_status, MAX(changed_at) AS since
    FROM lead_status_history
    GROUP BY lead_id, to_status
),
stage_touches AS (
    SELECT lead_id, MAX(changed_at) AS touched_at
    FROM mart_stage_transitions
    GROUP BY lead_id
),
aged AS (
    SELECT l.lead_id, l.lead_source, l.status, l.opportunity_id IS NOT NULL AS is_converted,
           l.first_seen_at, l.last_seen_at, l.converted_at, q.qualified_at, sc.since,
           t.touched_at
    FROM leads l
    LEFT JOIN qualified q ON q.lead_id = l.lead_id
    LEFT JOIN status_changes sc ON sc.lead_id = l.lead_id AND sc.to_status = l.status
    LEFT JOIN stage_touches t ON t.lead_id = l.lead_id
)"""
    else:
        # One index probe of each lead's status history (grouped, which also keeps the stage
        # lookup from being copied into each of the four places that read touched_at).
        aged = f"""
WITH aged AS (
    SELECT l.lead_id, l.lead_source, l.status, l.opportunity_id IS NOT NULL AS is_converted,
           l.first_seen_at, l.last_seen_at, l.converted_at,
           MIN(CASE WHEN h.to_status = 'Qualified' THEN h.changed_at END) AS qualified_at,
           MAX(CASE WHEN h.to_status = l.status THEN h.changed_at END) AS since,
           (SELECT MAX(t.changed_at) FROM mart_stage_transitions t
            WHERE t.lead_id = l.lead_id) AS touched_at
    FROM leads l
    LEFT JOIN lead_status_history h ON h.lead_id = l.lead_id
    WHERE {f.keys("l.lead_id", "leads")}
    GROUP BY l.lead_id, l.lead_source, l.status, l.opportunity_id, l.first_seen_at,
             l.last_seen_at, l.converted_at
)"""
    touch = "CASE WHEN touched_at > last_seen_at THEN touched_at ELSE last_seen_at END"
    return f"""{aged}
SELECT lead_id, lead_source, status, is_converted, first_seen_at, {d.day("first_seen_at")},
       qualified_at, converted_at, {touch}, {d.day(touch)}, COALESCE(since, first_seen_at)
FROM aged
"""


LEAD_DATES = Mart(
    "mart_lead_dates",
    "One row per live lead: the dates its aging is measured from (mart_lead_aging gives the days "
    "against the data's clock), and what the funnel counts of it.",
    (
        Col("lead_id", KEY, "stable lead id", False),
        Col("lead_source", NAME, "source of the lead's first contact", False),
        Col("status", String(32), "current status", False),
        Col("is_converted", Boolean(), "true when the lead has been converted", False),
        Col("first_seen_at", TS, "UTC time of the lead's first contact", False),
        Col("first_seen_on", DAY, "UTC day of first_seen_at", False),
        Col("qualified_at", TS, "when the lead first became Qualified; NULL if never"),
        Col("converted_at", TS, "when the lead was converted to an opportunity; NULL if not"),
        Col("last_touch_at", TS, "the lead's newest contact or opportunity stage change", False),
        Col("last_touch_on", DAY, "UTC day of last_touch_at", False),
        Col("status_since", TS, "when the lead entered its current status", False),
    ),
    lambda d, f: _lead_dates_sql(d, f),
    ("lead_id",),
    indexes=(
        ("lead_id",),
        # the aging tiles' filter, and lead_id so the view's oldest-leads tile reads the index only
        ("lead_source", "status", "first_seen_at", "lead_id"),
        ("first_seen_on",),
        ("last_touch_on", "last_touch_at"),
    ),
    refresh=KEYS,
    by=("leads", "lead_id"),
)


def _aging_view_sql(d: Dialect, f: Scope) -> str:
    # The days are computed when read, against the clock the last refresh wrote into
    # mart_catalog: a run moves the clock without rewriting a row per lead.
    def days(start: str, end: str) -> str:
        # PostgreSQL: in double precision, one cast (which rounds half away from zero) at the
        # end — a dashboard sorting tens of thousands of leads by it pays this per row.
        if d.pg:
            return f"CAST(date_part('epoch', {end} - {start}) / 86400.0::float8 AS NUMERIC(10, 2))"
        return d.days(start, end)

    # a constant subquery: evaluated once per query, not joined to every lead
    clock = "(SELECT c.as_of FROM mart_catalog c WHERE c.mart = 'mart_lead_aging')"
    return f"""
SELECT a.lead_id, a.lead_source, a.status, {clock}, a.first_seen_at,
       {days("a.first_seen_at", clock)},
       a.qualified_at, {days("a.first_seen_at", "a.qualified_at")},
       a.converted_at, {days("a.first_seen_at", "a.converted_at")},
       a.last_touch_at, {days("a.last_touch_at", clock)},
       a.status_since, {days("a.status_since", clock)}
FROM mart_lead_dates a
"""


LEAD_AGING = Mart(
    "mart_lead_aging",
    "One row per live lead: how long it has been in the funnel and how long each step took, "
    "in days against the data's clock (as_of), not the wall clock.",
    (
        Col("lead_id", KEY, "stable lead id", False),
        Col("lead_source", NAME, "source of the lead's first contact", False),
        Col("status", String(32), "current status", False),
        Col("as_of", TS, "the data's clock: the newest published contact", False),
        Col("first_seen_at", TS, "UTC time of the lead's first contact", False),
        Col("days_since_first_seen", DAYS, "days from first_seen_at to as_of", False),
        Col("qualified_at", TS, "when the lead first became Qualified; NULL if never"),
        Col("days_to_qualified", DAYS, "days from first_seen_at to qualified_at"),
        Col("converted_at", TS, "when the lead was converted to an opportunity; NULL if not"),
        Col("days_to_opportunity", DAYS, "days from first_seen_at to converted_at"),
        Col("last_touch_at", TS, "the lead's newest contact or opportunity stage change", False),
        Col("days_since_last_touch", DAYS, "days from last_touch_at to as_of", False),
        Col("status_since", TS, "when the lead entered its current status", False),
        Col("status_age_days", DAYS, "days from status_since to as_of", False),
    ),
    _aging_view_sql,
    ("lead_id",),
    refresh=VIEW,
)

TOUCH_DAYS = Mart(
    "mart_lead_touch_days",
    "One row per lead source, status and UTC day of the leads' last touch: how many leads, and "
    "sums of their times in whole seconds since 1970, from which mart_lead_aging_summary takes "
    "its averages against the clock without reading every lead.",
    (
        Col("lead_source", NAME, "source of the leads' first contact", False),
        Col("status", String(32), "current status", False),
        Col("last_touch_on", DAY, "UTC day of the leads' last touch", False),
        Col("leads", COUNT, "live leads", False),
        Col("first_seen_seconds", Numeric(30, 0), "sum of their first_seen_at", False),
        Col("qualified", COUNT, "of those, leads that were ever Qualified", False),
        Col(
            "to_qualified_seconds",
            Numeric(30, 0),
            "sum of qualified_at − first_seen_at of the qualified ones",
            False,
        ),
        Col("last_touch_seconds", Numeric(30, 0), "sum of their last_touch_at", False),
        Col("status_since_seconds", Numeric(30, 0), "sum of their status_since", False),
    ),
    lambda d, f: (
        f"""
SELECT lead_source, status, last_touch_on, SUM(leads), SUM(first_seen_seconds), SUM(qualified),
       SUM(to_qualified_seconds), SUM(last_touch_seconds), SUM(status_since_seconds)
FROM (
    SELECT lead_source, status, last_touch_on, {f.count()} AS leads,
           {f.sum(d.seconds("first_seen_at"))} AS first_seen_seconds,
           {f.count_if("qualified_at IS NOT NULL")} AS qualified,
           COALESCE({f.sum(f"{d.seconds('qualified_at')} - {d.seconds('first_seen_at')}")}, 0)
               AS to_qualified_seconds,
           {f.sum(d.seconds("last_touch_at"))} AS last_touch_seconds,
           {f.sum(d.seconds("status_since"))} AS status_since_seconds
    FROM {f.rows("mart_lead_dates")}
    GROUP BY lead_source, status, last_touch_on
    {f.so_far(_TOUCH_DAYS_SUMS, "last_touch_on", "touch_days")}
) p
GROUP BY lead_source, status, last_touch_on
HAVING SUM(leads) > 0
"""
    ),
    ("lead_source", "status", "last_touch_on"),
    indexes=(("last_touch_on",),),
    refresh=SUMS,
    by=("touch_days", "last_touch_on"),
)

_TOUCH_DAYS_SUMS = """SELECT lead_source, status, last_touch_on, leads, first_seen_seconds, qualified,
       to_qualified_seconds, last_touch_seconds, status_since_seconds
FROM mart_lead_touch_days"""

AGING_SUMMARY = Mart(
    "mart_lead_aging_summary",
    "One row per lead source and status: how old its leads are on average and how many have "
    "gone untouched, against the data's clock (mart_lead_touch_days summed up).",
    (
        Col("lead_source", NAME, "source of the leads' first contact", False),
        Col("status", String(32), "current status", False),
        Col("leads", COUNT, "live leads of the source in the status", False),
        Col("avg_days_since_first_seen", DAYS, "average days since their first contact", False),
        Col(
            "avg_days_to_qualified",
            DAYS,
            "average days from first contact to Qualified, of those qualified",
        ),
        Col(
            "avg_days_since_last_touch",
            DAYS,
            "average days since their last contact or stage change",
            False,
        ),
        Col("avg_status_age_days", DAYS, "average days in the current status", False),
        Col("untouched_30_days", COUNT, "leads without a touch for more than 30 days", False),
        Col("untouched_90_days", COUNT, "leads without a touch for more than 90 days", False),
    ),
    # Recomputed whole at every refresh (the clock moves), from a few thousand day rows; the
    # leads last touched on the day 30 (90) days before the clock are compared one by one.
    lambda d, f: (
        """
WITH g AS (
    SELECT lead_source, status, SUM(leads) AS n, SUM(first_seen_seconds) AS fs,
           SUM(qualified) AS q, SUM(to_qualified_seconds) AS tq,
           SUM(last_touch_seconds) AS lt, SUM(status_since_seconds) AS ss,
           SUM(CASE WHEN last_touch_on < :day30 THEN leads ELSE 0 END) AS u30,
           SUM(CASE WHEN last_touch_on < :day90 THEN leads ELSE 0 END) AS u90
    FROM mart_lead_touch_days
    GROUP BY lead_source, status
),
edges AS (
    SELECT lead_source, status,
           SUM(CASE WHEN last_touch_on = :day30 AND last_touch_at < :cut30 THEN 1 ELSE 0 END)
               AS e30,
           SUM(CASE WHEN last_touch_on = :day90 AND last_touch_at < :cut90 THEN 1 ELSE 0 END)
               AS e90
    FROM mart_lead_dates
    WHERE last_touch_on IN (:day30, :day90)
    GROUP BY lead_source, status
)
SELECT g.lead_source, g.status, g.n,
       ROUND((:now_s * g.n - g.fs) / (86400.0 * g.n), 2),
       ROUND(g.tq / (86400.0 * NULLIF(g.q, 0)), 2),
       ROUND((:now_s * g.n - g.lt) / (86400.0 * g.n), 2),
       ROUND((:now_s * g.n - g.ss) / (86400.0 * g.n), 2),
       g.u30 + COALESCE(e.e30, 0), g.u90 + COALESCE(e.e90, 0)
FROM g
LEFT JOIN edges e ON e.lead_source = g.lead_source AND e.status = g.status
"""
    ),
    ("lead_source", "status"),
)

STATUS_TRANSITIONS = Mart(
    "mart_status_transitions",
    "One row per change of a lead's status, from its first status on.",
    (
        Col("history_id", KEY, "stable id of the change", False),
        Col("lead_id", KEY, "the lead (its id at the time; merged leads keep their own)", False),
        Col("from_status", String(32), "status before; NULL for the lead's first status"),
        Col("to_status", String(32), "status after", False),
        Col("changed_at", TS, "the data's clock at the change", False),
        Col("changed_on", DAY, "UTC day of changed_at", False),
        Col("score", Integer(), "score under the new status", False),
        Col("reason", Text(), "the criteria met and negatives hit", False),
        Col("rules_version", String(32), "version of the rules that made the change", False),
    ),
    lambda d, f: (
        f"""
SELECT history_id, lead_id, from_status, to_status, changed_at,
       {d.day("changed_at")} AS changed_on, score, reason, rules_version
FROM lead_status_history
WHERE {f.keys("lead_id", "leads")}
"""
    ),
    ("history_id",),
    indexes=(("history_id",), ("lead_id",), ("changed_on",)),
    refresh=KEYS,
    by=("leads", "lead_id"),
)

STATUS_CHANGES_DAILY = Mart(
    "mart_status_changes_daily",
    "One row per UTC day and status change (from, to): how many leads made it that day "
    "(mart_status_transitions counted up, for charts over time).",
    (
        Col("changed_on", DAY, "UTC day of the changes", False),
        Col("from_status", String(32), "status before; NULL for leads' first status"),
        Col("to_status", String(32), "status after", False),
        Col("changes", COUNT, "changes from from_status to to_status that day", False),
    ),
    lambda d, f: (
        f"""
SELECT changed_on, from_status, to_status, SUM(changes)
FROM (
    SELECT changed_on, from_status, to_status, {f.count()} AS changes
    FROM {f.rows("mart_status_transitions")}
    GROUP BY changed_on, from_status, to_status
    {f.so_far(_STATUS_CHANGES_SUMS, "changed_on", "status_days")}
) p
GROUP BY changed_on, from_status, to_status
HAVING SUM(changes) > 0
"""
    ),
    ("changed_on", "from_status", "to_status"),
    indexes=(("changed_on",),),
    refresh=SUMS,
    by=("status_days", "changed_on"),
)

_STATUS_CHANGES_SUMS = (
    "SELECT changed_on, from_status, to_status, changes FROM mart_status_changes_daily"
)

STAGE_TRANSITIONS = Mart(
    "mart_stage_transitions",
    "One row per stage an opportunity entered: its first stage at conversion, then every move "
    "(qualification rules or CRM updates).",
    (
        Col("history_id", KEY, "stable id of the change", False),
        Col("opportunity_id", KEY, "the opportunity", False),
        Col("lead_id", KEY, "the lead it was converted from", False),
        Col("from_stage", String(40), "stage before; NULL at conversion"),
        Col("to_stage", String(40), "stage after", False),
        Col(
            "changed_at", TS, "when the stage changed (the data's clock, or the CRM's time)", False
        ),
        Col("changed_on", DAY, "UTC day of changed_at", False),
        Col("reason", Text(), "why: conversion, new evidence, or a CRM update", False),
        Col(
            "rules_version",
            String(32),
            "version of the rules, or the CRM source, that moved it",
            False,
        ),
    ),
    lambda d, f: (
        f"""
SELECT history_id, opportunity_id, lead_id, from_stage, to_stage, changed_at,
       {d.day("changed_at")} AS changed_on, reason, rules_version
FROM opportunity_stage_history
WHERE {f.keys("opportunity_id", "opportunities")}
"""
    ),
    ("history_id",),
    indexes=(("history_id",), ("opportunity_id",), ("lead_id",), ("changed_on",)),
    refresh=KEYS,
    by=("opportunities", "opportunity_id"),
)

CATALOG = Mart(
    "mart_catalog",
    "One row per mart: what it holds, as of which data clock, how many rows.",
    (
        Col("mart", NAME, "the mart's table name", False),
        Col("description", Text(), "what one row of it is", False),
        Col("as_of", TS, "the data's clock when it was refreshed; NULL before any data"),
        Col("row_count", COUNT, "rows it holds", False),
        Col(
            "definition",
            String(16),
            "digest of its columns and SQL, to tell a changed definition",
            False,
        ),
    ),
    lambda d, f: "",  # written by refresh_marts itself
    ("mart",),
)

# Refresh order: a mart that reads another comes after it.
MARTS: tuple[Mart, ...] = (
    FX_FACTORS,
    STAGE_TRANSITIONS,
    STATUS_TRANSITIONS,
    CONTACTS,
    LEAD_DATES,
    LEADS_CURRENT,
    OPPORTUNITIES,
    FUNNEL_DAILY,
    FUNNEL_WEEKLY,
    FUNNEL_MONTHLY,
    PIPELINE,
    FORECAST,
    OUTCOMES_BY_SOURCE,
    OUTCOMES_BY_MONTH,
    SOURCE_QUALITY,
    LEAD_AGING,
    TOUCH_DAYS,
    AGING_SUMMARY,
    STATUS_CHANGES_DAILY,
    CATALOG,
)


# ---- tables and refresh -----------------------------------------------------------------------


def schema_of(conn: Connection, schema: str | None) -> str | None:
    """The schema the marts live in: None (the main database) on SQLite."""
    if conn.dialect.name != "postgresql":
        return None
    return schema or DEFAULT_SCHEMA


def mart_tables(schema: str | None) -> dict[str, Table]:
    """The marts as SQLAlchemy tables (their own MetaData: the warehouse migrations own theirs)."""
    md = MetaData(schema=schema)
    return {
        m.name: Table(
            m.name,
            md,
            *(Column(c.name, c.type, nullable=c.nullable, comment=c.doc) for c in m.columns),
            *(
                Index(f"ix_{m.name}_{'_'.join(cols)}", *cols, unique=cols == m.key)
                for cols in m.indexes
            ),
            *(
                Index(
                    f"ix_{m.name}_{'_'.join(cols)}",
                    *cols,
                    postgresql_where=text(where),
                    sqlite_where=text(where),
                )
                for cols, where in m.partial_indexes
            ),
            comment=m.doc,
        )
        for m in MARTS
    }


@dataclass(frozen=True)
class MissingRate:
    currency: str
    on: date
    opportunities: int


@dataclass(frozen=True)
class MartRefresh:
    """What one refresh wrote: rows per mart, the clock it used, the rates it lacked."""

    schema: str | None
    as_of: datetime | None
    rows: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    missing_rates: tuple[MissingRate, ...] = ()
    bad_rate_rows: tuple[str, ...] = ()  # "file:line: why" of rates-file rows that were not read
    full: bool = True  # every mart rebuilt, or only what the touched keys reach
    rebuilt: frozenset[str] = frozenset()  # the marts rebuilt whole (every one when `full`)

    def checks(self) -> list[CheckResult]:
        """One warning per currency lacking a rate: named, dated, with how many amounts it left out."""
        return [
            CheckResult(
                suite="marts",
                expectation="fx_rate_available",
                column=m.currency,
                severity=WARNING,
                success=False,
                unexpected_count=m.opportunities,
                sample_ids=[f"{m.currency} {m.on.isoformat()}"],
                scope=PUBLISHED,
                description=f"an exchange rate for {m.currency} on {m.on} (or the days before)",
            )
            for m in self.missing_rates
        ] + (
            [
                CheckResult(
                    suite="fx_rates",
                    expectation="rate_rows_readable",
                    column=None,
                    severity=WARNING,
                    success=False,
                    unexpected_count=len(self.bad_rate_rows),
                    sample_ids=list(self.bad_rate_rows[:20]),
                    scope=PUBLISHED,
                    description="every row of the rates files is a date, a currency and a rate",
                )
            ]
            if self.bad_rate_rows
            else []
        )

    def warnings(self) -> list[str]:
        return [
            f"no exchange rate for {m.currency} on {m.on.isoformat()} (or the {FX_MAX_AGE_DAYS} "
            f"days before): {m.opportunities} opportunity amounts left out of reporting sums"
            for m in self.missing_rates
        ] + [f"rates file row not read: {b}" for b in self.bad_rate_rows[:20]]


def _q(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote(name)


class TouchedKeys(Protocol):
    """What a run wrote or deleted (`warehouse.publish.Touched`): the keys a refresh follows."""

    @property
    def leads(self) -> AbstractSet[str]: ...
    @property
    def contacts(self) -> AbstractSet[str]: ...
    @property
    def opportunities(self) -> AbstractSet[str]: ...
    @property
    def everything(self) -> bool: ...


def _ensure_tables(
    conn: Connection, schema: str | None, d: Dialect
) -> tuple[dict[str, Table], frozenset[str]]:
    """Create the schema and any missing mart; a mart whose definition changed is recreated.

    Returns the tables and the marts (re)created: only a whole refresh fills those, and the
    marts that read them. Views read stored marts, so when anything changes they are dropped
    first and made again.
    """
    tables = mart_tables(schema)
    if schema is not None:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {_q(conn, schema)}")
    insp = inspect(conn)
    views = set(insp.get_view_names(schema=schema))
    existing = set(insp.get_table_names(schema=schema)) | views
    known: dict[str, str] = {}
    if CATALOG.name in existing and CATALOG.name not in views:
        cat = tables[CATALOG.name]
        known = {r.mart: r.definition for r in conn.execute(cat.select())}
    changed = [
        m
        for m in MARTS
        if m.name not in existing or (m is not CATALOG and known.get(m.name) != m.digest(d))
    ]
    if not changed:
        return tables, frozenset()
    ddl_in_transaction(conn)  # readers see the old marts or the new ones, never a dropped one
    prefix = f"{_q(conn, schema)}." if schema is not None else ""
    for m in MARTS:
        if m.refresh == VIEW and m.name in existing:
            kind = "VIEW" if m.name in views else "TABLE"
            conn.exec_driver_sql(f"DROP {kind} {prefix}{_q(conn, m.name)}")
            existing.discard(m.name)
    for m in changed:
        if m.refresh == VIEW:
            continue
        if m.name in existing:
            tables[m.name].drop(conn)
        tables[m.name].create(conn)
    for m in MARTS:
        if m.refresh == VIEW:
            _create_view(conn, prefix, m, d)
    return tables, frozenset(m.name for m in changed)


def _create_view(conn: Connection, prefix: str, m: Mart, d: Dialect) -> None:
    name = f"{prefix}{_q(conn, m.name)}"
    cols = ", ".join(_q(conn, c.name) for c in m.columns)
    conn.exec_driver_sql(f"CREATE VIEW {name} ({cols}) AS {m.sql(d, Scope(d))}")
    if d.pg:  # the same comments BI tools read on a table

        def lit(s: str) -> str:
            return "'" + s.replace("'", "''") + "'"

        conn.exec_driver_sql(f"COMMENT ON VIEW {name} IS {lit(m.doc)}")
        for c in m.columns:
            conn.exec_driver_sql(f"COMMENT ON COLUMN {name}.{_q(conn, c.name)} IS {lit(c.doc)}")


_BIND_TYPES: dict[str, TypeEngine[Any]] = {
    "as_of": TS,
    "as_of_day": DAY,
    "oldest_rate_day": DAY,
    "base": String(),
    "reporting": String(),
    "now_s": BigInteger(),
    "day30": DAY,
    "day90": DAY,
    "cut30": TS,
    "cut90": TS,
}


def _binds(sql: str) -> list[str]:
    return [p for p in _BIND_TYPES if re.search(rf":{p}\b", sql)]


def _run(
    conn: Connection, sql: str, values: dict[str, Any], extra: dict[str, Any] | None = None
) -> int:
    stmt = text(sql)
    params = dict(extra or {})
    for p in _binds(sql):
        stmt = stmt.bindparams(bindparam(p, type_=_BIND_TYPES[p]))
        params[p] = values[p]
    return max(conn.execute(stmt, params).rowcount, 0)


def _marts_read(m: Mart) -> frozenset[str]:
    """The other marts `m`'s SQL reads (as a whole refresh spells it)."""
    if m is CATALOG:
        return frozenset()
    sql = m.sql(Dialect("postgresql"), Scope(Dialect("postgresql")))
    return frozenset(
        o.name for o in MARTS if o is not m and re.search(rf"\b{o.name}\b", sql) is not None
    )


# What each mart reads of the others. A mart rebuilt whole (recreated, or new exchange factors)
# has every mart that reads it, directly or not, rebuilt whole after it: their stored rows were
# computed from rows that may all have changed.
_READS: dict[str, frozenset[str]] = {m.name: _marts_read(m) for m in MARTS}


def refresh_marts(
    conn: Connection,
    *,
    schema: str | None = None,
    as_of: datetime | None,
    reporting_currency: str = "EUR",
    base_currency: str = "EUR",
    touched: TouchedKeys | None = None,
) -> MartRefresh:
    """Bring every mart up to date with the warehouse tables, in the caller's transaction.

    `as_of` is the data's clock (`resolution.data_clock`): the day the rates are taken on and the end
    of every "days since". Without published contacts yet, the clock is None and only the
    source counts have rows.

    Without `touched` (or with `touched.everything`) every mart is rebuilt. With it, only the
    rows of the touched leads, contacts and opportunities (and the rows those reach) are
    selected again, only those that differ from the stored ones are written, and only the
    aggregate groups those fall in are recomputed or added to. A mart created or changed by
    this refresh is rebuilt whole, and so is every mart that reads it (`_READS`), as a change of
    exchange factors rebuilds the opportunity marts and those over them; the others stay
    incremental (a new definition of mart_contacts, which the keys are widened through, makes
    the refresh full). Either way the rows are the same.
    """
    d = Dialect(conn.dialect.name)
    schema = schema_of(conn, schema)
    saved_path = None
    if schema is not None:
        # The marts' SQL names the warehouse tables unqualified and the marts it reads beside them.
        saved_path = conn.exec_driver_sql("SHOW search_path").scalar_one()
        current = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f"SET LOCAL search_path TO {_q(conn, schema)}, {_q(conn, current)}")
    tables, created = _ensure_tables(conn, schema, d)
    # mart_contacts, as last stored, widens the keys (`_widen`): without it, every mart whole
    full = touched is None or touched.everything or CONTACTS.name in created
    clock_day = as_of.date() if as_of else date(1970, 1, 1)
    values: dict[str, Any] = {
        "as_of": as_of,
        "as_of_day": clock_day,
        "oldest_rate_day": clock_day - timedelta(days=FX_MAX_AGE_DAYS),
        "base": base_currency,
        "reporting": reporting_currency,
        "now_s": int(as_of.timestamp()) if as_of else None,
    }
    for n in (30, 90):
        cut = as_of - timedelta(days=n) if as_of else None
        values[f"cut{n}"], values[f"day{n}"] = cut, cut.date() if cut else None
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    fx_changed = _refresh_fx(conn, tables, d, values, full or FX_FACTORS.name in created)
    if full or fx_changed:
        _analyze(conn, _q(conn, FX_FACTORS.name))
    # the marts rebuilt whole: every one in a full refresh; else the recreated ones, the exchange
    # factors when they changed, and (below) every mart reading one of those
    rebuilt = {m.name for m in MARTS if m.refresh != VIEW} if full else set(created)
    if fx_changed:
        rebuilt.add(FX_FACTORS.name)
    rows[FX_FACTORS.name] = conn.execute(
        select(func.count()).select_from(tables[FX_FACTORS.name])
    ).scalar_one()
    seconds[FX_FACTORS.name] = round(time.perf_counter() - t0, 3)
    prior: dict[str, int] = {}
    joins = ExitStack()  # index-driven joins for the run's keys (incremental), put back after
    if not full:
        assert touched is not None
        t0 = time.perf_counter()
        joins.enter_context(planner(conn, INDEX_JOINS))
        prior = {r.mart: int(r.row_count) for r in conn.execute(tables[CATALOG.name].select())}
        _widen(conn, touched)
        seconds["(keys)"] = round(time.perf_counter() - t0, 3)
    changed: set[str] = set()  # the per-key marts whose changed rows are in `_changes` tables
    groups: dict[str, set[str]] = {}  # the groups those rows fall in, once asked for
    for m in MARTS:
        if m is FX_FACTORS or m is CATALOG:
            continue
        t0 = time.perf_counter()
        target = _q(conn, m.name)
        whole = m.name in rebuilt or m.refresh == FULL or bool(_READS[m.name] & rebuilt)
        if whole and m.refresh != VIEW:  # a view reads the marts as they are
            rebuilt.add(m.name)
        if m.refresh == VIEW:
            rows[m.name] = -1  # counted below, from the mart it reads
        elif whole:
            names = ", ".join(_q(conn, c.name) for c in m.columns)
            with _indexed_after(conn, tables[m.name], fresh=m.name in created):
                rows[m.name] = _run(
                    conn, f"INSERT INTO {target} ({names}) {m.sql(d, Scope(d))}", values
                )
            _analyze(conn, target)
        else:
            if m.refresh == KEYS:
                deleted, inserted = _replace_keyed(conn, m, d, values)
                changed.add(m.name)
            else:
                if not groups:  # every per-key mart comes before the aggregates over it
                    groups.update(_group_tables(conn, changed))
                deleted, inserted = _replace_groups(conn, m, d, values, groups)
            rows[m.name] = prior.get(m.name, 0) - deleted + inserted
            if deleted + inserted > ANALYZE_SHARE * max(prior.get(m.name, 0), 1):
                _analyze(conn, target)
        seconds[m.name] = round(time.perf_counter() - t0, 3)
    joins.close()
    for m in MARTS:
        if m.refresh == VIEW:
            rows[m.name] = rows[LEAD_DATES.name]
    rows[CATALOG.name] = len(MARTS)
    conn.execute(tables[CATALOG.name].delete())
    conn.execute(
        tables[CATALOG.name].insert(),
        [
            {
                "mart": m.name,
                "description": m.doc,
                "as_of": as_of,
                "row_count": rows[m.name],
                "definition": m.digest(d),
            }
            for m in MARTS
        ],
    )
    if full:
        _analyze(conn, _q(conn, CATALOG.name))
    missing = _missing_rates(conn, tables, clock_day, reporting_currency, base_currency)
    if saved_path is not None:
        conn.execute(text("SELECT set_config('search_path', :p, true)"), {"p": saved_path})
    return MartRefresh(schema, as_of, rows, seconds, missing, full=full, rebuilt=frozenset(rebuilt))


@contextmanager
def _indexed_after(conn: Connection, table: Table, fresh: bool) -> Iterator[None]:
    """A whole mart written in the block: its old rows deleted first, or, for a mart `fresh`ly
    made in this transaction (empty, and seen by no other session before the commit), its
    indexes built after the rows are in, one sort per index, instead of kept up row by row.

    An existing mart keeps its indexes: DROP INDEX would lock the readers out of the old rows until
    the commit, where DELETE, not TRUNCATE, lets them read those rows meanwhile. Measured on
    copies of a 1M-contact warehouse (PostgreSQL), every mart made and filled, two alternating
    pairs: 40.6 / 41.6 s → 23.5 / 24.8 s (mart_contacts 9.0 → 5.5 s)."""
    if not fresh:
        conn.execute(table.delete())
        yield
        return
    for index in table.indexes:
        index.drop(conn)
    yield
    for index in table.indexes:
        index.create(conn)


# The share of a mart's rows a refresh may rewrite before its statistics are taken again (the
# threshold PostgreSQL's autovacuum uses by default), so the BI reader's plans (the oldest-leads
# tile walks an index only when the planner knows how many leads a source has) and the next
# marts' plans hold even where autovacuum is off.
ANALYZE_SHARE = 0.1


def _analyze(conn: Connection, target: str) -> None:
    """PostgreSQL: statistics of a mart just rewritten, in the refresh's transaction."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {target}")


def _refresh_fx(
    conn: Connection, tables: dict[str, Table], d: Dialect, values: dict[str, Any], full: bool
) -> bool:
    """The exchange factors as of the clock's day; True when they differ from the stored ones."""
    table = tables[FX_FACTORS.name]
    sql = FX_FACTORS.sql(d, Scope(d))
    stmt = text(sql).bindparams(*(bindparam(p, type_=_BIND_TYPES[p]) for p in _binds(sql)))
    params = {p: values[p] for p in _binds(sql)}
    now = {tuple(r) for r in conn.execute(stmt, params)}
    stored = {
        tuple(r)
        for r in conn.execute(select(table.c.currency, table.c.reporting_currency, table.c.factor))
    }
    if now == stored and not full:
        return False
    conn.execute(table.delete())
    names = ", ".join(_q(conn, c.name) for c in FX_FACTORS.columns)
    _run(conn, f"INSERT INTO {_q(conn, FX_FACTORS.name)} ({names}) {sql}", values)
    return now != stored


def _select_keys(conn: Connection, sql: str) -> set[str]:
    return {r[0] for r in conn.exec_driver_sql(sql) if r[0] is not None}


def _widen(conn: Connection, touched: TouchedKeys) -> None:
    """The touched keys, widened to every row they reach, into the temporary key tables.

    A lead's row reads its opportunity and its stage history; an opportunity's row its lead's
    source; whether a contact is a duplicate depends on every contact of its lead. So: the leads
    of the touched opportunities and of their stage changes, the opportunities of the leads, the
    contacts of the leads (now and as the marts last stored them), the leads of the contacts —
    until nothing is added. Each step goes from one key to the rows it reaches, so a round
    follows only the keys the round before added.
    """
    keys = {
        "leads": set(touched.leads),
        "contacts": set(touched.contacts),
        "opportunities": set(touched.opportunities),
    }
    kl, kc, ko = _KEYS["leads"], _KEYS["contacts"], _KEYS["opportunities"]
    follow, rounds = keys, 0  # the keys not followed yet: at first, all of them
    while any(follow.values()):
        for of, k in follow.items():
            key_table(conn, k, _KEYS[of])
        reached = {
            "leads": _select_keys(
                conn,
                f"SELECT o.lead_id FROM opportunities o JOIN {ko} k ON k.k = o.opportunity_id "
                f"UNION SELECT h.lead_id FROM opportunity_stage_history h "
                f"JOIN {ko} k ON k.k = h.opportunity_id "
                f"UNION SELECT l.lead_id FROM lead_links l JOIN {kc} k ON k.k = l.contact_id",
            ),
            "contacts": _select_keys(
                conn,
                f"SELECT l.contact_id FROM lead_links l JOIN {kl} k ON k.k = l.lead_id "
                f"UNION SELECT c.contact_id FROM mart_contacts c JOIN {kl} k ON k.k = c.lead_id",
            ),
            "opportunities": _select_keys(
                conn, f"SELECT o.opportunity_id FROM opportunities o JOIN {kl} k ON k.k = o.lead_id"
            ),
        }
        follow = {of: reached[of] - keys[of] for of in keys}
        keys = {of: keys[of] | follow[of] for of in keys}
        rounds += 1
    if rounds != 1:  # the key tables hold the last keys followed, not every key
        for of, k in keys.items():
            key_table(conn, k, _KEYS[of])


def _replace_keyed(
    conn: Connection, m: Mart, d: Dialect, values: dict[str, Any]
) -> tuple[int, int]:
    """A per-key mart's rows of the refresh's keys selected again, and only the rows that differ
    written; returns how many were deleted and inserted.

    The stored rows of the keys (side -1) and their new rows (side 1) go into the mart's
    `_changes` table, less every row that is the same on both sides: the aggregates over the mart
    read what changed there. An unchanged row is not rewritten; a key without a stored row costs
    no deletion. The stored rows are joined to the keys, not filtered by `IN`: PostgreSQL then
    probes the index in the key table's (sorted) order instead of hashing the keys first."""
    assert m.by is not None
    of, col = m.by
    target, changes = _q(conn, m.name), _changes(m.name)
    names = ", ".join(_q(conn, c.name) for c in m.columns)
    for stmt in d.temp_table(changes, f"SELECT {names}, 1 AS side FROM {target} WHERE 1 = 0"):
        conn.exec_driver_sql(stmt)
    _run(
        conn,
        f"""
INSERT INTO {changes} ({names}, side)
SELECT {names}, SUM(side)
FROM (
    SELECT {names}, -1 AS side FROM {target} JOIN {_KEYS[of]} k ON k.k = {_q(conn, col)}
    UNION ALL
    SELECT n.*, 1 FROM ({m.sql(d, Scope(d, full=False))}) n
) r
GROUP BY {names}
HAVING SUM(side) <> 0
""",
        values,
    )
    key = _q(conn, m.key[0])
    deleted = _run(
        conn,
        f"DELETE FROM {target} WHERE {key} IN (SELECT {key} FROM {changes} WHERE side < 0)",
        {},
    )
    # In key order, so the key's index takes the new rows leaf by leaf (as `load._dedupe` does).
    new = f"SELECT {names} FROM {changes} WHERE side > 0 ORDER BY {key}"
    inserted = _run(conn, f"INSERT INTO {target} ({names}) {new}", {})
    return deleted, inserted


def _group_tables(conn: Connection, changed: AbstractSet[str]) -> dict[str, set[str]]:
    """The groups the changed rows of the per-key marts fall in (old and new values alike), into
    the group key tables. A per-key mart rebuilt whole (new exchange factors) names none: the
    marts over it are rebuilt whole too."""
    groups: dict[str, set[str]] = {}
    for name, g in _GROUPS.items():
        groups[name] = {
            str(v)
            for mart, col in g.sources
            if mart in changed
            for v in _select_keys(conn, f"SELECT DISTINCT {col} FROM {_changes(mart)}")
        }
    days = [date.fromisoformat(v) for v in groups["funnel_days"]]
    groups["funnel_weeks"] = {(v - timedelta(days=v.weekday())).isoformat() for v in days}
    groups["funnel_months"] = {v.replace(day=1).isoformat() for v in days}
    for name, g in _GROUPS.items():
        key_table(conn, groups[name], g.table)
    return groups


def _replace_groups(
    conn: Connection, m: Mart, d: Dialect, values: dict[str, Any], groups: dict[str, set[str]]
) -> tuple[int, int]:
    """An aggregate's rows of the groups the changed rows fall in (every row of a `SUMS` mart
    without `by`) computed again, then put in place of the stored ones; returns how many were
    deleted and inserted. Computed into a temporary table first: a `SUMS` mart reads its own
    stored rows."""
    target = _q(conn, m.name)
    where = ""
    if m.by is not None:
        of, col = m.by
        if not groups[of]:
            return 0, 0
        where = f" WHERE {Scope(d, full=False).groups(_q(conn, col), of)}"
    names = ", ".join(_q(conn, c.name) for c in m.columns)
    after = "mart_next_" + m.name.removeprefix("mart_")
    for stmt in d.temp_table(after, f"SELECT {names} FROM {target} WHERE 1 = 0"):
        conn.exec_driver_sql(stmt)
    _run(conn, f"INSERT INTO {after} ({names}) {m.sql(d, Scope(d, full=False))}", values)
    deleted = _run(conn, f"DELETE FROM {target}{where}", {})
    inserted = _run(conn, f"INSERT INTO {target} ({names}) SELECT {names} FROM {after}", {})
    return deleted, inserted


def _missing_rates(
    conn: Connection, tables: dict[str, Table], on: date, reporting: str, base: str
) -> tuple[MissingRate, ...]:
    o = tables[OPPORTUNITIES.name]
    unconverted = (text(_UNCONVERTED),)  # the partial index's own condition: read from it
    if reporting != base:
        # Every amount goes through the reporting currency's rate: without it none converts,
        # and the rate to name is that one, not each amount's own.
        f = fx_rates
        window = f.c.rate_date.between(on - timedelta(days=FX_MAX_AGE_DAYS), on)
        has_rate = select(f.c.rate).where(f.c.currency == reporting, window).limit(1)
        if conn.execute(has_rate).first() is None:
            n = conn.execute(select(func.count()).select_from(o).where(*unconverted)).scalar_one()
            return (MissingRate(reporting, on, int(n)),) if n else ()
    q = (
        select(o.c.currency, func.count())
        .where(*unconverted)
        .group_by(o.c.currency)
        .order_by(o.c.currency)
    )
    return tuple(MissingRate(r[0] or "(none)", on, int(r[1])) for r in conn.execute(q))


def mart_names() -> Sequence[str]:
    return [m.name for m in MARTS]


def relation(dialect: str, name: str, schema: str | None = None) -> str:
    """A mart's name as SQL text names it: schema-qualified on PostgreSQL, bare on SQLite."""
    return f"{schema or DEFAULT_SCHEMA}.{name}" if dialect == "postgresql" else name


def type_name(col: Col) -> str:
    """The column's PostgreSQL type, as the data dictionary names it."""
    from sqlalchemy.dialects import postgresql

    return col.type.compile(dialect=postgresql.dialect())


def dictionary_markdown() -> str:
    """The marts' part of docs/data_dictionary.md, from the definitions (a test keeps them equal)."""
    out = []
    for m in MARTS:
        out += [f"### `{m.name}`", "", f"{m.doc} Key: {', '.join(m.key)}.", ""]
        out += ["| column | type | meaning |", "| --- | --- | --- |"]
        out += [f"| `{c.name}` | {type_name(c)} | {c.doc} |" for c in m.columns]
        out.append("")
    return "\n".join(out)
