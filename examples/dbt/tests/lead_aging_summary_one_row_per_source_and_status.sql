-- The aging summary has one row per lead source and status (dbt fails the test on any row returned).
select lead_source, status, count(*) as rows_per_key
from {{ source('leadflow', 'mart_lead_aging_summary') }}
group by lead_source, status
having count(*) > 1
