-- Every candidate / production / archived / rejected event, in the order it happened (event_id),
-- with who did it and why, and the prompt's previous state.
with events as (
    select e.*,
        lag(e.label) over (partition by e.prompt_id order by e.id) as previous_label
    from {{ source('genepool', 'prompt_events') }} e
)

select
    ev.id as event_id,
    row_number() over (partition by ev.agent_type order by ev.id) as agent_seq,
    ev.agent_type,
    ev.prompt_id,
    p.version as prompt_version,
    p.generation,
    p.experiment_id,
    p.operator,
    ev.previous_label,
    ev.label,
    ev.actor,
    ev.reason,
    ev.details,
    ev.created_at
from events ev
join {{ source('genepool', 'prompts') }} p on p.id = ev.prompt_id
where ev.label in ('candidate', 'production', 'archived', 'rejected')
