"""The marts BI tools read: typed tables in their own schema, rebuilt inside the publish transaction.

Each mart is a declared table (names, SQL types, one comment per column) and one SELECT over the
warehouse tables. `refresh_marts` replaces every mart's rows in the caller's transaction, so a
reader sees marts consistent with the leads they summarize: the old state or the new one. On
PostgreSQL the marts live in their own schema (`marts` by default), the only one `bi_reader` may
read; SQLite has one namespace, so there the same table names sit in the main database.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

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


def rate(num: str, den: str) -> str:
    # 1.0 * … : no integer division; NULLIF: NULL rather than a division by zero.
    return f"ROUND(1.0 * ({num}) / NULLIF({den}, 0), 4)"


@dataclass(frozen=True)
class Mart:
    name: str
    doc: str  # the table's comment: what one row is
    columns: tuple[Col, ...]
    sql: Callable[[Dialect], str]
    key: tuple[str, ...]  # what makes a row unique (dbt tests it; the docs say it)
    indexes: tuple[tuple[str, ...], ...] = ()  # for the dashboards' lookups and filters
    # (table, key): rows are immutable copies of that table's rows, so a refresh only adds the
    # new ones and deletes the vanished ones instead of rewriting them all
    incremental: tuple[str, str] | None = None

    @property
    def column_docs(self) -> dict[str, str]:
        return {c.name: c.doc for c in self.columns}

    def digest(self, dialect: Dialect) -> str:
        cols = ";".join(f"{c.name}:{c.type!r}:{c.nullable}:{c.doc}" for c in self.columns)
        text = f"{self.doc}\n{cols}\n{self.indexes}\n{self.incremental}\n{self.sql(dialect)}"
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


def _funnel_sql(period: Callable[[Dialect, str], str], col: str) -> Callable[[Dialect], str]:
    def sql(d: Dialect) -> str:
        return f"""
WITH contact_periods AS (
    SELECT {period(d, "received_at")} AS {col}, source, COUNT(*) AS contacts
    FROM contacts
    GROUP BY 1, 2
),
lead_periods AS (
    SELECT {period(d, "first_seen_at")} AS {col}, lead_source AS source,
           COUNT(*) AS new_leads,
           SUM(CASE WHEN status = 'Qualified' THEN 1 ELSE 0 END) AS qualified,
           SUM(CASE WHEN opportunity_id IS NULL THEN 0 ELSE 1 END) AS opportunities
    FROM leads
    GROUP BY 1, 2
),
keys AS (
    SELECT {col}, source FROM contact_periods
    UNION
    SELECT {col}, source FROM lead_periods
)
SELECT k.{col}, k.source,
       COALESCE(c.contacts, 0), COALESCE(l.new_leads, 0),
       COALESCE(l.qualified, 0), COALESCE(l.opportunities, 0),
       {rate("COALESCE(l.new_leads, 0)", "c.contacts")},
       {rate("l.qualified", "l.new_leads")},
       {rate("l.opportunities", "l.new_leads")}
FROM keys k
LEFT JOIN contact_periods c ON c.{col} = k.{col} AND c.source = k.source
LEFT JOIN lead_periods l ON l.{col} = k.{col} AND l.source = k.source
"""

    return sql


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
    _funnel_sql(Dialect.day, "day"),
    ("day", "source"),
)


def _rollup_sql(period: Callable[[Dialect, str], str], col: str) -> Callable[[Dialect], str]:
    # Counts add up, so a week or a month is the sum of its days: one pass over the daily mart
    # instead of another over every contact and lead.
    def sql(d: Dialect) -> str:
        return f"""
SELECT {period(d, "day")} AS {col}, source,
       SUM(contacts), SUM(new_leads), SUM(qualified), SUM(opportunities),
       {rate("SUM(new_leads)", "SUM(contacts)")},
       {rate("SUM(qualified)", "SUM(new_leads)")},
       {rate("SUM(opportunities)", "SUM(new_leads)")}
FROM mart_funnel_daily
GROUP BY 1, 2
"""

    return sql


FUNNEL_WEEKLY = Mart(
    "mart_funnel_weekly",
    "One row per ISO week (Monday to Sunday, UTC) and source. " + _COHORT,
    (Col("week_start", DAY, "Monday (UTC) the ISO week starts on", False),) + _FUNNEL_COUNTS,
    _rollup_sql(Dialect.week_of_date, "week_start"),
    ("week_start", "source"),
)

FUNNEL_MONTHLY = Mart(
    "mart_funnel_monthly",
    "One row per UTC calendar month and source. " + _COHORT,
    (Col("month_start", DAY, "first day of the UTC calendar month", False),) + _FUNNEL_COUNTS,
    _rollup_sql(Dialect.month_of_date, "month_start"),
    ("month_start", "source"),
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
    lambda d: (
        f"""
