-- Weekly sales KPIs: the funnel of the week's new leads, and what closed that week.
with funnel as (
    select week_start,
           sum(contacts) as contacts,
           sum(new_leads) as new_leads,
           sum(qualified) as qualified,
           sum(opportunities) as opportunities
    from {{ source('leadflow', 'mart_funnel_weekly') }}
    group by week_start
),
closed as (
    -- an opportunity whose close time is gone (its lead was erased, with the lead's stage
    -- history) closed in the week of its close date
    select cast(date_trunc('week', coalesce(closed_at at time zone 'UTC', close_date)) as date)
               as week_start,
           count(*) filter (where is_won) as won,
           count(*) filter (where not is_won) as lost,
           sum(amount_reporting) filter (where is_won) as won_amount,
           max(reporting_currency) as reporting_currency
    from {{ source('leadflow', 'mart_opportunities') }}
    where is_closed
    group by 1
),
weeks as (
    select week_start from funnel
    union
    select week_start from closed
)
select w.week_start,
       coalesce(f.contacts, 0) as contacts,
       coalesce(f.new_leads, 0) as new_leads,
       coalesce(f.qualified, 0) as qualified,
       coalesce(f.opportunities, 0) as opportunities,
       coalesce(c.won, 0) as won,
       coalesce(c.lost, 0) as lost,
       round(1.0 * c.won / nullif(c.won + c.lost, 0), 4) as win_rate,
       c.won_amount,
       c.reporting_currency
from weeks w
left join funnel f on f.week_start = w.week_start
left join closed c on c.week_start = w.week_start
