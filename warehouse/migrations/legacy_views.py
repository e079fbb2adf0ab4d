"""The first BI marts, frozen as revision 0003 created them: plain `mart_*` views in the default schema.

Migrations import this module, never `warehouse.marts` (which changes with the live marts): a
migration must create what it created when it was written. Revision 0011 drops these views.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True)
class Mart:
    name: str
    sql: str
    columns: dict[str, str]  # column → description (COMMENT ON and docs/data_dictionary.md)


# Portability rules for the SQL below:
# - dates: `strftime(fmt, ts)` is SQLite's own; on PostgreSQL the migration adds a function of
#   that name that formats in UTC whatever the session time zone is (see PG_STRFTIME).
# - rates: `1.0 * a / NULLIF(b, 0)` (no integer division, no division by zero), rounded to 4
#   places and cast to DOUBLE PRECISION so both dialects return the same float.
# - booleans: only tested (`NOT is_closed`), never compared with 1 or true.


def _rate(num: str, den: str) -> str:
    return f"CAST(ROUND(1.0 * ({num}) / NULLIF({den}, 0), 4) AS DOUBLE PRECISION)"


def _ts(col: str) -> str:
    return f"strftime('%Y-%m-%d %H:%M:%S', {col})"


FUNNEL_DAILY = Mart(
    "mart_funnel_daily",
    f"""
WITH contact_days AS (
    SELECT strftime('%Y-%m-%d', received_at) AS day, source, COUNT(*) AS contacts
    FROM contacts
    GROUP BY 1, 2
),
lead_days AS (
    SELECT strftime('%Y-%m-%d', first_seen_at) AS day, lead_source AS source,
           COUNT(*) AS new_leads,
           SUM(CASE WHEN status = 'Qualified' THEN 1 ELSE 0 END) AS qualified,
           SUM(CASE WHEN opportunity_id IS NULL THEN 0 ELSE 1 END) AS opportunities
    FROM leads
    GROUP BY 1, 2
),
day_sources AS (
    SELECT day, source FROM contact_days
    UNION
    SELECT day, source FROM lead_days
)
SELECT k.day, k.source,
       COALESCE(c.contacts, 0) AS contacts,
       COALESCE(l.new_leads, 0) AS new_leads,
       COALESCE(l.qualified, 0) AS qualified,
       COALESCE(l.opportunities, 0) AS opportunities,
       {_rate("l.new_leads", "c.contacts")} AS lead_rate,
       {_rate("l.qualified", "l.new_leads")} AS qualification_rate,
       {_rate("l.opportunities", "l.new_leads")} AS conversion_rate
FROM day_sources k
LEFT JOIN contact_days c ON c.day = k.day AND c.source = k.source
LEFT JOIN lead_days l ON l.day = k.day AND l.source = k.source
""",  # noqa: S608 - built from constants in this module only
    {
        "day": "UTC calendar day (YYYY-MM-DD) the contacts arrived and the new leads were first seen",
        "source": "configured source name",
        "contacts": "contacts received from the source that day",
        "new_leads": "leads first seen that day whose first contact came from the source",
        "qualified": "of those new leads, how many are Qualified now",
        "opportunities": "of those new leads, how many have been converted to an opportunity",
        "lead_rate": "new_leads / contacts (NULL without contacts)",
        "qualification_rate": "qualified / new_leads (NULL without new leads)",
        "conversion_rate": "opportunities / new_leads (NULL without new leads)",
    },
)

PIPELINE = Mart(
    "mart_pipeline",
    """
SELECT s.stage, s.sort_order, s.forecast_category, o.currency,
       COUNT(*) AS opportunities,
       CAST(ROUND(SUM(o.amount), 2) AS DOUBLE PRECISION) AS amount,
       CAST(ROUND(SUM(o.amount * o.probability) / 100.0, 2) AS DOUBLE PRECISION)
           AS weighted_amount
FROM opportunities o
JOIN opportunity_stages s ON s.stage = o.stage
WHERE NOT s.is_closed
GROUP BY s.stage, s.sort_order, s.forecast_category, o.currency
""",
    {
        "stage": "opportunity stage (open stages only)",
        "sort_order": "the stage's position in the sales process, for ordering",
        "forecast_category": "the stage's forecast category (Pipeline, Best Case, Commit, …)",
        "currency": "ISO currency of the amounts; NULL for opportunities without a stated budget",
        "opportunities": "open opportunities in the stage and currency",
        "amount": "sum of their amounts (NULL when none has an amount)",
        "weighted_amount": "sum of amount × probability / 100",
    },
)

SOURCE_QUALITY = Mart(
    "mart_source_quality",
    f"""