WITH {_FX.strip()},
closes AS (
    SELECT h.opportunity_id, MAX(h.changed_at) AS closed_at
    FROM opportunity_stage_history h
    JOIN opportunity_stages s ON s.stage = h.to_stage
    WHERE s.is_closed
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
LEFT JOIN fx ON fx.currency = o.currency
"""
    ),
    ("opportunity_id",),
    indexes=(("opportunity_id",), ("lead_id",)),
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
    lambda d: (
        """
SELECT stage, stage_sort_order, forecast_category, currency, COUNT(*),
       SUM(amount), ROUND(SUM(amount * probability) / 100.0, 2),
       CASE WHEN COUNT(amount) = COUNT(amount_reporting) THEN SUM(amount_reporting) END,
       CASE WHEN COUNT(amount) = COUNT(amount_reporting)
            THEN ROUND(SUM(amount_reporting * probability) / 100.0, 2) END
FROM mart_opportunities
WHERE NOT is_closed
GROUP BY stage, stage_sort_order, forecast_category, currency
"""
    ),
    ("stage", "currency"),
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
    lambda d: (
        """
SELECT close_month, forecast_category, reporting_currency, COUNT(*),
       SUM(amount_reporting), ROUND(SUM(amount_reporting * probability) / 100.0, 2),
       SUM(CASE WHEN amount IS NOT NULL AND amount_reporting IS NULL THEN 1 ELSE 0 END)
FROM mart_opportunities
GROUP BY close_month, forecast_category, reporting_currency
"""
    ),
    ("close_month", "forecast_category"),
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


def _outcomes_sql(group: str) -> Callable[[Dialect], str]:
    # Median without percentile functions (SQLite has none): the middle one or two of the sorted.
    def sql(d: Dialect) -> str:
        return f"""
WITH ranked AS (
    SELECT {group} AS g, sales_cycle_days AS days,
           ROW_NUMBER() OVER (PARTITION BY {group} ORDER BY sales_cycle_days) AS nth,
           COUNT(*) OVER (PARTITION BY {group}) AS n
    FROM mart_opportunities
    WHERE is_won AND sales_cycle_days IS NOT NULL
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
GROUP BY o.{group}
"""

    return sql


OUTCOMES_BY_SOURCE = Mart(
    "mart_outcomes_by_source",
    "Win rate and sales cycle per lead source, over every opportunity the source brought.",
    (Col("lead_source", NAME, "source of the leads' first contact", False),) + _OUTCOME_COLS,
    _outcomes_sql("lead_source"),
    ("lead_source",),
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
    _outcomes_sql("created_month"),
    ("created_month",),
)

# ---- sources, leads, history ------------------------------------------------------------------

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
    lambda d: (
        f"""
WITH sources AS (
    SELECT source FROM raw_contacts
    UNION
    SELECT source FROM rejects WHERE stage <> 'outcome'
    UNION
    SELECT lead_source FROM leads
),
raw AS (SELECT source, COUNT(*) AS landed FROM raw_contacts GROUP BY source),
rej AS (
    SELECT source, COUNT(*) AS rejects,
           SUM(CASE WHEN stage = 'extract' THEN 1 ELSE 0 END) AS extract_rejects
    FROM rejects
    WHERE stage <> 'outcome'
    GROUP BY source
),
ranked AS (
    SELECT c.source,
           ROW_NUMBER() OVER (PARTITION BY lk.lead_id ORDER BY c.received_at, c.contact_id) AS nth
    FROM contacts c
    JOIN lead_links lk ON lk.contact_id = c.contact_id
),
con AS (
    SELECT source, COUNT(*) AS contacts, SUM(CASE WHEN nth > 1 THEN 1 ELSE 0 END) AS duplicates
    FROM ranked
    GROUP BY source
),
lds AS (
    SELECT lead_source AS source, COUNT(*) AS leads,
           SUM(CASE WHEN opportunity_id IS NULL THEN 0 ELSE 1 END) AS opportunities
    FROM leads
    GROUP BY lead_source
),
counts AS (
    SELECT s.source,
           COALESCE(r.landed, 0) + COALESCE(j.extract_rejects, 0) AS records,
           COALESCE(c.contacts, 0) AS contacts,
           COALESCE(j.rejects, 0) AS rejects,
           COALESCE(c.duplicates, 0) AS duplicates,
           COALESCE(l.leads, 0) AS leads,
           COALESCE(l.opportunities, 0) AS opportunities
    FROM sources s
    LEFT JOIN raw r ON r.source = s.source
    LEFT JOIN rej j ON j.source = s.source
    LEFT JOIN con c ON c.source = s.source
    LEFT JOIN lds l ON l.source = s.source
)
SELECT source, records, contacts, rejects, duplicates, leads, opportunities,
       {rate("duplicates", "contacts")}, {rate("rejects", "records")},
       {rate("opportunities", "leads")}
FROM counts
"""
    ),
    ("source",),
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
    lambda d: (
        """
SELECT l.lead_id, l.lead_source, l.company, l.country, l.status, l.score, l.grade,
       l.rules_version, l.first_seen_at, l.last_seen_at, l.contact_count, l.source_count,
       l.opportunity_id IS NOT NULL, l.converted_at, l.account_id, l.opportunity_id,
       o.stage, o.amount, o.currency
FROM leads l
LEFT JOIN opportunities o ON o.opportunity_id = l.opportunity_id
"""
    ),
    ("lead_id",),
    indexes=(("lead_id",), ("lead_source", "status")),
)

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
    lambda d: (
        f"""
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
    FROM opportunity_stage_history
    GROUP BY lead_id
),
aged AS (
    SELECT l.lead_id, l.lead_source, l.status, l.first_seen_at, q.qualified_at, l.converted_at,
           CASE WHEN t.touched_at > l.last_seen_at THEN t.touched_at ELSE l.last_seen_at END
               AS last_touch_at,
           COALESCE(sc.since, l.first_seen_at) AS status_since
    FROM leads l
    LEFT JOIN qualified q ON q.lead_id = l.lead_id
    LEFT JOIN status_changes sc ON sc.lead_id = l.lead_id AND sc.to_status = l.status
    LEFT JOIN stage_touches t ON t.lead_id = l.lead_id
)
SELECT lead_id, lead_source, status, :as_of, first_seen_at,
       {d.days("first_seen_at", ":as_of")},
       qualified_at, {d.days("first_seen_at", "qualified_at")},
       converted_at, {d.days("first_seen_at", "converted_at")},
       last_touch_at, {d.days("last_touch_at", ":as_of")},
       status_since, {d.days("status_since", ":as_of")}
FROM aged
"""
    ),
    ("lead_id",),
    indexes=(("lead_id",), ("lead_source", "status", "days_since_first_seen")),
)

AGING_SUMMARY = Mart(
    "mart_lead_aging_summary",
    "One row per lead source and status: how old its leads are on average and how many have "
    "gone untouched, against the data's clock (mart_lead_aging summed up).",
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
    lambda d: (
        """
SELECT lead_source, status, COUNT(*),
       ROUND(AVG(days_since_first_seen), 2), ROUND(AVG(days_to_qualified), 2),
       ROUND(AVG(days_since_last_touch), 2), ROUND(AVG(status_age_days), 2),
       SUM(CASE WHEN days_since_last_touch > 30 THEN 1 ELSE 0 END),
       SUM(CASE WHEN days_since_last_touch > 90 THEN 1 ELSE 0 END)
FROM mart_lead_aging
GROUP BY lead_source, status
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
    lambda d: (
        f"""
SELECT history_id, lead_id, from_status, to_status, changed_at,
       {d.day("changed_at")} AS changed_on, score, reason, rules_version
FROM lead_status_history
"""
    ),
    ("history_id",),
    indexes=(("history_id",), ("lead_id",), ("changed_on",)),
    incremental=("lead_status_history", "history_id"),
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
    lambda d: (
        """
SELECT changed_on, from_status, to_status, COUNT(*)
FROM mart_status_transitions
GROUP BY changed_on, from_status, to_status
"""
    ),
    ("changed_on", "from_status", "to_status"),
    indexes=(("changed_on",),),
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
    lambda d: (
        f"""
SELECT history_id, opportunity_id, lead_id, from_stage, to_stage, changed_at,
       {d.day("changed_at")} AS changed_on, reason, rules_version
FROM opportunity_stage_history
"""
    ),
    ("history_id",),
    indexes=(("history_id",), ("opportunity_id",), ("changed_on",)),
    incremental=("opportunity_stage_history", "history_id"),
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
    lambda d: "",  # written by refresh_marts itself
    ("mart",),
)

