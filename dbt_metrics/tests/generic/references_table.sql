{#
  Foreign-key test like dbt's `relationships`, for a source column pointing at another source table.
  dbt attaches no node to a test with two source parents, so dagster-dbt cannot turn the built-in
  `relationships` between two sources into an asset check; this test names the referenced table
  literally (schema + table), so its only parent is the tested source and it becomes a check on it.
#}
{% test references_table(model, column_name, to_schema, to_table, field) %}
{%- set parent = api.Relation.create(database=target.database, schema=to_schema, identifier=to_table) -%}
select child.{{ column_name }} as missing_key
from {{ model }} as child
left join {{ parent }} as parent on parent.{{ field }} = child.{{ column_name }}
where child.{{ column_name }} is not null and parent.{{ field }} is null
{% endtest %}
