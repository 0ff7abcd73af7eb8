-- Per agent type and prompt version: runs, success rate, tokens, cost and latency percentiles.
-- Two data sources, kept apart in the data_source column (never mixed in one row):
--   'traces'             genepool.traces (production / imported agent runs),
--   'experiment_results' genepool.experiment_results (benchmark runs inside optimisation generations).
-- Window: var('metrics_window_days') days back from now(); 0 = all history.
{% set window_days = var('metrics_window_days', 0) | int %}

with trace_runs as (
    select
        'traces'::text as data_source,
        t.agent_type,
        t.prompt_id,
        coalesce(t.prompt_version, p.version) as prompt_version,
        t.success,
        t.prompt_tokens,
        t.completion_tokens,
        t.cost_usd,
        t.latency_ms,
        (t.error is not null) as errored,
        t.created_at
    from {{ source('genepool', 'traces') }} t
    left join {{ source('genepool', 'prompts') }} p on p.id = t.prompt_id
    {% if window_days > 0 %}
    where t.created_at >= now() - interval '{{ window_days }} days'
    {% endif %}
),

result_runs as (
    select
        'experiment_results'::text as data_source,
        p.agent_type,
        r.prompt_id,
        p.version as prompt_version,
        r.success,
        r.prompt_tokens,
        r.completion_tokens,
        r.cost_usd,
        r.latency_ms,
        false as errored,
        r.created_at
    from {{ source('genepool', 'experiment_results') }} r
    join {{ source('genepool', 'prompts') }} p on p.id = r.prompt_id
    {% if window_days > 0 %}
    where r.created_at >= now() - interval '{{ window_days }} days'
    {% endif %}
),

runs as (
    select * from trace_runs
    union all
    select * from result_runs
)

select
    md5(concat_ws('|', data_source, agent_type, coalesce(prompt_id, ''), coalesce(prompt_version, ''))) as metric_key,
    data_source,
    agent_type,
    prompt_id,
    prompt_version,
    count(*) as runs,
    count(*) filter (where success) as successes,
    avg(success::int)::double precision as success_rate,
    count(*) filter (where errored) as errors,
    avg(prompt_tokens + completion_tokens)::double precision as avg_total_tokens,
    sum(prompt_tokens + completion_tokens)::bigint as total_tokens,
    sum(prompt_tokens)::bigint as total_prompt_tokens,
    sum(completion_tokens)::bigint as total_completion_tokens,
    sum(cost_usd)::double precision as total_cost_usd,
    avg(cost_usd)::double precision as avg_cost_usd,
    percentile_cont(0.5) within group (order by latency_ms) as p50_latency_ms,
    percentile_cont(0.95) within group (order by latency_ms) as p95_latency_ms,
    min(created_at) as first_run_at,
    max(created_at) as last_run_at,
    {% if window_days > 0 %}now() - interval '{{ window_days }} days'{% else %}null::timestamptz{% endif %} as window_start,
    now() as computed_at
from runs
group by data_source, agent_type, prompt_id, prompt_version
