-- The KPI table loses no lead: its new_leads add up to the weekly funnel's.
select 1
from (select sum(new_leads) as n from {{ ref('kpi_weekly') }}) k,
     (select sum(new_leads) as n from {{ source('leadflow', 'mart_funnel_weekly') }}) f
where k.n <> f.n
