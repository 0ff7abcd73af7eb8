-- Per experiment (= generation partition): Pareto-front size, best success, fewest tokens, a
-- hypervolume (fixed reference point), children accepted/rejected, and LLM spend.
--
-- Hypervolume: ONE definition, shared with Python (genepool/core/hypervolume.py). Over the feasible front
-- members, objectives success_rate (maximise), avg_tokens and avg_latency_ms (minimise), each scaled to
-- [0, 1] against a FIXED box: reference point (success 0, var('hypervolume_tokens_cap') tokens,
-- var('hypervolume_latency_cap_ms') ms), ideal (1, 0, 0); a value beyond a cap counts as the cap. The
-- result is the dominated fraction of the box, comparable across generations and agents. Computed exactly
-- on the grid of the points' coordinates: a cell counts when one point dominates its upper corner.
{% set tokens_cap = var('hypervolume_tokens_cap', 2000) | float %}
{% set latency_cap = var('hypervolume_latency_cap_ms', 10000) | float %}

with members as (
    select f.*, e.agent_type
    from {{ source('genepool', 'front_members') }} f
    join {{ source('genepool', 'experiments') }} e on e.id = f.experiment_id
),

points as (
    select experiment_id,
        least(1.0, success_rate) as x,
        least(1.0, 1.0 - avg_tokens / {{ tokens_cap }}) as y,
        least(1.0, 1.0 - avg_latency_ms / {{ latency_cap }}) as z
    from members
    where feasible
),

dominating as (
    select * from points where x > 0 and y > 0 and z > 0
),

xs as (
    select experiment_id, v as hi, coalesce(lag(v) over (partition by experiment_id order by v), 0.0) as lo
    from (select distinct experiment_id, x as v from dominating) d
),

ys as (
    select experiment_id, v as hi, coalesce(lag(v) over (partition by experiment_id order by v), 0.0) as lo
    from (select distinct experiment_id, y as v from dominating) d
),

zs as (
    select experiment_id, v as hi, coalesce(lag(v) over (partition by experiment_id order by v), 0.0) as lo
    from (select distinct experiment_id, z as v from dominating) d
),

hv as (
    select xs.experiment_id, sum((xs.hi - xs.lo) * (ys.hi - ys.lo) * (zs.hi - zs.lo)) as hypervolume
    from xs
    join ys on ys.experiment_id = xs.experiment_id
    join zs on zs.experiment_id = xs.experiment_id
    where exists (
        select 1 from dominating p
        where p.experiment_id = xs.experiment_id and p.x >= xs.hi and p.y >= ys.hi and p.z >= zs.hi
    )
    group by xs.experiment_id
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
