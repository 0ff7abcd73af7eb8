-- One row per agent type: its current production prompt (the prompt whose latest event is
-- 'production'; the most recent such event if several) and how that prompt does on recent
-- traces (var('health_window_days') days back from now(); 0 = all). The metric-threshold sensor
-- reads this table. observation_id changes only when the production prompt changes or a newer
-- trace of it arrives, so the sensor can tell a new observation from a re-computed one.
-- Only production traces count: the optimiser's own traces (source 'runner' written by a generation,
-- i.e. with a partition_key) are excluded, and so are genepool's experiment runs read back from Langfuse
-- (their observation metadata names an experiment_id), so a generation never feeds the sensor that started it.
-- Canary traces (source 'canary': genepool runs the production prompt on fixed train items after an approval,
-- orchestration/canary.py) are production traces and count; canary_runs says how many of runs they are.
{% set health_days = var('health_window_days', 7) | int %}

with prompt_state as (
    select distinct on (e.prompt_id)
        e.prompt_id, e.agent_type, e.label, e.id as event_id, e.created_at
    from {{ source('genepool', 'prompt_events') }} e
    order by e.prompt_id, e.id desc
),

production as (
    select distinct on (s.agent_type)
        s.agent_type,
        s.prompt_id as production_prompt_id,
        p.version as production_prompt_version,
        s.created_at as production_since
    from prompt_state s
    join {{ source('genepool', 'prompts') }} p on p.id = s.prompt_id
    where s.label = 'production'
    order by s.agent_type, s.event_id desc
),

agents as (
    select agent_type from {{ source('genepool', 'prompts') }}
    union
    select agent_type from {{ source('genepool', 'traces') }}
),

recent as (
    select t.*
    from {{ source('genepool', 'traces') }} t
    join production pr on pr.agent_type = t.agent_type and pr.production_prompt_id = t.prompt_id
    where not (t.source = 'runner' and t.partition_key is not null)
      and coalesce(t.metadata->'observation'->>'experiment_id', '') = ''
    {% if health_days > 0 %}
      and t.created_at >= now() - interval '{{ health_days }} days'
    {% endif %}
),

stats as (
    select
        agent_type,
        count(*) as runs,
        avg(success::int)::double precision as success_rate,
        avg(cost_usd)::double precision as avg_cost_usd,
        avg(prompt_tokens + completion_tokens)::double precision as avg_total_tokens,
        percentile_cont(0.95) within group (order by latency_ms) as p95_latency_ms,
        count(*) filter (where error is not null) as errors,
        count(*) filter (where source = 'canary') as canary_runs
    from recent
    group by agent_type
),

last_trace as (
    select distinct on (agent_type) agent_type, id as last_trace_id, created_at as last_trace_at
    from recent
    order by agent_type, created_at desc, id desc
)

select
    a.agent_type,
    pr.production_prompt_id,
    pr.production_prompt_version,
    pr.production_since,
    coalesce(s.runs, 0) as runs,
    s.success_rate,
    s.avg_cost_usd,
    s.avg_total_tokens,
    s.p95_latency_ms,
    coalesce(s.errors, 0) as errors,
    coalesce(s.canary_runs, 0) as canary_runs,
    lt.last_trace_id,
    lt.last_trace_at,
    md5(concat_ws('|', a.agent_type, coalesce(pr.production_prompt_id, ''),
                  coalesce(lt.last_trace_id, ''), coalesce(lt.last_trace_at::text, ''))) as observation_id,
    {% if health_days > 0 %}now() - interval '{{ health_days }} days'{% else %}null::timestamptz{% endif %} as window_start,
    now() as computed_at
from agents a
left join production pr on pr.agent_type = a.agent_type
left join stats s on s.agent_type = a.agent_type
left join last_trace lt on lt.agent_type = a.agent_type