WITH sources AS (
    SELECT source FROM raw_contacts
    UNION
    SELECT source FROM rejects
    UNION
    SELECT lead_source FROM leads
),
raw AS (
    SELECT source, COUNT(*) AS landed FROM raw_contacts GROUP BY source
),
rej AS (
    SELECT source, COUNT(*) AS rejects,
           SUM(CASE WHEN stage = 'extract' THEN 1 ELSE 0 END) AS extract_rejects
    FROM rejects
    GROUP BY source
),
ranked AS (
    SELECT c.source,
           ROW_NUMBER() OVER (
               PARTITION BY lk.lead_id ORDER BY c.received_at, c.contact_id
           ) AS nth
    FROM contacts c
    JOIN lead_links lk ON lk.contact_id = c.contact_id
),
con AS (
    SELECT source, COUNT(*) AS contacts,
           SUM(CASE WHEN nth > 1 THEN 1 ELSE 0 END) AS duplicates
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
       {_rate("duplicates", "contacts")} AS duplicate_rate,
       {_rate("rejects", "records")} AS reject_rate,
       {_rate("opportunities", "leads")} AS conversion_rate
FROM counts
""",  # noqa: S608 - built from constants in this module only
    {
        "source": "configured source name",
        "records": "records read from the source: landed raw records plus extraction rejects",
        "contacts": "records that became contacts",
        "rejects": "records rejected at extraction or normalization, each with a reason",
        "duplicates": "contacts that joined a lead some earlier contact (any source) had made",
        "leads": "leads whose first contact came from the source",
        "opportunities": "of those leads, how many have been converted",
        "duplicate_rate": "duplicates / contacts",
        "reject_rate": "rejects / records",
        "conversion_rate": "opportunities / leads",
    },
)

LEADS_CURRENT = Mart(
    "mart_leads_current",
    f"""
SELECT l.lead_id, l.lead_source, l.company, l.country,
       l.status, l.score, l.grade, l.rules_version,
       {_ts("l.first_seen_at")} AS first_seen_at,
       {_ts("l.last_seen_at")} AS last_seen_at,
       l.contact_count, l.source_count,
       CASE WHEN l.opportunity_id IS NULL THEN 0 ELSE 1 END AS is_converted,
       {_ts("l.converted_at")} AS converted_at,
       l.account_id, l.opportunity_id,
       o.stage AS opportunity_stage,
       CAST(o.amount AS DOUBLE PRECISION) AS opportunity_amount,
       o.currency AS opportunity_currency
FROM leads l
LEFT JOIN opportunities o ON o.opportunity_id = l.opportunity_id
""",  # noqa: S608 - built from constants in this module only
    {
        "lead_id": "stable lead id",
        "lead_source": "source of the lead's first contact",
        "company": "company name as the lead gave it (business data; no personal fields here)",
        "country": "ISO-3166 alpha-2 country",
        "status": "Open - Not Contacted, Working - Contacted, Nurturing, Qualified or Unqualified",
        "score": "qualification score 0–100",
        "grade": "letter grade of the score (rules file)",
        "rules_version": "version of the rules that gave status, score and grade",
        "first_seen_at": "UTC time of the lead's first contact (YYYY-MM-DD HH:MM:SS)",
        "last_seen_at": "UTC time of the lead's newest contact",
        "contact_count": "contacts resolved to the lead",
        "source_count": "distinct sources those contacts came from",
        "is_converted": "1 when the lead has been converted to an opportunity, else 0",
        "converted_at": "UTC time of the conversion (the data's clock), NULL if not converted",
        "account_id": "account the lead converted into",
        "opportunity_id": "opportunity the lead converted into",
        "opportunity_stage": "that opportunity's current stage",
        "opportunity_amount": "that opportunity's amount",
        "opportunity_currency": "ISO currency of the amount",
    },
)

MARTS: tuple[Mart, ...] = (FUNNEL_DAILY, PIPELINE, SOURCE_QUALITY, LEADS_CURRENT)

# SQLite's strftime, for the formats the marts use, in UTC whatever the session's time zone.
PG_STRFTIME = """
CREATE OR REPLACE FUNCTION strftime(fmt text, ts timestamptz) RETURNS text
LANGUAGE sql STABLE SET timezone = 'UTC' AS $$
    SELECT to_char(ts, replace(replace(replace(replace(replace(replace(
        fmt, '%Y', 'YYYY'), '%m', 'MM'), '%d', 'DD'), '%H', 'HH24'), '%M', 'MI'), '%S', 'SS'))
$$
"""


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def create_legacy_views(conn: Connection) -> None:
    """(Re)create every mart view; on PostgreSQL also the strftime function and column comments."""
    postgres = conn.dialect.name == "postgresql"
    drop_legacy_views(conn)
    if postgres:
        conn.execute(text(PG_STRFTIME))
    for mart in MARTS:
        # text() lets the driver see '%' as a literal; the comments below hold ':' and no '%'.
        conn.execute(text(f"CREATE VIEW {mart.name} AS {mart.sql}"))
        if postgres:
            conn.exec_driver_sql(f"COMMENT ON VIEW {mart.name} IS {_quote(mart.name)}")
            for col, doc in mart.columns.items():
                conn.exec_driver_sql(f"COMMENT ON COLUMN {mart.name}.{col} IS {_quote(doc)}")


def drop_legacy_views(conn: Connection) -> None:
    for mart in reversed(MARTS):
        conn.exec_driver_sql(f"DROP VIEW IF EXISTS {mart.name}")


def legacy_views_present(conn: Connection) -> bool:
    from sqlalchemy import inspect

    return MARTS[0].name in inspect(conn).get_view_names()


@contextmanager
def marts_set_aside(conn: Connection) -> Iterator[None]:
    """Drop the legacy views around a migration that rebuilds a table they read, then recreate them.

    SQLite refuses to rename a table while a view names a table that is missing, which is what
    a batch migration (copy, drop, rename) does to `contacts`, `leads` and the others. Once
    revision 0011 replaced the views with mart tables, there is nothing to set aside.
    """
    present = legacy_views_present(conn)
    if present:
        drop_legacy_views(conn)
    yield
    if present:
        create_legacy_views(conn)
