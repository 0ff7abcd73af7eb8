{# Fails on rows whose column is outside [min_value, max_value] (nulls pass; test them with not_null). #}
{% test value_between(model, column_name, min_value, max_value) %}
select {{ column_name }} as value
from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}
