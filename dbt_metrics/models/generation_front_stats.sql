-- Per experiment (= generation partition): Pareto-front size, best success, fewest tokens, a
-- normalised 2-D hypervolume, children accepted/rejected, and LLM spend.
--
-- Hypervolume: over the feasible front members, objectives success_rate (maximise) and avg_tokens
-- (minimise). Tokens are normalised by T = var('hypervolume_token_ref') or, when that is 0, the
-- largest avg_tokens on any front of the same agent type; x = 1 - avg_tokens / (1.1 * T), y =
-- success_rate; reference point (x = 0, y = 0), i.e. (success 0, tokens 1.1 * T). The dominated
-- area is sum over points sorted by x descending of x * max(0, y - max y of the points before),
-- a window sum; the result lies in [0, 1] (1 = success 1 with no tokens).
{% set token_ref = var('hypervolume_token_ref', 0) | float %}

with members as (
    select f.*, e.agent_type
    from {{ source('genepool', 'front_members') }} f
    join {{ source('genepool', 'experiments') }} e on e.id = f.experiment_id
),

token_ref as (
    select agent_type,
        {% if token_ref > 0 %}{{ token_ref }}::double precision{% else %}max(avg_tokens){% endif %} as t_ref
    from members
    group by agent_type
),

points as (
    select m.experiment_id,
        greatest(0.0, coalesce(1.0 - m.avg_tokens / nullif(1.1 * r.t_ref, 0), 1.0)) as x,
        m.success_rate as y
    from members m
    join token_ref r on r.agent_type = m.agent_type
    where m.feasible
),

steps as (
    select experiment_id, x, y,
        coalesce(max(y) over (partition by experiment_id order by x desc, y desc
                              rows between unbounded preceding and 1 preceding), 0.0) as prev_y
    from points
),

hv as (
    select experiment_id, sum(x * greatest(0.0, y - prev_y)) as hypervolume
    from steps
    group by experiment_id
),

front as (
    select experiment_id,
        count(*) as front_size,
        count(*) filter (where feasible) as feasible_front_size,
        max(success_rate) filter (where feasible) as best_success,
        min(avg_tokens) filter (where feasible) as min_avg_tokens,
        min(avg_latency_ms) filter (where feasible) as min_avg_latency_ms
    from members
    group by experiment_id
),

children as (
    select experiment_id,
        count(*) filter (where status = 'accepted') as children_accepted,
        count(*) filter (where status = 'rejected') as children_rejected
    from {{ source('genepool', 'candidates') }}
    group by experiment_id
),

spend as (
    select partition_key as experiment_id,
        count(*) as llm_calls,
        count(*) filter (where not cached) as llm_calls_uncached,
        sum(prompt_tokens + completion_tokens)::bigint as llm_tokens,
        sum(cost_usd)::double precision as llm_cost_usd
    from {{ source('genepool', 'llm_calls') }}
    where partition_key is not null
    group by partition_key
)

select
    e.id as experiment_id,
    e.agent_type,
    e.generation,
    e.kind,
    e.created_at,
    coalesce(f.front_size, 0) as front_size,
    coalesce(f.feasible_front_size, 0) as feasible_front_size,
    f.best_success,
    f.min_avg_tokens,
    f.min_avg_latency_ms,
    coalesce(hv.hypervolume, 0.0) as hypervolume,
    coalesce(c.children_accepted, 0) as children_accepted,
    coalesce(c.children_rejected, 0) as children_rejected,
    coalesce(s.llm_calls, 0) as llm_calls,
    coalesce(s.llm_calls_uncached, 0) as llm_calls_uncached,
    coalesce(s.llm_tokens, 0) as llm_tokens,
    coalesce(s.llm_cost_usd, 0.0) as llm_cost_usd,
    now() as computed_at
from {{ source('genepool', 'experiments') }} e
left join front f on f.experiment_id = e.id
left join hv on hv.experiment_id = e.id
left join children c on c.experiment_id = e.id
left join spend s on s.experiment_id = e.id