# Refresh order: a mart that reads another comes after it.
MARTS: tuple[Mart, ...] = (
    FUNNEL_DAILY,
    FUNNEL_WEEKLY,
    FUNNEL_MONTHLY,
    OPPORTUNITIES,
    PIPELINE,
    FORECAST,
    OUTCOMES_BY_SOURCE,
    OUTCOMES_BY_MONTH,
    SOURCE_QUALITY,
    LEADS_CURRENT,
    LEAD_AGING,
    AGING_SUMMARY,
    STATUS_TRANSITIONS,
    STATUS_CHANGES_DAILY,
    STAGE_TRANSITIONS,
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


def _ensure_tables(conn: Connection, schema: str | None, dialect: Dialect) -> dict[str, Table]:
    """Create the schema and any missing mart; a mart whose definition changed is recreated."""
    tables = mart_tables(schema)
    if schema is not None:
        conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {_q(conn, schema)}")
    insp = inspect(conn)
    existing = set(insp.get_table_names(schema=schema))
    known: dict[str, str] = {}
    if CATALOG.name in existing:
        cat = tables[CATALOG.name]
        known = {r.mart: r.definition for r in conn.execute(cat.select())}
    for m in MARTS:
        table = tables[m.name]
        if m.name in existing and m is not CATALOG and known.get(m.name) != m.digest(dialect):
            table.drop(conn)
            existing.discard(m.name)
        if m.name not in existing:
            table.create(conn)
    return tables


def _binds(sql: str) -> list[str]:
    names = ("as_of", "as_of_day", "oldest_rate_day", "base", "reporting")
    return [p for p in names if re.search(rf":{p}\b", sql)]


def refresh_marts(
    conn: Connection,
    *,
    schema: str | None = None,
    as_of: datetime | None,
    reporting_currency: str = "EUR",
    base_currency: str = "EUR",
) -> MartRefresh:
    """Rebuild every mart from the warehouse tables, in the caller's transaction.

    `as_of` is the data's clock (`resolution.data_clock`): the day the rates are taken on and the end
    of every "days since". Without published contacts yet, the clock is None and only the
    source counts have rows.
    """
    d = Dialect(conn.dialect.name)
    schema = schema_of(conn, schema)
    tables = _ensure_tables(conn, schema, d)
    saved_path = None
    if schema is not None:
        # The marts' SQL names the warehouse tables unqualified and the marts it reads beside them.
        saved_path = conn.exec_driver_sql("SHOW search_path").scalar_one()
        current = conn.exec_driver_sql("SELECT current_schema()").scalar_one()
        conn.exec_driver_sql(f"SET LOCAL search_path TO {_q(conn, schema)}, {_q(conn, current)}")
    rows: dict[str, int] = {}
    seconds: dict[str, float] = {}
    clock_day = as_of.date() if as_of else date(1970, 1, 1)
    values = {
        "as_of": as_of,
        "as_of_day": clock_day,
        "oldest_rate_day": clock_day - timedelta(days=FX_MAX_AGE_DAYS),
        "base": base_currency,
        "reporting": reporting_currency,
    }
    for m in MARTS:
        table = tables[m.name]
        t0 = time.perf_counter()
        target = _q(conn, m.name)
        key = ""
        if m.incremental:
            base, key = (_q(conn, n) for n in m.incremental)
            conn.execute(
                text(
                    f"DELETE FROM {target} WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {base} b WHERE b.{key} = {target}.{key})"
                )
            )
        else:
            # DELETE, not TRUNCATE: readers keep reading the old rows until this commits.
            conn.execute(table.delete())
        if m is not CATALOG:
            sql = m.sql(d)
            if m.incremental:
                sql = (
                    f"SELECT * FROM ({sql}) s WHERE NOT EXISTS "
                    f"(SELECT 1 FROM {target} t WHERE t.{key} = s.{key})"
                )
            names = ", ".join(_q(conn, c.name) for c in m.columns)
            stmt = text(f"INSERT INTO {target} ({names}) {sql}")
            params = {}
            for p in _binds(sql):
                ty = TS if p == "as_of" else DAY if p.endswith("_day") else String()
                stmt = stmt.bindparams(bindparam(p, type_=ty))
                params[p] = values[p]
            rows[m.name] = conn.execute(stmt, params).rowcount
            if m.incremental:
                rows[m.name] = conn.execute(select(func.count()).select_from(table)).scalar_one()
        else:
            rows[m.name] = 0
        seconds[m.name] = round(time.perf_counter() - t0, 3)
    conn.execute(
        tables[CATALOG.name].insert(),
        [
            {
                "mart": m.name,
                "description": m.doc,
                "as_of": as_of,
                "row_count": rows[m.name] if m is not CATALOG else len(MARTS),
                "definition": m.digest(d),
            }
            for m in MARTS
        ],
    )
    missing = _missing_rates(conn, tables, clock_day, reporting_currency, base_currency)
    if saved_path is not None:
        conn.execute(text("SELECT set_config('search_path', :p, true)"), {"p": saved_path})
    return MartRefresh(schema, as_of, rows, seconds, missing)


def _missing_rates(
    conn: Connection, tables: dict[str, Table], on: date, reporting: str, base: str
) -> tuple[MissingRate, ...]:
    o = tables[OPPORTUNITIES.name]
    unconverted = o.c.amount.is_not(None), o.c.amount_reporting.is_(None)
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
