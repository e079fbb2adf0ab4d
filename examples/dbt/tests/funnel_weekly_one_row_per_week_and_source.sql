-- The weekly funnel has one row per week and source (dbt fails the test on any row returned).
select week_start, source, count(*) as rows_per_key
from {{ source('leadflow', 'mart_funnel_weekly') }}
group by week_start, source
having count(*) > 1
